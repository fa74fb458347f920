//! `events`: receipt commit → consumer latency through the real outbox relay and
//! `ConsumerRunner`, and relay throughput (fill the outbox, time `relay::drain`), on the
//! in-process bus or NATS JetStream. On NATS it also shows what pipelined acks are worth: the
//! relay publishing one event at a time (each ack awaited) against the shipped batch, and bare
//! JetStream publishing both ways without the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use futures::future::BoxFuture;
use savdo_bus::{Bus, Consumer, ConsumerRunner, HandleError, relay};
use savdo_domain::clock::SystemClock;
use savdo_domain::event::CloudEvent;
use savdo_storage::{Actor, OutboxEvent, ProductFields, Storage};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::raw::Rng;
use crate::setup::{self, Backend, Fixture, FreshDb};
use crate::stats::{self, Latency, MachineInfo, histogram, record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Inproc,
    Nats,
}

#[derive(clap::Args, Debug, Clone)]
pub struct EventsArgs {
    #[arg(long, value_enum, default_value = "inproc")]
    pub bus: BusKind,
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    #[arg(long, env = "SAVDO_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(
        long,
        env = "SAVDO_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Receipts per second submitted through `Storage::submit_receipt` for the latency run.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Events put in the outbox for the relay throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub relay_events: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputResult {
    pub label: String,
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
}

impl ThroughputResult {
    fn line(&self) -> String {
        format!(
            "{:<46} {:>9.0} events/s  ({} in {:.2} s)",
            self.label, self.events_per_s, self.events, self.seconds
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventsReport {
    pub benchmark: &'static str,
    pub bus: BusKind,
    pub backend: Backend,
    pub machine: MachineInfo,
    pub offered_receipts_per_s: f64,
    pub receipts: u64,
    /// Receipt commit (`submit_receipt` returned) to the consumer's `handle`.
    pub commit_to_consumer: Latency,
    pub undelivered: u64,
    pub relay: Vec<ThroughputResult>,
}

/// Records when each receipt's `receipt.created` event reached it.
struct Recorder {
    name: String,
    tenant: Uuid,
    seen: Mutex<HashMap<Uuid, Instant>>,
}

#[async_trait]
impl Consumer for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn accepts(&self, event_type: &str) -> bool {
        event_type == "receipt.created"
    }
    async fn handle(&self, event: &CloudEvent, _attempt: u32) -> Result<(), HandleError> {
        let now = Instant::now();
        if event.tenantid == self.tenant
            && let Some(id) = event.data["id"].as_str().and_then(|s| s.parse().ok())
        {
            self.seen
                .lock()
                .expect("recorder lock")
                .entry(id)
                .or_insert(now);
        }
        Ok(())
    }
}

async fn make_bus(kind: BusKind, url: &str) -> anyhow::Result<Bus> {
    Ok(match kind {
        BusKind::Inproc => Bus::in_process(),
        BusKind::Nats => Bus::nats(url)
            .await
            .with_context(|| format!("NATS at {url} (set SAVDO_BENCH_NATS_URL)"))?,
    })
}

/// On NATS, create the consumer's durable ourselves first: only new messages of our tenant,
/// so the stream's history (other runs, tests) is not replayed into the measurement.
async fn prepare_durable(bus: &Bus, name: &str, tenant: Uuid) -> anyhow::Result<()> {
    if let Bus::Nats(n) = bus {
        use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
        let stream = n.context().get_stream(savdo_bus::nats::STREAM).await?;
        let durable = name.replace(['.', ' ', '*', '>'], "_");
        stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(60),
                    deliver_policy: DeliverPolicy::New,
                    filter_subject: format!("savdo.{tenant}.>"),
                    inactive_threshold: Duration::from_secs(300),
                    ..Default::default()
                },
            )
            .await?;
    }
    Ok(())
}

async fn remove_durable(bus: &Bus, name: &str) {
    if let Bus::Nats(n) = bus
        && let Ok(stream) = n.context().get_stream(savdo_bus::nats::STREAM).await
    {
        let _ = stream
            .delete_consumer(&name.replace(['.', ' ', '*', '>'], "_"))
            .await;
    }
}

pub async fn run(a: EventsArgs) -> anyhow::Result<()> {
    let machine = MachineInfo::now();
    if !a.json {
        println!("events on the {:?} bus, {:?} storage", a.bus, a.backend);
        println!("{}", machine.line());
    }
    let db = FreshDb::new(a.backend, a.database_url.as_deref()).await?;
    let out = run_in(&a, &db, machine).await;
    db.drop_db().await;
    let report = out?;
    stats::emit_json(a.json, &report)
}

async fn run_in(
    a: &EventsArgs,
    db: &FreshDb,
    machine: MachineInfo,
) -> anyhow::Result<EventsReport> {
    let store = savdo_storage::connect(&db.url).await?;
    store.migrate().await?;
    let fx = Arc::new(setup::seed_storage(&store, 4, false).await?);
    let bus = make_bus(a.bus, &a.nats_url).await?;
    // Publish the seeding events before measuring.
    relay::drain(&store, &bus).await?;

    // --- latency: receipts at a steady rate, relay and consumer running ---
    let name = format!(
        "bench-latency-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    prepare_durable(&bus, &name, fx.tenant_id).await?;
    let recorder = Arc::new(Recorder {
        name: name.clone(),
        tenant: fx.tenant_id,
        seen: Mutex::new(HashMap::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = ConsumerRunner::new(store.clone(), Arc::new(SystemClock));
    // The in-process consumer starts from the outbox's head, not from the seeding events.
    if a.bus == BusKind::Inproc {
        let head = store.last_pub_seq().await?;
        store.save_consumer_position(&name, head).await?;
    }
    let mut tasks = vec![tokio::spawn(relay::run(
        store.clone(),
        bus.clone(),
        stop_rx.clone(),
    ))];
    tasks.extend(runner.spawn(
        bus.clone(),
        vec![recorder.clone() as Arc<dyn Consumer>],
        stop_rx.clone(),
    ));

    let committed = produce(&store, &fx, a.rate, Duration::from_secs(a.duration)).await?;
    // Let the tail arrive (bounded).
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if recorder.seen.lock().expect("recorder lock").len() >= committed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    remove_durable(&bus, &name).await;
    let mut h = histogram();
    let mut undelivered = 0;
    {
        let seen = recorder.seen.lock().expect("recorder lock");
        for (id, at) in &committed {
            match seen.get(id) {
                Some(r) => record(&mut h, r.saturating_duration_since(*at)),
                None => undelivered += 1,
            }
        }
    }
    let latency = Latency::of(&h);
    if !a.json {
        println!(
            "commit -> consumer at {:.0} receipts/s: {}{}",
            a.rate,
            latency.line(),
            if undelivered > 0 {
                format!(", {undelivered} NOT DELIVERED within 10 s")
            } else {
                String::new()
            }
        );
    }

    // --- relay throughput ---
    let mut relay_results = Vec::new();
    let r = relay_throughput(
        &store,
        &fx,
        a.relay_events,
        "relay drain (shipped: pipelined batch)",
        |evs| {
            let bus = bus.clone();
            Box::pin(async move { bus.publish(evs).await })
        },
    )
    .await?;
    if !a.json {
        println!("{}", r.line());
    }
    relay_results.push(r);
    if let Bus::Nats(n) = &bus {
        let js = n.context().clone();
        let r = relay_throughput(
            &store,
            &fx,
            a.relay_events.min(5_000),
            "relay drain, one publish at a time",
            move |evs| {
                let js = js.clone();
                Box::pin(async move {
                    publish_one_by_one(&js, evs)
                        .await
                        .map_err(|e| e.to_string())
                })
            },
        )
        .await?;
        if !a.json {
            println!("{}", r.line());
        }
        relay_results.push(r);
        for r in bare_nats(n.context(), a.relay_events).await? {
            if !a.json {
                println!("{}", r.line());
            }
            relay_results.push(r);
        }
    }
    Ok(EventsReport {
        benchmark: "events",
        bus: a.bus,
        backend: a.backend,
        machine,
        offered_receipts_per_s: a.rate,
        receipts: committed.len() as u64,
        commit_to_consumer: latency,
        undelivered,
        relay: relay_results,
    })
}

/// Submit receipts at `rate` for `duration`; returns each receipt's commit time.
async fn produce(
    store: &Arc<dyn Storage>,
    fx: &Arc<Fixture>,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Vec<(Uuid, Instant)>> {
    let actor = Actor::system(fx.tenant_id);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let start = Instant::now();
    let mut rng = Rng::new(9);
    let mut out = Vec::new();
    let mut k = 0u32;
    while start.elapsed() < duration {
        tokio::time::sleep_until((start + interval * k).into()).await;
        k += 1;
        let (_, body) = crate::checkout::receipt_body(fx, fx.terminal_ids[0], &mut rng, false, 0);
        let input: savdo_storage::ReceiptInput = serde_json::from_value(serde_json::json!({
            "id": body["id"], "type": "sale", "refund_of": null, "store_id": body["store_id"],
            "terminal_id": body["terminal_id"], "customer_id": null,
            "lines": body["lines"].as_array().context("lines")?.iter().map(|l| serde_json::json!({
                "product_id": l["product_id"], "qty": l["qty"], "price": null, "discount": null, "marking_codes": []})).collect::<Vec<_>>(),
            "payments": [{"method": "cash", "amount": body["payments"][0]["amount"], "payment_id": null}],
            "sold_at": null, "fiscal": null, "note": null,
        }))?;
        store
            .submit_receipt(&actor, &input, &format!("bench-{k}"))
            .await?;
        out.push((input.id, Instant::now()));
    }
    Ok(out)
}

/// Fill the outbox with `n` events (product upserts, 1,000 per transaction), then time draining
/// it with `publish`.
async fn relay_throughput<F>(
    store: &Arc<dyn Storage>,
    fx: &Fixture,
    n: usize,
    label: &str,
    publish: F,
) -> anyhow::Result<ThroughputResult>
where
    F: for<'b> Fn(&'b [OutboxEvent]) -> BoxFuture<'b, Result<(), String>> + Send + Sync,
{
    let actor = Actor::system(fx.tenant_id);
    let mut made = 0;
    let tag = Uuid::now_v7().simple().to_string();
    while made < n {
        let items: Vec<ProductFields> = (made..(made + 1000).min(n))
            .map(|i| ProductFields {
                sku: format!("R-{}-{i}", &tag[20..]),
                name: format!("Relay {i}"),
                barcodes: Vec::new(),
                price: 100_000,
                vat_percent: 12,
                mxik: None,
                package_code: None,
                unit: 1,
                marked: false,
                active: true,
            })
            .collect();
        made += items.len();
        store.bulk_upsert_products(&actor, &items).await?;
    }
    let started = Instant::now();
    let mut total = 0;
    loop {
        let got = store.relay_batch(relay::BATCH, &publish).await?;
        total += got;
        if got == 0 {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ThroughputResult {
        label: label.to_string(),
        events: total,
        seconds,
        events_per_s: total as f64 / seconds,
    })
}

async fn publish_one_by_one(
    js: &async_nats::jetstream::Context,
    events: &[OutboxEvent],
) -> anyhow::Result<()> {
    for e in events {
        let payload = serde_json::to_vec(&savdo_bus::envelope(e))?;
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(bytes::Bytes::from(payload))
            .message_id(e.id.to_string());
        js.send_publish(savdo_bus::nats::subject(e), msg)
            .await?
            .await?;
    }
    Ok(())
}

/// JetStream alone, no database: `n` messages one ack at a time, then with up to 256 acks in
/// flight, to a scratch stream deleted afterwards.
async fn bare_nats(
    js: &async_nats::jetstream::Context,
    n: usize,
) -> anyhow::Result<Vec<ThroughputResult>> {
    use async_nats::jetstream::stream;
    let name = format!("SAVDO_BENCH_{}", std::process::id());
    let subject = format!("savdo_bench_{}.x", std::process::id());
    let _ = js.delete_stream(&name).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; 600]);
    let mut out = Vec::new();
    let one = n.min(5_000);
    let started = Instant::now();
    for _ in 0..one {
        js.publish(subject.clone(), payload.clone()).await?.await?;
    }
    let s = started.elapsed().as_secs_f64();
    out.push(ThroughputResult {
        label: "bare JetStream, one ack at a time".into(),
        events: one,
        seconds: s,
        events_per_s: one as f64 / s,
    });
    let started = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for _ in 0..n {
        inflight.push_back(js.publish(subject.clone(), payload.clone()).await?);
        if inflight.len() >= 256 {
            inflight.pop_front().context("in flight")?.await?;
        }
    }
    for a in inflight {
        a.await?;
    }
    let s = started.elapsed().as_secs_f64();
    out.push(ThroughputResult {
        label: "bare JetStream, 256 acks in flight".into(),
        events: n,
        seconds: s,
        events_per_s: n as f64 / s,
    });
    // The same with a Nats-Msg-Id on every message (the relay sets one for deduplication).
    let started = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for _ in 0..n {
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(Uuid::now_v7().to_string());
        inflight.push_back(js.send_publish(subject.clone(), msg).await?);
        if inflight.len() >= 256 {
            inflight.pop_front().context("in flight")?.await?;
        }
    }
    for a in inflight {
        a.await?;
    }
    let s = started.elapsed().as_secs_f64();
    out.push(ThroughputResult {
        label: "bare JetStream, 256 in flight, Nats-Msg-Id".into(),
        events: n,
        seconds: s,
        events_per_s: n as f64 / s,
    });
    let _ = js.delete_stream(&name).await;
    Ok(out)
}
