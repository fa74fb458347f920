//! Effects that must land however long their outside service is away: fiscal registration
//! through a real in-process `savdo-fiscal` gateway (the `fiscal` consumer's endless retries and
//! the reconciliation pass), and the re-check of marking codes sold offline against the Asl
//! Belgisi simulator (the periodic pass after the consumer gave up). Time moves on test clocks;
//! SQLite always, PostgreSQL when `SAVDO_TEST_DATABASE_URL` is set.

// Money is written as sums and tiyin: `5_000_00` is 5 000.00 UZS.
#![allow(clippy::inconsistent_digit_grouping)]

#[path = "it/common/mod.rs"]
#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use savdo_api::AppState;
use savdo_bus::{Bus, ConsumerRunner, relay};
use savdo_connectors::aslbelgisi::{self, SingleMarkingCheck};
use savdo_connectors::fiscal_gateway::{FiscalClient, FiscalConsumer, to_gateway};
use savdo_connectors::fiscal_reconcile::{FiscalReconcile, ReconcileConfig, Round};
use savdo_connectors::marking_recheck::MarkingRecheck;
use savdo_connectors::marking_reconcile::{MarkingReconcile, MarkingReconcileConfig};
use savdo_domain::clock::{Clock, ManualClock};
use savdo_domain::marking::MarkingCode;
use savdo_fiscal::{Config, DeviceConfig, DriverConfig, RunningGateway};
use savdo_hub::{HttpHub, MarkingCheck, NullSink, Registry};
use savdo_storage::Receipt;
use savdo_storage::fiscal::{FiscalStatus, ReceiptFiscal};
use serde_json::{Value, json};
use uuid::Uuid;

use common::{Srv, uuid};

backend_tests!(
    unsettled_list_follows_the_fiscal_state,
    gateway_down_past_the_old_window,
    reconcile_after_dead_letter,
    queued_on_an_offline_device,
    device_refusals_end_failed_after_their_window,
    reconcile_shared_by_two_workers,
    marking_recheck_after_the_consumer_gave_up,
);

const DEVICE: &str = "till-1";
const PRICE: i64 = 5_000_00;

// ------------------------------------------------------------------------------- fiscal

fn gateway_config(
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
    driver: &DriverConfig,
    answer_wait_ms: u64,
) -> Config {
    Config {
        listen,
        grpc_listen: None,
        data_dir: dir.to_path_buf(),
        answer_wait_ms,
        retry_initial_ms: 50,
        retry_max_ms: 500,
        devices: vec![DeviceConfig {
            id: DEVICE.into(),
            driver: driver.clone(),
        }],
    }
}

fn virtual_device() -> DriverConfig {
    DriverConfig::Virtual {
        terminal_id: "UZ170703100189".into(),
    }
}

/// A tenant with a till wired to a gateway; the worker half driven by hand on a test clock.
struct Fx {
    srv: Srv,
    gw: Option<RunningGateway>,
    gw_addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    driver: DriverConfig,
    answer_wait_ms: u64,
    store_id: Uuid,
    term: Uuid,
    bread: Uuid,
    bus: Bus,
    runner: ConsumerRunner,
    clock: Arc<ManualClock>,
    consumer: FiscalConsumer,
    http: reqwest::Client,
}

impl Fx {
    async fn new(srv: Srv) -> Fx {
        Fx::with_device(srv, virtual_device(), 5_000).await
    }

    async fn with_device(srv: Srv, driver: DriverConfig, answer_wait_ms: u64) -> Fx {
        let dir = tempfile::tempdir().expect("gateway dir");
        let listen = "127.0.0.1:0".parse().unwrap();
        let gw = savdo_fiscal::start(gateway_config(dir.path(), listen, &driver, answer_wait_ms))
            .await
            .expect("gateway");
        let (store_id, term) = srv.shop().await;
        let r = srv
            .post(
                "/api/v1/products",
                json!({"sku": "BREAD", "name": "Non", "price": PRICE, "vat_percent": 12,
                       "mxik": "10202001001000000", "package_code": "1508583", "unit": 1}),
            )
            .await;
        r.ok(201);
        let bread = r.id();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let runner = ConsumerRunner::new(srv.store.clone(), clock.clone());
        let consumer = FiscalConsumer::with(srv.store.clone(), FiscalClient::new(), clock.clone());
        let fx = Fx {
            gw_addr: gw.http_addr,
            gw: Some(gw),
            dir,
            driver,
            answer_wait_ms,
            store_id,
            term,
            bread,
            bus: Bus::in_process(),
            runner,
            clock,
            consumer,
            http: reqwest::Client::new(),
            srv,
        };
        fx.srv
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/terminals/{term}/fiscal"),
                Some(&json!({"gateway_url": fx.gw_url(), "device_id": DEVICE})),
            )
            .await
            .ok(200);
        fx.srv
            .post_empty(&format!("/api/v1/terminals/{term}/shifts/open"))
            .await
            .ok(201);
        fx
    }

    fn gw_url(&self) -> String {
        format!("http://{}", self.gw_addr)
    }

    fn reconcile(&self) -> FiscalReconcile {
        FiscalReconcile::with(
            self.srv.store.clone(),
            FiscalClient::new(),
            self.clock.clone(),
            ReconcileConfig::default(),
        )
    }

    async fn stop_gateway(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
    }

    /// The same gateway (same journal, same address) started again.
    async fn restart_gateway(&mut self) {
        let mut last = None;
        for _ in 0..50 {
            let config = gateway_config(
                self.dir.path(),
                self.gw_addr,
                &self.driver,
                self.answer_wait_ms,
            );
            match savdo_fiscal::start(config).await {
                Ok(gw) => {
                    self.gw = Some(gw);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway did not restart: {last:?}");
    }

    /// Relay the outbox, run the fiscal consumer over it, relay what it emitted.
    async fn pump(&self) {
        self.relay().await;
        self.runner
            .poll_outbox(&self.consumer)
            .await
            .expect("consume");
        self.relay().await;
    }

    async fn relay(&self) {
        relay::drain(&self.srv.store, &self.bus)
            .await
            .expect("relay");
    }

    /// Move the clock by `by` and attempt the parked events that are due.
    async fn retry_after(&self, by: chrono::Duration) -> usize {
        self.clock.advance(by);
        let n = self.runner.retry_due(&self.consumer).await.expect("retry");
        self.relay().await;
        n
    }

    async fn post_sale(&self) -> Uuid {
        let total = 2 * PRICE;
        let body = json!({
            "id": Uuid::now_v7(), "store_id": self.store_id, "terminal_id": self.term,
            "lines": [{"product_id": self.bread, "qty": 2}],
            "payments": [{"method": "cash", "amount": total}],
        });
        let r = self.srv.post("/api/v1/receipts", body).await;
        r.ok(201);
        r.id()
    }

    async fn fiscal(&self, id: Uuid) -> Value {
        self.srv
            .get(&format!("/api/v1/receipts/{id}"))
            .await
            .ok(200)["fiscal"]
            .clone()
    }

    async fn fiscalized(&self, id: Uuid) -> Vec<Value> {
        self.relay().await;
        let r = self
            .srv
            .get("/api/v1/events?types=receipt.fiscalized&limit=500")
            .await;
        r.ok(200)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["data"]["id"] == json!(id))
            .map(|e| e["data"].clone())
            .collect()
    }

    async fn gw_receipt(&self, id: Uuid) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v1/receipts/{id}", self.gw_url()))
            .send()
            .await
            .expect("gateway request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The consumer's inbox entry for the receipt's `receipt.created`.
    async fn inbox(&self, id: Uuid) -> savdo_storage::InboxEntry {
        let created = self
            .srv
            .store
            .events(self.srv.tenant, 0, &["receipt.created".to_string()], 500)
            .await
            .expect("events");
        let event = created
            .iter()
            .find(|e| e.data["id"] == json!(id))
            .expect("receipt.created")
            .id;
        let all = self
            .srv
            .store
            .inbox_entries(FiscalConsumer::NAME, None, 500)
            .await
            .expect("inbox");
        all.into_iter()
            .find(|e| e.event_id == event)
            .unwrap_or_else(|| panic!("no inbox entry for {id}"))
    }

    async fn shutdown(mut self) {
        self.stop_gateway().await;
    }
}

#[track_caller]
fn assert_registered(f: &Value) -> String {
    assert_eq!(f["status"], "registered", "{f}");
    assert!(f["error"].is_null(), "{f}");
    let sign = f["fiscal_sign"].as_str().expect("fiscal sign").to_string();
    assert_eq!(sign.len(), 12, "{f}");
    sign
}

/// Storage keeps the reconciliation list beside the receipt's fiscal state, and its claims
/// are single-winner and tenant-scoped.
async fn unsettled_list_follows_the_fiscal_state(srv: Srv) {
    let fx = Fx::new(srv).await;
    let store = fx.srv.store.clone();
    let tenant = fx.srv.tenant;
    let (a, b) = (fx.post_sale().await, fx.post_sale().await);
    let t0 = chrono::Utc::now();
    let min = chrono::Duration::minutes;
    let pending = ReceiptFiscal::without_data(FiscalStatus::Pending, Some("down".into()), t0);
    store.set_receipt_fiscal(tenant, a, &pending).await.unwrap();
    store.set_receipt_fiscal(tenant, b, &pending).await.unwrap();
    let queued = ReceiptFiscal::without_data(FiscalStatus::Queued, None, t0 + min(1));
    store.set_receipt_fiscal(tenant, a, &queued).await.unwrap();
    let listed = store.fiscal_unsettled(t0 + min(2), t0, 10).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let first = listed.iter().find(|u| u.receipt_id == a).unwrap();
    assert_eq!((first.tenant_id, first.checks), (tenant, 0));
    assert_eq!(
        first.since.timestamp_micros(),
        t0.timestamp_micros(),
        "since it first waited"
    );
    // Too recent for the threshold.
    assert!(
        store
            .fiscal_unsettled(t0, t0 - min(1), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // One claim wins; another tenant cannot claim this tenant's receipt.
    let (other, _) = fx.srv.new_tenant("Other shop").await;
    assert!(
        !store
            .claim_fiscal_check(other, a, t0, t0 + min(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_fiscal_check(tenant, a, t0, t0 + min(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_fiscal_check(tenant, a, t0, t0 + min(5))
            .await
            .unwrap()
    );
    let due: Vec<Uuid> = store
        .fiscal_unsettled(t0, t0, 10)
        .await
        .unwrap()
        .iter()
        .map(|u| u.receipt_id)
        .collect();
    assert_eq!(due, vec![b], "a claimed receipt is not due");
    store
        .fiscal_check_later(tenant, a, t0 + min(10), "still queued")
        .await
        .unwrap();
    assert_eq!(
        store
            .fiscal_unsettled(t0 + min(9), t0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let again = store.fiscal_unsettled(t0 + min(10), t0, 10).await.unwrap();
    assert_eq!(again.iter().find(|u| u.receipt_id == a).unwrap().checks, 1);

    // Settled either way: off the list, nothing left to claim.
    let registered = ReceiptFiscal {
        status: FiscalStatus::Registered,
        terminal_id: Some("UZ170703100189".into()),
        receipt_no: Some(1),
        fiscal_sign: Some("123456789012".into()),
        date_time: Some("20261128120000".into()),
        qr_url: None,
        error: None,
        updated_at: t0 + min(3),
    };
    let u = store
        .set_receipt_fiscal(tenant, a, &registered)
        .await
        .unwrap();
    assert!(u.fiscalized);
    let failed = ReceiptFiscal::without_data(FiscalStatus::Failed, Some("no paper".into()), t0);
    store.set_receipt_fiscal(tenant, b, &failed).await.unwrap();
    assert!(
        store
            .fiscal_unsettled(t0 + min(60), t0 + min(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !store
            .claim_fiscal_check(tenant, a, t0 + min(60), t0 + min(65))
            .await
            .unwrap()
    );
    // A late `pending` cannot bring a registered receipt back onto the list.
    let u = store.set_receipt_fiscal(tenant, a, &pending).await.unwrap();
    assert!(!u.changed);
    assert!(
        store
            .fiscal_unsettled(t0 + min(60), t0 + min(60), 10)
            .await
            .unwrap()
            .is_empty()
    );
    fx.shutdown().await;
}

/// The gateway stays down much longer than the bus's old `max_attempts` window (about two hours
/// over twelve attempts): the consumer keeps the receipt parked, never dead, and registers it
/// once the gateway is back; `receipt.fiscalized` once.
async fn gateway_down_past_the_old_window(srv: Srv) {
    let mut fx = Fx::new(srv).await;
    fx.stop_gateway().await;
    let id = fx.post_sale().await;
    fx.pump().await;
    let f = fx.fiscal(id).await;
    assert_eq!(f["status"], "pending", "{f}");
    assert!(f["error"].as_str().unwrap().contains("unreachable"), "{f}");

    // Two days, an attempt every three hours: sixteen more, all failing, none given up.
    for _ in 0..16 {
        assert_eq!(fx.retry_after(chrono::Duration::hours(3)).await, 1);
    }
    let entry = fx.inbox(id).await;
    assert_eq!(entry.status, "retry", "{entry:?}");
    assert_eq!(entry.attempts, 17);
    // The backoff is capped: the next attempt is at most ten minutes (and jitter) away.
    let next = entry.next_attempt_at.expect("parked");
    assert!(
        next <= fx.clock.now() + chrono::Duration::seconds(750),
        "{next}"
    );
    assert_eq!(fx.fiscal(id).await["status"], "pending");

    fx.restart_gateway().await;
    assert_eq!(fx.retry_after(chrono::Duration::minutes(13)).await, 1);
    let sign = assert_registered(&fx.fiscal(id).await);
    assert_eq!(fx.inbox(id).await.status, "done");
    let ev = fx.fiscalized(id).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["fiscal"]["fiscal_sign"], json!(sign));
    let (status, g) = fx.gw_receipt(id).await;
    assert_eq!((status, g["fiscal_sign"].clone()), (200, json!(sign)));

    // Settled: nothing left for the reconciliation pass, nothing more is emitted.
    fx.clock.advance(chrono::Duration::hours(1));
    assert_eq!(fx.reconcile().run_once().await.unwrap(), Round::default());
    assert_eq!(fx.retry_after(chrono::Duration::hours(3)).await, 0);
    assert_eq!(fx.fiscalized(id).await.len(), 1);
    fx.shutdown().await;
}

/// Receipts whose events the consumer gave up on (dead-lettered, as the old policy did after
/// its attempts) are settled by the reconciliation pass: one the gateway never saw is sent
/// again, one it registered without our learning it is looked up; each `receipt.fiscalized`
/// once, the device registering each once.
async fn reconcile_after_dead_letter(srv: Srv) {
    let mut fx = Fx::new(srv).await;
    fx.stop_gateway().await;
    let unseen = fx.post_sale().await;
    let answer_lost = fx.post_sale().await;
    fx.pump().await;
    for id in [unseen, answer_lost] {
        assert_eq!(fx.fiscal(id).await["status"], "pending");
        // Dead-lettered the way the runner does it after its last attempt.
        let entry = fx.inbox(id).await;
        fx.srv
            .store
            .inbox_fail(FiscalConsumer::NAME, entry.event_id, "gave up", None)
            .await
            .unwrap();
        assert_eq!(fx.inbox(id).await.status, "dead");
    }
    assert_eq!(fx.retry_after(chrono::Duration::hours(3)).await, 0);

    // Still down: the pass finds both, learns nothing, backs off without writing.
    let pass = fx.reconcile();
    let r = pass.run_once().await.unwrap();
    assert_eq!((r.checked, r.later), (2, 2), "{r:?}");
    assert_eq!(pass.run_once().await.unwrap().checked, 0, "backing off");
    assert_eq!(fx.fiscal(unseen).await["status"], "pending");

    // Back. The till's own request for one of them had reached the gateway, its answer lost.
    fx.restart_gateway().await;
    let stored: Receipt = serde_json::from_value(
        fx.srv
            .get(&format!("/api/v1/receipts/{answer_lost}"))
            .await
            .ok(200)
            .clone(),
    )
    .unwrap();
    let direct = FiscalClient::new()
        .register(&fx.gw_url(), &to_gateway(&stored, DEVICE, "owner"))
        .await
        .expect("register directly");
    assert_eq!(fx.gw_receipt(unseen).await.0, 404);

    fx.clock.advance(chrono::Duration::minutes(5));
    let r = pass.run_once().await.unwrap();
    assert_eq!((r.checked, r.registered, r.later), (2, 2, 0), "{r:?}");

    let sign = assert_registered(&fx.fiscal(answer_lost).await);
    assert_eq!(
        Some(sign),
        direct.fiscal_sign,
        "looked up, not registered again"
    );
    let sign = assert_registered(&fx.fiscal(unseen).await);
    let (status, g) = fx.gw_receipt(unseen).await;
    assert_eq!((status, g["fiscal_sign"].clone()), (200, json!(sign)));
    for id in [unseen, answer_lost] {
        assert_eq!(fx.fiscalized(id).await.len(), 1, "{id}");
    }

    // Nothing left; a late redelivery to the consumer changes nothing either.
    fx.clock.advance(chrono::Duration::hours(2));
    assert_eq!(pass.run_once().await.unwrap(), Round::default());
    let created = fx
        .srv
        .store
        .events(fx.srv.tenant, 0, &["receipt.created".to_string()], 100)
        .await
        .unwrap();
    for e in &created {
        savdo_bus::Consumer::handle(&fx.consumer, &savdo_bus::envelope(e), 99)
            .await
            .expect("redelivery");
    }
    for id in [unseen, answer_lost] {
        assert_eq!(fx.fiscalized(id).await.len(), 1, "{id}");
    }
    let x: Value = fx
        .http
        .post(format!("{}/v1/devices/{DEVICE}/reports/x", fx.gw_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        x["totals"]["receipts"], 2,
        "one registration per receipt: {x}"
    );
    fx.shutdown().await;
}

/// The gateway journals the receipt but its device (ATOL, simulated) is offline: answered
/// `queued`. The consumer keeps asking past the old attempts window; its event is then lost
/// (dead-lettered), the device returns and the gateway prints the receipt on its own. The
/// reconciliation pass learns it from the gateway without sending it again: `registered`, one
/// `receipt.fiscalized`, one printed document.
async fn queued_on_an_offline_device(srv: Srv) {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let atol = DriverConfig::Atol {
        url: format!("{}/atol", sandbox.url()),
        timeout_ms: 2_000,
    };
    let fx = Fx::with_device(srv, atol, 300).await;
    let atol_control = |path: &'static str, body: Value| {
        let (http, url) = (fx.http.clone(), sandbox.url());
        async move {
            let r = http
                .post(format!("{url}/_control/atol/{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}");
        }
    };
    atol_control("faults", json!({"down": true})).await;
    let id = fx.post_sale().await;
    fx.pump().await;
    assert_eq!(fx.fiscal(id).await["status"], "queued");
    for _ in 0..13 {
        assert_eq!(fx.retry_after(chrono::Duration::hours(3)).await, 1);
    }
    let entry = fx.inbox(id).await;
    assert_eq!((entry.status.as_str(), entry.attempts), ("retry", 14));
    fx.srv
        .store
        .inbox_fail(FiscalConsumer::NAME, entry.event_id, "gave up", None)
        .await
        .unwrap();

    atol_control("faults", json!({"down": false})).await;
    // The gateway retries its device by itself; wait until it has printed the receipt.
    let mut printed = false;
    for _ in 0..200 {
        if fx.gw_receipt(id).await.1["status"] == "registered" {
            printed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        printed,
        "the gateway registered the receipt once its device was back"
    );
    assert_eq!(
        fx.fiscal(id).await["status"],
        "queued",
        "not known here yet"
    );

    fx.clock.advance(chrono::Duration::minutes(20));
    let r = fx.reconcile().run_once().await.unwrap();
    assert_eq!((r.checked, r.registered), (1, 1), "{r:?}");
    let sign = assert_registered(&fx.fiscal(id).await);
    assert_eq!(fx.fiscalized(id).await.len(), 1);
    let docs: Value = fx
        .http
        .get(format!("{}/_control/atol/printed", sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receipts: Vec<&Value> = docs["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] != "openShift" && d["kind"] != "open_shift")
        .collect();
    assert_eq!(receipts.len(), 1, "printed once: {docs}");
    assert_eq!(receipts[0]["fiscal_sign"], json!(sign));
    fx.shutdown().await;
}

/// A long outage, then a device that refuses the receipt (its shift is closed): the refusal is
/// retried for two hours from the first refusal (the outage before does not shorten it), then
/// the receipt stays `failed` with the device's reason, and the reconciliation pass leaves it.
async fn device_refusals_end_failed_after_their_window(srv: Srv) {
    let mut fx = Fx::new(srv).await;
    fx.srv
        .post_empty(&format!("/api/v1/terminals/{}/shifts/close", fx.term))
        .await
        .ok(200);
    fx.stop_gateway().await;
    let id = fx.post_sale().await;
    fx.pump().await;
    for _ in 0..16 {
        assert_eq!(fx.retry_after(chrono::Duration::hours(3)).await, 1);
    }
    fx.restart_gateway().await;
    assert_eq!(fx.retry_after(chrono::Duration::minutes(13)).await, 1);
    let f = fx.fiscal(id).await;
    assert_eq!(f["status"], "failed", "{f}");
    assert!(f["error"].as_str().unwrap().contains("shift"), "{f}");
    assert_eq!(fx.inbox(id).await.status, "retry", "refused just now");
    assert_eq!(fx.retry_after(chrono::Duration::minutes(70)).await, 1);
    assert_eq!(fx.inbox(id).await.status, "retry", "refused for 70 minutes");
    assert_eq!(fx.retry_after(chrono::Duration::minutes(60)).await, 1);
    assert_eq!(
        fx.inbox(id).await.status,
        "dead",
        "refused for over two hours"
    );
    let f = fx.fiscal(id).await;
    assert_eq!(f["status"], "failed", "{f}");
    assert!(f["error"].as_str().unwrap().contains("shift"), "{f}");
    assert!(fx.fiscalized(id).await.is_empty());
    assert_eq!(fx.reconcile().run_once().await.unwrap(), Round::default());
    fx.shutdown().await;
}

/// Two workers (two processes on one database) run their rounds at the same moment: each
/// receipt is checked by one of them, registered and announced once.
async fn reconcile_shared_by_two_workers(srv: Srv) {
    let mut fx = Fx::new(srv).await;
    fx.stop_gateway().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(fx.post_sale().await);
    }
    fx.pump().await;
    fx.restart_gateway().await;
    fx.clock.advance(chrono::Duration::minutes(20));
    let (a, b) = (fx.reconcile(), fx.reconcile());
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.checked + rb.checked, 4, "{ra:?} {rb:?}");
    assert_eq!(ra.registered + rb.registered, 4, "{ra:?} {rb:?}");
    for id in &ids {
        assert_registered(&fx.fiscal(*id).await);
        assert_eq!(fx.fiscalized(*id).await.len(), 1);
    }
    // The consumer's own retry meets registered receipts: nothing more.
    fx.retry_after(chrono::Duration::hours(1)).await;
    for id in &ids {
        assert_eq!(fx.fiscalized(*id).await.len(), 1);
    }
    fx.shutdown().await;
}

// ------------------------------------------------------------------------------ marking

/// GS1 mod-10 check digit appended to `body`.
fn with_check(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// A DataMatrix code of a fresh GTIN's unit, as a scanner delivers it.
fn dm(gtin: &str) -> String {
    let serial: String = Uuid::new_v4().simple().to_string()[..13].to_string();
    let tail = "dGVzdC1jcnlwdG8tdGFpbC1vZi00NC1jaGFyYWN0ZXJzIQ"[..44].to_string();
    format!("01{gtin}21{serial}\u{1d}91EE06\u{1d}92{tail}")
}

/// Codes sold while Asl Belgisi was down; it stays down past every attempt of the
/// `marking-recheck` consumer (dead-lettered), then returns with one code blocked: the periodic
/// pass re-checks the receipt once and `marking.check_failed` names the blocked code once.
async fn marking_recheck_after_the_consumer_gave_up(srv: Srv) {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut registry = Registry::builtin();
    aslbelgisi::register(&mut registry);
    // The connector's breaker keeps time on the test clock too.
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let hub = HttpHub::new(clock.clone(), Arc::new(NullSink)).unwrap();
    let connector = registry
        .build(
            &hub,
            &srv.tenant.to_string(),
            &Uuid::new_v4().to_string(),
            "aslbelgisi",
            &json!({"api_key": savdo_sandbox::aslbelgisi::DEMO_API_KEY}),
            &json!({"base_url": format!("{}/aslbelgisi", sandbox.url())}),
        )
        .expect("connector");
    let check: Arc<dyn MarkingCheck> = Arc::new(SingleMarkingCheck::new(connector).unwrap());
    // A server whose receipts go through the online check.
    let mut state = AppState::new(
        srv.store.clone(),
        Arc::new(savdo_integrations::VaultHandle::new(
            savdo_hub::Vault::ephemeral().expect("vault"),
        )),
    );
    state.marking = Some(check.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(savdo_api::serve(listener, state, std::future::pending()));
    let mut on = srv.clone();
    on.base = format!("http://{addr}");
    let control = |path: &'static str, body: Value| {
        let (client, url) = (srv.client.clone(), sandbox.url());
        async move {
            let r = client
                .post(format!("{url}/_control/aslbelgisi/{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}");
        }
    };

    let (store, term) = srv.shop().await;
    let n = Uuid::new_v4().as_u128() % 1_000_000_000;
    let ean = with_check(&format!("478{n:09}"));
    let gtin = format!("0{ean}");
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": "CIGS", "name": "Cigarettes", "price": PRICE,
                   "barcodes": [ean], "marked": true}),
        )
        .await;
    r.ok(201);
    let cigs = r.id();
    let (good, bad) = (dm(&gtin), dm(&gtin));
    control("seed", json!({"codes": [{"cis": good}, {"cis": bad}]})).await;
    control("faults", json!({"down": true})).await;
    let r = on
        .post(
            "/api/v1/receipts",
            json!({"id": Uuid::now_v7(), "store_id": store, "terminal_id": term,
                   "lines": [{"product_id": cigs, "qty": 2, "marking_codes": [good, bad]}],
                   "payments": [{"method": "cash", "amount": 2 * PRICE}]}),
        )
        .await;
    let receipt_id = uuid(&r.ok(201).clone()["id"]);
    assert_eq!(
        srv.store
            .pending_marking_checks(srv.tenant, receipt_id)
            .await
            .unwrap()
            .len(),
        2
    );

    // The consumer tries with the bus's policy until it gives up.
    let bus = Bus::in_process();
    let runner = ConsumerRunner::new(srv.store.clone(), clock.clone());
    let consumer = MarkingRecheck::new(srv.store.clone(), check.clone());
    relay::drain(&srv.store, &bus).await.unwrap();
    runner.poll_outbox(&consumer).await.unwrap();
    let mut attempts = 1;
    loop {
        clock.advance(chrono::Duration::hours(3));
        if runner.retry_due(&consumer).await.unwrap() == 0 {
            break;
        }
        attempts += 1;
        assert!(attempts <= 100, "the consumer never gave up");
    }
    let dead = srv
        .store
        .inbox_entries(savdo_connectors::marking_recheck::NAME, Some("dead"), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].attempts, attempts);

    let pass = |clock: Arc<ManualClock>| {
        MarkingReconcile::with(
            srv.store.clone(),
            check.clone(),
            clock,
            MarkingReconcileConfig::default(),
        )
    };
    let (a, b) = (pass(clock.clone()), pass(clock.clone()));
    // Still down: claimed by one of two workers, nothing recorded, backing off.
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!((ra.receipts + rb.receipts, ra.later + rb.later), (1, 1));
    assert_eq!(a.run_once().await.unwrap().receipts, 0, "backing off");

    // Back, with one code blocked meanwhile.
    control("faults", json!({})).await;
    control("status", json!({"cis": bad, "blocked": true})).await;
    clock.advance(chrono::Duration::minutes(2));
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        (ra.receipts + rb.receipts, ra.codes + rb.codes),
        (1, 2),
        "{ra:?} {rb:?}"
    );
    assert!(
        srv.store
            .pending_marking_checks(srv.tenant, receipt_id)
            .await
            .unwrap()
            .is_empty()
    );
    let failed = marking_failures(&srv).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["receipt_id"], json!(receipt_id));
    let codes = failed[0]["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 1, "{codes:?}");
    let bad_label = MarkingCode::parse(&bad).unwrap().label();
    assert_eq!(codes[0]["label"], json!(bad_label));
    assert_eq!(codes[0]["verdict"], "blocked");

    // Done once: later rounds find nothing, and the consumer's own re-check changes nothing.
    clock.advance(chrono::Duration::hours(1));
    assert_eq!(a.run_once().await.unwrap().receipts, 0);
    assert_eq!(consumer.recheck(srv.tenant, receipt_id).await.unwrap(), 0);
    assert_eq!(marking_failures(&srv).await.len(), 1);
    server.abort();
}

async fn marking_failures(srv: &Srv) -> Vec<Value> {
    relay::drain(&srv.store, &Bus::in_process())
        .await
        .expect("relay");
    let r = srv
        .get("/api/v1/events?types=marking.check_failed&limit=100")
        .await;
    r.ok(200)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["data"].clone())
        .collect()
}
