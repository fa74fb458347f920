//! The `jowi_club` connector against the JOWi Club simulator over HTTP: look-ups by each
//! identifier, both auth modes, quote and commit, spending points, full and partial refunds,
//! idempotent retries (the simulator's ledger shows one effect, also when an answer was lost),
//! outages within the look-up budget, and credentials that never show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use savdo_connectors::jowi_club;
use savdo_domain::clock::SystemClock;
use savdo_hub::connector::{
    CommitSale, CustomerLookup, LoyaltyLine, LoyaltyProvider, LoyaltyRefund, QuoteRequest,
};
use savdo_hub::{Connector, ConnectorError, HttpHub, MemorySink, Registry};
use savdo_sandbox::jowi_club::{DEMO_API_KEY, DEMO_API_SECRET, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use serde_json::{Value, json};
use uuid::Uuid;

struct Env {
    sandbox: savdo_sandbox::RunningSandbox,
    http: reqwest::Client,
    sink: Arc<MemorySink>,
    connector: Arc<dyn Connector>,
}

impl Env {
    fn loyalty(&self) -> &dyn LoyaltyProvider {
        self.connector.as_loyalty().expect("loyalty capability")
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_control/jowi-club/{path}", self.sandbox.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}");
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_control/jowi-club/{path}", self.sandbox.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn ledger(&self) -> Vec<Value> {
        self.get("ledger").await["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn balance(&self, customer: &str) -> i64 {
        let all = self.get("customers").await;
        all["customers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == customer)
            .and_then(|c| c["balance"].as_i64())
            .unwrap()
    }

    async fn token_calls(&self) -> usize {
        let calls: Value = self
            .http
            .get(format!("{}/_control/jowi-club/calls", self.sandbox.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = calls
            .as_array()
            .cloned()
            .or_else(|| calls["calls"].as_array().cloned())
            .unwrap_or_default();
        list.iter()
            .filter(|c| {
                c["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/oauth/token"))
            })
            .count()
    }
}

async fn env_with(credentials: impl FnOnce(&str) -> Value, settings: Value) -> Env {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    // HttpHub installs the rustls crypto provider the test's own client needs too.
    let hub = HttpHub::new(Arc::new(SystemClock), sink.clone()).unwrap();
    let mut registry = Registry::builtin();
    jowi_club::register(&mut registry);
    let base = format!("{}/jowi-club", sandbox.url());
    let mut settings = settings;
    settings["base_url"] = json!(base);
    let connector = registry
        .build(
            &hub,
            &Uuid::new_v4().to_string(),
            &Uuid::new_v4().to_string(),
            "jowi_club",
            &credentials(&base),
            &settings,
        )
        .expect("connector");
    let env = Env {
        sandbox,
        http: reqwest::Client::new(),
        sink,
        connector,
    };
    env.control(
        "seed",
        json!({"customers": [{"id": "cus_t1", "card": "8600111122223333", "phone": "998911234567",
            "code": "777111", "name": "Test Buyer", "balance": 1000, "discount_percent": 5,
            "earn_percent": 10, "level": "gold"}]}),
    )
    .await;
    env
}

fn sig_credentials(_: &str) -> Value {
    json!({"api_key": DEMO_API_KEY, "api_secret": DEMO_API_SECRET,
           "webhook_secret": "whsec_test_value"})
}

async fn env() -> Env {
    env_with(
        sig_credentials,
        json!({"store_refs": {"store-1": "jw-store-1"}}),
    )
    .await
}

fn lines() -> Vec<LoyaltyLine> {
    vec![
        LoyaltyLine {
            line_ref: "l1".into(),
            name: "Non".into(),
            quantity: 2000,
            price: 500_000,
            amount: 1_000_000,
        },
        LoyaltyLine {
            line_ref: "l2".into(),
            name: "Olma".into(),
            quantity: 1500,
            price: 200_000,
            amount: 300_000,
        },
    ]
}

fn sale(receipt: Uuid, spend: i64) -> CommitSale {
    CommitSale {
        receipt_id: receipt,
        customer_id: "cus_t1".into(),
        store_id: "store-1".into(),
        total: 1_235_000 - spend * 100,
        spend_points: spend,
        lines: lines(),
    }
}

#[test]
fn sig_matches_the_simulator() {
    assert_eq!(
        jowi_club::sig(DEMO_API_KEY, DEMO_API_SECRET),
        savdo_sandbox::jowi_club::sig(DEMO_API_KEY, DEMO_API_SECRET)
    );
    let body = br#"{"id":"x"}"#;
    let s = savdo_sandbox::jowi_club::webhook_signature("whsec", body);
    assert!(jowi_club::verify_webhook("whsec", body, &s));
    assert!(!jowi_club::verify_webhook("wrong", body, &s));
}

#[tokio::test]
async fn lookup_by_card_phone_and_code() {
    let env = env().await;
    assert!(env.connector.test_connection().await.is_ok());
    let l = env.loyalty();
    for by in [
        CustomerLookup::Card("8600111122223333".into()),
        CustomerLookup::Phone("+998 91 123-45-67".into()),
        CustomerLookup::Code("777111".into()),
    ] {
        let c = l.find_customer(&by).await.unwrap().expect("found");
        assert_eq!(c.id, "cus_t1", "{by:?}");
        assert_eq!(c.level.as_deref(), Some("gold"));
        assert_eq!(c.discount_bp, Some(500));
        assert_eq!(c.balance_points, 1000);
    }
    let demo = l
        .find_customer(&CustomerLookup::Card(
            savdo_sandbox::jowi_club::DEMO_CARD.into(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(demo.id, "cus_demo");
    assert!(
        l.find_customer(&CustomerLookup::Card("1".into()))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn oauth_token_is_cached_and_refreshed() {
    let env = env_with(
        |base| {
            json!({"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET,
                   "token_url": format!("{base}/oauth/token")})
        },
        json!({}),
    )
    .await;
    let l = env.loyalty();
    let by = CustomerLookup::Code("777111".into());
    for _ in 0..3 {
        assert!(l.find_customer(&by).await.unwrap().is_some());
    }
    assert_eq!(env.token_calls().await, 1, "one token for three calls");
    env.control("expire_tokens", json!({})).await;
    assert!(l.find_customer(&by).await.unwrap().is_some());
    assert_eq!(env.token_calls().await, 2, "refreshed once after expiry");

    let bad = env_with(
        |base| {
            json!({"client_id": DEMO_CLIENT_ID, "client_secret": "wrong-secret-value",
                   "token_url": format!("{base}/oauth/token")})
        },
        json!({}),
    )
    .await;
    let e = bad.connector.test_connection().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Auth { .. }), "{e:?}");
    assert!(!e.to_string().contains("wrong-secret-value"));
}

#[tokio::test]
async fn quote_commit_is_idempotent_and_ledgered_once() {
    let env = env().await;
    let l = env.loyalty();
    let q = l
        .quote(&QuoteRequest {
            customer_id: "cus_t1".into(),
            store_id: "store-1".into(),
            lines: lines(),
            spend_points: 0,
        })
        .await
        .unwrap();
    assert_eq!(q.lines.len(), 2);
    assert_eq!(q.lines[0].discount, 50_000);
    assert_eq!(q.lines[1].discount, 15_000);
    assert_eq!(q.discount_total, 65_000);
    assert_eq!(q.points_to_spend, 0);
    assert_eq!(q.points_to_earn, 1_235_000 / 1000);
    assert_eq!(q.point_value, 100);
    assert_eq!(q.balance_points, 1000);

    let receipt = Uuid::now_v7();
    let first = l.commit_sale(&sale(receipt, 0)).await.unwrap();
    assert_eq!(first.earned_points, q.points_to_earn);
    let again = l.commit_sale(&sale(receipt, 0)).await.unwrap();
    assert_eq!(first, again, "the same receipt id answers the same");
    let ledger = env.ledger().await;
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0]["id"], receipt.to_string());
    assert_eq!(env.balance("cus_t1").await, 1000 + first.earned_points);
    // The store reference went over the wire, not our store id.
    let calls = env.get("calls").await;
    assert!(calls.to_string().contains("jw-store-1"));
}

#[tokio::test]
async fn spending_points_and_refunds() {
    let env = env().await;
    let l = env.loyalty();
    let q = l
        .quote(&QuoteRequest {
            customer_id: "cus_t1".into(),
            store_id: "store-1".into(),
            lines: lines(),
            spend_points: 400,
        })
        .await
        .unwrap();
    assert_eq!(q.points_to_spend, 400);
    assert_eq!(q.points_spend_max, 1000);
    let receipt = Uuid::now_v7();
    let c = l.commit_sale(&sale(receipt, 400)).await.unwrap();
    assert_eq!(c.spent_points, 400);
    assert_eq!(c.earned_points, q.points_to_earn);
    assert_eq!(c.balance_points, 1000 - 400 + c.earned_points);

    // Spending more than the balance is refused by JOWi and changes nothing.
    let e = l
        .commit_sale(&sale(Uuid::now_v7(), 5_000))
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Rejected { .. }), "{e:?}");

    // Partial refund: one of the two loaves; then the rest.
    let refund1 = Uuid::now_v7();
    let partial = LoyaltyRefund {
        receipt_id: receipt,
        refund_id: refund1,
        lines: Some(vec![LoyaltyLine {
            quantity: 1000,
            amount: 500_000,
            ..lines()[0].clone()
        }]),
    };
    let r1 = l.refund(&partial).await.unwrap();
    assert!(r1.spent_returned > 0 && r1.spent_returned < 400, "{r1:?}");
    assert!(r1.earned_reversed > 0 && r1.earned_reversed < c.earned_points);
    let r1again = l.refund(&partial).await.unwrap();
    assert_eq!(r1, r1again, "a retried refund is the same refund");
    let r2 = l
        .refund(&LoyaltyRefund {
            receipt_id: receipt,
            refund_id: Uuid::now_v7(),
            lines: None,
        })
        .await
        .unwrap();
    assert_eq!(r1.spent_returned + r2.spent_returned, 400);
    assert_eq!(r1.earned_reversed + r2.earned_reversed, c.earned_points);
    assert_eq!(env.balance("cus_t1").await, 1000);
    let ledger = env.ledger().await;
    assert_eq!(ledger.len(), 3, "one sale and two refunds: {ledger:?}");
}

#[tokio::test]
async fn a_lost_answer_is_retried_without_double_credit() {
    let env = env().await;
    let l = env.loyalty();
    env.control("lose_answers", json!({"count": 1})).await;
    let receipt = Uuid::now_v7();
    // The first answer is lost (502); the client's retry (or the outbox's) gets the stored one.
    let c = match l.commit_sale(&sale(receipt, 0)).await {
        Ok(c) => c,
        Err(e) => {
            assert!(e.is_retryable(), "{e:?}");
            l.commit_sale(&sale(receipt, 0)).await.unwrap()
        }
    };
    assert!(c.earned_points > 0);
    l.commit_sale(&sale(receipt, 0)).await.unwrap();
    assert_eq!(env.ledger().await.len(), 1);
    assert_eq!(env.balance("cus_t1").await, 1000 + c.earned_points);

    // The same with a refund.
    env.control("lose_answers", json!({"count": 1})).await;
    let refund = LoyaltyRefund {
        receipt_id: receipt,
        refund_id: Uuid::now_v7(),
        lines: None,
    };
    if let Err(e) = l.refund(&refund).await {
        assert!(e.is_retryable(), "{e:?}");
    }
    l.refund(&refund).await.unwrap();
    assert_eq!(env.ledger().await.len(), 2);
    assert_eq!(env.balance("cus_t1").await, 1000);
}

#[tokio::test]
async fn outages_stay_within_the_lookup_budget() {
    let env = env_with(sig_credentials, json!({"lookup_timeout_ms": 300})).await;
    let l = env.loyalty();
    let by = CustomerLookup::Card("8600111122223333".into());

    env.control("faults", json!({"down": "blackhole"})).await;
    let t = Instant::now();
    let e = l.find_customer(&by).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_millis(300 + 250),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let q = l
        .quote(&QuoteRequest {
            customer_id: "cus_t1".into(),
            store_id: "s".into(),
            lines: lines(),
            spend_points: 0,
        })
        .await;
    assert!(q.is_err());
    assert!(
        t.elapsed() < Duration::from_millis(300 + 250),
        "{:?}",
        t.elapsed()
    );

    env.control("faults", json!({"down": true})).await;
    for _ in 0..8 {
        let t = Instant::now();
        let e = l.find_customer(&by).await.unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        assert!(t.elapsed() < Duration::from_millis(300 + 250));
    }
    // The breaker has opened by now and answers without calling.
    let e = l.find_customer(&by).await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::CircuitOpen { .. }),
        "breaker open after repeated failures: {e:?}"
    );
}

#[tokio::test]
async fn credentials_never_show() {
    let env = env().await;
    let l = env.loyalty();
    l.find_customer(&CustomerLookup::Code("777111".into()))
        .await
        .unwrap();
    let sig = jowi_club::sig(DEMO_API_KEY, DEMO_API_SECRET);
    let logged = serde_json::to_string(&env.sink.exchanges()).unwrap();
    assert!(!logged.is_empty());
    for secret in [DEMO_API_SECRET, sig.as_str(), "whsec_test_value"] {
        assert!(!logged.contains(secret), "exchange log shows a secret");
    }
    let debug = format!("{:?}", env.connector.as_loyalty().map(|_| ()));
    assert!(!debug.contains(DEMO_API_SECRET));
}
