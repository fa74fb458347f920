//! Exactly-once effects across a relay crash and restart and a consumer crash and restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use savdo_bus::{Bus, Consumer, ConsumerRunner, relay};
use savdo_domain::clock::SystemClock;
use savdo_storage::OutboxEvent;
use tokio::sync::watch;

use crate::backend_tests;
use crate::common::{
    Behaviour, Db, PublishLog, Recorder, duplicates, eventually, inbox_status, products,
    publish_fn, recording_publish, shop,
};

backend_tests!(each_event_applied_once_across_relay_and_consumer_crashes);

async fn each_event_applied_once_across_relay_and_consumer_crashes(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Crash shop").await;
    products(&store, &shop, "A", 30).await;

    // The relay publishes a first batch and marks it.
    let log: PublishLog = Arc::new(Mutex::new(Vec::new()));
    let publish = recording_publish(log.clone(), Duration::ZERO);
    assert_eq!(store.relay_batch(10, &publish).await.unwrap(), 10);

    // The relay crashes while publishing the second batch: the bus was handed the events, the
    // outbox never marked them.
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<Vec<uuid::Uuid>>();
    let entered_tx = Mutex::new(Some(entered_tx));
    let crashing = {
        let store = store.clone();
        tokio::spawn(async move {
            let hang = publish_fn(move |evs: &[OutboxEvent]| -> BoxFuture<'_, _> {
                if let Some(tx) = entered_tx.lock().unwrap().take() {
                    let _ = tx.send(evs.iter().map(|e| e.id).collect());
                }
                Box::pin(std::future::pending())
            });
            store.relay_batch(10, &hang).await
        })
    };
    let handed_over = tokio::time::timeout(Duration::from_secs(10), entered_rx)
        .await
        .expect("the relay reached publish")
        .unwrap();
    crashing.abort();
    assert!(crashing.await.unwrap_err().is_cancelled());
    assert_eq!(handed_over.len(), 10);
    assert_eq!(
        store.outbox_backlog().await.unwrap(),
        20,
        "a batch the relay did not mark stays in the outbox"
    );
    let published = store.published_after(0, 1000).await.unwrap();
    assert_eq!(published.len(), 10);
    assert!(published.iter().all(|e| !handed_over.contains(&e.id)));

    // A consumer applies the first few published events and crashes before it saves its
    // position.
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let rec = Recorder::new("crash-test", Behaviour::Succeed);
    for e in &published[..4] {
        runner.process(rec.as_ref(), e).await.unwrap();
    }
    assert_eq!(store.consumer_position("crash-test").await.unwrap(), 0);

    // The relay restarts and runs; the consumer restarts and hangs in the middle of an event:
    // it crashes there.
    let bus = Bus::in_process();
    let (stop_tx, stop_rx) = watch::channel(false);
    let relay_task = tokio::spawn(relay::run(store.clone(), bus.clone(), stop_rx.clone()));
    let victim = db.outbox_ids(shop.tenant).await[17];
    *rec.hang_on.lock().unwrap() = Some(victim);
    let consumers: Vec<Arc<dyn Consumer>> = vec![rec.clone()];
    let handles = runner.spawn(bus.clone(), consumers.clone(), stop_rx.clone());
    tokio::time::timeout(Duration::from_secs(10), rec.entered.notified())
        .await
        .expect("the consumer reached the event it crashes on");
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
    assert!(
        !rec.applied_ids().contains(&victim),
        "the crash happened before the effect"
    );

    // The relay crashes and restarts too, while more events are written.
    products(&store, &shop, "B", 10).await;
    relay_task.abort();
    let _ = relay_task.await;
    let relay_task = tokio::spawn(relay::run(store.clone(), bus.clone(), stop_rx.clone()));
    let handles = runner.spawn(bus.clone(), consumers, stop_rx.clone());
    products(&store, &shop, "C", 10).await;

    let all = db.outbox_ids(shop.tenant).await;
    assert_eq!(all.len(), 50);
    eventually(Duration::from_secs(20), "every event applied", || {
        let rec = rec.clone();
        let store = store.clone();
        async move { rec.applied_ids().len() >= 50 && store.outbox_backlog().await.unwrap() == 0 }
    })
    .await;
    // Give a wrongly redelivered event time to show up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop_tx.send(true).unwrap();
    let _ = relay_task.await;
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }

    rec.assert_applied_once(&all);
    // The events that were applied before the crash were not handled again, nor the others.
    for id in &all {
        let calls = rec.calls_for(*id);
        if *id == victim {
            assert_eq!(
                calls,
                [1, 1],
                "the interrupted event is tried again as attempt 1"
            );
        } else {
            assert_eq!(calls, [1], "event {id} handled {calls:?}");
        }
    }
    let inbox = inbox_status(&store, "crash-test").await;
    assert_eq!(inbox.len(), 50);
    assert!(
        inbox.values().all(|s| s == "done"),
        "inbox not all done: {inbox:?}"
    );
    // Every event was published once in the feed, despite being handed to the bus twice.
    let feed = store.published_after(0, 1000).await.unwrap();
    assert_eq!(feed.len(), 50);
    assert!(duplicates(feed.iter().map(|e| e.id)).is_empty());
    assert_eq!(
        store.consumer_position("crash-test").await.unwrap(),
        store.last_pub_seq().await.unwrap(),
        "the consumer caught up with the feed"
    );
}

backend_tests!(a_consumer_restarted_from_its_saved_position_skips_nothing);

/// `poll_outbox` in rounds, with a consumer that dies after some events of a round: the next
/// round starts from the saved position and the inbox skips what was applied.
async fn a_consumer_restarted_from_its_saved_position_skips_nothing(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Rounds shop").await;
    let bus = Bus::in_process();
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let rec = Recorder::new("rounds", Behaviour::Succeed);

    products(&store, &shop, "R", 5).await;
    relay::drain(&store, &bus).await.unwrap();
    assert_eq!(runner.poll_outbox(rec.as_ref()).await.unwrap(), 5);
    let pos = store.consumer_position("rounds").await.unwrap();
    assert_eq!(pos, store.last_pub_seq().await.unwrap());
    assert_eq!(runner.poll_outbox(rec.as_ref()).await.unwrap(), 0);

    // More events; the consumer applies two of them through its inbox, then crashes before
    // saving its position.
    products(&store, &shop, "S", 6).await;
    relay::drain(&store, &bus).await.unwrap();
    let next = store.published_after(pos, 100).await.unwrap();
    assert_eq!(next.len(), 6);
    for e in &next[..2] {
        runner.process(rec.as_ref(), e).await.unwrap();
    }
    assert_eq!(store.consumer_position("rounds").await.unwrap(), pos);
    assert_eq!(runner.poll_outbox(rec.as_ref()).await.unwrap(), 6);
    rec.assert_applied_once(&db.outbox_ids(shop.tenant).await);
}
