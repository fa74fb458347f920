//! Loyalty through JOWi Club against the sandbox over HTTP: look-up by each identifier (linking
//! our customer), quotes, the journal, JOWi down (200 with a warning within the budget), and
//! credentials that never show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use savdo_api::AppState;
use savdo_bus::consumer::{Consumer, HandleError};
use savdo_connectors::loyalty_accrual::LoyaltyAccrual;
use savdo_domain::clock::SystemClock;
use savdo_domain::event::CloudEvent;
use savdo_hub::{HttpHub, NullSink, Registry};
use savdo_sandbox::jowi_club::{DEMO_API_KEY, DEMO_API_SECRET};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

struct Loyal {
    srv: Srv,
    sandbox: savdo_sandbox::RunningSandbox,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    integration: Uuid,
    resolver: Arc<savdo_integrations::ConnectorResolver>,
}

impl Drop for Loyal {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Loyal {
    async fn control(&self, path: &str, body: Value) {
        let r = self
            .srv
            .client
            .post(format!("{}/_control/jowi-club/{path}", self.sandbox.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}");
    }
}

/// A second server on the same database with the outbound stack and the `jowi_club` connector,
/// and a tenant integration pointing at a fresh sandbox.
async fn loyal(srv: &Srv) -> Loyal {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut registry = Registry::builtin();
    savdo_connectors::jowi_club::register(&mut registry);
    let vault = Arc::new(savdo_integrations::VaultHandle::new(
        savdo_hub::Vault::ephemeral().expect("vault"),
    ));
    let hub = HttpHub::new(Arc::new(SystemClock), Arc::new(NullSink)).unwrap();
    let registry = Arc::new(registry);
    let resolver = Arc::new(savdo_integrations::ConnectorResolver::new(
        srv.store.clone(),
        vault.clone(),
        registry.clone(),
        hub.clone(),
    ));
    let mut st = AppState::new(srv.store.clone(), vault);
    st.hub = Some(hub);
    st.registry = registry;
    let mut hooks = savdo_integrations::HookRegistry::new();
    savdo_connectors::jowi_club::register_hooks(&mut hooks);
    st.hooks = Arc::new(hooks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(savdo_api::serve(listener, st, std::future::pending()));
    let mut s = srv.clone();
    s.base = format!("http://{addr}");
    let mut l = Loyal {
        srv: s,
        sandbox,
        server,
        integration: Uuid::nil(),
        resolver,
    };
    l.control(
        "seed",
        json!({"customers": [{"id": "cus_api", "card": "8600999988887777",
            "phone": "998935550011", "code": "424242", "name": "Dilnoza", "balance": 300,
            "discount_percent": 10, "earn_percent": 5, "level": "gold"}]}),
    )
    .await;
    let r = l
        .srv
        .post(
            "/api/v1/integrations",
            json!({"type": "jowi_club", "name": "JOWi Club",
                "credentials": {"api_key": DEMO_API_KEY, "api_secret": DEMO_API_SECRET,
                                "webhook_secret": "whsec_api_test"},
                "settings": {"base_url": format!("{}/jowi-club", l.sandbox.url()),
                             "lookup_timeout_ms": 500}}),
        )
        .await;
    let created = r.ok(201).to_string();
    assert!(!created.contains(DEMO_API_SECRET) && !created.contains("whsec_api_test"));
    let id = uuid(&r.ok(201)["id"]);
    l.integration = id;
    l
}

async fn lookup_quote_and_outage(srv: Srv) {
    let l = loyal(&srv).await;
    let s = &l.srv;
    let store = s.create_store("Chilonzor").await;
    let p1 = s.create_product("NON-1", 5_000_00).await;

    let mut ours = None;
    for q in [
        "card=8600999988887777",
        "phone=%2B998935550011",
        "code=424242",
    ] {
        let r = s.get(&format!("/api/v1/loyalty/customers?{q}")).await;
        let b = r.ok(200);
        assert_eq!(b["loyalty"]["status"], "ok", "{q}");
        assert_eq!(b["customer"]["external_id"], "cus_api");
        assert_eq!(b["customer"]["level"], "gold");
        assert_eq!(b["customer"]["balance"], 300);
        let id = uuid(&b["customer"]["id"]);
        assert_eq!(*ours.get_or_insert(id), id, "one customer record, linked");
    }
    let ours = ours.unwrap();
    let c = s.get(&format!("/api/v1/customers/{ours}")).await;
    assert_eq!(c.ok(200)["external_ids"]["jowi_club"], "cus_api");
    s.get("/api/v1/loyalty/customers?card=1")
        .await
        .problem(404, None);

    // A quote by card and by our id: per-line discounts, points, an id and an expiry.
    for customer in [json!({"card": "8600999988887777"}), json!({"id": ours})] {
        let r = s
            .post(
                "/api/v1/loyalty/quote",
                json!({"store_id": store, "customer": customer, "spend_points": 100,
                       "lines": [{"product_id": p1, "qty": 2, "price": 5_000_00}]}),
            )
            .await;
        let b = r.ok(200);
        assert_eq!(b["loyalty"]["status"], "ok");
        let q = &b["quote"];
        assert!(q["id"].is_string() && q["expires_at"].is_string());
        assert_eq!(q["lines"][0]["discount"], 1_000_00);
        assert_eq!(q["discount_total"], 1_000_00);
        assert_eq!(q["points"]["to_spend"], 100);
        assert_eq!(q["customer_id"], json!(ours));
    }

    // JOWi down: within the budget, 200 with the warning.
    l.control("faults", json!({"down": "blackhole"})).await;
    let t = Instant::now();
    let r = s
        .get("/api/v1/loyalty/customers?card=8600999988887777")
        .await;
    let b = r.ok(200);
    assert!(
        t.elapsed() < Duration::from_millis(500 + 400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(b["loyalty"]["status"], "unavailable");
    assert!(
        b["warning"]
            .as_str()
            .unwrap()
            .contains("Loyalty service unavailable")
    );
    let t = Instant::now();
    let r = s
        .post(
            "/api/v1/loyalty/quote",
            json!({"store_id": store, "customer": {"id": ours},
                   "lines": [{"product_id": p1, "qty": 1, "price": 5_000_00}]}),
        )
        .await;
    let b = r.ok(200);
    assert!(
        t.elapsed() < Duration::from_millis(500 + 400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(b["loyalty"]["status"], "unavailable");
    assert!(b["quote"].is_null());

    // The journal: every call and its outcome, no credentials.
    let r = s.get("/api/v1/loyalty/transactions").await;
    let j = r.ok(200);
    let items = j["items"].as_array().unwrap();
    let kinds = |kind: &str, status: &str| {
        items
            .iter()
            .filter(|e| e["kind"] == kind && e["status"] == status)
            .count()
    };
    assert!(kinds("lookup", "ok") >= 4, "{items:?}");
    assert_eq!(kinds("quote", "ok"), 2);
    assert_eq!(kinds("lookup", "unavailable"), 1);
    assert_eq!(kinds("quote", "unavailable"), 1);
    let text = j.to_string();
    let sig = savdo_connectors::jowi_club::sig(DEMO_API_KEY, DEMO_API_SECRET);
    assert!(!text.contains(DEMO_API_SECRET) && !text.contains(&sig));
}

async fn events(srv: &Srv, kind: &str) -> Vec<Value> {
    savdo_bus::relay::drain(&srv.store, &savdo_bus::Bus::in_process())
        .await
        .expect("relay");
    let r = srv
        .get(&format!("/api/v1/events?types={kind}&limit=500"))
        .await;
    let body = r.ok(200).clone();
    body.get("items")
        .or(Some(&body))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn webhooks_signed_and_deduplicated(srv: Srv) {
    let l = loyal(&srv).await;
    let s = &l.srv;
    // Link our customer first.
    let r = s.get("/api/v1/loyalty/customers?code=424242").await;
    let ours = uuid(&r.ok(200)["customer"]["id"]);
    let url = format!("{}/hooks/jowi_club/{}", s.base, l.integration);
    let send = |extra: Value| {
        let mut body = json!({"url": url, "secret": "whsec_api_test", "customer_id": "cus_api"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let client = s.client.clone();
        let ctl = format!("{}/_control/jowi-club/webhook", l.sandbox.url());
        async move {
            let r = client.post(ctl).json(&body).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let bad = send(json!({"bad_signature": true})).await;
    assert_eq!(bad["status"], 401, "{bad}");
    assert!(events(s, "customer.loyalty_updated").await.is_empty());

    let ok = send(json!({"id": "evt_dup_1"})).await;
    assert_eq!(ok["status"], 200, "{ok}");
    let again = send(json!({"id": "evt_dup_1"})).await;
    assert_eq!(again["status"], 200, "{again}");
    let evs = events(s, "customer.loyalty_updated").await;
    assert_eq!(evs.len(), 1, "deduplicated by id: {evs:?}");
    let data = evs[0].get("data").unwrap_or(&evs[0]);
    assert_eq!(data["customer_id"], json!(ours));
    assert_eq!(data["balance"], 300);
}

async fn ledger(l: &Loyal) -> Vec<Value> {
    let r: Value = l
        .srv
        .client
        .get(format!("{}/_control/jowi-club/ledger", l.sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["entries"].as_array().cloned().unwrap_or_default()
}

/// The consumer, handed the receipt's event the way the runner would.
async fn deliver(
    c: &LoyaltyAccrual,
    srv: &Srv,
    kind: &str,
    receipt: Uuid,
) -> Result<(), HandleError> {
    let ev = events(srv, kind)
        .await
        .into_iter()
        .find(|e| e["data"]["id"] == json!(receipt))
        .expect("event");
    let ce = CloudEvent::new(
        uuid(&ev["id"]),
        srv.tenant,
        kind,
        chrono::Utc::now(),
        ev["data"].clone(),
    );
    c.handle(&ce, 1).await
}

async fn accrual_once_after_outage_and_refunds(srv: Srv) {
    let l = loyal(&srv).await;
    let s = &l.srv;
    let r = s
        .get("/api/v1/loyalty/customers?card=8600999988887777")
        .await;
    let ours = uuid(&r.ok(200)["customer"]["id"]);
    let (store, term) = s.shop().await;
    let p = s.create_product("LOY-1", 5_000_00).await;
    s.supply(store, p, json!(10)).await;
    let consumer = LoyaltyAccrual::new(srv.store.clone(), l.resolver.clone());

    // JOWi down for the whole sale: the receipt is accepted at once, the accrual waits.
    l.control("faults", json!({"down": true})).await;
    let mut sale = crate::common::sale(store, term, &[(p, json!(2), 5_000_00)]);
    sale["customer_id"] = json!(ours);
    let t = Instant::now();
    let r = s.post("/api/v1/receipts", sale.clone()).await;
    r.ok(201);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let id = uuid(&sale["id"]);
    let e = deliver(&consumer, s, "receipt.created", id)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HandleError::Retry(_) | HandleError::RetryAfter { .. }),
        "{e:?}"
    );
    assert!(ledger(&l).await.is_empty());

    // Back, but the first answer is lost: retried safely, credited once.
    l.control("faults", json!({"down": false})).await;
    l.control("lose_answers", json!({"count": 1})).await;
    let mut ok = false;
    for _ in 0..3 {
        if deliver(&consumer, s, "receipt.created", id).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "accrual delivered after recovery");
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    let lg = ledger(&l).await;
    assert_eq!(lg.len(), 1, "one credit: {lg:?}");
    assert_eq!(lg[0]["id"], json!(id));
    assert_eq!(lg[0]["earned"], 450);
    assert!(!events(s, "loyalty.accrued").await.is_empty());
    let got = s.get(&format!("/api/v1/receipts/{id}")).await;
    assert_eq!(got.ok(200)["loyalty"]["points_earned"], 450);

    // A partial refund, then the rest: earned points reversed in proportion, exactly.
    let refund = |qty: i64| {
        json!({"id": Uuid::now_v7(), "type": "refund", "refund_of": id, "store_id": store,
               "terminal_id": term, "customer_id": ours,
               "lines": [{"product_id": p, "qty": qty}],
               "payments": [{"method": "cash", "amount": qty * 5_000_00}]})
    };
    for (n, qty) in [(2, 1), (3, 1)] {
        let rf = refund(qty);
        s.post("/api/v1/receipts", rf.clone()).await.ok(201);
        let rid = uuid(&rf["id"]);
        deliver(&consumer, s, "receipt.refunded", rid)
            .await
            .unwrap();
        deliver(&consumer, s, "receipt.refunded", rid)
            .await
            .unwrap();
        let lg = ledger(&l).await;
        assert_eq!(lg.len(), n, "{lg:?}");
        assert_eq!(lg[n - 1]["earned"], -225);
    }
    assert_eq!(events(s, "loyalty.refunded").await.len(), 2);
    let j = s
        .get(&format!("/api/v1/loyalty/transactions?receipt_id={id}"))
        .await;
    let items = j.ok(200)["items"].as_array().cloned().unwrap();
    assert!(
        items
            .iter()
            .any(|e| e["kind"] == "accrual" && e["status"] == "unavailable")
    );
    assert!(
        items
            .iter()
            .any(|e| e["kind"] == "accrual" && e["status"] == "ok")
    );
}

async fn quote_receipt_and_spending(srv: Srv) {
    let l = loyal(&srv).await;
    let s = &l.srv;
    let (store, term) = s.shop().await;
    let p = s.create_product("LOY-2", 5_000_00).await;
    s.supply(store, p, json!(10)).await;
    let quote = |spend: i64| {
        json!({"store_id": store, "customer": {"card": "8600999988887777"}, "spend_points": spend,
               "lines": [{"product_id": p, "qty": 2, "price": 5_000_00}]})
    };
    let q = s.post("/api/v1/loyalty/quote", quote(100)).await;
    let qid = q.ok(200)["quote"]["id"].clone();
    let receipt = |qty: i64, spend: i64, cash: i64| {
        let mut payments = vec![json!({"method": "cash", "amount": cash})];
        if spend > 0 {
            payments.push(json!({"method": "loyalty_points", "amount": spend * 100}));
        }
        json!({"id": Uuid::now_v7(), "store_id": store, "terminal_id": term,
               "lines": [{"product_id": p, "qty": qty, "price": 5_000_00}],
               "payments": payments,
               "loyalty": {"quote_id": qid, "spend_points": spend}})
    };
    // Lines that differ from the quote: 409 saying how.
    let r = s.post("/api/v1/receipts", receipt(3, 0, 13_500_00)).await;
    let p409 = r.problem(409, None).to_string();
    assert!(p409.contains("quote"), "{p409}");

    // JOWi down: spending is refused clearly, the sale without spending goes through.
    l.control("faults", json!({"down": true})).await;
    let r = s.post("/api/v1/receipts", receipt(2, 100, 8_900_00)).await;
    let p409 = r.problem(409, None).to_string();
    assert!(p409.contains("points cannot be spent offline"), "{p409}");
    l.control("faults", json!({"down": false})).await;

    // Spending 100 points with the quote's 10 % discount: confirmed before acceptance.
    let body = receipt(2, 100, 8_900_00);
    let r = s.post("/api/v1/receipts", body.clone()).await;
    let rc = r.ok(201);
    assert_eq!(rc["discount_total"], 1_000_00);
    assert_eq!(rc["total"], 9_000_00);
    assert!(rc["customer_id"].is_string(), "customer from the quote");
    assert_eq!(rc["loyalty"]["points_spent"], 100);
    assert_eq!(rc["loyalty"]["discount_total"], 1_000_00);
    assert_eq!(rc["loyalty"]["accrual"], "pending");
    let lg = ledger(&l).await;
    assert_eq!(lg.len(), 1, "{lg:?}");
    assert_eq!(lg[0]["spent"], 100);
    assert_eq!(lg[0]["earned"], 445);

    // The accrual consumer finds the commit done: no second call, events emitted.
    let consumer = LoyaltyAccrual::new(srv.store.clone(), l.resolver.clone());
    let id = uuid(&body["id"]);
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    assert_eq!(ledger(&l).await.len(), 1);
    assert_eq!(events(s, "loyalty.redeemed").await.len(), 1);
    assert_eq!(events(s, "loyalty.accrued").await.len(), 1);
    let got = s.get(&format!("/api/v1/receipts/{id}")).await;
    let got = got.ok(200);
    assert_eq!(got["loyalty"]["accrual"], "accrued");
    assert_eq!(got["loyalty"]["points_earned"], 445);
}

backend_tests!(
    quote_receipt_and_spending,
    lookup_quote_and_outage,
    webhooks_signed_and_deduplicated,
    accrual_once_after_outage_and_refunds,
);
