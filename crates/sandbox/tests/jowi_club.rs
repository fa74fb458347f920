//! JOWi Club simulator over HTTP: auth, the points ledger, idempotency, lost answers, webhooks.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const SIG: &str = "49e70d45d823302";

async fn start() -> (savdo_sandbox::RunningSandbox, reqwest::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (sb, reqwest::Client::new())
}

async fn post_json(c: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = c.post(url).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Seeds one customer: 1000 points, 10% discount, 5% earn.
async fn seed_customer(c: &reqwest::Client, base: &str) -> String {
    let (s, v) = post_json(
        c,
        format!("{base}/_control/jowi-club/seed"),
        json!({"customers": [{"card": "8600123412341234", "phone": "+998 90 123 45 67",
               "code": "4321", "name": "Aziza", "balance": 1000, "discount_percent": 10,
               "earn_percent": 5, "level": "gold"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["customers"][0]["id"].as_str().unwrap().to_string()
}

fn auth_q() -> String {
    format!("api_key=demo_api_key&sig={SIG}")
}

#[tokio::test]
async fn auth_by_sig_and_by_oauth_token() {
    let (sb, c) = start().await;
    let base = sb.url();
    seed_customer(&c, &base).await;
    let url = |q: &str| format!("{base}/jowi-club/club/v1/customers?card=8600123412341234&{q}");

    let r = c.get(url(&auth_q())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], 1);
    assert_eq!(v["customer"]["balance"], 1000);
    assert_eq!(v["customer"]["level"], "gold");

    for q in [
        "api_key=demo_api_key&sig=0000000000aaaaa",
        "api_key=nobody&sig=x",
        "",
    ] {
        let r = c.get(url(q)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{q}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], 0);
        assert_eq!(v["error"], 401);
        assert!(v["message"].is_string());
    }

    // A seeded app with its own sig.
    post_json(
        &c,
        format!("{base}/_control/jowi-club/seed"),
        json!({"apps": [{"api_key": "k2", "api_secret": "s2"}]}),
    )
    .await;
    let sig2 = savdo_sandbox::jowi_club::sig("k2", "s2");
    let r = c
        .get(url(&format!("api_key=k2&sig={sig2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // OAuth: form body and JSON body; a wrong secret is refused the RFC 6749 way.
    let tok = c
        .post(format!("{base}/jowi-club/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "demo_client"),
            ("client_secret", "demo_secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tok.status(), 200);
    let tok: Value = tok.json().await.unwrap();
    assert_eq!(tok["token_type"], "Bearer");
    assert!(tok["expires_in"].as_u64().unwrap() > 0);
    let token = tok["access_token"].as_str().unwrap().to_string();
    let (s, v) = post_json(
        &c,
        format!("{base}/jowi-club/oauth/token"),
        json!({"grant_type": "client_credentials", "client_id": "demo_client", "client_secret": "demo_secret"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post_json(
        &c,
        format!("{base}/jowi-club/oauth/token"),
        json!({"grant_type": "client_credentials", "client_id": "demo_client", "client_secret": "nope"}),
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(v["error"], "invalid_client");
    let (s, v) = post_json(
        &c,
        format!("{base}/jowi-club/oauth/token"),
        json!({"grant_type": "password", "client_id": "demo_client", "client_secret": "demo_secret"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "unsupported_grant_type");

    let r = c.get(url("")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(url("")).bearer_auth("forged").send().await.unwrap();
    assert_eq!(r.status(), 401);
    c.post(format!("{base}/_control/jowi-club/expire_tokens"))
        .send()
        .await
        .unwrap();
    let r = c.get(url("")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn lookup_by_phone_code_and_unknown() {
    let (sb, c) = start().await;
    let base = sb.url();
    let id = seed_customer(&c, &base).await;
    for q in ["phone=998901234567", "phone=901234567", "code=4321"] {
        let v: Value = c
            .get(format!(
                "{base}/jowi-club/club/v1/customers?{q}&{}",
                auth_q()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["customer"]["id"], id.as_str(), "{q}");
    }
    let r = c
        .get(format!(
            "{base}/jowi-club/club/v1/customers?card=1&{}",
            auth_q()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["status"].clone(), v["error"].clone()),
        (json!(0), json!(404))
    );
    let r = c
        .get(format!(
            "{base}/jowi-club/club/v1/customers?card=1&code=2&{}",
            auth_q()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn calculate_discounts_points_and_earnings() {
    let (sb, c) = start().await;
    let base = sb.url();
    let id = seed_customer(&c, &base).await;
    // Lines: 2 x 12 345 = 24 690 (discount 2 469); 0.5 x 10 001 = 5 000.5 -> 5 001 (discount 500).
    let body = json!({"api_key": "demo_api_key", "sig": SIG, "customer_id": id, "store_ref": "s1",
        "items": [{"ref": "a", "name": "Tea", "qty": 2, "price": 12345},
                  {"ref": "b", "name": "Cheese", "qty": 0.5, "price": 10001}],
        "spend_points": 100});
    let (s, v) = post_json(&c, format!("{base}/jowi-club/club/v1/calculate"), body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"][0]["discount"], 2469);
    assert_eq!(v["items"][1]["discount"], 500);
    assert_eq!(v["discount_total"], 2969);
    // Net 26 722 tiyin: at most 267 whole points.
    assert_eq!(v["points_spend_max"], 267);
    assert_eq!(v["points_to_spend"], 100);
    // Paid 26 722 - 10 000 = 16 722 tiyin; 5% = 836 tiyin = 8 points (floored).
    assert_eq!(v["points_to_earn"], 8);
    assert_eq!(v["balance"], 1000);
    assert_eq!(v["balance_after"], 908);

    // Asking for more than allowed is capped in the preview.
    let body = json!({"customer_id": id, "items": [{"ref": "a", "qty": 1, "price": 50000}],
                      "spend_points": 5000});
    let (s, v) = post_json(
        &c,
        format!("{base}/jowi-club/club/v1/calculate?{}", auth_q()),
        body,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["points_spend_max"], 450);
    assert_eq!(v["points_to_spend"], 450);
    assert_eq!(v["points_to_earn"], 0);

    let (s, v) = post_json(
        &c,
        format!("{base}/jowi-club/club/v1/calculate?{}", auth_q()),
        json!({"customer_id": "nope", "items": [{"ref": "a", "qty": 1, "price": 1}]}),
    )
    .await;
    assert_eq!((s, v["error"].clone()), (404, json!(404)));
}

async fn ledger(c: &reqwest::Client, base: &str) -> Value {
    c.get(format!("{base}/_control/jowi-club/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn transactions_are_idempotent_and_spending_is_checked() {
    let (sb, c) = start().await;
    let base = sb.url();
    let id = seed_customer(&c, &base).await;
    let tx_url = format!("{base}/jowi-club/club/v1/transactions?{}", auth_q());
    let sale = json!({"id": "rcpt-1", "customer_id": id, "store_ref": "s1", "total": 90000,
                      "spend_points": 200, "items": [{"ref": "a", "qty": 1, "price": 100000}]});
    let (s, first) = post_json(&c, tx_url.clone(), sale.clone()).await;
    assert_eq!(s, 200, "{first}");
    // Net 90 000; paid 90 000 - 20 000 = 70 000; 5% = 3 500 tiyin = 35 points.
    assert_eq!(first["spent"], 200);
    assert_eq!(first["earned"], 35);
    assert_eq!(first["balance"], 835);
    assert!(first["transaction_id"].is_string());

    let (s, again) = post_json(&c, tx_url.clone(), sale.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(again, first);
    let l = ledger(&c, &base).await;
    assert_eq!(l["count"], 1);

    let mut changed = sale.clone();
    changed["spend_points"] = json!(100);
    let (s, v) = post_json(&c, tx_url.clone(), changed).await;
    assert_eq!((s, v["error"].clone()), (409, json!(409)));

    let broke = json!({"id": "rcpt-2", "customer_id": id, "spend_points": 900,
                       "items": [{"ref": "a", "qty": 1, "price": 100000}]});
    let (s, v) = post_json(&c, tx_url.clone(), broke).await;
    assert_eq!(
        (s, v["error"].clone(), v["status"].clone()),
        (402, json!(402), json!(0))
    );
    let too_much = json!({"id": "rcpt-3", "customer_id": id, "spend_points": 10,
                          "items": [{"ref": "a", "qty": 1, "price": 900}]});
    let (s, _) = post_json(&c, tx_url.clone(), too_much).await;
    assert_eq!(s, 422);
    assert_eq!(ledger(&c, &base).await["count"], 1);

    // Auth in the JSON body works for POST too; wrong sig is refused and changes nothing.
    let body_auth = json!({"api_key": "demo_api_key", "sig": SIG, "id": "rcpt-4",
                           "customer_id": id, "total": 10000});
    let (s, v) = post_json(
        &c,
        format!("{base}/jowi-club/club/v1/transactions"),
        body_auth,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["earned"], 5);
    let bad = json!({"api_key": "demo_api_key", "sig": "x", "id": "rcpt-5", "customer_id": id,
                     "total": 10000});
    let (s, _) = post_json(&c, format!("{base}/jowi-club/club/v1/transactions"), bad).await;
    assert_eq!(s, 401);
    assert_eq!(ledger(&c, &base).await["count"], 2);
}

#[tokio::test]
async fn lost_answer_is_applied_once() {
    let (sb, c) = start().await;
    let base = sb.url();
    let id = seed_customer(&c, &base).await;
    let (s, _) = post_json(
        &c,
        format!("{base}/_control/jowi-club/lose_answers"),
        json!({"count": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let tx_url = format!("{base}/jowi-club/club/v1/transactions?{}", auth_q());
    let sale = json!({"id": "rcpt-lost", "customer_id": id, "total": 100000});
    let r = c.post(&tx_url).json(&sale).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    // Applied although the answer was lost.
    let l = ledger(&c, &base).await;
    assert_eq!(l["count"], 1);
    assert_eq!(l["entries"][0]["earned"], 50);
    let (s, v) = post_json(&c, tx_url, sale).await;
    assert_eq!(s, 200);
    assert_eq!(v["earned"], 50);
    assert_eq!(v["balance"], 1050);
    assert_eq!(ledger(&c, &base).await["count"], 1);

    // The same through seed, for a refund.
    let (s, _) = post_json(
        &c,
        format!("{base}/_control/jowi-club/seed"),
        json!({"lose_answers": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let refund_url = format!(
        "{base}/jowi-club/club/v1/transactions/rcpt-lost/refund?{}",
        auth_q()
    );
    let r = c
        .post(&refund_url)
        .json(&json!({"refund_id": "rf-lost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let (s, v) = post_json(&c, refund_url, json!({"refund_id": "rf-lost"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["earned_reversed"], 50);
    assert_eq!(v["balance"], 1000);
    assert_eq!(ledger(&c, &base).await["count"], 2);
}

#[tokio::test]
async fn refunds_are_proportional_bounded_and_idempotent() {
    let (sb, c) = start().await;
    let base = sb.url();
    let id = seed_customer(&c, &base).await;
    let tx_url = format!("{base}/jowi-club/club/v1/transactions?{}", auth_q());
    // Discount 10%: lines net 27 000 (3 x 10 000) and 9 000; total net 36 000.
    let sale = json!({"id": "r-1", "customer_id": id, "spend_points": 100,
        "items": [{"ref": "a", "qty": 3, "price": 10000}, {"ref": "b", "qty": 1, "price": 10000}]});
    let (s, v) = post_json(&c, tx_url, sale).await;
    assert_eq!(s, 200, "{v}");
    // Paid 36 000 - 10 000 = 26 000; 5% = 1 300 tiyin = 13 points.
    assert_eq!(
        (v["spent"].clone(), v["earned"].clone()),
        (json!(100), json!(13))
    );
    assert_eq!(v["balance"], 913);
    let tid = v["transaction_id"].as_str().unwrap().to_string();

    let refund_url = |t: &str| {
        format!(
            "{base}/jowi-club/club/v1/transactions/{t}/refund?{}",
            auth_q()
        )
    };
    // One of three "a": 9 000 of 36 000 = 1/4: 25 spent back, floor(13/4) = 3 earned reversed.
    let part = json!({"refund_id": "rf-1", "items": [{"ref": "a", "qty": 1}]});
    let (s, v) = post_json(&c, refund_url(&tid), part.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spent_returned"], 25);
    assert_eq!(v["earned_reversed"], 3);
    assert_eq!(v["balance"], 935);
    let (s, again) = post_json(&c, refund_url(&tid), part).await;
    assert_eq!(s, 200);
    assert_eq!(again, v);
    let (s, v) = post_json(
        &c,
        refund_url(&tid),
        json!({"refund_id": "rf-1", "items": [{"ref": "a", "qty": 2}]}),
    )
    .await;
    assert_eq!((s, v["error"].clone()), (409, json!(409)));

    let (s, v) = post_json(
        &c,
        refund_url(&tid),
        json!({"refund_id": "rf-2", "items": [{"ref": "a", "qty": 3}]}),
    )
    .await;
    assert_eq!((s, v["error"].clone()), (422, json!(422)));
    let (s, _) = post_json(
        &c,
        refund_url(&tid),
        json!({"refund_id": "rf-2", "items": [{"ref": "zzz", "qty": 1}]}),
    )
    .await;
    assert_eq!(s, 422);

    // The rest, addressed by our receipt id: everything left settles exactly.
    let (s, v) = post_json(&c, refund_url("r-1"), json!({"refund_id": "rf-3"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["spent_returned"], 75);
    assert_eq!(v["earned_reversed"], 10);
    assert_eq!(v["balance"], 1000);
    let (s, _) = post_json(&c, refund_url("r-1"), json!({"refund_id": "rf-4"})).await;
    assert_eq!(s, 422);
    let (s, _) = post_json(&c, refund_url("no-such"), json!({"refund_id": "rf-5"})).await;
    assert_eq!(s, 404);

    let l = ledger(&c, &base).await;
    assert_eq!(l["count"], 3);
    let sum: i64 = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["delta"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 0);
    assert_eq!(l["entries"][2]["balance_after"], 1000);
}

#[derive(Default)]
struct Inbox(Mutex<Vec<(HeaderMap, Bytes)>>);

#[tokio::test]
async fn webhooks_are_signed() {
    let (sb, c) = start().await;
    let base = sb.url();
    let id = seed_customer(&c, &base).await;

    // A tiny merchant that checks the signature the way Savdo must.
    let inbox = Arc::new(Inbox::default());
    let app = axum::Router::new()
        .route(
            "/hooks/jowi",
            post(
                |axum::extract::State(inbox): axum::extract::State<Arc<Inbox>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let sig = headers
                        .get("x-jowi-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    inbox.0.lock().unwrap().push((headers, body.clone()));
                    if sig == savdo_sandbox::jowi_club::webhook_signature("whs", &body) {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                },
            ),
        )
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hooks/jowi", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (s, v) = post_json(
        &c,
        format!("{base}/_control/jowi-club/webhook"),
        json!({"url": hook, "secret": "whs", "event": "balance.changed", "customer_id": id}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], 204);
    assert_eq!(v["delivered"], true);
    let (s, v) = post_json(
        &c,
        format!("{base}/_control/jowi-club/webhook"),
        json!({"url": hook, "secret": "whs", "event": "points.accrued", "customer_id": id,
               "bad_signature": true}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], 401);
    assert_eq!(v["delivered"], false);

    let got = inbox.0.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let body: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(body["event"], "balance.changed");
    assert_eq!(body["customer_id"], id.as_str());
    assert_eq!(body["balance"], 1000);
    assert!(body["id"].is_string() && body["time"].is_string());
    assert!(
        body.get("customer").is_none(),
        "only customer.updated carries the customer"
    );

    // The customer edits the profile in the app: customer.updated carries the new one.
    let (s, v) = post_json(
        &c,
        format!("{base}/_control/jowi-club/webhook"),
        json!({"url": hook, "secret": "whs", "event": "customer.updated", "customer_id": id,
               "name": "Renamed", "phone": "998901112233"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], 204);
    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["event"], "customer.updated");
    assert_eq!(body["customer"]["id"], id.as_str());
    assert_eq!(body["customer"]["name"], "Renamed");
    assert_eq!(body["customer"]["phone"], "998901112233");
    let r: Value = c
        .get(format!("{base}/_control/jowi-club/customers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seeded = r["customers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(seeded["name"], "Renamed", "the simulator keeps the change");

    let (s, _) = post_json(
        &c,
        format!("{base}/_control/jowi-club/webhook"),
        json!({"url": hook, "secret": "whs", "event": "nonsense", "customer_id": id}),
    )
    .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn common_control_routes_still_work_beside_ours() {
    let (sb, c) = start().await;
    let base = sb.url();
    let (s, v) = post_json(
        &c,
        format!("{base}/_control/jowi-club/faults"),
        json!({"error_rate": 1.0, "status": 503}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let r = c
        .get(format!("{base}/_control/jowi-club/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!(
            "{base}/jowi-club/club/v1/customers?card=1&{}",
            auth_q()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let calls: Value = c
        .get(format!("{base}/_control/jowi-club/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["count"], 1);
    assert_eq!(ledger(&c, &base).await["count"], 0);
    let r = c
        .post(format!("{base}/_control/jowi-club/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!(
            "{base}/jowi-club/club/v1/customers?card=1&{}",
            auth_q()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The demo customer is there after a reset.
    let v: Value = c
        .get(format!(
            "{base}/jowi-club/club/v1/customers?card=9860000000000001&{}",
            auth_q()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["customer"]["id"], "cus_demo");
    assert_eq!(v["customer"]["balance"], 5000);
}
