//! Loyalty through JOWi Club against the sandbox over HTTP: look-up by each identifier (linking
//! our customer), quotes, the journal, JOWi down (200 with a warning within the budget), and
//! credentials that never show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use savdo_api::AppState;
use savdo_bus::consumer::{Consumer, ConsumerRunner, HandleError, Outcome};
use savdo_connectors::loyalty_accrual::LoyaltyAccrual;
use savdo_domain::clock::{Clock, ManualClock, SystemClock};
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

async fn loyal(srv: &Srv) -> Loyal {
    loyal_on(srv, Arc::new(SystemClock)).await
}

/// A second server on the same database with the outbound stack (on `clock`: its circuit
/// breakers) and the `jowi_club` connector, and a tenant integration pointing at a fresh sandbox.
async fn loyal_on(srv: &Srv, clock: Arc<dyn Clock>) -> Loyal {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut registry = Registry::builtin();
    savdo_connectors::jowi_club::register(&mut registry);
    let vault = Arc::new(savdo_integrations::VaultHandle::new(
        savdo_hub::Vault::ephemeral().expect("vault"),
    ));
    let hub = HttpHub::new(clock, Arc::new(NullSink)).unwrap();
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

/// The event of `kind` about receipt `receipt`, as the event feed has it.
async fn event_of(srv: &Srv, kind: &str, receipt: Uuid) -> Value {
    events(srv, kind)
        .await
        .into_iter()
        .find(|e| e["data"]["id"] == json!(receipt))
        .unwrap_or_else(|| panic!("no {kind} for {receipt}"))
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
    // No quote (JOWi was down): the receipt still says whose points are pending.
    let created = event_of(s, "receipt.created", id).await;
    let rec = &created["data"]["loyalty"];
    assert_eq!(rec["provider"], "jowi_club", "{created}");
    assert_eq!(rec["customer_id"], json!(ours));
    assert_eq!(rec["external_customer_id"], "cus_api");
    assert_eq!(rec["accrual"], "pending");
    assert!(rec["quote_id"].is_null());
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

    // The loyalty record is part of the receipt: in its event and in GET, as answered.
    let id = uuid(&body["id"]);
    let created = event_of(s, "receipt.created", id).await;
    let rec = &created["data"]["loyalty"];
    assert_eq!(*rec, rc["loyalty"], "{created}");
    assert_eq!(rec["quote_id"], qid);
    assert_eq!(rec["external_customer_id"], "cus_api");
    assert_eq!(rec["customer_id"], rc["customer_id"]);
    assert_eq!(rec["points_spent"], 100);
    assert_eq!(rec["point_value"], 100);
    assert_eq!(rec["redeem"]["spent"], 100);
    assert_eq!(rec["redeem"]["earned"], 445);
    assert_eq!(rec["redeem"]["transaction_id"], lg[0]["transaction_id"]);
    let got = s.get(&format!("/api/v1/receipts/{id}")).await;
    assert_eq!(got.ok(200)["loyalty"], rc["loyalty"]);

    // A retry of the recorded receipt while JOWi is down: the first answer, nothing spent again.
    l.control("faults", json!({"down": true})).await;
    let again = s.post("/api/v1/receipts", body.clone()).await;
    let again = again.ok(200);
    assert_eq!(again["number"], rc["number"]);
    assert_eq!(again["loyalty"], rc["loyalty"]);
    l.control("faults", json!({"down": false})).await;
    assert_eq!(ledger(&l).await.len(), 1);
    // The same id with other content is still a conflict.
    let mut other = body.clone();
    other["note"] = json!("changed");
    s.post("/api/v1/receipts", other).await.problem(409, None);

    // The accrual consumer finds the commit done: no second call, events emitted.
    let consumer = LoyaltyAccrual::new(srv.store.clone(), l.resolver.clone());
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    assert_eq!(ledger(&l).await.len(), 1);
    assert_eq!(events(s, "loyalty.redeemed").await.len(), 1);
    assert_eq!(events(s, "loyalty.accrued").await.len(), 1);
    let got = s.get(&format!("/api/v1/receipts/{id}")).await;
    let got = got.ok(200);
    assert_eq!(got["loyalty"]["accrual"], "accrued");
    assert_eq!(got["loyalty"]["points_earned"], 445);

    // A quoted sale without spending: the discount and the customer come from the event's
    // record, the accrual is sent by the consumer (once), on what was paid.
    let q = s.post("/api/v1/loyalty/quote", quote(0)).await;
    let qid = q.ok(200)["quote"]["id"].clone();
    let mut body = receipt(2, 0, 9_000_00);
    body["loyalty"]["quote_id"] = qid.clone();
    let r = s.post("/api/v1/receipts", body.clone()).await;
    let rc = r.ok(201);
    assert_eq!(rc["discount_total"], 1_000_00);
    assert_eq!(rc["loyalty"]["points_spent"], 0);
    assert!(rc["loyalty"].get("redeem").is_none());
    let id = uuid(&body["id"]);
    let created = event_of(s, "receipt.created", id).await;
    assert_eq!(created["data"]["loyalty"]["quote_id"], qid);
    assert_eq!(created["data"]["loyalty"]["accrual"], "pending");
    assert_eq!(ledger(&l).await.len(), 1, "nothing sent at the till");
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    deliver(&consumer, s, "receipt.created", id).await.unwrap();
    let lg = ledger(&l).await;
    assert_eq!(lg.len(), 2, "{lg:?}");
    assert_eq!(lg[1]["id"], json!(id));
    assert_eq!(
        (lg[1]["spent"].clone(), lg[1]["earned"].clone()),
        (json!(0), json!(450))
    );
    let got = s.get(&format!("/api/v1/receipts/{id}")).await;
    let got = got.ok(200);
    assert_eq!(got["loyalty"]["accrual"], "accrued");
    assert_eq!(
        got["loyalty"]["quote_id"], qid,
        "the record is kept, the outcome added"
    );
    assert_eq!(events(s, "loyalty.accrued").await.len(), 2);
    assert_eq!(events(s, "loyalty.redeemed").await.len(), 1);
}

/// A fresh quote's id.
async fn qid_for(s: &Srv, quote: &Value) -> Value {
    let q = s.post("/api/v1/loyalty/quote", quote.clone()).await;
    q.ok(200)["quote"]["id"].clone()
}

/// Points are spent only for a receipt that passes its checks; when the state changes between
/// the check and the receipt (another till sells the last units while JOWi confirms the
/// spending), the refused receipt's points are given back once, by the `loyalty` consumer, and
/// its id cannot spend again.
async fn points_of_a_refused_receipt_come_back(srv: Srv) {
    let l = loyal(&srv).await;
    let s = &l.srv;
    let (store, term) = s.shop().await;
    let p = s.create_product("LOY-3", 5_000_00).await;
    s.supply(store, p, json!(2)).await;
    s.patch("/api/v1/settings", json!({"forbid_negative_stock": true}))
        .await
        .ok(200);
    let quote = |qty: i64| {
        json!({"store_id": store, "customer": {"card": "8600999988887777"}, "spend_points": 100,
               "lines": [{"product_id": p, "qty": qty, "price": 5_000_00}]})
    };
    let receipt = |qid: &Value, qty: i64| {
        json!({"id": Uuid::now_v7(), "store_id": store, "terminal_id": term,
               "lines": [{"product_id": p, "qty": qty, "price": 5_000_00}],
               "payments": [{"method": "cash", "amount": qty * 4_500_00 - 100_00},
                            {"method": "loyalty_points", "amount": 100_00}],
               "loyalty": {"quote_id": qid, "spend_points": 100}})
    };

    // Refused by its own checks (3 units, 2 in stock): nothing is spent.
    let q = s.post("/api/v1/loyalty/quote", quote(3)).await;
    let qid = q.ok(200)["quote"]["id"].clone();
    let r = s.post("/api/v1/receipts", receipt(&qid, 3)).await;
    r.problem(422, Some("lines[0].qty"));
    assert!(
        ledger(&l).await.is_empty(),
        "no points spent for a refused receipt"
    );

    // Passes its check, but while JOWi takes its time confirming the spending another till
    // sells the last units: refused, and the points go back.
    let q = s.post("/api/v1/loyalty/quote", quote(2)).await;
    let qid = q.ok(200)["quote"]["id"].clone();
    let body = receipt(&qid, 2);
    let id = uuid(&body["id"]);
    l.control("faults", json!({"latency_ms": 1500})).await;
    let other_till = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.post(
            "/api/v1/receipts",
            crate::common::sale(store, term, &[(p, json!(2), 5_000_00)]),
        )
        .await
    };
    let (spending, other) = tokio::join!(s.post("/api/v1/receipts", body.clone()), other_till);
    l.control("faults", json!({"latency_ms": 0})).await;
    let other_number = other.ok(201)["number"].as_i64().unwrap();
    spending.problem(422, Some("lines[0].qty"));
    let lg = ledger(&l).await;
    assert_eq!(lg.len(), 1, "{lg:?}");
    assert_eq!(
        (lg[0]["id"].clone(), lg[0]["spent"].clone()),
        (json!(id), json!(100))
    );
    let requested = events(s, "loyalty.void_requested").await;
    assert_eq!(requested.len(), 1, "{requested:?}");
    let data = requested[0]["data"].clone();
    assert_eq!(data["receipt_id"], json!(id));
    assert_eq!(data["points"], 100);
    assert_eq!(data["external_id"], "cus_api");
    assert!(
        data["reason"].as_str().unwrap().contains("lines[0].qty"),
        "{data}"
    );
    let j = s
        .get(&format!("/api/v1/loyalty/transactions?receipt_id={id}"))
        .await;
    let j = j.ok(200).to_string();
    assert!(j.contains("\"void\"") && j.contains("requested"), "{j}");

    // The same receipt again, stock or not: refused, its spending was given back.
    s.supply(store, p, json!(5)).await;
    let again = s.post("/api/v1/receipts", body.clone()).await;
    let again = again.problem(409, Some("loyalty")).to_string();
    assert!(again.contains("new receipt id"), "{again}");
    assert_eq!(ledger(&l).await.len(), 1, "nothing spent by the retry");

    // The consumer gives the points back once, however often the request is delivered; JOWi
    // down first: retried.
    let consumer = LoyaltyAccrual::new(srv.store.clone(), l.resolver.clone());
    let ce = CloudEvent::new(
        uuid(&requested[0]["id"]),
        srv.tenant,
        "loyalty.void_requested",
        chrono::Utc::now(),
        data.clone(),
    );
    assert!(consumer.wants(&ce).await);
    l.control("faults", json!({"down": true})).await;
    let down = consumer.handle(&ce, 1).await;
    assert!(
        matches!(
            down,
            Err(HandleError::Retry(_) | HandleError::RetryAfter { .. })
        ),
        "{down:?}"
    );
    l.control("faults", json!({"down": false})).await;
    consumer.handle(&ce, 2).await.unwrap();
    consumer.handle(&ce, 3).await.unwrap();
    let lg = ledger(&l).await;
    assert_eq!(lg.len(), 2, "one refund: {lg:?}");
    assert_eq!(lg[1]["kind"], "refund");
    assert_eq!(
        lg[1]["balance_after"], 300,
        "the balance before the sale: {lg:?}"
    );
    let voided = events(s, "loyalty.voided").await;
    assert_eq!(voided.len(), 1, "{voided:?}");
    assert_eq!(voided[0]["data"]["receipt_id"], json!(id));
    assert_eq!(voided[0]["data"]["spent_returned"], 100);
    assert_eq!(voided[0]["data"]["balance"], 300);

    // An earlier attempt got the points spent and died before its give-back was recorded: the
    // retry, refused by its checks, asks for them back (once).
    let lost = receipt(&qid_for(s, &quote(50)).await, 50);
    let lost_id = uuid(&lost["id"]);
    let spent = savdo_storage::loyalty::JournalEntry {
        id: Uuid::now_v7(),
        kind: "redeem".into(),
        receipt_id: Some(lost_id),
        customer_ref: Some("cus_api".into()),
        request: json!({"spend_points": 100}),
        status: "ok".into(),
        error: None,
        result: json!({"transaction_id": "tx_lost", "spent": 100}),
        at: chrono::Utc::now(),
    };
    srv.store
        .append_loyalty_journal(srv.tenant, &spent)
        .await
        .unwrap();
    for _ in 0..2 {
        let r = s.post("/api/v1/receipts", lost.clone()).await;
        let p = r.problem(422, Some("lines[0].qty")).to_string();
        assert!(p.contains("lines[0].qty"), "{p}");
    }
    let requested = events(s, "loyalty.void_requested").await;
    let lost_voids: Vec<_> = requested
        .iter()
        .filter(|e| e["data"]["receipt_id"] == json!(lost_id))
        .collect();
    assert_eq!(lost_voids.len(), 1, "{requested:?}");
    assert_eq!(requested.len(), 2, "none for receipts that spent nothing");

    // A receipt under that id was stored after all (a concurrent retry, here a plain sale): it
    // keeps the spending; the give-back is settled as skipped, once, and JOWi is not called.
    let mut stored_after_all = crate::common::sale(store, term, &[(p, json!(1), 5_000_00)]);
    stored_after_all["id"] = json!(lost_id);
    let r = s.post("/api/v1/receipts", stored_after_all).await;
    assert_eq!(
        r.ok(201)["number"],
        other_number + 1,
        "neither the checks nor the refused receipts took a number"
    );
    let lost_void = lost_voids[0];
    let ce = CloudEvent::new(
        uuid(&lost_void["id"]),
        srv.tenant,
        "loyalty.void_requested",
        chrono::Utc::now(),
        lost_void["data"].clone(),
    );
    let ledger_before = ledger(&l).await.len();
    consumer.handle(&ce, 1).await.unwrap();
    consumer.handle(&ce, 2).await.unwrap();
    assert_eq!(ledger(&l).await.len(), ledger_before, "JOWi not called");
    let j = s
        .get(&format!(
            "/api/v1/loyalty/transactions?receipt_id={lost_id}"
        ))
        .await;
    let items = j.ok(200)["items"].as_array().cloned().unwrap_or_default();
    let settled: Vec<_> = items
        .iter()
        .filter(|e| e["kind"] == "void" && e["status"] != "requested")
        .collect();
    assert_eq!(settled.len(), 1, "{items:?}");
    assert_eq!(settled[0]["status"], "skipped");
    assert!(
        !events(s, "loyalty.voided")
            .await
            .iter()
            .any(|e| e["data"]["receipt_id"] == json!(lost_id))
    );

    // A new id for the same sale spends anew and is stored.
    let q = s.post("/api/v1/loyalty/quote", quote(2)).await;
    let qid = q.ok(200)["quote"]["id"].clone();
    let r = s.post("/api/v1/receipts", receipt(&qid, 2)).await;
    let stored = r.ok(201);
    assert_eq!(stored["loyalty"]["redeem"]["spent"], 100);
    assert_eq!(
        stored["number"],
        other_number + 2,
        "the next number after the receipt stored after all"
    );
    assert_eq!(ledger(&l).await.len(), 3);
}

/// JOWi down for far more attempts than the framework's default gives (12): the `loyalty`
/// consumer's own policy keeps the accrual waiting (capped backoff, on the test clock), and it
/// lands exactly once when JOWi is back. A refusal is still dead-lettered with its reason.
async fn accrual_retried_until_jowi_accepts(srv: Srv) {
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Arc::new(ManualClock::new(t0));
    let l = loyal_on(&srv, clock.clone()).await;
    let s = &l.srv;
    let r = s.get("/api/v1/loyalty/customers?code=424242").await;
    let ours = uuid(&r.ok(200)["customer"]["id"]);
    let (store, term) = s.shop().await;
    let p = s.create_product("LOY-3", 5_000_00).await;
    s.supply(store, p, json!(10)).await;
    let consumer = LoyaltyAccrual::new(srv.store.clone(), l.resolver.clone());
    let runner = ConsumerRunner::new(srv.store.clone(), clock.clone());
    let default_max = runner.policy.max_attempts;

    l.control("faults", json!({"down": true})).await;
    let mut sale = crate::common::sale(store, term, &[(p, json!(2), 5_000_00)]);
    sale["customer_id"] = json!(ours);
    s.post("/api/v1/receipts", sale.clone()).await.ok(201);
    let id = uuid(&sale["id"]);
    let ev_id = uuid(&event_of(s, "receipt.created", id).await["id"]);
    let ev = srv
        .store
        .published_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == ev_id)
        .expect("published");
    let inbox = || async {
        srv.store
            .inbox_entries(savdo_connectors::loyalty_accrual::NAME, None, 100)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.event_id == ev_id)
            .expect("inbox entry")
    };
    assert_eq!(
        runner.process(&consumer, &ev).await.unwrap(),
        Outcome::Retrying
    );
    let attempts = default_max + 8;
    let cap = chrono::Duration::from_std(savdo_connectors::loyalty_accrual::MAX_BACKOFF).unwrap();
    let mut now = t0;
    for attempt in 1..attempts {
        let e = inbox().await;
        assert_eq!((e.status.as_str(), e.attempts), ("retry", attempt), "{e:?}");
        let at = e.next_attempt_at.expect("never dead-lettered");
        assert!(at - now <= cap + cap / 4, "attempt {attempt}: {}", at - now);
        clock.set(at);
        now = at;
        assert_eq!(runner.retry_due(&consumer).await.unwrap(), 1);
    }
    let e = inbox().await;
    assert_eq!((e.status.as_str(), e.attempts), ("retry", attempts));
    assert!(attempts > default_max);
    assert!(ledger(&l).await.is_empty());
    let at = e.next_attempt_at.unwrap();
    assert!(at - now <= cap + cap / 4, "capped: {}", at - now);
    assert!(at - now >= cap * 3 / 4, "the backoff reached its cap");

    // Back: the next due attempt lands the accrual; nothing applies it twice.
    l.control("faults", json!({"down": false})).await;
    clock.set(at);
    assert_eq!(runner.retry_due(&consumer).await.unwrap(), 1);
    let e = inbox().await;
    assert_eq!(
        (e.status.as_str(), e.attempts),
        ("done", attempts + 1),
        "{e:?}"
    );
    clock.advance(chrono::Duration::days(1));
    assert_eq!(runner.retry_due(&consumer).await.unwrap(), 0);
    assert_eq!(
        runner.process(&consumer, &ev).await.unwrap(),
        Outcome::Skipped
    );
    let lg = ledger(&l).await;
    assert_eq!(lg.len(), 1, "one credit: {lg:?}");
    assert_eq!(lg[0]["id"], json!(id));
    assert_eq!(lg[0]["earned"], 450);
    assert_eq!(events(s, "loyalty.accrued").await.len(), 1);
    let got = s.get(&format!("/api/v1/receipts/{id}")).await;
    assert_eq!(got.ok(200)["loyalty"]["accrual"], "accrued");

    // JOWi refuses (it knows no such customer): dead-lettered at once, with JOWi's reason.
    let r = s
        .post(
            "/api/v1/customers",
            json!({"name": "Gone", "external_ids": {"jowi_club": "cus_gone"}}),
        )
        .await;
    let gone = uuid(&r.ok(201)["id"]);
    let mut sale = crate::common::sale(store, term, &[(p, json!(1), 5_000_00)]);
    sale["customer_id"] = json!(gone);
    s.post("/api/v1/receipts", sale.clone()).await.ok(201);
    let ev_id = uuid(&event_of(s, "receipt.created", uuid(&sale["id"])).await["id"]);
    let ev = srv
        .store
        .published_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.id == ev_id)
        .expect("published");
    assert_eq!(runner.process(&consumer, &ev).await.unwrap(), Outcome::Dead);
    let dead = srv
        .store
        .inbox_entries(savdo_connectors::loyalty_accrual::NAME, Some("dead"), 100)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event_id, ev_id);
    let why = dead[0].last_error.clone().unwrap_or_default();
    assert!(why.contains("refused") && why.contains("404"), "{why}");
    assert_eq!(ledger(&l).await.len(), 1);
}

/// JOWi's `customer.updated` refreshes the name and phone of the tenant's customer linked to
/// that JOWi id (and only of that tenant's), once per delivery, with `customer.updated`
/// emitted only when something changed.
async fn customer_updated_hook_refreshes_our_customer(srv: Srv) {
    let l = loyal(&srv).await;
    let s = &l.srv;
    let r = s.get("/api/v1/loyalty/customers?code=424242").await;
    let ours = uuid(&r.ok(200)["customer"]["id"]);
    let before = s.get(&format!("/api/v1/customers/{ours}")).await;
    let before = before.ok(200).clone();
    assert_eq!(before["name"], "Dilnoza");
    assert_eq!(before["phone"], "+998935550011");
    // Another tenant's customer carries the same JOWi id: not ours to touch.
    let (_, tok_b) = s.new_tenant("B").await;
    let b = s.with_token(&tok_b);
    let r = b
        .post(
            "/api/v1/customers",
            json!({"name": "B's Dilnoza", "phone": "+998935550011",
                   "external_ids": {"jowi_club": "cus_api"}}),
        )
        .await;
    let theirs = uuid(&r.ok(201)["id"]);
    let updates_before = events(s, "customer.updated").await.len();

    let url = format!("{}/hooks/jowi_club/{}", s.base, l.integration);
    let send = |body: Value| {
        let mut body = body;
        body["url"] = json!(url);
        body["secret"] = json!("whsec_api_test");
        body["customer_id"] = json!("cus_api");
        body["event"] = json!("customer.updated");
        let client = s.client.clone();
        let ctl = format!("{}/_control/jowi-club/webhook", l.sandbox.url());
        async move {
            let r = client.post(ctl).json(&body).send().await.unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let ok = send(json!({"id": "evt_cu_1", "name": "Dilnoza Karimova",
                         "phone": "998935550099"}))
    .await;
    assert_eq!(ok["status"], 200, "{ok}");
    let got = s.get(&format!("/api/v1/customers/{ours}")).await;
    let got = got.ok(200).clone();
    assert_eq!(got["name"], "Dilnoza Karimova");
    assert_eq!(got["phone"], "+998935550099");
    assert_eq!(got["external_ids"], before["external_ids"]);
    assert_eq!(got["loyalty_card"], before["loyalty_card"]);
    let updated = events(s, "customer.updated").await;
    assert_eq!(updated.len(), updates_before + 1, "{updated:?}");
    let last = &updated[updated.len() - 1]["data"];
    assert_eq!(last["id"], json!(ours));
    assert_eq!(last["name"], "Dilnoza Karimova");
    let lu = events(s, "customer.loyalty_updated").await;
    assert_eq!(lu.len(), 1);
    assert_eq!(lu[0]["data"]["event"], "customer.updated");
    assert_eq!(lu[0]["data"]["changed"], json!(["name", "phone"]));

    // The same delivery again: answered, nothing applied twice.
    let again = send(json!({"id": "evt_cu_1"})).await;
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(
        events(s, "customer.updated").await.len(),
        updates_before + 1
    );
    assert_eq!(events(s, "customer.loyalty_updated").await.len(), 1);

    // A new delivery with nothing new: the loyalty event, no customer.updated.
    let same = send(json!({"id": "evt_cu_2"})).await;
    assert_eq!(same["status"], 200, "{same}");
    assert_eq!(
        events(s, "customer.updated").await.len(),
        updates_before + 1
    );
    let lu = events(s, "customer.loyalty_updated").await;
    assert_eq!(lu.len(), 2);
    assert_eq!(lu[1]["data"]["changed"], json!([]));

    // A phone we cannot read is left out; the name still follows.
    let odd = send(json!({"id": "evt_cu_3", "name": "D. Karimova", "phone": "12"})).await;
    assert_eq!(odd["status"], 200, "{odd}");
    let got = s.get(&format!("/api/v1/customers/{ours}")).await;
    let got = got.ok(200).clone();
    assert_eq!(got["name"], "D. Karimova");
    assert_eq!(got["phone"], "+998935550099");
    assert_eq!(
        events(s, "customer.loyalty_updated").await[2]["data"]["stale"],
        false
    );

    // A change made an hour ago, delivered late after the newer ones: not applied over them.
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let late = send(
        json!({"id": "evt_cu_4", "name": "Old Name", "phone": "998935550022",
                           "time": hour_ago}),
    )
    .await;
    assert_eq!(late["status"], 200, "{late}");
    let got = s.get(&format!("/api/v1/customers/{ours}")).await;
    let got = got.ok(200).clone();
    assert_eq!(
        (got["name"].clone(), got["phone"].clone()),
        (json!("D. Karimova"), json!("+998935550099"))
    );
    let lu = events(s, "customer.loyalty_updated").await;
    assert_eq!(lu.len(), 4);
    assert_eq!(lu[3]["data"]["stale"], true);
    assert_eq!(lu[3]["data"]["changed"], json!([]));
    // The next change, newer than all: applied.
    let next = send(json!({"id": "evt_cu_5", "name": "Dilnoza K."})).await;
    assert_eq!(next["status"], 200, "{next}");
    let got = s.get(&format!("/api/v1/customers/{ours}")).await;
    assert_eq!(got.ok(200)["name"], "Dilnoza K.");

    // Tenant B's customer is untouched, and B saw no events of it.
    let t = b.get(&format!("/api/v1/customers/{theirs}")).await;
    let t = t.ok(200);
    assert_eq!(t["name"], "B's Dilnoza");
    assert_eq!(t["phone"], "+998935550011");
    let r = b.get("/api/v1/events?types=customer.loyalty_updated").await;
    let body = r.ok(200).clone();
    let items = body
        .get("items")
        .or(Some(&body))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    assert!(items.is_empty(), "{items:?}");
}

backend_tests!(
    quote_receipt_and_spending,
    lookup_quote_and_outage,
    webhooks_signed_and_deduplicated,
    accrual_once_after_outage_and_refunds,
    accrual_retried_until_jowi_accepts,
    customer_updated_hook_refreshes_our_customer,
    points_of_a_refused_receipt_come_back,
);
