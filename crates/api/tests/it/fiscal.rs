//! Fiscal registration end to end: the server's receipts reach a real in-process `savdo-fiscal`
//! gateway (virtual device) through the outbox relay and the `fiscal` consumer, and come back
//! with `fiscal.status = registered`; the tills' shifts open and close the device's shift.

use std::sync::Arc;
use std::time::Duration;

use savdo_bus::{Bus, Consumer, ConsumerRunner, relay};
use savdo_connectors::fiscal_gateway::{FiscalClient, FiscalConsumer, to_gateway};
use savdo_domain::clock::ManualClock;
use savdo_fiscal::{Config, DeviceConfig, DriverConfig, RunningGateway};
use savdo_storage::Receipt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

backend_tests!(
    sale_and_refund_registered,
    gateway_down_then_back,
    refused_until_the_shift_opens,
    till_fiscalized_and_unconfigured_tills_left_alone,
    marking_codes_become_item_labels,
    shifts_reach_the_device,
    fiscal_config_api,
);

const DEVICE: &str = "till-1";
const FM_TERMINAL: &str = "UZ170703100189";
const PRICE: i64 = 5_000_00;

fn gateway_config(dir: &std::path::Path, listen: std::net::SocketAddr) -> Config {
    Config {
        listen,
        grpc_listen: None,
        data_dir: dir.to_path_buf(),
        answer_wait_ms: 5_000,
        retry_initial_ms: 50,
        retry_max_ms: 500,
        devices: vec![DeviceConfig {
            id: DEVICE.into(),
            driver: DriverConfig::Virtual {
                terminal_id: FM_TERMINAL.into(),
            },
        }],
    }
}

/// A server tenant with a till wired to a running gateway, and the worker half driven by hand.
struct Fx {
    srv: Srv,
    gw: Option<RunningGateway>,
    gw_addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir().expect("gateway dir");
        let gw = savdo_fiscal::start(gateway_config(dir.path(), "127.0.0.1:0".parse().unwrap()))
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
        let consumer = FiscalConsumer::new(srv.store.clone());
        let fx = Fx {
            gw_addr: gw.http_addr,
            gw: Some(gw),
            dir,
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
        fx
    }

    fn gw_url(&self) -> String {
        format!("http://{}", self.gw_addr)
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
            match savdo_fiscal::start(gateway_config(self.dir.path(), self.gw_addr)).await {
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
        relay::drain(&self.srv.store, &self.bus)
            .await
            .expect("relay");
        self.runner
            .poll_outbox(&self.consumer)
            .await
            .expect("consume");
        relay::drain(&self.srv.store, &self.bus)
            .await
            .expect("relay");
    }

    /// Move the runner's clock past any backoff and attempt the parked events.
    async fn retry(&self) -> usize {
        self.clock.advance(chrono::Duration::hours(3));
        let n = self.runner.retry_due(&self.consumer).await.expect("retry");
        relay::drain(&self.srv.store, &self.bus)
            .await
            .expect("relay");
        n
    }

    fn sale(&self, qty: Value) -> Value {
        let m = crate::common::milli(&qty);
        let total =
            savdo_domain::money::line_gross(PRICE, savdo_domain::Qty::from_milli(m)).unwrap();
        json!({
            "id": Uuid::now_v7(), "store_id": self.store_id, "terminal_id": self.term,
            "lines": [{"product_id": self.bread, "qty": qty}],
            "payments": [{"method": "cash", "amount": total - 1_000_00}, {"method": "payme", "amount": 1_000_00}],
        })
    }

    async fn post_receipt(&self, body: &Value) -> Uuid {
        let r = self.srv.post("/api/v1/receipts", body.clone()).await;
        r.ok(201);
        r.id()
    }

    async fn receipt(&self, id: Uuid) -> Value {
        self.srv
            .get(&format!("/api/v1/receipts/{id}"))
            .await
            .ok(200)
            .clone()
    }

    async fn open_shift(&self) -> Value {
        self.srv
            .post_empty(&format!("/api/v1/terminals/{}/shifts/open", self.term))
            .await
            .ok(201)
            .clone()
    }

    async fn close_shift(&self) -> Value {
        self.srv
            .post_empty(&format!("/api/v1/terminals/{}/shifts/close", self.term))
            .await
            .ok(200)
            .clone()
    }

    async fn gw_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.gw_url()))
            .send()
            .await
            .expect("gateway request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Receipts the device registered in its current shift (X report).
    async fn device_receipts(&self) -> u64 {
        let r = self
            .http
            .post(format!("{}/v1/devices/{DEVICE}/reports/x", self.gw_url()))
            .send()
            .await
            .expect("x report");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "registered", "{v}");
        v["totals"]["receipts"].as_u64().unwrap()
    }

    async fn fiscalized_events(&self) -> Vec<Value> {
        let r = self
            .srv
            .get("/api/v1/events?types=receipt.fiscalized&limit=100")
            .await;
        r.ok(200)["items"].as_array().cloned().unwrap_or_default()
    }

    async fn shutdown(mut self) {
        self.stop_gateway().await;
    }
}

#[track_caller]
fn assert_registered(receipt: &Value) -> &Value {
    let f = &receipt["fiscal"];
    assert_eq!(f["status"], "registered", "{receipt}");
    let sign = f["fiscal_sign"].as_str().unwrap();
    assert!(
        sign.len() == 12 && sign.bytes().all(|b| b.is_ascii_digit()),
        "fiscal sign {sign}"
    );
    assert_eq!(f["terminal_id"], FM_TERMINAL);
    let no = f["receipt_no"].as_u64().unwrap();
    let dt = f["date_time"].as_str().unwrap();
    assert!(
        dt.len() == 14 && dt.bytes().all(|b| b.is_ascii_digit()),
        "{dt}"
    );
    assert_eq!(
        f["qr_url"],
        format!("https://ofd.soliq.uz/check?t={FM_TERMINAL}&r={no}&c={dt}&s={sign}")
    );
    assert!(f["error"].is_null(), "{f}");
    assert!(f["updated_at"].is_string(), "{f}");
    f
}

/// The events' items as an array of `data` of the given receipt.
fn events_of(events: &[Value], id: Uuid) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["data"]["id"] == json!(id))
        .map(|e| e["data"].clone())
        .collect()
}

async fn sale_and_refund_registered(srv: Srv) {
    let fx = Fx::new(srv).await;
    assert!(fx.open_shift().await.get("fiscal_warning").is_none());

    let sale = fx.sale(json!(2));
    let id = fx.post_receipt(&sale).await;
    assert!(
        fx.receipt(id).await["fiscal"].is_null(),
        "nothing before the worker runs"
    );
    fx.pump().await;
    let r = fx.receipt(id).await;
    let f = assert_registered(&r).clone();

    // The gateway holds the same registration under our receipt id.
    let (status, g) = fx.gw_get(&format!("/v1/receipts/{id}")).await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["status"], "registered");
    assert_eq!(g["fiscal_sign"], f["fiscal_sign"]);
    assert_eq!(g["total"], json!(2 * PRICE));
    assert_eq!(g["kind"], "sale");

    // One receipt.fiscalized with the receipt and its fiscal data.
    let ev = events_of(&fx.fiscalized_events().await, id);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["fiscal"], f);
    assert_eq!(ev[0]["total"], json!(2 * PRICE));
    assert_eq!(fx.device_receipts().await, 1);

    // Redelivery: the consumer sees the event again (a crash before the inbox update, a second
    // worker) — nothing is registered again and no second event is emitted.
    let created = fx
        .srv
        .store
        .events(fx.srv.tenant, 0, &["receipt.created".to_string()], 100)
        .await
        .unwrap();
    let created = created.iter().find(|e| e.data["id"] == json!(id)).unwrap();
    let envelope = savdo_bus::envelope(created);
    fx.consumer.handle(&envelope, 2).await.expect("redelivery");
    // The gateway itself is idempotent by receipt id: the same request once more answers the
    // stored registration.
    let stored: Receipt = serde_json::from_value(r.clone()).unwrap();
    let again = FiscalClient::new()
        .register(&fx.gw_url(), &to_gateway(&stored, DEVICE, "owner"))
        .await
        .expect("repeat");
    assert_eq!(again.fiscal_sign.as_deref(), f["fiscal_sign"].as_str());
    relay::drain(&fx.srv.store, &fx.bus).await.unwrap();
    assert_eq!(
        fx.device_receipts().await,
        1,
        "one registration per receipt"
    );
    assert_eq!(events_of(&fx.fiscalized_events().await, id).len(), 1);
    assert_eq!(fx.receipt(id).await["fiscal"], f);

    // A refund of half of it, referencing the sale.
    let refund = json!({
        "id": Uuid::now_v7(), "type": "refund", "refund_of": id,
        "store_id": fx.store_id, "terminal_id": fx.term,
        "lines": [{"product_id": fx.bread, "qty": 1}],
        "payments": [{"method": "cash", "amount": PRICE}],
    });
    let rid = fx.post_receipt(&refund).await;
    fx.pump().await;
    let rr = fx.receipt(rid).await;
    let rf = assert_registered(&rr);
    assert_ne!(rf["fiscal_sign"], f["fiscal_sign"]);
    assert!(rf["receipt_no"].as_u64() > f["receipt_no"].as_u64());
    let (_, g) = fx.gw_get(&format!("/v1/receipts/{rid}")).await;
    assert_eq!(g["kind"], "refund");
    assert_eq!(g["status"], "registered");
    assert_eq!(g["total"], json!(PRICE));
    assert_eq!(events_of(&fx.fiscalized_events().await, rid).len(), 1);
    assert_eq!(fx.device_receipts().await, 2);
    fx.shutdown().await;
}

async fn gateway_down_then_back(srv: Srv) {
    let mut fx = Fx::new(srv).await;
    fx.open_shift().await;
    fx.stop_gateway().await;

    // The sale is taken while the gateway is away.
    let a = fx.post_receipt(&fx.sale(json!(1))).await;
    let b = fx.post_receipt(&fx.sale(json!(0.5))).await;
    fx.pump().await;
    for id in [a, b] {
        let f = fx.receipt(id).await["fiscal"].clone();
        assert_eq!(f["status"], "pending", "{f}");
        assert!(f["error"].as_str().unwrap().contains("unreachable"), "{f}");
        assert!(f["fiscal_sign"].is_null());
    }
    // Retried while still down: still pending, nothing lost.
    assert_eq!(fx.retry().await, 2);
    assert_eq!(fx.receipt(a).await["fiscal"]["status"], "pending");
    assert!(fx.fiscalized_events().await.is_empty());

    fx.restart_gateway().await;
    assert_eq!(fx.retry().await, 2);
    for id in [a, b] {
        assert_registered(&fx.receipt(id).await);
        assert_eq!(events_of(&fx.fiscalized_events().await, id).len(), 1);
    }
    // Nothing left to retry, and each receipt registered once.
    assert_eq!(fx.retry().await, 0);
    assert_eq!(fx.device_receipts().await, 2);
    fx.shutdown().await;
}

async fn refused_until_the_shift_opens(srv: Srv) {
    let fx = Fx::new(srv).await;
    // No shift open on the device: it refuses, and the cashier sees why.
    let id = fx.post_receipt(&fx.sale(json!(1))).await;
    fx.pump().await;
    let f = fx.receipt(id).await["fiscal"].clone();
    assert_eq!(f["status"], "failed", "{f}");
    assert!(f["error"].as_str().unwrap().contains("shift"), "{f}");
    assert!(fx.fiscalized_events().await.is_empty());

    // Opening the shift (through Savdo) lets the retry through.
    assert!(fx.open_shift().await.get("fiscal_warning").is_none());
    assert_eq!(fx.retry().await, 1);
    assert_registered(&fx.receipt(id).await);
    assert_eq!(fx.device_receipts().await, 1);

    // A receipt the gateway's rules refuse (no MXIK) is failed for good, with the reason.
    let r = fx
        .srv
        .post(
            "/api/v1/products",
            json!({"sku": "NOMXIK", "name": "Loose", "price": PRICE}),
        )
        .await;
    r.ok(201);
    let loose = r.id();
    let bad = fx
        .post_receipt(&json!({
            "id": Uuid::now_v7(), "store_id": fx.store_id, "terminal_id": fx.term,
            "lines": [{"product_id": loose, "qty": 1}],
            "payments": [{"method": "card", "amount": PRICE}],
        }))
        .await;
    fx.pump().await;
    let f = fx.receipt(bad).await["fiscal"].clone();
    assert_eq!(f["status"], "failed", "{f}");
    assert!(f["error"].as_str().unwrap().contains("mxik"), "{f}");
    assert_eq!(fx.retry().await, 0, "a rule violation is not retried");
    fx.shutdown().await;
}

async fn till_fiscalized_and_unconfigured_tills_left_alone(srv: Srv) {
    let fx = Fx::new(srv).await;
    fx.open_shift().await;
    // The till registered it on its own gateway and sends the fiscal data along.
    let till_fiscal = json!({"status": "registered", "terminal_id": "UZ999", "receipt_no": 7,
        "fiscal_sign": "123456789012", "date_time": "20260101120000",
        "qr_url": "https://ofd.soliq.uz/check?t=UZ999&r=7&c=20260101120000&s=123456789012"});
    let mut body = fx.sale(json!(1));
    body["fiscal"] = till_fiscal.clone();
    let id = fx.post_receipt(&body).await;

    // A till without a fiscal device.
    let other = fx.srv.create_terminal(fx.store_id).await;
    let mut plain = fx.sale(json!(1));
    plain["terminal_id"] = json!(other);
    let pid = fx.post_receipt(&plain).await;
    // And, read in the same batch, one the gateway must register.
    let fid = fx.post_receipt(&fx.sale(json!(1))).await;

    fx.pump().await;
    assert_eq!(fx.receipt(id).await["fiscal"], till_fiscal);
    assert!(fx.receipt(pid).await["fiscal"].is_null());
    assert_eq!(fx.receipt(fid).await["fiscal"]["status"], "registered");
    assert_eq!(fx.gw_get(&format!("/v1/receipts/{id}")).await.0, 404);
    assert_eq!(fx.gw_get(&format!("/v1/receipts/{pid}")).await.0, 404);
    assert_eq!(fx.device_receipts().await, 1);
    assert_eq!(fx.fiscalized_events().await.len(), 1);
    assert_eq!(fx.retry().await, 0);
    // The other two were nothing for the consumer: skipped before its inbox, not a write each.
    let inbox = fx
        .srv
        .store
        .inbox_entries(fx.consumer.name(), None, 100)
        .await
        .unwrap();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].status, "done", "{inbox:?}");

    // Removing the device: later receipts of that till are left alone too.
    fx.srv
        .delete(&format!("/api/v1/terminals/{}/fiscal", fx.term))
        .await
        .ok(204);
    let later = fx.post_receipt(&fx.sale(json!(1))).await;
    fx.pump().await;
    assert!(fx.receipt(later).await["fiscal"].is_null());
    assert_eq!(fx.device_receipts().await, 1);
    fx.shutdown().await;
}

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

async fn marking_codes_become_item_labels(srv: Srv) {
    let fx = Fx::new(srv).await;
    fx.open_shift().await;
    let n = Uuid::new_v4().as_u128() % 1_000_000_000;
    let ean = with_check(&format!("478{n:09}"));
    let gtin = format!("0{ean}");
    let r = fx
        .srv
        .post(
            "/api/v1/products",
            json!({"sku": "CIGS", "name": "Cigarettes", "price": PRICE, "barcodes": [ean],
                   "marked": true, "mxik": "02402001001000000", "package_code": "1512345"}),
        )
        .await;
    r.ok(201);
    let cigs = r.id();
    let tail = &"dGVzdC1jcnlwdG8tdGFpbC1vZi00NC1jaGFyYWN0ZXJzIQ"[..44];
    let codes = [
        format!("01{gtin}21AAAAAAAAAAAAA\u{1d}91EE06\u{1d}92{tail}"),
        format!("01{gtin}21BBBBBBBBBBBBB\u{1d}91EE06\u{1d}92{tail}"),
    ];
    let id = fx
        .post_receipt(&json!({
            "id": Uuid::now_v7(), "store_id": fx.store_id, "terminal_id": fx.term,
            "lines": [{"product_id": cigs, "qty": 2, "marking_codes": codes}],
            "payments": [{"method": "click", "amount": 2 * PRICE}],
        }))
        .await;
    fx.pump().await;
    assert_registered(&fx.receipt(id).await);

    // What reached the gateway, read from its journal.
    let journal = fx.dir.path().join("fiscal-journal.sqlite");
    let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}?mode=ro",
        journal.display()
    ))
    .await
    .expect("journal");
    let body: String = sqlx::query_scalar("SELECT body FROM jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_one(&mut c)
        .await
        .expect("journaled request");
    let body: Value = serde_json::from_str(&body).unwrap();
    let receipt = if body.get("receipt").is_some() {
        &body["receipt"]
    } else {
        &body
    };
    let item = &receipt["items"][0];
    assert_eq!(
        item["labels"],
        json!([
            format!("{gtin}AAAAAAAAAAAAA"),
            format!("{gtin}BBBBBBBBBBBBB")
        ]),
        "{body}"
    );
    assert_eq!(item["mxik"], "02402001001000000");
    assert_eq!(item["package_code"], "1512345");
    assert_eq!(item["qty_milli"], 2000);
    assert_eq!(
        receipt["payments"]["card"],
        json!(2 * PRICE),
        "Click is electronic"
    );
    fx.shutdown().await;
}

async fn shifts_reach_the_device(srv: Srv) {
    let mut fx = Fx::new(srv).await;
    let device = |v: &Value| v["shift_open"].as_bool().unwrap();
    let (_, d) = fx.gw_get(&format!("/v1/devices/{DEVICE}")).await;
    assert!(!device(&d));

    let s = fx.open_shift().await;
    assert!(s.get("fiscal_warning").is_none(), "{s}");
    assert!(s["id"].is_string() && s["opened_at"].is_string(), "{s}");
    let (_, d) = fx.gw_get(&format!("/v1/devices/{DEVICE}")).await;
    assert!(device(&d), "{d}");
    let t = fx.srv.get(&format!("/api/v1/terminals/{}", fx.term)).await;
    assert_eq!(t.ok(200)["open_shift"]["id"], s["id"]);

    let c = fx.close_shift().await;
    assert!(c.get("fiscal_warning").is_none(), "{c}");
    assert!(c["closed_at"].is_string(), "{c}");
    let (_, d) = fx.gw_get(&format!("/v1/devices/{DEVICE}")).await;
    assert!(!device(&d), "{d}");

    // The gateway unreachable: Savdo's shift opens and closes anyway, with a warning.
    fx.stop_gateway().await;
    let s = fx.open_shift().await;
    assert!(
        s["fiscal_warning"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{s}"
    );
    let t = fx.srv.get(&format!("/api/v1/terminals/{}", fx.term)).await;
    assert_eq!(t.ok(200)["open_shift"]["id"], s["id"]);
    let c = fx.close_shift().await;
    assert!(c["fiscal_warning"].is_string(), "{c}");

    // The device refusing (its shift is already open) is a warning too.
    fx.restart_gateway().await;
    let http = reqwest::Client::new();
    http.post(format!("{}/v1/devices/{DEVICE}/shift/open", fx.gw_url()))
        .send()
        .await
        .unwrap();
    let s = fx.open_shift().await;
    assert!(
        s["fiscal_warning"]
            .as_str()
            .unwrap()
            .contains("already open"),
        "{s}"
    );

    // A till without a fiscal device: no warning, nothing on the gateway.
    let other = fx.srv.create_terminal(fx.store_id).await;
    let s = fx
        .srv
        .post_empty(&format!("/api/v1/terminals/{other}/shifts/open"))
        .await;
    assert!(s.ok(201).get("fiscal_warning").is_none());
    fx.shutdown().await;
}

async fn fiscal_config_api(srv: Srv) {
    let fx = Fx::new(srv).await;
    let path = format!("/api/v1/terminals/{}/fiscal", fx.term);
    let t = fx.srv.get(&format!("/api/v1/terminals/{}", fx.term)).await;
    assert_eq!(
        t.ok(200)["fiscal"],
        json!({"gateway_url": fx.gw_url(), "device_id": DEVICE})
    );
    let list = fx
        .srv
        .get(&format!("/api/v1/terminals?store_id={}", fx.store_id))
        .await;
    assert_eq!(list.ok(200)["items"][0]["fiscal"]["device_id"], DEVICE);

    // Replace it (a trailing slash is dropped).
    let put = |b: Value| {
        let srv = fx.srv.clone();
        let path = path.clone();
        async move { srv.send(reqwest::Method::PUT, &path, Some(&b)).await }
    };
    let r = put(json!({"gateway_url": "http://10.0.0.5:8070/", "device_id": "till-9"})).await;
    assert_eq!(
        r.ok(200)["fiscal"],
        json!({"gateway_url": "http://10.0.0.5:8070", "device_id": "till-9"})
    );

    // Validation.
    put(json!({"gateway_url": "ftp://x", "device_id": "a"}))
        .await
        .problem(422, Some("gateway_url"));
    put(json!({"gateway_url": "http://", "device_id": "a"}))
        .await
        .problem(422, Some("gateway_url"));
    put(json!({"gateway_url": "http://h:1", "device_id": " "}))
        .await
        .problem(422, Some("device_id"));
    put(json!({"gateway_url": "http://h:1"}))
        .await
        .problem(422, None);
    fx.srv
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/terminals/{}/fiscal", Uuid::now_v7()),
            Some(&json!({"gateway_url": "http://h:1", "device_id": "a"})),
        )
        .await
        .problem(404, None);

    // Cashiers cannot change it.
    let (_, cashier) = fx.srv.create_token("cashier", None).await;
    let c = fx.srv.with_token(&cashier);
    c.send(
        reqwest::Method::PUT,
        &path,
        Some(&json!({"gateway_url": "http://h:1", "device_id": "a"})),
    )
    .await
    .problem(403, None);
    c.delete(&path).await.problem(403, None);

    // Removed.
    fx.srv.delete(&path).await.ok(204);
    let t = fx.srv.get(&format!("/api/v1/terminals/{}", fx.term)).await;
    assert!(t.ok(200)["fiscal"].is_null());
    fx.srv.delete(&path).await.ok(204);
    assert_eq!(uuid(&t.body["id"]), fx.term);
    fx.shutdown().await;
}
