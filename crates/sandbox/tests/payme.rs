//! Payme simulator driving a tiny test merchant over HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

const KEY: &str = "test-key-123";
const MERCHANT: &str = "587f72c72cac0d162c722ae2";
const AMOUNT: i64 = 150_000;
const DAY_MS: i64 = 43_200_000;

#[derive(Default)]
struct Shop {
    key: Mutex<String>,
    /// Payme id -> stored transaction.
    txns: Mutex<HashMap<String, Value>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rpc_err(id: &Value, code: i64, data: Option<&str>) -> Json<Value> {
    Json(json!({"id": id, "error": {"code": code,
        "message": {"ru": "ошибка", "uz": "xato", "en": "error"}, "data": data}}))
}

/// A minimal, correct Payme merchant: orders `o<N>` all cost `AMOUNT`.
async fn merchant(
    State(shop): State<Arc<Shop>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Json<Value> {
    let id = req["id"].clone();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("Paycom:{}", shop.key.lock().unwrap()))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return rpc_err(&id, -32504, None);
    }
    let p = &req["params"];
    let check_order = |p: &Value| -> Result<(), i64> {
        let order = p["account"]["order_id"].as_str().unwrap_or("");
        if !order.starts_with('o') {
            return Err(-31050);
        }
        if p["amount"].as_i64() != Some(AMOUNT) {
            return Err(-31001);
        }
        Ok(())
    };
    let mut txns = shop.txns.lock().unwrap();
    let tid = p["id"].as_str().unwrap_or("").to_string();
    let result = match req["method"].as_str().unwrap_or("") {
        "CheckPerformTransaction" => match check_order(p) {
            Ok(()) => json!({"allow": true}),
            Err(c) => return rpc_err(&id, c, Some("order_id")),
        },
        "CreateTransaction" => {
            if let Some(t) = txns.get_mut(&tid) {
                if t["state"] != 1 {
                    return rpc_err(&id, -31008, None);
                }
                if now_ms() - t["time"].as_i64().unwrap() > DAY_MS {
                    t["state"] = json!(-1);
                    t["reason"] = json!(4);
                    t["cancel_time"] = json!(now_ms());
                    return rpc_err(&id, -31008, None);
                }
                json!({"create_time": t["create_time"], "transaction": t["transaction"], "state": 1})
            } else {
                if let Err(c) = check_order(p) {
                    return rpc_err(&id, c, Some("order_id"));
                }
                if now_ms() - p["time"].as_i64().unwrap_or(0) > DAY_MS {
                    return rpc_err(&id, -31008, None);
                }
                let busy = txns
                    .values()
                    .any(|t| t["account"] == p["account"] && t["state"] == 1);
                if busy {
                    return rpc_err(&id, -31050, Some("order_id"));
                }
                let t = json!({"id": tid, "time": p["time"], "amount": p["amount"],
                    "account": p["account"], "create_time": now_ms(), "perform_time": 0,
                    "cancel_time": 0, "transaction": format!("{}", txns.len() + 1),
                    "state": 1, "reason": null});
                let r = json!({"create_time": t["create_time"], "transaction": t["transaction"], "state": 1});
                txns.insert(tid, t);
                r
            }
        }
        "PerformTransaction" => {
            let Some(t) = txns.get_mut(&tid) else {
                return rpc_err(&id, -31003, None);
            };
            match t["state"].as_i64() {
                Some(1) => {
                    t["state"] = json!(2);
                    t["perform_time"] = json!(now_ms());
                }
                Some(2) => {}
                _ => return rpc_err(&id, -31008, None),
            }
            json!({"transaction": t["transaction"], "perform_time": t["perform_time"], "state": t["state"]})
        }
        "CancelTransaction" => {
            let Some(t) = txns.get_mut(&tid) else {
                return rpc_err(&id, -31003, None);
            };
            match t["state"].as_i64() {
                Some(1) => t["state"] = json!(-1),
                Some(2) => t["state"] = json!(-2),
                _ => {}
            }
            if t["cancel_time"] == 0 {
                t["cancel_time"] = json!(now_ms());
                t["reason"] = p["reason"].clone();
            }
            json!({"transaction": t["transaction"], "cancel_time": t["cancel_time"], "state": t["state"]})
        }
        "CheckTransaction" => {
            let Some(t) = txns.get(&tid) else {
                return rpc_err(&id, -31003, None);
            };
            json!({"create_time": t["create_time"], "perform_time": t["perform_time"],
                   "cancel_time": t["cancel_time"], "transaction": t["transaction"],
                   "state": t["state"], "reason": t["reason"]})
        }
        "GetStatement" => {
            let (from, to) = (
                p["from"].as_i64().unwrap_or(0),
                p["to"].as_i64().unwrap_or(0),
            );
            let mut list: Vec<Value> = txns
                .values()
                .filter(|t| (from..=to).contains(&t["time"].as_i64().unwrap_or(-1)))
                .cloned()
                .collect();
            list.sort_by_key(|t| t["time"].as_i64());
            json!({"transactions": list})
        }
        "ChangePassword" => {
            *shop.key.lock().unwrap() = p["password"].as_str().unwrap_or("").to_string();
            json!({"success": true})
        }
        _ => return rpc_err(&id, -32601, None),
    };
    Json(json!({"id": id, "result": result}))
}

async fn setup() -> (savdo_sandbox::RunningSandbox, reqwest::Client, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shop = Arc::new(Shop::default());
    *shop.key.lock().unwrap() = KEY.into();
    let app = Router::new()
        .route("/hooks/payme", post(merchant))
        .with_state(shop);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/hooks/payme", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sb = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/_control/payme/seed", sb.url()))
        .json(&json!({"merchants": [{"merchant_id": MERCHANT, "key": KEY, "endpoint": endpoint}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let base = sb.url();
    (sb, c, base)
}

fn link(order: &str) -> String {
    format!(
        "https://checkout.paycom.uz/{}",
        savdo_sandbox::payme::encode_checkout(MERCHANT, order, AMOUNT)
    )
}

async fn pay(c: &reqwest::Client, base: &str, order: &str, scenario: &str) -> Value {
    let r = c
        .post(format!("{base}/_control/payme/pay"))
        .json(&json!({"checkout_url": link(order), "scenario": scenario}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn every_scenario_passes_against_a_correct_merchant() {
    let (_sb, c, base) = setup().await;
    let scenarios = [
        "pay",
        "cancel_after_create",
        "cancel_after_perform",
        "timeout",
        "retry",
        "wrong_amount",
        "bad_auth",
    ];
    for (i, s) in scenarios.iter().enumerate() {
        let v = pay(&c, &base, &format!("o{i}"), s).await;
        assert_eq!(v["ok"], true, "{s}: {v:#}");
    }
    let v = pay(&c, &base, "o100", "pay").await;
    let steps: Vec<&str> = v["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "CheckPerformTransaction",
            "CreateTransaction",
            "PerformTransaction",
            "CheckTransaction"
        ]
    );
    let create = &v["transcript"][1]["request"];
    let id = create["params"]["id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    assert_eq!(create["params"]["amount"], AMOUNT);
    assert_eq!(create["params"]["account"]["order_id"], "o100");
    assert!((now_ms() - create["params"]["time"].as_i64().unwrap()).abs() < 60_000);

    let list: Value = c
        .get(format!("{base}/_control/payme/transactions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = list["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert_eq!(last["state"], 2);
    assert!(last["perform_time"].as_i64().unwrap() > 0);

    let r: Value = c
        .post(format!("{base}/_control/payme/statement"))
        .json(
            &json!({"merchant_id": MERCHANT, "from": now_ms() - 3_600_000, "to": now_ms() + 1000}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(
        r["answer"]["result"]["transactions"]
            .as_array()
            .unwrap()
            .len()
            >= 5
    );
}

/// A merchant that forgets to check auth and to answer idempotently is caught.
#[tokio::test]
async fn a_sloppy_merchant_fails() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = Router::new().route(
        "/hooks/payme",
        post(|Json(req): Json<Value>| async move {
            let r = match req["method"].as_str().unwrap_or("") {
                "CheckPerformTransaction" => json!({"allow": true}),
                _ => json!({"state": 1, "transaction": "1", "create_time": now_ms()}),
            };
            Json(json!({"id": req["id"], "result": r}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/hooks/payme", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sb = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sb.url();
    let c = reqwest::Client::new();
    c.post(format!("{base}/_control/payme/seed"))
        .json(&json!({"merchants": [{"merchant_id": MERCHANT, "key": KEY, "endpoint": endpoint}]}))
        .send()
        .await
        .unwrap();
    for s in ["bad_auth", "wrong_amount", "timeout", "retry", "pay"] {
        let v = pay(&c, &base, "o1", s).await;
        assert_eq!(v["ok"], false, "{s}: {v:#}");
    }
}

#[tokio::test]
async fn single_calls_and_errors() {
    let (_sb, c, base) = setup().await;
    let call = |body: Value| {
        let c = c.clone();
        let base = base.clone();
        async move {
            let r = c
                .post(format!("{base}/_control/payme/call"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = call(
        json!({"merchant_id": MERCHANT, "method": "CheckTransaction",
                             "params": {"id": "0123456789abcdef01234567"}}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["answer"]["error"]["code"], -31003);
    let (_, v) = call(
        json!({"merchant_id": MERCHANT, "method": "CheckTransaction",
                             "params": {"id": "x"}, "auth": "wrong"}),
    )
    .await;
    assert_eq!(v["answer"]["error"]["code"], -32504);
    assert!(
        v["request"]["id"].is_number() && v["request"]["method"] == "CheckTransaction",
        "{v}"
    );

    // ChangePassword: the sandbox uses the new key afterwards.
    let (_, v) = call(json!({"merchant_id": MERCHANT, "method": "ChangePassword",
                             "params": {"password": "new-key"}}))
    .await;
    assert_eq!(v["answer"]["result"]["success"], true);
    let v = pay(&c, &base, "o5", "pay").await;
    assert_eq!(v["ok"], true, "{v:#}");

    let (s, _) =
        call(json!({"merchant_id": "unknown", "method": "CheckTransaction", "params": {}})).await;
    assert_eq!(s, 404);
    let r = c
        .post(format!("{base}/_control/payme/pay"))
        .json(
            &json!({"checkout_url": "https://checkout.paycom.uz/bm90LXZhbGlk", "scenario": "pay"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .post(format!("{base}/_control/payme/pay"))
        .json(&json!({"checkout_url": link("o1"), "scenario": "dance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn checkout_page_shows_the_payment() {
    let (_sb, c, base) = setup().await;
    let b64 = savdo_sandbox::payme::encode_checkout(MERCHANT, "o1", 150_050);
    let r = c.get(format!("{base}/payme/{b64}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("1500.50 UZS"), "{html}");
    assert!(html.contains("order_id: o1"));
    let r = c.get(format!("{base}/payme/AAAA")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The sandbox's own link works as a checkout URL too.
    let v: Value = c
        .post(format!("{base}/_control/payme/pay"))
        .json(&json!({"checkout_url": format!("{base}/payme/{}", savdo_sandbox::payme::encode_checkout(MERCHANT, "o7", AMOUNT)),
                      "scenario": "pay"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
}
