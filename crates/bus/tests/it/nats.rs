//! NATS JetStream: subjects, headers and envelope on stream `SAVDO_EVENTS`, deduplication of
//! re-published events, and a durable consumer through `ConsumerRunner::spawn`. The stream is
//! shared with other tests and runs, so everything is looked at through this test's tenant's
//! subjects `savdo.<tenant>.>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use futures::future::BoxFuture;
use savdo_bus::nats::STREAM;
use savdo_bus::{Bus, Consumer, ConsumerRunner, NatsBus, relay};
use savdo_domain::Qty;
use savdo_domain::clock::SystemClock;
use savdo_storage::{NewStockDoc, OutboxEvent, StockDocKind, StockDocLine, Storage};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::common::{
    Behaviour, Db, NATS_ENV, Recorder, env, eventually, product, publish_fn, shop,
};

/// The bus, or `None` (after saying so) without the variable; unreachable when set fails.
async fn nats() -> Option<NatsBus> {
    let Some(url) = env(NATS_ENV) else {
        eprintln!("SKIP nats: {NATS_ENV} is not set");
        return None;
    };
    Some(
        NatsBus::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{NATS_ENV} is set but NATS is unreachable: {e:#}")),
    )
}

/// Every message of the tenant's subjects on the stream, in stream order.
async fn tenant_messages(js: &jetstream::Context, tenant: Uuid) -> Vec<jetstream::Message> {
    let stream = js.get_stream(STREAM).await.expect("stream");
    let mut c = stream
        .create_consumer(pull::Config {
            filter_subject: format!("savdo.{tenant}.>"),
            ack_policy: jetstream::consumer::AckPolicy::None,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("ephemeral consumer");
    let pending = c.info().await.expect("consumer info").num_pending as usize;
    let mut out = Vec::new();
    while out.len() < pending {
        let mut batch = c
            .fetch()
            .max_messages(pending - out.len())
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("fetch");
        let before = out.len();
        while let Some(m) = batch.next().await {
            out.push(m.expect("message"));
        }
        assert!(out.len() > before, "stream stopped delivering");
    }
    let name = c.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    out
}

fn msg_id(m: &jetstream::Message) -> String {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

async fn some_events(store: &Arc<dyn Storage>, actor: &savdo_storage::Actor, store_id: Uuid) {
    for i in 0..4 {
        let p = store
            .create_product(actor, &product(&format!("N-{i}"), 1500))
            .await
            .unwrap();
        store
            .create_stock_doc(
                actor,
                &NewStockDoc {
                    kind: StockDocKind::Supply,
                    store_id,
                    to_store_id: None,
                    note: None,
                    lines: vec![StockDocLine {
                        product_id: p.id,
                        qty: Qty::units(2),
                        cost: Some(900),
                    }],
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_subjects_envelope_and_deduplication() {
    let Some(nats) = nats().await else { return };
    let db = Db::sqlite().await;
    let store = db.store.clone();
    let shop = shop(&store, "NATS shop").await;
    some_events(&store, &shop.actor, shop.store_id).await;
    let bus = Bus::Nats(Box::new(nats.clone()));

    assert_eq!(relay::drain(&store, &bus).await.unwrap(), 8);
    let events = store.events(shop.tenant, 0, &[], 100).await.unwrap();
    assert_eq!(events.len(), 8);

    let msgs = tenant_messages(nats.context(), shop.tenant).await;
    assert_eq!(msgs.len(), 8, "one message per event");
    for (m, e) in msgs.iter().zip(&events) {
        assert_eq!(
            m.subject.as_str(),
            format!("savdo.{}.{}", shop.tenant, e.kind),
            "subject, in outbox order"
        );
        assert_eq!(msg_id(m), e.id.to_string(), "Nats-Msg-Id is the event id");
        let v: Value = serde_json::from_slice(&m.payload).expect("JSON payload");
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], e.id.to_string());
        assert_eq!(v["source"], format!("/savdo/tenants/{}", shop.tenant));
        assert_eq!(v["type"], e.kind);
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["tenantid"], shop.tenant.to_string());
        assert_eq!(v["data"], e.data);
        let time = chrono::DateTime::parse_from_rfc3339(v["time"].as_str().expect("time"))
            .expect("RFC 3339 time");
        assert_eq!(time, e.time);
    }

    // A relay that crashed after publishing and before marking publishes the same events
    // again: JetStream acknowledges them as duplicates and stores nothing new.
    let dups = nats.publish(&events).await.expect("re-publish");
    assert_eq!(
        dups,
        events.len(),
        "every re-published event is a duplicate"
    );

    // The same through the relay: the bus takes the batch, then the relay dies before marking.
    store
        .create_product(&shop.actor, &product("N-late", 1))
        .await
        .unwrap();
    let nats2 = nats.clone();
    let crash = publish_fn(move |evs: &[OutboxEvent]| -> BoxFuture<'_, _> {
        let nats2 = nats2.clone();
        Box::pin(async move {
            nats2.publish(evs).await.map_err(|e| e.to_string())?;
            Err("crashed before marking".to_string())
        })
    });
    assert!(store.relay_batch(100, &crash).await.is_err());
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
    assert_eq!(relay::drain(&store, &bus).await.unwrap(), 1);

    let msgs = tenant_messages(nats.context(), shop.tenant).await;
    let ids: Vec<String> = msgs.iter().map(msg_id).collect();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    assert!(
        per_id.values().all(|n| *n == 1),
        "one message per event id on the stream: {per_id:?}"
    );
    let all = store.events(shop.tenant, 0, &[], 100).await.unwrap();
    assert_eq!(
        ids,
        all.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
        "the stream holds exactly the tenant's events, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_durable_consumer_receives_each_event_once() {
    let Some(nats) = nats().await else { return };
    let db = Db::sqlite().await;
    let store = db.store.clone();
    let shop = shop(&store, "NATS consumer shop").await;
    let bus = Bus::Nats(Box::new(nats.clone()));
    let name = format!("bus_it_{}", Uuid::now_v7().simple());

    // The stream is shared: provision the durable consumer on this tenant's subjects only
    // (the runner opens the existing durable by name).
    let js = nats.context().clone();
    let stream = js.get_stream(STREAM).await.unwrap();
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

    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    let rec = Recorder::new(&name, Behaviour::Succeed);
    let consumers: Vec<Arc<dyn Consumer>> = vec![rec.clone()];
    let (stop_tx, stop_rx) = watch::channel(false);
    let relay_task = tokio::spawn(relay::run(store.clone(), bus.clone(), stop_rx.clone()));
    let handles = runner.spawn(bus.clone(), consumers.clone(), stop_rx.clone());

    some_events(&store, &shop.actor, shop.store_id).await;
    let n = 8;
    eventually(
        Duration::from_secs(15),
        "the durable consumer got all",
        || {
            let rec = rec.clone();
            async move { rec.applied_ids().len() >= n }
        },
    )
    .await;

    // A second publish of the same events (a relay restart) and a consumer restart: nothing
    // arrives twice.
    let events = store.events(shop.tenant, 0, &[], 100).await.unwrap();
    assert_eq!(nats.publish(&events).await.unwrap(), events.len());
    stop_tx.send(true).unwrap();
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles = runner.spawn(bus.clone(), consumers, stop_rx.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), relay_task).await;

    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    rec.assert_applied_once(&ids);
    assert_eq!(rec.calls.lock().unwrap().len(), ids.len());
    let inbox = crate::common::inbox_status(&store, &name).await;
    assert_eq!(inbox.len(), ids.len());
    assert!(inbox.values().all(|s| s == "done"), "{inbox:?}");
    let _ = stream.delete_consumer(&name).await;
}
