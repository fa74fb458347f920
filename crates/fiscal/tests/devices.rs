//! ATOL and KKMServer drivers against the sandbox's printers: every operation, lost answers,
//! a gateway killed between print and commit, outages, paper, shift rules.

mod common;

use common::*;
use savdo_fiscal::{Config, DeviceConfig};
use savdo_sandbox::RunningSandbox;
use serde_json::{Value, json};

const DEV: &str = "till-1";

#[derive(Clone, Copy)]
enum Brand {
    Atol,
    Kkm,
}

impl Brand {
    fn system(self) -> &'static str {
        match self {
            Brand::Atol => "atol",
            Brand::Kkm => "kkmserver",
        }
    }
    fn device(self, url: &str) -> DeviceConfig {
        match self {
            Brand::Atol => atol_device(DEV, url),
            Brand::Kkm => kkm_device(DEV, url),
        }
    }
}

struct Env {
    sandbox: RunningSandbox,
    dir: tempfile::TempDir,
    brand: Brand,
}

impl Env {
    async fn new(brand: Brand) -> Self {
        let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Env {
            sandbox,
            dir: tempfile::tempdir().unwrap(),
            brand,
        }
    }
    fn config(&self, answer_wait_ms: u64) -> Config {
        config(
            self.dir.path(),
            vec![self.brand.device(&self.sandbox.url())],
            answer_wait_ms,
        )
    }
    async fn control(&self, what: &str, body: Value) {
        control(&self.sandbox.url(), self.brand.system(), what, body).await
    }
    /// Receipts (not reports) the printer printed.
    async fn printed_receipts(&self) -> Vec<Value> {
        printed(&self.sandbox.url(), self.brand.system())
            .await
            .into_iter()
            .filter(|d| d["kind"] == "sale" || d["kind"] == "refund")
            .collect()
    }
}

async fn every_operation(brand: Brand) {
    let env = Env::new(brand).await;
    let gw = start(env.config(5000)).await;
    let api = Api::new(&gw);

    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert_eq!(dev["driver"], brand.system(), "{dev}");
    assert_eq!(
        (dev["online"].as_bool(), dev["shift_open"].as_bool()),
        (Some(true), Some(false))
    );

    api.open_shift(DEV).await;
    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert_eq!(dev["shift_open"], true, "{dev}");

    let s = simple_sale(DEV);
    let (code, r) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(code, 200, "{r}");
    assert_registered(&r);
    assert_eq!(r["receipt_no"], 1);

    let (_, x) = api
        .post(&format!("/v1/devices/{DEV}/reports/x"), &json!({}))
        .await;
    assert_eq!(x["status"], "registered", "{x}");
    assert_eq!(x["totals"]["sales_total"], s["total"], "{x}");

    let (_, rr) = api.post("/v1/receipts/refund", &refund_of(&s)).await;
    assert_registered(&rr);
    assert_eq!(rr["receipt_no"], 2);

    let (_, z) = api
        .post(&format!("/v1/devices/{DEV}/shift/close"), &json!({}))
        .await;
    assert_eq!(z["status"], "registered", "{z}");
    assert_eq!(z["totals"]["refunds_total"], s["total"], "{z}");
    assert_eq!(z["totals"]["receipts"], 2, "{z}");

    // The repeat answers from the journal; the printer printed each receipt once.
    let (_, again) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(again, r);
    let docs = printed(&env.sandbox.url(), brand.system()).await;
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["open_shift", "sale", "x_report", "refund", "close_shift"]
    );
    assert_eq!(docs[1]["fiscal_sign"], r["fiscal_sign"]);
}

#[tokio::test]
async fn atol_every_operation() {
    every_operation(Brand::Atol).await;
}

#[tokio::test]
async fn kkmserver_every_operation() {
    every_operation(Brand::Kkm).await;
}

async fn lost_answer_is_recovered_without_a_second_print(brand: Brand) {
    let env = Env::new(brand).await;
    let gw = start(env.config(5000)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;
    env.control("seed", json!({"fail_after_print": 1})).await;

    let s = simple_sale(DEV);
    let (code, r) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(code, 200, "{r}");
    assert_registered(&r);
    let docs = env.printed_receipts().await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["fiscal_sign"], r["fiscal_sign"]);
}

#[tokio::test]
async fn atol_lost_answer_is_recovered() {
    lost_answer_is_recovered_without_a_second_print(Brand::Atol).await;
}

#[tokio::test]
async fn kkmserver_lost_answer_is_recovered() {
    lost_answer_is_recovered_without_a_second_print(Brand::Kkm).await;
}

async fn gateway_killed_between_print_and_commit(brand: Brand) {
    let env = Env::new(brand).await;
    let gw = start(env.config(500)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;
    env.control("seed", json!({"hang_after_print": 1})).await;

    let s = simple_sale(DEV);
    let (code, r) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!((code, r["status"].as_str()), (202, Some("queued")), "{r}");
    assert_eq!(
        env.printed_receipts().await.len(),
        1,
        "printed, answer never came"
    );
    // The process dies with the device's answer in flight.
    gw.shutdown().await;

    let gw = start(env.config(5000)).await;
    let api = Api::new(&gw);
    let r = api.settled(s["id"].as_str().unwrap()).await;
    assert_registered(&r);
    let docs = env.printed_receipts().await;
    assert_eq!(docs.len(), 1, "no second print: {docs:?}");
    assert_eq!(docs[0]["fiscal_sign"], r["fiscal_sign"]);
    // And the next receipt continues the count.
    let (_, next) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(next["receipt_no"], 2);
}

#[tokio::test]
async fn atol_gateway_killed_between_print_and_commit() {
    gateway_killed_between_print_and_commit(Brand::Atol).await;
}

#[tokio::test]
async fn kkmserver_gateway_killed_between_print_and_commit() {
    gateway_killed_between_print_and_commit(Brand::Kkm).await;
}

async fn offline_then_back(brand: Brand) {
    let env = Env::new(brand).await;
    let gw = start(env.config(300)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;
    env.control("faults", json!({"down": true})).await;

    let sales: Vec<Value> = (0..3).map(|_| simple_sale(DEV)).collect();
    for s in &sales {
        let (code, r) = api.post("/v1/receipts/sale", s).await;
        assert_eq!((code, r["status"].as_str()), (202, Some("queued")), "{r}");
    }
    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert_eq!(
        (dev["online"].as_bool(), dev["queued"].as_u64()),
        (Some(false), Some(3)),
        "{dev}"
    );
    assert!(env.printed_receipts().await.is_empty());

    env.control("faults", json!({"down": false})).await;
    let mut numbers = Vec::new();
    for s in &sales {
        let r = api.settled(s["id"].as_str().unwrap()).await;
        assert_registered(&r);
        numbers.push(r["receipt_no"].as_u64().unwrap());
    }
    assert_eq!(numbers, [1, 2, 3], "registered in the order taken");
    let docs = env.printed_receipts().await;
    assert_eq!(docs.len(), 3, "each once: {docs:?}");
    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert_eq!(
        (dev["online"].as_bool(), dev["queued"].as_u64()),
        (Some(true), Some(0)),
        "{dev}"
    );
}

#[tokio::test]
async fn atol_offline_then_back() {
    offline_then_back(Brand::Atol).await;
}

#[tokio::test]
async fn kkmserver_offline_then_back() {
    offline_then_back(Brand::Kkm).await;
}

async fn paper_and_shift_refusals(brand: Brand) {
    let env = Env::new(brand).await;
    let gw = start(env.config(5000)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;

    env.control("seed", json!({"paper": false})).await;
    let s = simple_sale(DEV);
    let (_, r) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("out of paper"),
        "{r}"
    );
    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert_eq!(dev["paper"], false, "{dev}");

    // Paper loaded: the cashier repeats the same receipt and it goes through.
    env.control("seed", json!({"paper": true})).await;
    let (_, r) = api.post("/v1/receipts/sale", &s).await;
    assert_registered(&r);

    env.control("seed", json!({"shift_opened_hours_ago": 25}))
        .await;
    let (_, r) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("over 24 hours"),
        "{r}"
    );
    assert_eq!(env.printed_receipts().await.len(), 1);
}

#[tokio::test]
async fn atol_paper_and_shift_refusals() {
    paper_and_shift_refusals(Brand::Atol).await;
}

#[tokio::test]
async fn kkmserver_paper_and_shift_refusals() {
    paper_and_shift_refusals(Brand::Kkm).await;
}

#[tokio::test]
async fn atol_slow_tasks_are_polled_until_ready() {
    let env = Env::new(Brand::Atol).await;
    let gw = start(env.config(5000)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;
    env.control("seed", json!({"print_ms": 300})).await;
    let (_, r) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_registered(&r);
}

#[tokio::test]
async fn atol_does_not_run_a_uuid_twice() {
    let env = Env::new(Brand::Atol).await;
    let api = Api::at(&env.sandbox.url());
    let task = json!({"uuid": "3f0c3c2e-1111-4c3b-9a55-0d2f4c1a0001",
        "request": [{"type": "openShift", "operator": {"name": "Aziz"}}]});
    let (code, _) = api.post("/atol/api/v2/requests", &task).await;
    assert_eq!(code, 201);
    let (code, _) = api.post("/atol/api/v2/requests", &task).await;
    assert_eq!(code, 409);
    let (code, r) = api
        .get("/atol/api/v2/requests/3f0c3c2e-1111-4c3b-9a55-0d2f4c1a0001")
        .await;
    assert_eq!(
        (code, r["results"][0]["status"].as_str()),
        (200, Some("ready"))
    );
    assert_eq!(printed(&env.sandbox.url(), "atol").await.len(), 1);
}

#[tokio::test]
async fn kkmserver_wrong_password_keeps_receipts_queued() {
    let env = Env::new(Brand::Kkm).await;
    env.control("seed", json!({"password": "secret"})).await;
    let gw = start(env.config(300)).await;
    let api = Api::new(&gw);
    let (code, r) = api
        .post(&format!("/v1/devices/{DEV}/shift/open"), &json!({}))
        .await;
    assert_eq!((code, r["status"].as_str()), (202, Some("queued")), "{r}");
    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert!(
        dev["last_error"].as_str().unwrap().contains("password"),
        "{dev}"
    );
    assert!(printed(&env.sandbox.url(), "kkmserver").await.is_empty());
}
