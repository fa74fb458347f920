//! On PostgreSQL outbox rows commit out of `seq` order: a transaction that took its number
//! first may commit long after later ones were published. The relay still publishes its event,
//! once, however far the others have gone.

use std::time::Duration;

use savdo_testkit::{Backend, FreshDb};

fn accept(
    _: &[savdo_storage::OutboxEvent],
) -> futures_core::future::BoxFuture<'_, Result<(), String>> {
    Box::pin(async { Ok(()) })
}

/// Rounds a test runs at most while waiting for the floor to rise.
const ROUNDS: usize = 30;
/// The relay tries to raise the floor at most every 100 ms.
const FLOOR_DUE: Duration = Duration::from_millis(120);

async fn floor(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT floor FROM outbox_relay")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A publish callback (the closure's signature spelled out for the borrow of the events).
fn publisher<F>(f: F) -> F
where
    F: for<'b> Fn(
        &'b [savdo_storage::OutboxEvent],
    ) -> futures_core::future::BoxFuture<'b, Result<(), String>>,
{
    f
}

async fn insert(tx: &mut sqlx::PgConnection, tenant: uuid::Uuid) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (id, tenant_id, type, data, created_at) VALUES ($1, $2, 'stock.changed', '{}', 0)",
    )
    .bind(id)
    .bind(tenant)
    .execute(tx)
    .await
    .unwrap();
    id
}

/// A fresh PostgreSQL database, its store, and a pool of its own for the test's transactions.
async fn fresh(
    prefix: &str,
) -> Option<(
    FreshDb,
    std::sync::Arc<dyn savdo_storage::Storage>,
    sqlx::PgPool,
)> {
    let db = FreshDb::new(Backend::Postgres, prefix).await?;
    let store = db.store().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .unwrap();
    Some((db, store, pool))
}

/// The ids of every published event, in publishing order.
async fn published_ids(store: &std::sync::Arc<dyn savdo_storage::Storage>) -> Vec<uuid::Uuid> {
    store
        .published_after(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test]
async fn an_event_committed_after_later_ones_were_published_is_published_once() {
    let Some((db, store, pool)) = fresh("outbox_late_commit").await else {
        return;
    };
    let tenant = uuid::Uuid::now_v7();

    // The slow transaction takes the first outbox number and stays open.
    let mut slow = pool.begin().await.unwrap();
    let late = insert(&mut slow, tenant).await;
    let mut published = Vec::new();
    for _ in 0..3 {
        let mut c = pool.acquire().await.unwrap();
        let id = insert(&mut c, tenant).await;
        drop(c);
        let r = store.relay(100, &accept).await.unwrap();
        assert_eq!(
            r.numbered.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![id],
            "each committed event is published in its round"
        );
        published.push(id);
    }
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        0,
        "the open one is not visible yet"
    );

    // A transaction whose first write is its event, committed before the slow one.
    let mut other = pool.begin().await.unwrap();
    let second = insert(&mut other, tenant).await;
    other.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    slow.commit().await.unwrap();

    let r = store.relay(100, &accept).await.unwrap();
    let mut got: Vec<uuid::Uuid> = r.numbered.iter().map(|e| e.id).collect();
    got.sort();
    let mut want = vec![late, second];
    want.sort();
    assert_eq!(got, want, "the late event and the one after it");
    assert_eq!(store.relay(100, &accept).await.unwrap().published, 0);
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);

    let all = published_ids(&store).await;
    assert_eq!(all.len(), 5, "every event numbered once: {all:?}");
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 5);
    // Past the slow transaction once a round comes after it has finished.
    let late_txid: i64 = sqlx::query_scalar("SELECT txid FROM outbox WHERE id = $1")
        .bind(late)
        .fetch_one(&pool)
        .await
        .unwrap();
    // The oldest running transaction is the whole cluster's: one of a test running beside this
    // one can hold the floor back for a round, so rounds go on (bounded) until it has risen.
    let mut risen = None;
    for _ in 0..ROUNDS {
        let mut c = pool.acquire().await.unwrap();
        insert(&mut c, tenant).await;
        drop(c);
        tokio::time::sleep(FLOOR_DUE).await;
        assert_eq!(store.relay(100, &accept).await.unwrap().published, 1);
        let floor = floor(&pool).await;
        if floor > late_txid {
            risen = Some(floor);
            break;
        }
    }
    assert!(
        risen.is_some(),
        "the relay's floor rose past the finished transactions ({late_txid}) within {ROUNDS} rounds"
    );
    pool.close().await;
    db.drop_db().await;
}

/// Under steady load some transaction commits its events while every round publishes. The
/// floor still rises: to the oldest row not numbered yet, when that is below the oldest running
/// transaction (it used to wait for no such row at all, and stayed where it was for as long as
/// the load lasted, every round reading a longer stretch of the outbox).
#[tokio::test]
async fn the_floor_rises_while_events_commit_during_every_round() {
    let Some((db, store, pool)) = fresh("outbox_floor_load").await else {
        return;
    };
    let tenant = uuid::Uuid::now_v7();
    let txid_of = |id: uuid::Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT txid FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    let mut c = pool.acquire().await.unwrap();
    let mut previous = insert(&mut c, tenant).await;
    drop(c);
    let mut published = vec![previous];
    // The oldest running transaction is the whole cluster's: one of a test running beside this
    // one can hold the floor back for a round. It must never pass a waiting event, and must
    // pass the numbered one in most rounds (under the old rule it never moved).
    let mut passed = 0;
    for round in 0..ROUNDS {
        // Each round's publishing is when the next event commits (a batch landing meanwhile).
        let committed_meanwhile = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (p, seen) = (pool.clone(), committed_meanwhile.clone());
        let publish = publisher(move |_| {
            let (pool, seen) = (p.clone(), seen.clone());
            Box::pin(async move {
                let mut c = pool.acquire().await.unwrap();
                let id = insert(&mut c, tenant).await;
                *seen.lock().unwrap() = Some(id);
                Ok(())
            })
        });
        tokio::time::sleep(FLOOR_DUE).await;
        let r = store.relay(100, &publish).await.unwrap();
        assert_eq!(
            r.numbered.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![previous],
            "round {round} published the event committed before it"
        );
        let meanwhile = committed_meanwhile.lock().unwrap().expect("published once");
        let floor = floor(&pool).await;
        let (done, waiting) = (txid_of(previous).await, txid_of(meanwhile).await);
        assert!(
            floor <= waiting,
            "round {round}: the floor ({floor}) passed the waiting event ({waiting})"
        );
        if floor > done {
            passed += 1;
        }
        previous = meanwhile;
        published.push(meanwhile);
        if passed == 3 {
            break;
        }
    }
    assert_eq!(
        passed, 3,
        "the floor passed the numbered event in 3 rounds of {ROUNDS}"
    );
    assert_eq!(store.relay(100, &accept).await.unwrap().published, 1);
    let all = published_ids(&store).await;
    assert_eq!(all, published, "each event numbered once, in order");
    pool.close().await;
    db.drop_db().await;
}
