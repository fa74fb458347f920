//! Asl Belgisi simulator: code checks, the token flow, and the registry control routes.

use base64::Engine;
use serde_json::{Value, json};

const TOBACCO: &str = "04780101164394TF&csaNNW1kK0tL";

fn datamatrix() -> String {
    format!(
        "0104780101164394215Wq&x<7\u{1d}91EE06\u{1d}92{}",
        "B".repeat(44)
    )
}

async fn setup() -> (savdo_sandbox::RunningSandbox, reqwest::Client, String) {
    // reqwest is built without a bundled TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sb.url();
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/_control/aslbelgisi/seed"))
        .json(&json!({"api_keys": ["shop-key"], "codes": [
            {"cis": "04780101164394TF&csaN", "status": "INTRODUCED"},
            {"cis": "047801011643945Wq&x<7", "status": "INTRODUCED", "expire_date": "2099-12-31"},
            {"cis": "04780101164394OLD0001", "status": "INTRODUCED", "expire_date": "2020-01-01"},
            {"cis": "04780101164394BLK0001", "status": "INTRODUCED", "blocked": true},
            {"cis": "04780101164394SOLD001", "status": "RETIRED"},
            {"cis": "04780101164394EMIT001", "status": "EMITTED"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    (sb, c, base)
}

async fn check(c: &reqwest::Client, base: &str, key: Option<&str>, codes: Value) -> (u16, Value) {
    let mut r = c
        .post(format!("{base}/aslbelgisi/api/v4/true-api/codes/check"))
        .json(&json!({"codes": codes}));
    if let Some(k) = key {
        r = r.header("X-API-KEY", k);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn check_reports_each_code() {
    let (_sb, c, base) = setup().await;
    let codes = json!([
        TOBACCO,
        datamatrix(),
        "04780101164394OLD0001",
        "04780101164394BLK0001",
        "04780101164394SOLD001",
        "04780101164394EMIT001",
        "04780101164394UNKNOWN",
        "garbage",
        datamatrix().replace('\u{1d}', "<GS>")
    ]);
    let (s, v) = check(&c, &base, Some("shop-key"), codes).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert!(v["reqId"].is_string() && v["reqTimestamp"].is_number());
    let r = v["codes"].as_array().unwrap();
    assert_eq!(r.len(), 9);

    assert_eq!(r[0]["cis"], "04780101164394TF&csaN");
    assert_eq!(r[0]["gtin"], "04780101164394");
    assert_eq!(
        (
            r[0]["found"].clone(),
            r[0]["verified"].clone(),
            r[0]["realizable"].clone()
        ),
        (json!(true), json!(true), json!(true))
    );
    assert_eq!(r[1]["cis"], "047801011643945Wq&x<7");
    assert_eq!(r[1]["realizable"], true);
    assert_eq!(r[1]["expireDate"], "2099-12-31");
    assert_eq!(r[2]["realizable"], false); // expired
    assert_eq!(
        (r[3]["isBlocked"].clone(), r[3]["realizable"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(
        (r[4]["sold"].clone(), r[4]["realizable"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(
        (r[5]["utilised"].clone(), r[5]["realizable"].clone()),
        (json!(false), json!(false))
    );
    // A bare CIS has no crypto tail: found but not verified.
    assert_eq!(r[2]["verified"], false);
    assert_eq!(
        (
            r[6]["found"].clone(),
            r[6]["valid"].clone(),
            r[6]["errorCode"].clone()
        ),
        (json!(false), json!(true), json!(2))
    );
    assert_eq!(
        (r[7]["valid"].clone(), r[7]["errorCode"].clone()),
        (json!(false), json!(1))
    );
    assert_eq!(r[8]["cis"], "047801011643945Wq&x<7");
    assert_eq!(r[8]["found"], true);
}

#[tokio::test]
async fn check_auth_and_limits() {
    let (_sb, c, base) = setup().await;
    let (s, v) = check(&c, &base, None, json!([TOBACCO])).await;
    assert_eq!(s, 401);
    assert_eq!(v["code"], 401);
    let (s, _) = check(&c, &base, Some("wrong"), json!([TOBACCO])).await;
    assert_eq!(s, 401);
    let (s, _) = check(&c, &base, Some("demo-aslbelgisi-key"), json!([TOBACCO])).await;
    assert_eq!(s, 200);
    let many: Vec<&str> = vec![TOBACCO; 101];
    let (s, _) = check(&c, &base, Some("shop-key"), json!(many)).await;
    assert_eq!(s, 400);
    let (s, _) = check(&c, &base, Some("shop-key"), json!(vec![TOBACCO; 100])).await;
    assert_eq!(s, 200);
    let (s, _) = check(&c, &base, Some("shop-key"), json!([])).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn token_flow_and_cises_info() {
    let (_sb, c, base) = setup().await;
    let api = |p: &str| format!("{base}/aslbelgisi/api/v3/true-api/{p}");
    let key: Value = c
        .get(api("auth/key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (uuid, data) = (key["uuid"].as_str().unwrap(), key["data"].as_str().unwrap());
    let signed = base64::engine::general_purpose::STANDARD.encode(data);

    let r = c
        .post(api("auth/simpleSignIn"))
        .json(&json!({"uuid": uuid, "data": "bm9wZQ=="}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The challenge is single-use: a failed attempt burns it.
    let r = c
        .post(api("auth/simpleSignIn"))
        .json(&json!({"uuid": uuid, "data": signed}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let key: Value = c
        .get(api("auth/key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let signed = base64::engine::general_purpose::STANDARD.encode(key["data"].as_str().unwrap());
    let r = c
        .post(api("auth/simpleSignIn"))
        .json(&json!({"uuid": key["uuid"], "data": signed}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let r = c
        .post(api("cises/info"))
        .json(&json!([TOBACCO]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = c
        .post(api("cises/info"))
        .bearer_auth(&token)
        .json(&json!([TOBACCO, "04780101164394UNKNOWN"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v[0]["cisInfo"]["cis"], "04780101164394TF&csaN");
    assert_eq!(v[0]["cisInfo"]["status"], "INTRODUCED");
    assert!(v[1]["errorMessage"].is_string());
}

#[tokio::test]
async fn control_changes_status() {
    let (_sb, c, base) = setup().await;
    let r = c
        .post(format!("{base}/_control/aslbelgisi/status"))
        .json(&json!({"cis": TOBACCO, "status": "RETIRED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = check(&c, &base, Some("shop-key"), json!([TOBACCO])).await;
    assert_eq!(
        (
            v["codes"][0]["sold"].clone(),
            v["codes"][0]["realizable"].clone()
        ),
        (json!(true), json!(false))
    );
    let r = c
        .post(format!("{base}/_control/aslbelgisi/status"))
        .json(&json!({"cis": TOBACCO, "status": "SOLD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = c
        .post(format!("{base}/_control/aslbelgisi/status"))
        .json(&json!({"cis": "04780101164394NOPE001", "status": "RETIRED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = c
        .get(format!("{base}/_control/aslbelgisi/codes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["count"], 6);
    // Seeding refuses a GTIN with a wrong check digit.
    let r = c
        .post(format!("{base}/_control/aslbelgisi/seed"))
        .json(&json!({"codes": [{"cis": "04780101164395ABCDEFG", "status": "INTRODUCED"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // The common fault control still routes next to ours.
    let r = c
        .post(format!("{base}/_control/aslbelgisi/faults"))
        .json(&json!({"error_rate": 1.0, "status": 502}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = check(&c, &base, Some("shop-key"), json!([TOBACCO])).await;
    assert_eq!(s, 502);
}
