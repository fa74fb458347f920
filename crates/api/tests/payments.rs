//! Payments by QR against the Payme and Click merchant protocols, on SQLite and (with
//! `SAVDO_TEST_DATABASE_URL`) PostgreSQL: every Payme method and error code, idempotent
//! repeats, the 12-hour timeout on a test clock, a busy order, wrong amount and auth, statement
//! ranges, ChangePassword, restart reproducibility; Click Prepare/Complete through the
//! simulator; the SSE notification; QR images; receipts paid by QR.

// Amounts are written soum_tiyin (15_000_00 = 15 000.00 soum).
#![allow(clippy::inconsistent_digit_grouping)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::Utc;
use savdo_api::AppState;
use savdo_domain::clock::ManualClock;
use savdo_domain::tenant::Role;
use savdo_integrations::{HookRegistry, VaultHandle};
use savdo_storage::{Actor, NewToken, Storage};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

const PG_ENV: &str = "SAVDO_TEST_DATABASE_URL";
const KEY: &str = "payme-key-1";

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Env {
    base: String,
    http: reqwest::Client,
    store: Arc<dyn Storage>,
    token: String,
    clock: Arc<ManualClock>,
    sandbox: savdo_sandbox::RunningSandbox,
    shop: Uuid,
    till: Uuid,
    payme: Uuid,
    click: Uuid,
    dir: tempfile::TempDir,
    url: String,
    pg: Option<(String, String)>,
}

fn with_db(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{db}"),
        None => url.to_owned(),
    }
}

async fn start(backend: Backend) -> Option<Env> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut pg = None;
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("savdo.db").display()),
        Backend::Postgres => {
            let Some(admin) = std::env::var(PG_ENV).ok().filter(|v| !v.is_empty()) else {
                let _ = writeln!(std::io::stderr(), "SKIP postgres: {PG_ENV} is not set");
                return None;
            };
            let db = format!("savdo_p_{}", Uuid::new_v4().simple());
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
                .execute(&mut c)
                .await
                .unwrap();
            pg = Some((admin.clone(), db.clone()));
            with_db(&admin, &db)
        }
    };
    let store = savdo_storage::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let tenant = store.create_tenant("QR shop").await.unwrap().id;
    let token = savdo_api::routes::tokens::generate_token();
    store
        .create_token(
            &Actor::system(tenant),
            &NewToken {
                name: "owner".into(),
                role: Role::Owner,
                store_id: None,
            },
            &savdo_api::extract::hash_token(&token),
        )
        .await
        .unwrap();
    let vault = Arc::new(VaultHandle::open(dir.path()).unwrap());
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut hooks = HookRegistry::new();
    hooks.register(
        "payme",
        Arc::new(savdo_connectors::payme::PaymeHooks::new(vault.clone())),
    );
    hooks.register("click", savdo_connectors::click::hooks());
    let mut state = AppState::new(store.clone(), vault);
    state.clock = clock.clone();
    state.hooks = Arc::new(hooks);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(savdo_api::serve(l, state, std::future::pending()));
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut env = Env {
        base,
        http: reqwest::Client::new(),
        store,
        token,
        clock,
        sandbox,
        shop: Uuid::nil(),
        till: Uuid::nil(),
        payme: Uuid::nil(),
        click: Uuid::nil(),
        dir,
        url: url.clone(),
        pg,
    };
    env.shop = env
        .api("POST", "/api/v1/stores", json!({"name": "Main"}))
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    env.api(
        "POST",
        "/api/v1/terminals",
        json!({"store_id": env.shop, "name": "Till"}),
    )
    .await;
    let (_, t) = env
        .api(
            "GET",
            &format!("/api/v1/terminals?store_id={}", env.shop),
            Value::Null,
        )
        .await;
    env.till = t["items"][0]["id"].as_str().unwrap().parse().unwrap();
    let (s, p) = env
        .api(
            "POST",
            "/api/v1/integrations",
            json!({"type": "payme", "name": "Payme", "test": false,
                   "credentials": {"merchant_id": "m-test-1", "key": KEY}}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    env.payme = p["id"].as_str().unwrap().parse().unwrap();
    let (s, c) = env
        .api(
            "POST",
            "/api/v1/integrations",
            json!({"type": "click", "name": "Click", "test": false,
                   "credentials": {"service_id": "777", "merchant_id": "555",
                                   "secret_key": "SeCrEt", "merchant_user_id": "42"},
                   "settings": {"base_url": format!("{}/click/v2/merchant/", env.sandbox.url())}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    env.click = c["id"].as_str().unwrap().parse().unwrap();
    Some(env)
}

async fn finish(env: Env) {
    if let Some((admin, db)) = &env.pg {
        drop(env.store);
        if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }
}

impl Env {
    async fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if !body.is_null() {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let s = r.status().as_u16();
        let t = r.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    async fn payment(&self, provider: &str, amount: i64) -> Value {
        let (s, p) = self
            .api(
                "POST",
                "/api/v1/payments",
                json!({"provider": provider, "amount": amount, "store_id": self.shop,
                       "terminal_id": self.till, "description": "QR test"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        assert_eq!(p["status"], "pending");
        p
    }

    async fn status(&self, id: &Value) -> String {
        let (_, p) = self
            .api(
                "GET",
                &format!("/api/v1/payments/{}", id.as_str().unwrap()),
                Value::Null,
            )
            .await;
        p["status"].as_str().unwrap().to_owned()
    }

    /// One Payme RPC with `Paycom:<key>` (None: no Authorization header).
    async fn rpc(&self, key: Option<&str>, method: &str, params: Value) -> Value {
        // Payme numbers its calls; an exact retransmission is answered from the inbox.
        static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1);
        let rpc_id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = self
            .http
            .post(format!("{}/hooks/payme/{}", self.base, self.payme))
            .json(&json!({"id": rpc_id, "method": method, "params": params}));
        if let Some(k) = key {
            let b = base64::engine::general_purpose::STANDARD.encode(format!("Paycom:{k}"));
            r = r.header("Authorization", format!("Basic {b}"));
        }
        let r = r.send().await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "Payme answers are always HTTP 200"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["id"], rpc_id, "{v}");
        v
    }

    async fn ctl(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.sandbox.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(s.is_success(), "{path}: {v}");
        v
    }

    async fn seed(&self) {
        self.ctl(
            "/_control/payme/seed",
            json!({"merchants": [{"merchant_id": "m-test-1", "key": KEY,
                    "endpoint": format!("{}/hooks/payme/{}", self.base, self.payme)}]}),
        )
        .await;
        let hook = format!("{}/hooks/click/{}", self.base, self.click);
        self.ctl(
            "/_control/click/seed",
            json!({"services": [{"service_id": "777", "merchant_id": "555",
                    "secret_key": "SeCrEt", "merchant_user_id": "42",
                    "prepare_url": hook, "complete_url": hook}]}),
        )
        .await;
    }
}

/// A second server on the same database and key file, as after a restart; its base URL.
async fn restarted(env: &Env) -> String {
    let store = savdo_storage::connect(&env.url).await.unwrap();
    let vault = Arc::new(VaultHandle::open(env.dir.path()).unwrap());
    let mut hooks = HookRegistry::new();
    hooks.register(
        "payme",
        Arc::new(savdo_connectors::payme::PaymeHooks::new(vault.clone())),
    );
    let mut state = AppState::new(store, vault);
    state.clock = env.clock.clone();
    state.hooks = Arc::new(hooks);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(savdo_api::serve(l, state, std::future::pending()));
    base
}

fn code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

fn account(p: &Value) -> Value {
    json!({"order_id": p["id"]})
}

fn now_ms(env: &Env) -> i64 {
    use savdo_domain::clock::Clock;
    env.clock.now().timestamp_millis()
}

// ----------------------------------------------------------------------------- Payme

async fn payme_protocol(env: Env) -> Env {
    let p = env.payment("payme", 15_000_00).await;
    let url = p["checkout_url"].as_str().unwrap();
    let decoded = savdo_sandbox::payme::parse_checkout(url).unwrap();
    assert_eq!(decoded.merchant_id, "m-test-1");
    assert_eq!(decoded.amount, 15_000_00);
    let acc = account(&p);
    let amount = 15_000_00;

    // Auth: wrong or missing key -> -32504, nothing changes.
    let r = env
        .rpc(
            Some("wrong"),
            "CreateTransaction",
            json!({"id": "a".repeat(24), "time": now_ms(&env), "amount": amount, "account": acc}),
        )
        .await;
    assert_eq!(code(&r), -32504);
    assert!(r["error"]["message"]["uz"].is_string());
    let r = env
        .rpc(
            None,
            "CheckPerformTransaction",
            json!({"amount": amount, "account": acc}),
        )
        .await;
    assert_eq!(code(&r), -32504);
    let r = env
        .rpc(Some(KEY), "CheckTransaction", json!({"id": "a".repeat(24)}))
        .await;
    assert_eq!(code(&r), -31003, "nothing was created: {r}");

    // Request and account errors.
    let r = env.rpc(Some(KEY), "Nope", json!({})).await;
    assert_eq!(code(&r), -32601);
    let r = env
        .rpc(Some(KEY), "CheckPerformTransaction", json!({"amount": "x"}))
        .await;
    assert_eq!(code(&r), -32600);
    let r = env
        .rpc(
            Some(KEY),
            "CheckPerformTransaction",
            json!({"amount": amount + 100, "account": acc}),
        )
        .await;
    assert_eq!(code(&r), -31001);
    let r = env
        .rpc(
            Some(KEY),
            "CheckPerformTransaction",
            json!({"amount": amount, "account": {"order_id": Uuid::new_v4()}}),
        )
        .await;
    assert_eq!(code(&r), -31050);
    assert_eq!(r["error"]["data"], "order_id");
    let r = env
        .rpc(
            Some(KEY),
            "CheckPerformTransaction",
            json!({"amount": amount, "account": acc}),
        )
        .await;
    assert_eq!(r["result"]["allow"], true, "{r}");

    // Parse error.
    let b = base64::engine::general_purpose::STANDARD.encode(format!("Paycom:{KEY}"));
    let raw = env
        .http
        .post(format!("{}/hooks/payme/{}", env.base, env.payme))
        .header("Authorization", format!("Basic {b}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 200);
    let v: Value = raw.json().await.unwrap();
    assert_eq!(code(&v), -32700);

    // Not POST -> -32300, HTTP 200.
    let r = env
        .http
        .get(format!("{}/hooks/payme/{}", env.base, env.payme))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), -32300);

    // Create, repeat, a second transaction on the busy order, wrong amount on create.
    let t1 = "b".repeat(24);
    let t0 = now_ms(&env);
    let c = env
        .rpc(
            Some(KEY),
            "CreateTransaction",
            json!({"id": t1, "time": t0, "amount": amount, "account": acc}),
        )
        .await;
    assert_eq!(c["result"]["state"], 1, "{c}");
    let again = env
        .rpc(
            Some(KEY),
            "CreateTransaction",
            json!({"id": t1, "time": t0, "amount": amount, "account": acc}),
        )
        .await;
    assert_eq!(again["result"], c["result"]);
    let busy = env
        .rpc(
            Some(KEY),
            "CreateTransaction",
            json!({"id": "c".repeat(24), "time": t0, "amount": amount, "account": acc}),
        )
        .await;
    let bc = code(&busy);
    assert!((-31099..=-31050).contains(&bc), "{busy}");
    let r = env
        .rpc(
            Some(KEY),
            "CreateTransaction",
            json!({"id": "d".repeat(24), "time": t0, "amount": amount - 1, "account": acc}),
        )
        .await;
    assert_eq!(code(&r), -31001);

    // Perform, repeat; the payment is paid.
    env.clock.advance(chrono::Duration::seconds(5));
    let pf = env
        .rpc(Some(KEY), "PerformTransaction", json!({"id": t1}))
        .await;
    assert_eq!(pf["result"]["state"], 2, "{pf}");
    assert!(pf["result"]["perform_time"].as_i64().unwrap() > 0);
    let pf2 = env
        .rpc(Some(KEY), "PerformTransaction", json!({"id": t1}))
        .await;
    assert_eq!(pf2["result"], pf["result"]);
    assert_eq!(env.status(&p["id"]).await, "paid");
    let r = env
        .rpc(
            Some(KEY),
            "PerformTransaction",
            json!({"id": "z".repeat(24)}),
        )
        .await;
    assert_eq!(code(&r), -31003);
    // A paid order takes no new transaction.
    let r = env
        .rpc(
            Some(KEY),
            "CheckPerformTransaction",
            json!({"amount": amount, "account": acc}),
        )
        .await;
    assert!((-31099..=-31050).contains(&code(&r)));

    let ck = env
        .rpc(Some(KEY), "CheckTransaction", json!({"id": t1}))
        .await;
    assert_eq!(ck["result"]["state"], 2);
    assert_eq!(ck["result"]["create_time"], c["result"]["create_time"]);
    assert_eq!(ck["result"]["cancel_time"], 0);
    assert_eq!(ck["result"]["reason"], Value::Null);

    // Cancel a performed transaction: -2, the payment is refunded; a repeat is the same.
    let r = env
        .rpc(
            Some(KEY),
            "CancelTransaction",
            json!({"id": t1, "reason": 99}),
        )
        .await;
    assert_eq!(code(&r), -32600);
    let cn = env
        .rpc(
            Some(KEY),
            "CancelTransaction",
            json!({"id": t1, "reason": 5}),
        )
        .await;
    assert_eq!(cn["result"]["state"], -2, "{cn}");
    let cn2 = env
        .rpc(
            Some(KEY),
            "CancelTransaction",
            json!({"id": t1, "reason": 5}),
        )
        .await;
    assert_eq!(cn2["result"], cn["result"]);
    assert_eq!(env.status(&p["id"]).await, "refunded");
    let ck = env
        .rpc(Some(KEY), "CheckTransaction", json!({"id": t1}))
        .await;
    assert_eq!(ck["result"]["state"], -2);
    assert_eq!(ck["result"]["reason"], 5);
    let r = env
        .rpc(Some(KEY), "PerformTransaction", json!({"id": t1}))
        .await;
    assert_eq!(code(&r), -31008);
    let r = env
        .rpc(
            Some(KEY),
            "CancelTransaction",
            json!({"id": "z".repeat(24), "reason": 1}),
        )
        .await;
    assert_eq!(code(&r), -31003);

    // Cancel before perform: -1, the order is free again.
    let p2 = env.payment("payme", 500_00).await;
    let acc2 = account(&p2);
    let t2 = "e".repeat(24);
    env.rpc(
        Some(KEY),
        "CreateTransaction",
        json!({"id": t2, "time": now_ms(&env), "amount": 500_00, "account": acc2}),
    )
    .await;
    let cn = env
        .rpc(
            Some(KEY),
            "CancelTransaction",
            json!({"id": t2, "reason": 3}),
        )
        .await;
    assert_eq!(cn["result"]["state"], -1);
    assert_eq!(env.status(&p2["id"]).await, "pending");

    // The 12-hour timeout, on the test clock: Perform cancels with reason 4 and answers -31008.
    let t3 = "f".repeat(24);
    let r = env
        .rpc(
            Some(KEY),
            "CreateTransaction",
            json!({"id": t3, "time": now_ms(&env), "amount": 500_00, "account": acc2}),
        )
        .await;
    assert_eq!(r["result"]["state"], 1, "{r}");
    env.clock
        .advance(chrono::Duration::milliseconds(43_200_001));
    let r = env
        .rpc(Some(KEY), "PerformTransaction", json!({"id": t3}))
        .await;
    assert_eq!(code(&r), -31008);
    let ck = env
        .rpc(Some(KEY), "CheckTransaction", json!({"id": t3}))
        .await;
    assert_eq!(ck["result"]["state"], -1);
    assert_eq!(ck["result"]["reason"], 4);
    let r = env
        .rpc(
            Some(KEY),
            "CreateTransaction",
            json!({"id": t3, "time": now_ms(&env), "amount": 500_00, "account": acc2}),
        )
        .await;
    assert_eq!(code(&r), -31008);

    // GetStatement: ranges are inclusive, ascending by create_time.
    let all = env
        .rpc(
            Some(KEY),
            "GetStatement",
            json!({"from": 0, "to": now_ms(&env)}),
        )
        .await;
    let list = all["result"]["transactions"].as_array().unwrap();
    let ids: Vec<&str> = list.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![t1.as_str(), t2.as_str(), t3.as_str()], "{all}");
    let ct = list[0]["create_time"].as_i64().unwrap();
    let one = env
        .rpc(Some(KEY), "GetStatement", json!({"from": ct, "to": ct}))
        .await;
    assert!(
        one["result"]["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == t1.as_str())
    );
    let none = env
        .rpc(Some(KEY), "GetStatement", json!({"from": 1, "to": 2}))
        .await;
    assert_eq!(none["result"]["transactions"], json!([]));
    assert_eq!(list[0]["account"]["order_id"], p["id"]);

    // Every answer is reproducible from the database alone (a new server, same store).
    let before = env
        .rpc(Some(KEY), "CheckTransaction", json!({"id": t1}))
        .await;
    let stored = env.store.payme_tx(env.payme, &t1).await.unwrap().unwrap();
    assert_eq!(before["result"], savdo_connectors::payme::tx_json(&stored));

    // After a restart (a new server on the same database and key file) the answers are the
    // same.
    let again = restarted(&env).await;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("Paycom:{KEY}"));
    for (method, params) in [
        ("CheckTransaction", json!({"id": t1})),
        ("CheckTransaction", json!({"id": t3})),
        ("PerformTransaction", json!({"id": t1})),
        ("CancelTransaction", json!({"id": t1, "reason": 5})),
        ("GetStatement", json!({"from": 0, "to": now_ms(&env)})),
    ] {
        let first = env.rpc(Some(KEY), method, params.clone()).await;
        let v: Value = env
            .http
            .post(format!("{again}/hooks/payme/{}", env.payme))
            .header("Authorization", format!("Basic {b}"))
            .json(&json!({"id": 1_000_000, "method": method, "params": params}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(first.get("result"), v.get("result"), "{method}");
        assert_eq!(first.get("error"), v.get("error"), "{method}");
    }

    // ChangePassword: the new key is required afterwards, the old one is refused.
    let r = env
        .rpc(
            Some(KEY),
            "ChangePassword",
            json!({"password": "new-key-2"}),
        )
        .await;
    assert_eq!(r["result"]["success"], true, "{r}");
    let r = env
        .rpc(Some(KEY), "CheckTransaction", json!({"id": t1}))
        .await;
    assert_eq!(code(&r), -32504);
    let r = env
        .rpc(Some("new-key-2"), "CheckTransaction", json!({"id": t1}))
        .await;
    assert_eq!(r["result"]["state"], -2);
    let r = env
        .rpc(
            Some("new-key-2"),
            "ChangePassword",
            json!({"password": KEY}),
        )
        .await;
    assert_eq!(r["result"]["success"], true);

    // Fiscal detail when the payment is tied to a receipt: MXIK, package code, VAT 12 %.
    let (_, prod) = env
        .api(
            "POST",
            "/api/v1/products",
            json!({"sku": "MILK", "name": "Milk", "price": 10_000_00,
                   "mxik": "10202001001000000", "package_code": "1508583", "unit": 1}),
        )
        .await;
    let (s, rc) = env
        .api(
            "POST",
            "/api/v1/receipts",
            json!({"id": Uuid::now_v7(), "store_id": env.shop, "terminal_id": env.till,
                   "lines": [{"product_id": prod["id"], "qty": 2}],
                   "payments": [{"method": "cash", "amount": 20_000_00}]}),
        )
        .await;
    assert_eq!(s, 201, "{rc}");
    let (s, tied) = env
        .api(
            "POST",
            "/api/v1/payments",
            json!({"provider": "payme", "amount": 20_000_00, "store_id": env.shop,
                   "terminal_id": env.till, "receipt_id": rc["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{tied}");
    let r = env
        .rpc(
            Some(KEY),
            "CheckPerformTransaction",
            json!({"amount": 20_000_00, "account": account(&tied)}),
        )
        .await;
    let item = &r["result"]["detail"]["items"][0];
    assert_eq!(item["code"], "10202001001000000", "{r}");
    assert_eq!(item["package_code"], "1508583");
    assert_eq!(item["vat_percent"], 12);
    assert_eq!(item["count"], 2);
    assert_eq!(item["price"], 10_000_00);
    env
}

// ----------------------------------------------------------------------------- end to end

async fn sse_receipt_and_qr(env: Env) -> Env {
    env.seed().await;
    let p = env.payment("payme", 12_000_00).await;
    let id = p["id"].as_str().unwrap().to_owned();

    // QR codes.
    let svg = env
        .http
        .get(format!("{}{}", env.base, p["qr_svg_url"].as_str().unwrap()))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"));
    let png = env
        .http
        .get(format!("{}{}", env.base, p["qr_png_url"].as_str().unwrap()))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    let png = png.bytes().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..16], b"IHDR");

    // SSE: connect, pay through the simulator, hear "paid" within a second.
    let mut sse = env
        .http
        .get(format!("{}/api/v1/payments/{id}/events", env.base))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    let mut seen = String::new();
    while !seen.contains("\"pending\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), sse.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let paid = env
        .ctl(
            "/_control/payme/pay",
            json!({"checkout_url": p["checkout_url"], "scenario": "pay"}),
        )
        .await;
    let at = Instant::now();
    assert_eq!(paid["ok"], true, "{paid}");
    while !seen.contains("\"paid\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(2), sse.chunk())
            .await
            .expect("paid event in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
    assert!(seen.contains("event: payment"), "{seen}");

    // The paid payment pays a receipt once; a wrong amount or a reuse is refused.
    let prod = env
        .api(
            "POST",
            "/api/v1/products",
            json!({"sku": "TEA", "name": "Tea", "price": 12_000_00}),
        )
        .await
        .1["id"]
        .clone();
    let receipt = |pay: Value| {
        json!({"id": Uuid::now_v7(), "store_id": env.shop, "terminal_id": env.till,
               "lines": [{"product_id": prod, "qty": 1}], "payments": pay})
    };
    let unpaid = env.payment("payme", 12_000_00).await;
    let (s, r) = env
        .api(
            "POST",
            "/api/v1/receipts",
            receipt(json!([{"method": "payme", "amount": 12_000_00, "payment_id": unpaid["id"]}])),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    assert!(r.to_string().contains("payments[0].payment_id"), "{r}");
    let (s, r) = env
        .api(
            "POST",
            "/api/v1/receipts",
            receipt(
                json!([{"method": "payme", "amount": 11_000_00, "payment_id": id},
                           {"method": "cash", "amount": 1_000_00}]),
            ),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    assert!(r.to_string().contains("payments[0].payment_id"), "{r}");
    let (s, r) = env
        .api(
            "POST",
            "/api/v1/receipts",
            receipt(json!([{"method": "payme", "amount": 12_000_00, "payment_id": id}])),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = env
        .api(
            "POST",
            "/api/v1/receipts",
            receipt(json!([{"method": "payme", "amount": 12_000_00, "payment_id": id}])),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    assert!(r.to_string().contains("payments[0].payment_id"), "{r}");
    let (_, got) = env
        .api("GET", &format!("/api/v1/payments/{id}"), Value::Null)
        .await;
    assert!(got["used_by_receipt"].is_string(), "{got}");
    // The order is fulfilled (used by a receipt): Payme cannot cancel it.
    let r = env
        .rpc(
            Some(KEY),
            "CancelTransaction",
            json!({"id": paid["transaction_id"], "reason": 5}),
        )
        .await;
    assert_eq!(code(&r), -31007, "{r}");
    assert_eq!(env.status(&p["id"]).await, "paid");

    // Payme scenarios from the simulator.
    for scenario in [
        "cancel_after_create",
        "timeout",
        "retry",
        "wrong_amount",
        "bad_auth",
    ] {
        let q = env.payment("payme", 3_000_00).await;
        let r = env
            .ctl(
                "/_control/payme/pay",
                json!({"checkout_url": q["checkout_url"], "scenario": scenario}),
            )
            .await;
        assert_eq!(r["ok"], true, "{scenario}: {r}");
    }
    let q = env.payment("payme", 3_000_00).await;
    let r = env
        .ctl(
            "/_control/payme/pay",
            json!({"checkout_url": q["checkout_url"], "scenario": "cancel_after_perform"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(env.status(&q["id"]).await, "refunded");

    // Events in the outbox.
    fn publish(
        _: &[savdo_storage::OutboxEvent],
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    while env.store.relay_batch(500, &publish).await.unwrap() > 0 {}
    let events = env.store.published_after(0, 10_000).await.unwrap();
    let text = format!("{events:?}");
    for kind in ["payment.created", "payment.completed", "payment.refunded"] {
        assert!(text.contains(kind), "{kind} missing");
    }
    env
}

async fn click_end_to_end(env: Env) -> Env {
    env.seed().await;
    let p = env.payment("click", 15_000_00).await;
    let link = p["checkout_url"].as_str().unwrap();
    assert!(link.starts_with("https://my.click.uz/services/pay?service_id=777&merchant_id=555&amount=15000.00&transaction_param="), "{link}");
    // A broken signature changes nothing.
    let r = env
        .ctl(
            "/_control/click/pay",
            json!({"pay_url": link, "scenario": "bad_sign"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = env
        .ctl(
            "/_control/click/pay",
            json!({"pay_url": link, "scenario": "wrong_amount"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = env
        .ctl(
            "/_control/click/pay",
            json!({"pay_url": link, "scenario": "fail_debit"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(env.status(&p["id"]).await, "pending");
    let r = env
        .ctl(
            "/_control/click/pay",
            json!({"pay_url": link, "scenario": "repeat_complete"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(env.status(&p["id"]).await, "paid");
    // Another attempt on a paid order: Prepare answers -4.
    let r = env
        .http
        .post(format!("{}/_control/click/pay", env.sandbox.url()))
        .json(&json!({"pay_url": link, "scenario": "pay"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v.to_string().contains("-4"), "{v}");

    // A paid Click payment is cancelled through the Merchant API (reversal).
    let (s, c) = env
        .api(
            "POST",
            &format!("/api/v1/payments/{}/cancel", p["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "refunded");

    // A pending payment is cancelled locally; Click then meets -9.
    let q = env.payment("click", 1_000_00).await;
    let (s, c) = env
        .api(
            "POST",
            &format!("/api/v1/payments/{}/cancel", q["id"].as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "cancelled");

    // Receipt paid by Click QR.
    let r = env.payment("click", 2_000_00).await;
    let done = env
        .ctl(
            "/_control/click/pay",
            json!({"pay_url": r["checkout_url"], "scenario": "pay"}),
        )
        .await;
    assert_eq!(done["ok"], true, "{done}");
    let prod = env
        .api(
            "POST",
            "/api/v1/products",
            json!({"sku": "BUN", "name": "Bun", "price": 2_000_00}),
        )
        .await
        .1["id"]
        .clone();
    let (s, rc) = env
        .api(
            "POST",
            "/api/v1/receipts",
            json!({"id": Uuid::now_v7(), "store_id": env.shop, "terminal_id": env.till,
                   "lines": [{"product_id": prod, "qty": 1}],
                   "payments": [{"method": "click", "amount": 2_000_00, "payment_id": r["id"]}]}),
        )
        .await;
    assert_eq!(s, 201, "{rc}");
    env
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(env) = super::start(super::Backend::Sqlite).await {
                        let env = super::$name(env).await;
                        super::finish(env).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(env) = super::start(super::Backend::Postgres).await {
                        let env = super::$name(env).await;
                        super::finish(env).await;
                    }
                }
            }
        )*
    };
}

backend_tests!(payme_protocol, sse_receipt_and_qr, click_end_to_end);
