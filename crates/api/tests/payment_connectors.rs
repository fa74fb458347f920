//! The `payme` and `click` connectors wired like `savdo serve` wires them, against the
//! simulators over HTTP: `POST /integrations/{id}/test` reports a real result (accepted and
//! refused credentials), and a Click payment taken through our hook is seen paid by the
//! connector's status call and reversed by its cancel (idempotently), as the simulator confirms.

// Amounts are written soum_tiyin (15_000_50 = 15 000.50 soum).
#![allow(clippy::inconsistent_digit_grouping)]

use std::sync::Arc;

use savdo_api::AppState;
use savdo_domain::clock::SystemClock;
use savdo_domain::tenant::Role;
use savdo_hub::connector::{CancelPayment, PaymentRef, PaymentState};
use savdo_hub::{HttpHub, MemorySink, Registry};
use savdo_integrations::{HookRegistry, VaultHandle};
use savdo_storage::{Actor, NewToken};
use serde_json::{Value, json};
use uuid::Uuid;

struct Env {
    base: String,
    http: reqwest::Client,
    token: String,
    sandbox: savdo_sandbox::RunningSandbox,
    hub: HttpHub,
    registry: Arc<Registry>,
    _dir: tempfile::TempDir,
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::builtin();
    savdo_connectors::payme::register(&mut r);
    savdo_connectors::click::register(&mut r);
    Arc::new(r)
}

async fn start() -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("savdo.db").display());
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
    let mut hooks = HookRegistry::new();
    hooks.register(
        "payme",
        Arc::new(savdo_connectors::payme::PaymeHooks::new(vault.clone())),
    );
    hooks.register("click", savdo_connectors::click::hooks());
    let hub = HttpHub::new(Arc::new(SystemClock), Arc::new(MemorySink::new())).unwrap();
    let registry = registry();
    let mut state = AppState::new(store.clone(), vault);
    state.hooks = Arc::new(hooks);
    state.registry = registry.clone();
    state.hub = Some(hub.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(savdo_api::serve(l, state, std::future::pending()));
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Env {
        base,
        http: reqwest::Client::new(),
        token,
        sandbox,
        hub,
        registry,
        _dir: dir,
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

    async fn integration(&self, body: Value) -> String {
        let (s, i) = self.api("POST", "/api/v1/integrations", body).await;
        assert_eq!(s, 201, "{i}");
        i["id"].as_str().unwrap().to_owned()
    }

    async fn test(&self, id: &str) -> Value {
        let (s, t) = self
            .api(
                "POST",
                &format!("/api/v1/integrations/{id}/test"),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{t}");
        t
    }
}

fn click_integration(env: &Env, secret: &str) -> Value {
    json!({"type": "click", "name": "Click", "test": false,
           "credentials": {"service_id": "777", "merchant_id": "555",
                           "secret_key": secret, "merchant_user_id": "42"},
           "settings": {"base_url": format!("{}/click/v2/merchant/", env.sandbox.url())}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_test_endpoint_reports_real_results() {
    let env = start().await;
    env.ctl(
        "/_control/click/seed",
        json!({"services": [{"service_id": "777", "merchant_id": "555",
                "secret_key": "SeCrEt", "merchant_user_id": "42",
                "prepare_url": format!("{}/hooks/click/x", env.base)}]}),
    )
    .await;
    let click = env.integration(click_integration(&env, "SeCrEt")).await;
    let t = env.test(&click).await;
    assert_eq!(t["health"]["status"], "ok", "{t}");
    assert_ne!(t["health"]["message"], savdo_integrations::UNTESTED);
    let wrong = env
        .integration(click_integration(&env, "not-the-secret"))
        .await;
    let t = env.test(&wrong).await;
    assert_eq!(t["health"]["status"], "down", "{t}");
    assert_eq!(t["status"], "failing", "{t}");
    let msg = t["health"]["message"].as_str().unwrap();
    assert!(msg.contains("credentials refused"), "{msg}");
    assert!(!t.to_string().contains("not-the-secret"));

    let payme = env
        .integration(json!({"type": "payme", "name": "Payme", "test": false,
            "credentials": {"merchant_id": "m-test-1", "key": "payme-key-1"},
            "settings": {"checkout_host": format!("{}/payme/", env.sandbox.url())}}))
        .await;
    let t = env.test(&payme).await;
    assert_eq!(t["health"]["status"], "ok", "{t}");
    assert!(
        t["health"]["message"]
            .as_str()
            .unwrap()
            .contains("inbound only"),
        "{t}"
    );
    let unreachable = env
        .integration(json!({"type": "payme", "name": "Payme 2", "test": false,
            "credentials": {"merchant_id": "m-test-1", "key": "payme-key-1"},
            "settings": {"checkout_host": "http://127.0.0.1:9/"}}))
        .await;
    let t = env.test(&unreachable).await;
    assert_eq!(t["health"]["status"], "degraded", "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_status_and_reversal_through_the_connector() {
    let env = start().await;
    let click = env.integration(click_integration(&env, "SeCrEt")).await;
    let hook = format!("{}/hooks/click/{click}", env.base);
    env.ctl(
        "/_control/click/seed",
        json!({"services": [{"service_id": "777", "merchant_id": "555",
                "secret_key": "SeCrEt", "merchant_user_id": "42",
                "prepare_url": hook, "complete_url": hook}]}),
    )
    .await;
    let (_, shop) = env
        .api("POST", "/api/v1/stores", json!({"name": "Main"}))
        .await;
    let shop = shop["id"].as_str().unwrap().to_owned();
    env.api(
        "POST",
        "/api/v1/terminals",
        json!({"store_id": shop, "name": "Till"}),
    )
    .await;
    let (_, t) = env
        .api(
            "GET",
            &format!("/api/v1/terminals?store_id={shop}"),
            Value::Null,
        )
        .await;
    let till = t["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, p) = env
        .api(
            "POST",
            "/api/v1/payments",
            json!({"provider": "click", "amount": 25_000_00, "store_id": shop,
                   "terminal_id": till}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let payment_id: Uuid = p["id"].as_str().unwrap().parse().unwrap();

    let connector = env
        .registry
        .build(
            &env.hub,
            &Uuid::new_v4().to_string(),
            &click,
            "click",
            &json!({"service_id": "777", "merchant_id": "555", "secret_key": "SeCrEt",
                    "merchant_user_id": "42"}),
            &json!({"base_url": format!("{}/click/v2/merchant/", env.sandbox.url())}),
        )
        .unwrap();
    let pay = connector.as_payments().unwrap();
    let r = PaymentRef {
        payment_id,
        provider_ref: None,
    };
    assert_eq!(pay.status(&r).await.unwrap().state, PaymentState::Pending);
    // The connector's link is the payments API's link.
    let out = pay
        .checkout(&savdo_hub::connector::CheckoutRequest {
            payment_id,
            amount: 25_000_00,
            description: None,
            return_url: None,
            lang: None,
            phone: None,
        })
        .await
        .unwrap();
    assert_eq!(out.url, p["checkout_url"].as_str().unwrap());

    // The buyer pays: Click runs Prepare and Complete against our hook.
    let paid = env
        .ctl("/_control/click/pay", json!({"pay_url": out.url}))
        .await;
    assert_eq!(paid["ok"], true, "{paid}");
    let s = pay.status(&r).await.unwrap();
    assert_eq!(s.state, PaymentState::Paid, "{s:?}");
    let click_payment = paid["payment_id"].as_i64().unwrap().to_string();
    assert_eq!(s.provider_ref.as_deref(), Some(click_payment.as_str()));

    // Partial reversal is not Click's; a whole one is, and repeating it changes nothing.
    let cancel = |amount| CancelPayment {
        payment: r.clone(),
        amount,
        reason: Some("customer returned".into()),
    };
    assert!(pay.cancel(&cancel(Some(100))).await.is_err());
    let c = pay.cancel(&cancel(None)).await.unwrap();
    assert_eq!(c.state, PaymentState::Refunded, "{c:?}");
    let again = pay.cancel(&cancel(None)).await.unwrap();
    assert_eq!(again.state, PaymentState::Refunded);
    assert_eq!(pay.status(&r).await.unwrap().state, PaymentState::Refunded);
    let sim: Value = env
        .http
        .get(format!("{}/_control/click/payments", env.sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = sim
        .as_array()
        .cloned()
        .or_else(|| sim["payments"].as_array().cloned())
        .unwrap();
    let mine: Vec<&Value> = list
        .iter()
        .filter(|x| x["merchant_trans_id"] == payment_id.to_string())
        .collect();
    assert_eq!(mine.len(), 1, "{sim}");
    assert_eq!(mine[0]["payment_status"], -2, "reversed once at Click");
}
