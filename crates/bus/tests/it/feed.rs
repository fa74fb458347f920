//! In-process consumers read what this process's relay just published from memory, and the
//! outbox for the rest: whichever it is, every event once, in publishing order.

use std::sync::Arc;
use std::time::Duration;

use savdo_bus::{Bus, Consumer, ConsumerRunner, relay};
use savdo_domain::clock::SystemClock;
use tokio::sync::watch;

use crate::backend_tests;
use crate::common::{Behaviour, Db, Recorder, eventually, products, shop};

backend_tests!(consumers_get_every_event_once_in_order_from_the_feed_and_the_outbox);

async fn consumers_get_every_event_once_in_order_from_the_feed_and_the_outbox(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Feed shop").await;
    let start = store.last_pub_seq().await.unwrap();

    // Published by a relay in another process before ours starts: only the outbox has them.
    products(&store, &shop, "A", 12).await;
    let elsewhere = Bus::in_process();
    relay::drain(&store, &elsewhere).await.unwrap();

    let bus = Bus::in_process();
    let Bus::InProcess { feed, .. } = &bus else {
        unreachable!()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let relay_task = tokio::spawn(relay::run(store.clone(), bus.clone(), stop_rx.clone()));
    let mut rec = Recorder::new("feed-test", Behaviour::Succeed);
    Arc::get_mut(&mut rec).unwrap().tenant = Some(shop.tenant);
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let consumers: Vec<Arc<dyn Consumer>> = vec![rec.clone()];
    let handles = runner.spawn(bus.clone(), consumers, stop_rx.clone());

    // Ours publishes these; now and then the other relay takes some first, leaving gaps in
    // our feed that only the outbox fills.
    for round in 0..6 {
        products(&store, &shop, &format!("B{round}"), 8).await;
        if round % 2 == 1 {
            relay::drain(&store, &elsewhere).await.unwrap();
        }
    }
    let all = db.outbox_ids(shop.tenant).await;
    assert!(all.len() >= 12 + 6 * 8, "at least the products' events");
    let n = all.len();
    eventually(Duration::from_secs(20), "every event applied", || {
        let rec = rec.clone();
        let store = store.clone();
        async move { rec.applied_ids().len() >= n && store.outbox_backlog().await.unwrap() == 0 }
    })
    .await;
    // Give a wrongly repeated event time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let _ = relay_task.await;
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }

    rec.assert_applied_once(&all);
    let published: Vec<uuid::Uuid> = store
        .published_after(start, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.tenant_id == shop.tenant)
        .map(|e| e.id)
        .collect();
    assert_eq!(rec.applied_ids(), published, "applied in publishing order");

    // What our relay numbered is in memory, exactly as the outbox has it.
    let last = store.last_pub_seq().await.unwrap();
    let mut from_memory = 0;
    for pos in start..last {
        let Some(p) = feed.after(pos, 1).pop() else {
            continue;
        };
        let row = store.published_after(pos, 1).await.unwrap().remove(0);
        assert_eq!(
            (p.seq, p.event.id, &p.event.kind, &p.event.data),
            (row.seq, row.id, &row.kind, &row.data)
        );
        from_memory += 1;
    }
    assert!(from_memory > 0, "our relay's events were kept in memory");
    assert!(
        from_memory < published.len(),
        "the other relay's events were not"
    );
}
