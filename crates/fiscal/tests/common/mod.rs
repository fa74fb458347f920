//! Shared helpers: a gateway on port 0 over a temporary journal, receipts that obey the rules.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use savdo_fiscal::amounts::{line_gross, vat_included};
use savdo_fiscal::{Clock, Config, DeviceConfig, DriverConfig, RunningGateway, SystemClock};
use serde_json::{Value, json};
use uuid::Uuid;

pub fn config(dir: &std::path::Path, devices: Vec<DeviceConfig>, answer_wait_ms: u64) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.to_path_buf(),
        answer_wait_ms,
        retry_initial_ms: 20,
        retry_max_ms: 200,
        devices,
    }
}

pub fn virtual_device(id: &str) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        driver: DriverConfig::Virtual {
            terminal_id: "UZ170703100189".into(),
        },
    }
}

pub fn atol_device(id: &str, sandbox_url: &str) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        driver: DriverConfig::Atol {
            url: format!("{sandbox_url}/atol"),
            timeout_ms: 2000,
        },
    }
}

pub fn kkm_device(id: &str, sandbox_url: &str) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        driver: DriverConfig::Kkmserver {
            url: format!("{sandbox_url}/kkmserver"),
            user: "Admin".into(),
            password: String::new(),
            num_device: 1,
            timeout_ms: 2000,
        },
    }
}

pub async fn start(cfg: Config) -> RunningGateway {
    start_with(cfg, Arc::new(SystemClock)).await
}

pub async fn start_with(cfg: Config, clock: Arc<dyn Clock>) -> RunningGateway {
    savdo_fiscal::start_with_clock(cfg, clock)
        .await
        .expect("gateway starts")
}

/// One line of goods; VAT (12 %) computed by the rule the gateway checks.
pub fn item(name: &str, price: i64, qty_milli: i64, discount: i64) -> Value {
    let amount = line_gross(price, qty_milli).unwrap() - discount;
    json!({
        "name": name,
        "mxik": "10202001001000000",
        "package_code": "1508583",
        "unit": 1,
        "qty_milli": qty_milli,
        "price": price,
        "discount": discount,
        "vat_percent": 12,
        "vat_amount": vat_included(amount, 12).unwrap(),
        "labels": [],
    })
}

pub fn amount_of(item: &Value) -> i64 {
    line_gross(
        item["price"].as_i64().unwrap(),
        item["qty_milli"].as_i64().unwrap(),
    )
    .unwrap()
        - item["discount"].as_i64().unwrap()
}

/// A valid sale on `device`, paid in cash.
pub fn sale(device: &str, items: Vec<Value>) -> Value {
    let total: i64 = items.iter().map(amount_of).sum();
    json!({
        "id": Uuid::now_v7().to_string(),
        "device_id": device,
        "cashier": "Dilnoza",
        "items": items,
        "payments": {"cash": total, "card": 0, "other": 0},
        "total": total,
    })
}

pub fn simple_sale(device: &str) -> Value {
    sale(
        device,
        vec![
            item("Non", 500_000, 2000, 10_000),
            item("Olma", 1_200_000, 750, 0),
        ],
    )
}

pub fn refund_of(sale: &Value) -> Value {
    let mut r = sale.clone();
    r["id"] = json!(Uuid::now_v7().to_string());
    r["sale_id"] = sale["id"].clone();
    r
}

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(gw: &RunningGateway) -> Self {
        Self::at(&gw.url())
    }

    pub fn at(base: &str) -> Self {
        savdo_fiscal::install_tls_provider();
        Self {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn open_shift(&self, device: &str) -> Value {
        let (code, body) = self
            .post(
                &format!("/v1/devices/{device}/shift/open"),
                &json!({"cashier": "Dilnoza"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["status"], "registered", "{body}");
        body
    }

    /// Polls `GET /v1/receipts/{id}` until the receipt is no longer queued.
    pub async fn settled(&self, id: &str) -> Value {
        for _ in 0..200 {
            let (code, body) = self.get(&format!("/v1/receipts/{id}")).await;
            assert_eq!(code, 200, "{body}");
            if body["status"] != "queued" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("receipt {id} stayed queued");
    }
}

/// Asserts the fiscal data of a registered receipt is complete and consistent.
pub fn assert_registered(r: &Value) {
    assert_eq!(r["status"], "registered", "{r}");
    let sign = r["fiscal_sign"].as_str().unwrap();
    assert_eq!(sign.len(), 12, "{r}");
    assert!(sign.bytes().all(|b| b.is_ascii_digit()), "{r}");
    let dt = r["date_time"].as_str().unwrap();
    assert_eq!(dt.len(), 14, "{r}");
    let expected = format!(
        "https://ofd.soliq.uz/check?t={}&r={}&c={dt}&s={sign}",
        r["terminal_id"].as_str().unwrap(),
        r["receipt_no"].as_u64().unwrap()
    );
    assert_eq!(r["qr_url"], expected.as_str(), "{r}");
}

/// Documents the sandbox printer printed.
pub async fn printed(sandbox_url: &str, system: &str) -> Vec<Value> {
    let (_, v) = Api::at(sandbox_url)
        .get(&format!("/_control/{system}/printed"))
        .await;
    v["documents"].as_array().cloned().unwrap_or_default()
}

pub async fn control(sandbox_url: &str, system: &str, what: &str, body: Value) {
    let (code, v) = Api::at(sandbox_url)
        .post(&format!("/_control/{system}/{what}"), &body)
        .await;
    assert_eq!(code, 200, "{v}");
}
