//! Click simulator: SHOP API against a tiny test merchant, and the Merchant API with `Auth`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::routing::post;
use axum::{Json, Router};
use savdo_sandbox::click::{SignFields, merchant_digest};
use serde_json::{Value, json};

const SECRET: &str = "SeCrEtKeY";
const SERVICE: &str = "12345";
const MERCHANT: &str = "678";
const USER: &str = "9001";

/// Order id -> (amount in tiyin, state: 0 new, 1 prepared, 2 paid, -1 cancelled).
#[derive(Default)]
struct Shop(Mutex<HashMap<String, (i64, i64)>>);

/// A minimal, correct SHOP API merchant; orders `ord-*` cost 15 000.00.
async fn shop_api(
    State(shop): State<Arc<Shop>>,
    Form(f): Form<HashMap<String, String>>,
) -> Json<Value> {
    let g = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (ctid, mti, action) = (g("click_trans_id"), g("merchant_trans_id"), g("action"));
    let prepare_id = f.get("merchant_prepare_id").map(String::as_str);
    let expect = SignFields {
        click_trans_id: &ctid,
        service_id: &g("service_id"),
        secret_key: SECRET,
        merchant_trans_id: &mti,
        merchant_prepare_id: prepare_id,
        amount: &g("amount"),
        action: &action,
        sign_time: &g("sign_time"),
    }
    .sign();
    let answer = |error: i64, note: &str| {
        let mut v = json!({"click_trans_id": ctid.parse::<i64>().unwrap_or(0), "merchant_trans_id": mti,
                           "error": error, "error_note": note});
        if action == "0" {
            v["merchant_prepare_id"] = json!(77);
        } else {
            v["merchant_confirm_id"] = json!(88);
        }
        Json(v)
    };
    if expect != g("sign_string") {
        return answer(-1, "SIGN CHECK FAILED");
    }
    let mut orders = shop.0.lock().unwrap();
    let order = orders.entry(mti.clone()).or_insert((1_500_000, 0));
    let amount = savdo_sandbox::click::parse_amount(&g("amount")).unwrap_or(-1);
    if amount != order.0 {
        return answer(-2, "Incorrect parameter amount");
    }
    match action.as_str() {
        "0" => {
            if order.1 == 2 {
                return answer(-4, "Already paid");
            }
            order.1 = 1;
            answer(0, "Success")
        }
        "1" => {
            if order.1 == 2 {
                return answer(-4, "Already paid");
            }
            if g("error").parse::<i64>().unwrap_or(0) < 0 {
                order.1 = -1;
                return answer(-9, "Transaction cancelled");
            }
            order.1 = 2;
            answer(0, "Success")
        }
        _ => answer(-3, "Action not found"),
    }
}

async fn setup() -> (savdo_sandbox::RunningSandbox, reqwest::Client, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let app = Router::new()
        .route("/hooks/click", post(shop_api))
        .with_state(Arc::new(Shop::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/click", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sb = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sb.url();
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/_control/click/seed"))
        .json(
            &json!({"services": [{"service_id": 12345, "merchant_id": 678, "secret_key": SECRET,
                      "merchant_user_id": 9001, "prepare_url": url, "complete_url": url}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (sb, c, base)
}

fn link(order: &str, amount: &str) -> String {
    format!(
        "https://my.click.uz/services/pay?service_id={SERVICE}&merchant_id={MERCHANT}&amount={amount}\
         &transaction_param={order}&return_url=https%3A%2F%2Fshop.uz%2Fdone"
    )
}

async fn pay(c: &reqwest::Client, base: &str, body: Value) -> Value {
    let r = c
        .post(format!("{base}/_control/click/pay"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn auth_header(ts: i64, secret: &str) -> String {
    format!("{USER}:{}:{ts}", merchant_digest(&ts.to_string(), secret))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn shop_api_scenarios() {
    let (_sb, c, base) = setup().await;
    for (order, scenario) in [
        ("ord-1", "pay"),
        ("ord-2", "bad_sign"),
        ("ord-3", "fail_debit"),
        ("ord-4", "wrong_amount"),
        ("ord-5", "repeat_complete"),
    ] {
        let v = pay(
            &c,
            &base,
            json!({"pay_url": link(order, "15000.00"), "scenario": scenario}),
        )
        .await;
        assert_eq!(v["ok"], true, "{scenario}: {v:#}");
    }
    let v = pay(
        &c,
        &base,
        json!({"pay_url": link("ord-6", "15000"), "scenario": "pay"}),
    )
    .await;
    assert_eq!(v["ok"], true, "{v:#}");
    let t = &v["transcript"];
    assert_eq!(t[0]["request"]["action"], "0");
    assert_eq!(t[0]["request"]["amount"], "15000.00");
    assert_eq!(t[1]["request"]["action"], "1");
    assert_eq!(t[1]["request"]["merchant_prepare_id"], "77");
    let st = t[0]["request"]["sign_time"].as_str().unwrap();
    assert!(chrono::NaiveDateTime::parse_from_str(st, "%Y-%m-%d %H:%M:%S").is_ok());
    assert_eq!(v["payment_status"], 2);

    // A merchant that does not check the amount is caught by `wrong_amount`.
    let v = pay(
        &c,
        &base,
        json!({"pay_url": link("ord-1", "15000.00"), "scenario": "pay"}),
    )
    .await;
    assert_eq!(
        v["ok"], false,
        "a paid order must not be prepared again: {v:#}"
    );

    let r = c
        .post(format!("{base}/_control/click/pay"))
        .json(&json!({"pay_url": link("ord-9", "15.001"), "scenario": "pay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .post(format!("{base}/_control/click/pay"))
        .json(&json!({"pay_url": link("ord-9", "1").replace("merchant_id=678", "merchant_id=1"), "scenario": "pay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn merchant_api_auth_and_payments() {
    let (_sb, c, base) = setup().await;
    let paid = pay(&c, &base, json!({"pay_url": link("ord-1", "15000.00")})).await;
    assert_eq!(paid["ok"], true);
    let pid = paid["payment_id"].as_i64().unwrap();
    let api = |p: &str| format!("{base}/click/v2/merchant/{p}");

    let r = c
        .get(api(&format!("payment/status/{SERVICE}/{pid}")))
        .header("Auth", auth_header(now(), SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error_code"].clone(), v["payment_status"].clone()),
        (json!(0), json!(2))
    );

    for bad in [
        auth_header(now(), "wrong"),
        auth_header(now() - 3600, SECRET),
        "9001:abc".to_string(),
        format!(
            "42:{}:{}",
            merchant_digest(&now().to_string(), SECRET),
            now()
        ),
    ] {
        let r = c
            .get(api(&format!("payment/status/{SERVICE}/{pid}")))
            .header("Auth", &bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_code"], -16);
    }
    let r = c
        .get(api(&format!("payment/status/{SERVICE}/{pid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let v: Value = c
        .get(api(&format!("payment/status/{SERVICE}/999")))
        .header("Auth", auth_header(now(), SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error_code"], -6);

    // Fiscal data: the items must add up to the payment.
    let items = json!([{"Name": "Tea", "Barcode": "4780101164394", "Labels": ["047801011643945Wq&x<7"],
        "SPIC": "10901001001000000", "Units": 1, "PackageCode": "1500", "GoodPrice": 1_500_000,
        "Price": 1_500_000, "Amount": 1, "VAT": 160_714, "VATPercent": 12, "Discount": 0}]);
    let ofd = |ecash: i64, spic: &str| {
        let mut it = items.clone();
        it[0]["SPIC"] = json!(spic);
        json!({"service_id": 12345, "payment_id": pid, "items": it, "received_ecash": ecash,
               "received_cash": 0, "received_card": 0})
    };
    let send = |body: Value| {
        let c = c.clone();
        let url = api("payment/ofd_data/submit_items");
        async move {
            c.post(url)
                .header("Auth", auth_header(now(), SECRET))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        send(ofd(1_000_000, "10901001001000000")).await["error_code"],
        -2
    );
    assert_eq!(send(ofd(1_500_000, "123")).await["error_code"], -8);
    assert_eq!(
        send(ofd(1_500_000, "10901001001000000")).await["error_code"],
        0
    );

    // Reversal, twice.
    let rev = || {
        c.delete(api(&format!("payment/reversal/{SERVICE}/{pid}")))
            .header("Auth", auth_header(now(), SECRET))
            .send()
    };
    let v: Value = rev().await.unwrap().json().await.unwrap();
    assert_eq!(v["error_code"], 0, "{v}");
    let v: Value = rev().await.unwrap().json().await.unwrap();
    assert_eq!(v["error_code"], -4);
    let v: Value = c
        .get(api(&format!("payment/status/{SERVICE}/{pid}")))
        .header("Auth", auth_header(now(), SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["payment_status"], -2);
    let v: Value = c
        .get(api(&format!(
            "payment/status_by_mti/{SERVICE}/ord-1/2026-01-01"
        )))
        .header("Auth", auth_header(now(), SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["payment_id"], pid);
}

#[tokio::test]
async fn invoices_are_created_paid_and_reported() {
    let (_sb, c, base) = setup().await;
    let api = |p: &str| format!("{base}/click/v2/merchant/{p}");
    let r = c
        .post(api("invoice/create"))
        .header("Auth", auth_header(now(), SECRET))
        .json(
            &json!({"service_id": 12345, "amount": 15000.00, "phone_number": "998901234567",
                      "merchant_trans_id": "ord-inv"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], 0, "{v}");
    let inv = v["invoice_id"].as_i64().unwrap();
    let status = || async {
        c.get(api(&format!("invoice/status/{SERVICE}/{inv}")))
            .header("Auth", auth_header(now(), SECRET))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(status().await["invoice_status"], 0);
    let v = pay(&c, &base, json!({"invoice_id": inv})).await;
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(status().await["invoice_status"], 1);

    let v: Value = c
        .post(api("invoice/create"))
        .header("Auth", auth_header(now(), SECRET))
        .json(
            &json!({"service_id": 12345, "amount": 1.005, "phone_number": "998901234567",
                      "merchant_trans_id": "x"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error_code"], -2);
    let r = c
        .post(api("invoice/create"))
        .header("Auth", auth_header(now(), SECRET))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn pay_page_and_control_routes() {
    let (_sb, c, base) = setup().await;
    let q = link("ord-1", "15000.00");
    let q = q.split_once('?').unwrap().1;
    let r = c
        .get(format!("{base}/click/services/pay?{q}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("15000.00 UZS"));
    let r = c
        .get(format!("{base}/click/services/pay?service_id=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = c
        .post(format!("{base}/_control/click/faults"))
        .json(&json!({"down": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/click/services/pay?{q}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = c
        .get(format!("{base}/_control/click/payments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["count"], 0);
}
