//! The `payme` and `click` payment connectors against the simulators over HTTP: connection
//! tests (accepted, refused credentials, unreachable host), checkout links that decode to the
//! right merchant, order and amount, and Payme's inbound-only operations answering clearly.
//! (Click status and reversal of a paid payment need our hook to take the payment: they are
//! tested with the real server in savdo-api's `payment_connectors` tests.)

// Amounts are written soum_tiyin (15_000_50 = 15 000.50 soum).
#![allow(clippy::inconsistent_digit_grouping)]

use std::sync::Arc;

use savdo_connectors::{click, payme};
use savdo_domain::clock::SystemClock;
use savdo_hub::connector::{CancelPayment, CheckoutRequest, PaymentRef, PaymentState};
use savdo_hub::{Connector, ConnectorError, HealthStatus, HttpHub, MemorySink, Registry};
use serde_json::{Value, json};
use uuid::Uuid;

struct Env {
    sandbox: savdo_sandbox::RunningSandbox,
    http: reqwest::Client,
    hub: HttpHub,
    sink: Arc<MemorySink>,
    registry: Registry,
}

async fn env() -> Env {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    // HttpHub installs the rustls crypto provider the test's own client needs too.
    let hub = HttpHub::new(Arc::new(SystemClock), sink.clone()).unwrap();
    let mut registry = Registry::builtin();
    payme::register(&mut registry);
    click::register(&mut registry);
    let env = Env {
        sandbox,
        http: reqwest::Client::new(),
        hub,
        sink,
        registry,
    };
    let r = env
        .http
        .post(format!("{}/_control/click/seed", env.sandbox.url()))
        .json(
            &json!({"services": [{"service_id": "777", "merchant_id": "555",
            "secret_key": "SeCrEt", "merchant_user_id": "42",
            "prepare_url": "http://127.0.0.1:9/hooks/click"}]}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = env
        .http
        .post(format!("{}/_control/payme/seed", env.sandbox.url()))
        .json(
            &json!({"merchants": [{"merchant_id": "m-test-1", "key": "payme-key-1",
            "endpoint": "http://127.0.0.1:9/hooks/payme"}]}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    env
}

impl Env {
    fn build(
        &self,
        kind: &str,
        credentials: Value,
        settings: Value,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        self.registry.build(
            &self.hub,
            &Uuid::new_v4().to_string(),
            &Uuid::new_v4().to_string(),
            kind,
            &credentials,
            &settings,
        )
    }

    fn click(&self, secret: &str, service: &str) -> Arc<dyn Connector> {
        self.build(
            "click",
            json!({"service_id": service, "merchant_id": "555", "secret_key": secret,
                   "merchant_user_id": "42"}),
            json!({"base_url": format!("{}/click/v2/merchant/", self.sandbox.url())}),
        )
        .expect("click connector")
    }

    fn payme(&self, host: &str) -> Arc<dyn Connector> {
        self.build(
            "payme",
            json!({"merchant_id": "m-test-1", "key": "payme-key-1"}),
            json!({"checkout_host": host}),
        )
        .expect("payme connector")
    }
}

fn request(amount: i64) -> CheckoutRequest {
    CheckoutRequest {
        payment_id: savdo_domain::ids::new_id(),
        amount,
        description: None,
        return_url: None,
        lang: None,
        phone: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_connection_test_accepts_and_refuses() {
    let env = env().await;
    let ok = env.click("SeCrEt", "777").test_connection().await.unwrap();
    assert_eq!(ok.status, HealthStatus::Ok);
    for (secret, service) in [("wrong", "777"), ("SeCrEt", "999")] {
        let e = env
            .click(secret, service)
            .test_connection()
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::Auth { .. }), "{e}");
    }
    // The Auth header (a digest of the secret) never reaches the exchange log readable.
    let log = format!("{:?}", env.sink.exchanges());
    assert!(log.contains("status_by_mti"), "{log:.300}");
    assert!(!log.contains("SeCrEt"));
    // Missing credentials are a configuration problem, found before any call.
    let e = env
        .build(
            "click",
            json!({"service_id": "777", "merchant_id": "555", "merchant_user_id": "42"}),
            json!({}),
        )
        .err()
        .unwrap();
    assert!(matches!(e, ConnectorError::Config { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_checkout_link_decodes() {
    let env = env().await;
    let c = env.click("SeCrEt", "777");
    let pay = c.as_payments().expect("payments capability");
    let mut req = request(15_000_50);
    req.return_url = Some("https://shop.example/paid".into());
    let out = pay.checkout(&req).await.unwrap();
    assert_eq!(out.qr_payload, out.url);
    let link = savdo_sandbox::click::parse_pay_link(&out.url).unwrap();
    assert_eq!(
        (
            link.service_id.as_str(),
            link.merchant_id.as_str(),
            link.amount
        ),
        ("777", "555", 15_000_50)
    );
    assert_eq!(link.transaction_param, req.payment_id.to_string());
    assert_eq!(
        link.return_url.as_deref(),
        Some("https://shop.example/paid")
    );
    // The same link the payments API makes.
    assert_eq!(
        out.url,
        click::pay_url(
            "777",
            "555",
            15_000_50,
            req.payment_id,
            Some("https://shop.example/paid")
        )
    );
    assert!(matches!(
        pay.checkout(&request(0)).await.unwrap_err(),
        ConnectorError::Rejected { .. }
    ));
    // No payment at Click yet: pending; nothing to reverse.
    let s = pay
        .status(&PaymentRef {
            payment_id: req.payment_id,
            provider_ref: None,
        })
        .await
        .unwrap();
    assert_eq!(s.state, PaymentState::Pending);
    let e = pay
        .cancel(&CancelPayment {
            payment: PaymentRef {
                payment_id: req.payment_id,
                provider_ref: None,
            },
            amount: None,
            reason: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ConnectorError::Rejected { code, .. } if code == "not_paid"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payme_checkout_link_decodes() {
    let env = env().await;
    let host = format!("{}/payme/", env.sandbox.url());
    let c = env.payme(&host);
    let pay = c.as_payments().expect("payments capability");
    let req = request(12_345_00);
    let out = pay.checkout(&req).await.unwrap();
    assert!(out.url.starts_with(&host), "{}", out.url);
    let d = savdo_sandbox::payme::parse_checkout(&out.url).unwrap();
    assert_eq!(d.merchant_id, "m-test-1");
    assert_eq!(
        d.account,
        vec![("order_id".to_string(), req.payment_id.to_string())]
    );
    assert_eq!(d.amount, 12_345_00);
    // The same link the payments API makes.
    assert_eq!(
        out.url,
        payme::checkout_url(
            &json!({"checkout_host": host}),
            "m-test-1",
            req.payment_id,
            12_345_00
        )
    );
    // Language and return URL ride along in the encoded parameters.
    let mut req2 = request(500_00);
    req2.lang = Some("uz".into());
    req2.return_url = Some("https://shop.example/back".into());
    let d2 = savdo_sandbox::payme::parse_checkout(&pay.checkout(&req2).await.unwrap().url).unwrap();
    assert_eq!(d2.lang.as_deref(), Some("uz"));
    assert_eq!(d2.callback.as_deref(), Some("https://shop.example/back"));
    let mut bad = request(500_00);
    bad.return_url = Some("https://x.example/a;b".into());
    assert!(matches!(
        pay.checkout(&bad).await.unwrap_err(),
        ConnectorError::Rejected { .. }
    ));
    // The sandbox's checkout page renders the link.
    let page = env.http.get(&out.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("12345.00 UZS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payme_connection_test_and_inbound_only_operations() {
    let env = env().await;
    let c = env.payme(&format!("{}/payme/", env.sandbox.url()));
    let h = c.test_connection().await.unwrap();
    assert_eq!(h.status, HealthStatus::Ok, "{h:?}");
    assert!(h.message.unwrap().contains("inbound only"));
    // An unreachable checkout host: nothing could be verified.
    let dead = env.payme("http://127.0.0.1:9/");
    let h = dead.test_connection().await.unwrap();
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(h.message.unwrap().contains("nothing could be verified"));
    // Without the key Payme's calls could never be verified: a configuration error.
    let e = env
        .build("payme", json!({"merchant_id": "m-test-1"}), json!({}))
        .err()
        .unwrap();
    assert!(matches!(e, ConnectorError::Config { .. }), "{e}");
    let e = env
        .build(
            "payme",
            json!({"merchant_id": "m-test-1", "key": "k"}),
            json!({"test_mode": true}),
        )
        .err()
        .unwrap();
    assert!(e.to_string().contains("test_key"), "{e}");
    // Status and cancel: Payme has no outbound API, and says where to look instead.
    let pay = c.as_payments().unwrap();
    let r = PaymentRef {
        payment_id: Uuid::now_v7(),
        provider_ref: None,
    };
    let e = pay.status(&r).await.unwrap_err();
    assert!(
        matches!(&e, ConnectorError::Rejected { code, message } if code == payme::UNSUPPORTED && message.contains("/api/v1/payments/")),
        "{e}"
    );
    let e = pay
        .cancel(&CancelPayment {
            payment: r,
            amount: None,
            reason: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(&e, ConnectorError::Rejected { code, .. } if code == payme::UNSUPPORTED));
}
