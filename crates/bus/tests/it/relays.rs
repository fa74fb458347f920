//! Two relays on one database, racing while events keep being written: no row published twice,
//! every row published, each tenant in outbox order, and a reader paging the published feed
//! meanwhile never skips an event.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Db, PublishLog, duplicates, of_tenant, product, recording_publish, shop};

const TENANTS: usize = 3;
const PER_TENANT: usize = 30;

backend_tests!(two_relays_never_publish_a_row_twice);

async fn two_relays_never_publish_a_row_twice(db: &Db) {
    let store = db.store.clone();
    let mut shops = Vec::new();
    for i in 0..TENANTS {
        shops.push(shop(&store, &format!("Race {i}")).await);
    }
    let writing = Arc::new(AtomicBool::new(true));

    let writer = {
        let (store, shops, writing) = (store.clone(), shops.clone(), writing.clone());
        tokio::spawn(async move {
            for i in 0..PER_TENANT {
                for s in &shops {
                    store
                        .create_product(&s.actor, &product(&format!("W-{i}"), 100))
                        .await
                        .unwrap();
                }
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            writing.store(false, Ordering::SeqCst);
        })
    };

    let log: PublishLog = Arc::new(Mutex::new(Vec::new()));
    let per_relay: Arc<Mutex<[usize; 2]>> = Arc::new(Mutex::new([0, 0]));
    let mut relays = Vec::new();
    for r in 0..2usize {
        let (store, log, writing, per_relay) = (
            store.clone(),
            log.clone(),
            writing.clone(),
            per_relay.clone(),
        );
        relays.push(tokio::spawn(async move {
            let publish = recording_publish(log, Duration::from_millis(2 + 3 * r as u64));
            loop {
                let n = store.relay_batch(7, &publish).await.unwrap();
                per_relay.lock().unwrap()[r] += n;
                if n == 0 {
                    if !writing.load(Ordering::SeqCst) && store.outbox_backlog().await.unwrap() == 0
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }

    // A consumer of the published feed pages it all along.
    let reader = {
        let (store, writing) = (store.clone(), writing.clone());
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen: Vec<Uuid> = Vec::new();
            loop {
                let page = store.published_after(cursor, 5).await.unwrap();
                match page.last() {
                    Some(last) => {
                        cursor = last.seq;
                        seen.extend(page.iter().map(|e| e.id));
                    }
                    None => {
                        // Done when everything is published and the cursor is at the head;
                        // anything missing then was skipped.
                        if !writing.load(Ordering::SeqCst)
                            && store.outbox_backlog().await.unwrap() == 0
                            && store.last_pub_seq().await.unwrap() == cursor
                        {
                            return seen;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        })
    };

    tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("writer finished")
        .unwrap();
    for r in relays {
        tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .expect("relay finished")
            .unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader finished")
        .unwrap();

    let log = log.lock().unwrap().clone();
    let counts = *per_relay.lock().unwrap();
    eprintln!("published per relay: {counts:?}");
    let dup = duplicates(log.iter().map(|e| e.0));
    assert!(dup.is_empty(), "published more than once: {dup:?}");
    let mut all = Vec::new();
    for s in &shops {
        let inserted = db.outbox_ids(s.tenant).await;
        assert_eq!(inserted.len(), PER_TENANT);
        assert_eq!(
            of_tenant(&log, s.tenant),
            inserted,
            "tenant {} published out of outbox order",
            s.tenant
        );
        all.extend(inserted);
    }
    assert_eq!(log.len(), all.len(), "every row published");
    assert_eq!(store.outbox_backlog().await.unwrap(), 0);
    let feed = store.published_after(0, 10_000).await.unwrap();
    assert_eq!(feed.len(), all.len());
    assert!(duplicates(feed.iter().map(|e| e.id)).is_empty());

    assert!(duplicates(seen.iter().copied()).is_empty());
    let seen: HashSet<Uuid> = seen.into_iter().collect();
    let skipped: Vec<_> = all.iter().filter(|id| !seen.contains(id)).collect();
    assert!(
        skipped.is_empty(),
        "a reader paging published_after with its cursor skipped {} of {} events \
         (published with a lower sequence after it had read a higher one)",
        skipped.len(),
        all.len()
    );
}

/// Two processes relaying one SQLite file (`savdo serve` next to a `savdo worker`): two stores
/// opened on the same path, each with its own relay, racing while both write. The relays read
/// and publish without the write lock, so both may hand the bus the same event (it
/// deduplicates by id); what must hold is that each row is numbered once, the numbering is
/// dense and in outbox order, and each tenant's events first reach the bus in outbox order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_sqlite_file_number_each_event_once() {
    let db = Db::sqlite().await;
    let crate::common::Raw::Sqlite(raw) = &db.raw else {
        unreachable!("a SQLite database")
    };
    let path = raw.connect_options().get_filename().to_path_buf();
    let other = savdo_storage::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second store on the same file");
    let stores = [db.store.clone(), other];
    let mut shops = Vec::new();
    for i in 0..TENANTS {
        shops.push(shop(&stores[i % 2], &format!("Process {i}")).await);
    }
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (stores, shops, writing) = (stores.clone(), shops.clone(), writing.clone());
        tokio::spawn(async move {
            for round in 0..4 {
                for (i, s) in shops.iter().enumerate() {
                    // A few hundred at once, so the large batch goes out in several chunks.
                    let items: Vec<_> = (0..120)
                        .map(|k| product(&format!("B-{round}-{k}"), 100))
                        .collect();
                    stores[(i + round) % 2]
                        .bulk_upsert_products(&s.actor, &items)
                        .await
                        .unwrap();
                    stores[i % 2]
                        .create_product(&s.actor, &product(&format!("S-{round}"), 100))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            writing.store(false, Ordering::SeqCst);
        })
    };

    let log: PublishLog = Arc::new(Mutex::new(Vec::new()));
    let mut relays = Vec::new();
    for (r, limit) in [(0usize, 7u32), (1, 600)] {
        let (store, log, writing) = (stores[r].clone(), log.clone(), writing.clone());
        relays.push(tokio::spawn(async move {
            let publish = recording_publish(log, Duration::from_millis(1 + 2 * r as u64));
            loop {
                let n = store.relay_batch(limit, &publish).await.unwrap();
                if n == 0 {
                    if !writing.load(Ordering::SeqCst) && store.outbox_backlog().await.unwrap() == 0
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    let reader = {
        let (store, writing) = (stores[0].clone(), writing.clone());
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen: Vec<Uuid> = Vec::new();
            loop {
                let page = store.published_after(cursor, 50).await.unwrap();
                match page.last() {
                    Some(last) => {
                        cursor = last.seq;
                        seen.extend(page.iter().map(|e| e.id));
                    }
                    None => {
                        if !writing.load(Ordering::SeqCst)
                            && store.outbox_backlog().await.unwrap() == 0
                            && store.last_pub_seq().await.unwrap() == cursor
                        {
                            return seen;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        })
    };
    for t in [writer].into_iter().chain(relays) {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("writer and relays finished")
            .unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader finished")
        .unwrap();

    // Every row numbered once: 1..=n in outbox order.
    let numbered: Vec<(i64, Option<i64>)> =
        sqlx::query_as(
            "SELECT o.seq, p.pub_seq FROM outbox o LEFT JOIN outbox_pub p ON p.seq = o.seq ORDER BY o.seq",
        )
            .fetch_all(raw)
            .await
            .unwrap();
    let pub_seqs: Vec<Option<i64>> = numbered.iter().map(|(_, p)| *p).collect();
    let expected: Vec<Option<i64>> = (1..=numbered.len() as i64).map(Some).collect();
    assert_eq!(
        pub_seqs, expected,
        "publishing sequences dense, in outbox order"
    );

    // What reached the bus: every event, each tenant first in outbox order.
    let log = log.lock().unwrap().clone();
    let mut first = Vec::new();
    let mut once = HashSet::new();
    for e in &log {
        if once.insert(e.0) {
            first.push(*e);
        }
    }
    eprintln!(
        "handed to the bus: {} for {} events",
        log.len(),
        first.len()
    );
    assert_eq!(first.len(), numbered.len(), "every row published");
    for s in &shops {
        assert_eq!(
            of_tenant(&first, s.tenant),
            db.outbox_ids(s.tenant).await,
            "tenant {} first published out of outbox order",
            s.tenant
        );
    }
    assert!(duplicates(seen.iter().copied()).is_empty());
    assert_eq!(
        seen.len(),
        numbered.len(),
        "the paging reader saw every event"
    );
}

/// A large batch goes out in chunks, each marked once the bus took it: when a later chunk
/// fails, the chunks before it stay published and the rest waits in the outbox, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failed_chunk_leaves_only_earlier_chunks_marked() {
    let db = Db::sqlite().await;
    let store = db.store.clone();
    let s = shop(&store, "Chunks").await;
    let items: Vec<_> = (0..700).map(|k| product(&format!("C-{k}"), 100)).collect();
    store.bulk_upsert_products(&s.actor, &items).await.unwrap();
    let total = db.outbox_total().await;
    assert!(total > 600);

    let calls = Arc::new(Mutex::new(Vec::<usize>::new()));
    let publish = {
        let calls = calls.clone();
        crate::common::publish_fn(
            move |evs: &[savdo_storage::OutboxEvent]| -> futures::future::BoxFuture<'_, _> {
                let call = {
                    let mut c = calls.lock().unwrap();
                    c.push(evs.len());
                    c.len()
                };
                Box::pin(async move {
                    if call == 2 {
                        Err("bus down".to_string())
                    } else {
                        Ok(())
                    }
                })
            },
        )
    };
    assert!(store.relay_batch(1000, &publish).await.is_err());
    let first_chunk = calls.lock().unwrap()[0] as i64;
    assert!(first_chunk < total, "published in chunks");
    assert_eq!(store.outbox_backlog().await.unwrap(), total - first_chunk);
    let feed = store.published_after(0, 10_000).await.unwrap();
    let outbox = db.outbox_ids(s.tenant).await;
    assert_eq!(
        feed.iter().map(|e| e.id).collect::<Vec<_>>(),
        outbox[..first_chunk as usize].to_vec()
    );

    // The next batch starts where the failed chunk began.
    let log: PublishLog = Arc::new(Mutex::new(Vec::new()));
    let publish = recording_publish(log.clone(), Duration::ZERO);
    while store.relay_batch(1000, &publish).await.unwrap() > 0 {}
    let log = log.lock().unwrap().clone();
    assert_eq!(
        of_tenant(&log, s.tenant),
        outbox[first_chunk as usize..].to_vec()
    );
    let feed = store.published_after(0, 10_000).await.unwrap();
    assert!(feed.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(feed.len() as i64, total);
}
