//! Consumers that take events in batches without inbox rows (idempotent effects), and events a
//! consumer does not want, which cost no inbox write.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use savdo_bus::{Bus, Consumer, ConsumerRunner, HandleError, relay};
use savdo_domain::clock::SystemClock;
use savdo_domain::event::CloudEvent;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Db, inbox_status, products, shop};

/// Marks products "seen" (an idempotent effect). A batch holding the poisoned product fails as
/// a whole before it applies anything; that product alone is refused for good. With `batched`
/// off it is an ordinary consumer that skips products whose SKU starts with `SKIP`.
struct Marker {
    name: String,
    batched: bool,
    poison: Option<String>,
    batches: Mutex<Vec<usize>>,
    applied: Mutex<Vec<Uuid>>,
    /// Answers `wanted` with an empty list (a buggy override).
    no_answers: bool,
}

impl Marker {
    fn new(batched: bool, poison: Option<&str>) -> Arc<Marker> {
        Arc::new(Marker {
            name: "marker".into(),
            batched,
            poison: poison.map(str::to_owned),
            batches: Mutex::new(Vec::new()),
            applied: Mutex::new(Vec::new()),
            no_answers: false,
        })
    }

    fn poisoned(&self, e: &CloudEvent) -> bool {
        self.poison.as_deref().is_some_and(|p| e.data["sku"] == p)
    }
}

#[async_trait]
impl Consumer for Marker {
    fn name(&self) -> &str {
        &self.name
    }
    fn accepts(&self, event_type: &str) -> bool {
        event_type == "product.created"
    }
    fn batched(&self) -> bool {
        self.batched
    }
    async fn wants(&self, event: &CloudEvent) -> bool {
        !event.data["sku"]
            .as_str()
            .is_some_and(|s| s.starts_with("SKIP"))
    }
    async fn wanted(&self, events: &[&CloudEvent]) -> Vec<bool> {
        if self.no_answers {
            return Vec::new();
        }
        let mut out = Vec::new();
        for e in events {
            out.push(self.wants(e).await);
        }
        out
    }
    async fn handle(&self, event: &CloudEvent, _attempt: u32) -> Result<(), HandleError> {
        if self.poisoned(event) {
            return Err(HandleError::Permanent("poisoned".into()));
        }
        self.applied.lock().unwrap().push(event.id);
        Ok(())
    }
    async fn handle_batch(&self, events: &[&CloudEvent]) -> Result<(), HandleError> {
        self.batches.lock().unwrap().push(events.len());
        if events.iter().any(|e| self.poisoned(e)) {
            return Err(HandleError::Retry("a bad event in the batch".into()));
        }
        self.applied
            .lock()
            .unwrap()
            .extend(events.iter().map(|e| e.id));
        Ok(())
    }
}

async fn product_events(db: &Db) -> Vec<Uuid> {
    db.store
        .published_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "product.created")
        .map(|e| e.id)
        .collect()
}

backend_tests!(
    a_batched_consumer_takes_a_read_at_once_without_inbox_rows,
    a_failed_batch_is_applied_one_by_one_through_the_inbox,
    an_unwanted_event_costs_no_inbox_row,
    an_event_left_unanswered_is_delivered
);

async fn an_event_left_unanswered_is_delivered(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Silent shop").await;
    products(&store, &shop, "SKIP", 5).await;
    relay::drain(&store, &Bus::in_process()).await.unwrap();
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let mut marker = Marker::new(false, None);
    Arc::get_mut(&mut marker).unwrap().no_answers = true;
    while runner.poll_outbox(marker.as_ref()).await.unwrap() > 0 {}

    let mut applied = marker.applied.lock().unwrap().clone();
    let mut want = product_events(db).await;
    applied.sort();
    want.sort();
    assert_eq!(applied, want, "no answer is not a no");
}

async fn a_batched_consumer_takes_a_read_at_once_without_inbox_rows(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Batch shop").await;
    products(&store, &shop, "A", 40).await;
    relay::drain(&store, &Bus::in_process()).await.unwrap();
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let marker = Marker::new(true, None);
    while runner.poll_outbox(marker.as_ref()).await.unwrap() > 0 {}

    assert_eq!(
        *marker.batches.lock().unwrap(),
        vec![40],
        "one call for the read"
    );
    let mut applied = marker.applied.lock().unwrap().clone();
    let mut want = product_events(db).await;
    applied.sort();
    want.sort();
    assert_eq!(applied, want);
    assert!(inbox_status(&store, "marker").await.is_empty());
    // Read again from the saved position: nothing is handed over twice.
    assert_eq!(runner.poll_outbox(marker.as_ref()).await.unwrap(), 0);
    assert_eq!(marker.batches.lock().unwrap().len(), 1);
}

async fn a_failed_batch_is_applied_one_by_one_through_the_inbox(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Poisoned shop").await;
    products(&store, &shop, "B", 10).await;
    relay::drain(&store, &Bus::in_process()).await.unwrap();
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let marker = Marker::new(true, Some("B-3"));
    while runner.poll_outbox(marker.as_ref()).await.unwrap() > 0 {}

    let events = store.published_after(0, 1000).await.unwrap();
    let poisoned = events
        .iter()
        .find(|e| e.kind == "product.created" && e.data["sku"] == "B-3")
        .unwrap()
        .id;
    let all = product_events(db).await;
    let applied = marker.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 9, "the failed batch applied nothing itself");
    assert_eq!(applied.iter().collect::<HashSet<_>>().len(), 9);
    assert!(!applied.contains(&poisoned));
    let inbox = inbox_status(&store, "marker").await;
    assert_eq!(inbox.len(), 10, "one by one, through the inbox");
    assert_eq!(inbox[&poisoned], "dead");
    for id in all.iter().filter(|id| **id != poisoned) {
        assert_eq!(inbox[id], "done");
    }
}

async fn an_unwanted_event_costs_no_inbox_row(db: &Db) {
    let store = db.store.clone();
    let shop = shop(&store, "Picky shop").await;
    products(&store, &shop, "KEEP", 4).await;
    products(&store, &shop, "SKIP", 6).await;
    relay::drain(&store, &Bus::in_process()).await.unwrap();
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let marker = Marker::new(false, None);
    while runner.poll_outbox(marker.as_ref()).await.unwrap() > 0 {}

    let events = store.published_after(0, 1000).await.unwrap();
    let kept: HashSet<Uuid> = events
        .iter()
        .filter(|e| {
            e.kind == "product.created"
                && e.data["sku"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("KEEP"))
        })
        .map(|e| e.id)
        .collect();
    assert_eq!(kept.len(), 4);
    let applied: HashSet<Uuid> = marker.applied.lock().unwrap().iter().copied().collect();
    assert_eq!(applied, kept);
    let inbox = inbox_status(&store, "marker").await;
    assert_eq!(inbox.keys().copied().collect::<HashSet<_>>(), kept);
}

/// Through NATS: whatever a fetch has already delivered goes in one call, acknowledged after
/// it; every event arrives, and no inbox row is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_batched_consumer_gets_every_event_without_inbox_rows() {
    use async_nats::jetstream::{self, consumer::pull};
    use std::time::Duration;

    let Some(url) = crate::common::env(crate::common::NATS_ENV) else {
        eprintln!("SKIP nats: {} is not set", crate::common::NATS_ENV);
        return;
    };
    let nats = savdo_bus::NatsBus::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("NATS is set but unreachable: {e:#}"));
    let db = Db::sqlite().await;
    let store = db.store.clone();
    let shop = shop(&store, "NATS batch shop").await;
    let name = format!("bus_batch_{}", Uuid::now_v7().simple());
    let stream = nats
        .context()
        .get_stream(savdo_bus::nats::STREAM)
        .await
        .unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("savdo.{}.>", shop.tenant),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let marker = Arc::new(Marker {
        name: name.clone(),
        batched: true,
        poison: None,
        batches: Mutex::new(Vec::new()),
        applied: Mutex::new(Vec::new()),
        no_answers: false,
    });
    let bus = Bus::Nats(Box::new(nats.clone()));
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    products(&store, &shop, "N", 60).await;
    relay::drain(&store, &bus).await.unwrap();
    let want: HashSet<Uuid> = store
        .events(shop.tenant, 0, &[], 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "product.created")
        .map(|e| e.id)
        .collect();
    assert_eq!(want.len(), 60);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let consumers: Vec<Arc<dyn Consumer>> = vec![marker.clone()];
    let handles = runner.spawn(bus, consumers, stop_rx);
    crate::common::eventually(Duration::from_secs(20), "every product event", || {
        let marker = marker.clone();
        let want = want.clone();
        async move {
            let got: HashSet<Uuid> = marker.applied.lock().unwrap().iter().copied().collect();
            got == want
        }
    })
    .await;
    stop_tx.send(true).unwrap();
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    let batches = marker.batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        marker.applied.lock().unwrap().len()
    );
    assert!(inbox_status(&store, &name).await.is_empty());
    let _ = stream.delete_consumer(&name).await;
}
