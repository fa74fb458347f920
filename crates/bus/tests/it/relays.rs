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
