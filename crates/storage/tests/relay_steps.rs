//! A relay step says whether it stopped at its limit, so the relay runs another step only when
//! something committed before it may still be waiting.

use savdo_testkit::{Backend, FreshDb};

fn accept(
    _: &[savdo_storage::OutboxEvent],
) -> futures_core::future::BoxFuture<'_, Result<(), String>> {
    Box::pin(async { Ok(()) })
}

const INSERT: &str = "INSERT INTO outbox (id, tenant_id, type, data, created_at) VALUES ($1, $2, 'stock.changed', '{}', 0)";

async fn insert_events(url: &str, tenant: uuid::Uuid, n: usize) {
    macro_rules! insert {
        ($pool:ty) => {{
            let pool = <$pool>::connect(url).await.unwrap();
            for _ in 0..n {
                let id = uuid::Uuid::now_v7();
                sqlx::query(INSERT)
                    .bind(id)
                    .bind(tenant)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }};
    }
    if url.starts_with("postgres") {
        insert!(sqlx::PgPool)
    } else {
        insert!(sqlx::SqlitePool)
    }
}

async fn a_step_says_when_it_stopped_at_its_limit(backend: Backend) {
    let Some(db) = FreshDb::new(backend, "relay_steps").await else {
        return;
    };
    let store = db.store().await;
    let tenant = uuid::Uuid::now_v7();
    insert_events(&db.url, tenant, 5).await;

    let first = store.relay(3, &accept).await.unwrap();
    assert_eq!(
        (first.published, first.more),
        (3, true),
        "stopped at the limit"
    );
    let second = store.relay(3, &accept).await.unwrap();
    assert_eq!((second.published, second.more), (2, false), "took the rest");
    let third = store.relay(3, &accept).await.unwrap();
    assert_eq!((third.published, third.more), (0, false));
    db.drop_db().await;
}

#[tokio::test]
async fn sqlite_step_says_when_it_stopped_at_its_limit() {
    a_step_says_when_it_stopped_at_its_limit(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_step_says_when_it_stopped_at_its_limit() {
    a_step_says_when_it_stopped_at_its_limit(Backend::Postgres).await;
}
