//! Marking codes (Asl Belgisi) at the till: each refusal, the registry under concurrency, the
//! return cycle, and the online check against the sandbox (verdicts, both offline policies and
//! the later re-check).

use std::sync::Arc;
use std::time::{Duration, Instant};

use savdo_api::AppState;
use savdo_bus::consumer::{Consumer, HandleError};
use savdo_connectors::aslbelgisi::{self, SingleMarkingCheck};
use savdo_connectors::marking_recheck::MarkingRecheck;
use savdo_domain::clock::SystemClock;
use savdo_domain::event::CloudEvent;
use savdo_domain::marking::MarkingCode;
use savdo_hub::{HttpHub, MarkingCheck, NullSink, Registry};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

const PRICE: i64 = 18_000_00;

/// GS1 mod-10 check digit appended to `body`.
fn with_check(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// A fresh EAN-13 and its GTIN-14.
fn new_ean() -> (String, String) {
    let n = Uuid::new_v4().as_u128() % 1_000_000_000;
    let ean = with_check(&format!("478{n:09}"));
    let gtin = format!("0{ean}");
    (ean, gtin)
}

/// A DataMatrix code as a scanner delivers it: `01` GTIN `21` serial GS `91` key GS `92` tail.
fn dm(gtin: &str) -> String {
    let serial: String = Uuid::new_v4().simple().to_string()[..13].to_string();
    let tail = "dGVzdC1jcnlwdG8tdGFpbC1vZi00NC1jaGFyYWN0ZXJzIQ"[..44].to_string();
    format!("01{gtin}21{serial}\u{1d}91EE06\u{1d}92{tail}")
}

fn label(code: &str) -> String {
    MarkingCode::parse(code).unwrap().label()
}

async fn marked_product(srv: &Srv, ean: &str) -> Uuid {
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": format!("M-{ean}"), "name": "Cigarettes", "price": PRICE,
                   "barcodes": [ean], "marked": true}),
        )
        .await;
    r.ok(201);
    r.id()
}

fn receipt(store: Uuid, term: Uuid, lines: Value, total: i64) -> Value {
    json!({"id": Uuid::now_v7(), "store_id": store, "terminal_id": term, "lines": lines,
           "payments": [{"method": "cash", "amount": total}]})
}

fn sale_of(store: Uuid, term: Uuid, product: Uuid, codes: &[&str]) -> Value {
    receipt(
        store,
        term,
        json!([{"product_id": product, "qty": codes.len(), "marking_codes": codes}]),
        PRICE * codes.len() as i64,
    )
}

fn refund_of(sale: Uuid, store: Uuid, term: Uuid, product: Uuid, codes: &[&str]) -> Value {
    let mut r = sale_of(store, term, product, codes);
    r["type"] = json!("refund");
    r["refund_of"] = json!(sale);
    r
}

/// Publish the outbox and read the tenant's events of one type.
async fn events(srv: &Srv, kind: &str) -> Vec<Value> {
    savdo_bus::relay::drain(&srv.store, &savdo_bus::Bus::in_process())
        .await
        .expect("relay");
    let r = srv
        .get(&format!("/api/v1/events?types={kind}&limit=500"))
        .await;
    let body = r.ok(200).clone();
    let items = body
        .get("items")
        .or(Some(&body))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    items
        .into_iter()
        .map(|e| e["data"].clone())
        .collect::<Vec<_>>()
}

fn message_of(r: &crate::common::Resp, field: &str) -> String {
    r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == json!(field))
        .unwrap_or_else(|| panic!("no error on {field}: {}", r.text))["message"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn refusals(srv: Srv) {
    let (store, term) = srv.shop().await;
    let (ean, gtin) = new_ean();
    let (_, other_gtin) = new_ean();
    let cigs = marked_product(&srv, &ean).await;
    let bread = srv.create_product("BREAD", PRICE).await;
    let code = dm(&gtin);

    // Missing codes.
    let r = srv
        .post(
            "/api/v1/receipts",
            receipt(store, term, json!([{"product_id": cigs, "qty": 1}]), PRICE),
        )
        .await;
    r.problem(422, Some("lines[0].marking_codes"));
    // Malformed: the parser's own message (a wrong GTIN check digit).
    let bad = code.replacen(
        &gtin,
        &format!("{}{}", &gtin[..13], (gtin.as_bytes()[13] - b'0' + 1) % 10),
        1,
    );
    let want = MarkingCode::parse(&bad).unwrap_err().to_string();
    let r = srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&bad]))
        .await;
    r.problem(422, Some("lines[0].marking_codes[0]"));
    assert_eq!(message_of(&r, "lines[0].marking_codes[0]"), want);
    // Wrong product: the code's GTIN is none of the product's barcodes.
    let foreign = dm(&other_gtin);
    let r = srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&foreign]))
        .await;
    r.problem(422, Some("lines[0].marking_codes[0]"));
    assert!(message_of(&r, "lines[0].marking_codes[0]").contains(&other_gtin));
    // One code per unit, whole units.
    let r = srv
        .post(
            "/api/v1/receipts",
            receipt(
                store,
                term,
                json!([{"product_id": cigs, "qty": 2, "marking_codes": [code]}]),
                2 * PRICE,
            ),
        )
        .await;
    r.problem(422, Some("lines[0].marking_codes"));
    let r = srv
        .post(
            "/api/v1/receipts",
            receipt(
                store,
                term,
                json!([{"product_id": cigs, "qty": 0.5, "marking_codes": [code]}]),
                PRICE / 2,
            ),
        )
        .await;
    r.problem(422, Some("lines[0].qty"));
    // Duplicated within the receipt, on one line and across lines.
    let r = srv
        .post(
            "/api/v1/receipts",
            sale_of(store, term, cigs, &[&code, &code]),
        )
        .await;
    r.problem(422, Some("lines[0].marking_codes[1]"));
    let r = srv
        .post(
            "/api/v1/receipts",
            receipt(
                store,
                term,
                json!([{"product_id": cigs, "qty": 1, "marking_codes": [code]},
                       {"product_id": cigs, "qty": 1, "marking_codes": [code.replace('\u{1d}', "<GS>")]}]),
                2 * PRICE,
            ),
        )
        .await;
    r.problem(422, Some("lines[1].marking_codes[0]"));
    // Codes on a product that is not marked.
    let r = srv
        .post(
            "/api/v1/receipts",
            receipt(
                store,
                term,
                json!([{"product_id": bread, "qty": 1, "marking_codes": [code]}]),
                PRICE,
            ),
        )
        .await;
    r.problem(422, Some("lines[0].marking_codes"));

    // Sold once (scanned with `<GS>`: stored normalised), then refused as already sold.
    let shown = code.replace('\u{1d}', "<GS>");
    let r = srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&shown]))
        .await;
    let sold = r.ok(201).clone();
    assert_eq!(sold["lines"][0]["marking_codes"], json!([code]));
    assert_eq!(sold["warnings"], json!([]));
    let r = srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&code]))
        .await;
    r.problem(422, Some("lines[0].marking_codes[0]"));
    let msg = message_of(&r, "lines[0].marking_codes[0]");
    assert!(
        msg.contains("already sold") && msg.contains(sold["id"].as_str().unwrap()),
        "{msg}"
    );

    // The check endpoint agrees, in order, and a malformed code is a result, not an error.
    let fresh = dm(&gtin);
    let r = srv
        .post(
            "/api/v1/marking/check",
            json!({"codes": [code, "garbage", fresh]}),
        )
        .await;
    let res = r.ok(200)["results"].as_array().unwrap().clone();
    assert_eq!(res.len(), 3);
    assert_eq!(res[0]["status"], "sold");
    assert_eq!(res[0]["sellable"], false);
    assert_eq!(res[0]["product_id"], json!(cigs));
    assert_eq!(res[0]["label"], json!(label(&code)));
    assert_eq!(res[0]["gtin"], json!(gtin));
    assert_eq!(res[1]["valid"], false);
    assert_eq!(res[1]["code"], "garbage");
    assert!(res[1]["reason"].is_string());
    assert_eq!(res[2]["status"], "new");
    assert_eq!(res[2]["sellable"], true, "{}", r.text);
    assert_eq!(res[2]["reason"], Value::Null);

    // The codes travel on receipt.created and on marking.sold.
    let created = events(&srv, "receipt.created").await;
    assert!(
        created
            .iter()
            .any(|e| e["id"] == sold["id"] && e["lines"][0]["marking_codes"] == json!([code]))
    );
    let ms = events(&srv, "marking.sold").await;
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!(ms[0]["receipt_id"], sold["id"]);
    assert_eq!(ms[0]["codes"][0]["label"], json!(label(&code)));
    assert_eq!(ms[0]["codes"][0]["product_id"], json!(cigs));
}

async fn return_cycle(srv: Srv) {
    let (store, term) = srv.shop().await;
    let (ean, gtin) = new_ean();
    let cigs = marked_product(&srv, &ean).await;
    let (a, b) = (dm(&gtin), dm(&gtin));

    let r = srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&a]))
        .await;
    let sale1 = r.ok(201)["id"].clone();
    let r = srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&b]))
        .await;
    let sale2 = uuid(&r.ok(201)["id"]);
    let sale1 = uuid(&sale1);

    // A refund of a marked line must name its codes, and only codes of that sale.
    let mut r0 = refund_of(sale1, store, term, cigs, &[&a]);
    r0["lines"][0]["marking_codes"] = json!([]);
    srv.post("/api/v1/receipts", r0)
        .await
        .problem(422, Some("lines[0].marking_codes"));
    let r = srv
        .post(
            "/api/v1/receipts",
            refund_of(sale1, store, term, cigs, &[&b]),
        )
        .await;
    r.problem(422, Some("lines[0].marking_codes[0]"));
    assert!(message_of(&r, "lines[0].marking_codes[0]").contains("not sold on the refunded sale"));

    // Refund naming A: sellable again.
    let r = srv
        .post(
            "/api/v1/receipts",
            refund_of(sale1, store, term, cigs, &[&a]),
        )
        .await;
    let refund = r.ok(201)["id"].clone();
    let r = srv
        .post("/api/v1/marking/check", json!({"codes": [a]}))
        .await;
    assert_eq!(r.ok(200)["results"][0]["status"], "returned");
    assert_eq!(r.body["results"][0]["sellable"], true);
    let ret = events(&srv, "marking.returned").await;
    assert_eq!(ret.len(), 1);
    assert_eq!(ret[0]["receipt_id"], refund);
    assert_eq!(ret[0]["refund_of"], json!(sale1));
    assert_eq!(ret[0]["codes"][0]["label"], json!(label(&a)));

    // Sold again on another sale; B is still sold and refused.
    srv.post("/api/v1/receipts", sale_of(store, term, cigs, &[&a]))
        .await
        .ok(201);
    srv.post("/api/v1/receipts", sale_of(store, term, cigs, &[&b]))
        .await
        .problem(422, Some("lines[0].marking_codes[0]"));
    // A is no longer A's unit of sale 1: refunding it there again is refused.
    srv.post(
        "/api/v1/receipts",
        refund_of(sale1, store, term, cigs, &[&a]),
    )
    .await
    .problem(422, Some("lines[0].marking_codes[0]"));
    // B comes back on its own sale.
    srv.post(
        "/api/v1/receipts",
        refund_of(sale2, store, term, cigs, &[&b]),
    )
    .await
    .ok(201);
    assert_eq!(events(&srv, "marking.sold").await.len(), 3);
}

/// Ten receipts on two tills (two stores) sell the same unit at once: exactly one wins.
async fn same_code_on_two_tills(srv: Srv) {
    let (s1, t1) = srv.shop().await;
    let (s2, t2) = srv.shop().await;
    let (ean, gtin) = new_ean();
    let cigs = marked_product(&srv, &ean).await;
    let code = dm(&gtin);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let srv = srv.clone();
        let (s, t) = if i % 2 == 0 { (s1, t1) } else { (s2, t2) };
        let body = sale_of(s, t, cigs, &[&code]);
        tasks.push(tokio::spawn(async move {
            srv.post("/api/v1/receipts", body).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created += 1,
            422 => {
                r.problem(422, Some("lines[0].marking_codes[0]"));
            }
            s => panic!("unexpected {s}: {}", r.text),
        }
    }
    assert_eq!(created, 1, "exactly one sale of the unit");
    assert_eq!(events(&srv, "marking.sold").await.len(), 1);
}

// ---------------------------------------------------------------- the online check

struct Online {
    srv: Srv,
    sandbox: savdo_sandbox::RunningSandbox,
    check: Arc<dyn MarkingCheck>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Online {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Online {
    async fn control(&self, path: &str, body: Value) {
        let r = self
            .srv
            .client
            .post(format!("{}/_control/aslbelgisi/{path}", self.sandbox.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
}

fn state(store: Arc<dyn savdo_storage::Storage>) -> AppState {
    AppState::new(
        store,
        Arc::new(savdo_integrations::VaultHandle::new(
            savdo_hub::Vault::ephemeral().expect("vault"),
        )),
    )
}

/// A second server on the same database whose receipts go through the online check: the
/// `aslbelgisi` connector, built by the registry's factory, against a fresh sandbox.
async fn online(srv: &Srv) -> Online {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut registry = Registry::builtin();
    aslbelgisi::register(&mut registry);
    let hub = HttpHub::new(Arc::new(SystemClock), Arc::new(NullSink)).unwrap();
    let connector = registry
        .build(
            &hub,
            &srv.tenant.to_string(),
            &Uuid::new_v4().to_string(),
            "aslbelgisi",
            &json!({"api_key": savdo_sandbox::aslbelgisi::DEMO_API_KEY}),
            &json!({"base_url": format!("{}/aslbelgisi", sandbox.url())}),
        )
        .expect("connector");
    assert!(connector.test_connection().await.is_ok());
    let check: Arc<dyn MarkingCheck> = Arc::new(SingleMarkingCheck::new(connector).unwrap());
    let mut st = state(srv.store.clone());
    st.marking = Some(check.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(savdo_api::serve(listener, st, std::future::pending()));
    let mut s = srv.clone();
    s.base = format!("http://{addr}");
    Online {
        srv: s,
        sandbox,
        check,
        server,
    }
}

async fn online_verdicts(srv: Srv) {
    let on = online(&srv).await;
    let (store, term) = srv.shop().await;
    let (ean, gtin) = new_ean();
    let cigs = marked_product(&srv, &ean).await;
    let [ok, missing, blocked, retired, expired, emitted] = std::array::from_fn(|_| dm(&gtin));
    on.control(
        "seed",
        json!({"codes": [
            {"cis": ok, "status": "INTRODUCED"},
            {"cis": blocked, "status": "INTRODUCED", "blocked": true},
            {"cis": retired, "status": "RETIRED"},
            {"cis": expired, "status": "INTRODUCED", "expire_date": "2020-01-31"},
            {"cis": emitted, "status": "EMITTED"},
        ]}),
    )
    .await;
    let s = &on.srv;
    for (code, words) in [
        (&missing, "does not know"),
        (&blocked, "blocked"),
        (&retired, "already sold"),
        (&expired, "expired"),
        (&emitted, "not in circulation"),
    ] {
        let r = s
            .post("/api/v1/receipts", sale_of(store, term, cigs, &[code]))
            .await;
        r.problem(422, Some("lines[0].marking_codes[0]"));
        let m = message_of(&r, "lines[0].marking_codes[0]");
        assert!(m.contains(words), "{words:?} in {m}");
    }
    let r = s
        .post(
            "/api/v1/marking/check",
            json!({"codes": [ok, blocked, "x", missing]}),
        )
        .await;
    let res = r.ok(200)["results"].as_array().unwrap().clone();
    assert_eq!(res[0]["online_status"], "sellable");
    assert_eq!(res[0]["operator_status"], "INTRODUCED");
    assert_eq!(res[0]["sellable"], true);
    assert_eq!(res[1]["online_status"], "blocked");
    assert_eq!(res[1]["sellable"], false);
    assert_eq!(res[2]["valid"], false);
    assert_eq!(res[3]["online_status"], "not_found");
    assert_eq!(res[3]["status"], "new");
    // The genuine code sells, and only once (our own registry, before the operator knows).
    let r = s
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&ok]))
        .await;
    assert_eq!(r.ok(201)["warnings"], json!([]));
    s.post("/api/v1/receipts", sale_of(store, term, cigs, &[&ok]))
        .await
        .problem(422, Some("lines[0].marking_codes[0]"));
    assert_eq!(events(&srv, "marking.sold").await[0]["online_check"], "ok");
}

async fn offline_allow_then_recheck(srv: Srv) {
    let on = online(&srv).await;
    let (store, term) = srv.shop().await;
    let (ean, gtin) = new_ean();
    let cigs = marked_product(&srv, &ean).await;
    let (good, bad) = (dm(&gtin), dm(&gtin));
    on.control("seed", json!({"codes": [{"cis": good}, {"cis": bad}]}))
        .await;
    on.control("faults", json!({"down": true})).await;
    let s = &on.srv;
    // Default policy `allow`: sold with a warning.
    let r = s
        .post(
            "/api/v1/receipts",
            sale_of(store, term, cigs, &[&good, &bad]),
        )
        .await;
    let rc = r.ok(201).clone();
    let w = rc["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{}", r.text);
    assert!(w[0].as_str().unwrap().contains("unreachable"));
    let receipt_id = uuid(&rc["id"]);
    assert_eq!(
        events(&srv, "marking.sold").await[0]["online_check"],
        "pending"
    );

    let recheck = MarkingRecheck::new(srv.store.clone(), on.check.clone());
    let event = CloudEvent::new(
        Uuid::now_v7(),
        srv.tenant,
        "receipt.created",
        chrono::Utc::now(),
        rc.clone(),
    );
    assert!(recheck.accepts("receipt.created"));
    // Still down: the consumer asks to be retried.
    match recheck.handle(&event, 1).await {
        Err(HandleError::Retry(_) | HandleError::RetryAfter { .. }) => {}
        other => panic!("expected a retry, got {other:?}"),
    }
    // Back up, and one code got blocked meanwhile: `marking.check_failed` names it.
    on.control("faults", json!({})).await;
    on.control("status", json!({"cis": bad, "blocked": true}))
        .await;
    recheck.handle(&event, 2).await.expect("recheck");
    let failed = events(&srv, "marking.check_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["receipt_id"], json!(receipt_id));
    let codes = failed[0]["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0]["label"], json!(label(&bad)));
    assert_eq!(codes[0]["verdict"], "blocked");
    // Done once: a redelivery changes nothing.
    recheck.handle(&event, 3).await.expect("repeat");
    assert_eq!(events(&srv, "marking.check_failed").await.len(), 1);
    assert!(
        srv.store
            .pending_marking_checks(srv.tenant, receipt_id)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn offline_refuse(srv: Srv) {
    let on = online(&srv).await;
    let (store, term) = srv.shop().await;
    let (ean, gtin) = new_ean();
    let cigs = marked_product(&srv, &ean).await;
    let code = dm(&gtin);
    on.control("seed", json!({"codes": [{"cis": code}]})).await;
    srv.patch(
        "/api/v1/settings",
        json!({"marking_offline_policy": "refuse"}),
    )
    .await
    .ok(200);
    // A blackholed service: the sale waits no longer than the budget, then is refused.
    on.control("faults", json!({"down": "blackhole"})).await;
    let started = Instant::now();
    let r = on
        .srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&code]))
        .await;
    let waited = started.elapsed();
    r.problem(422, Some("lines[0].marking_codes"));
    assert!(message_of(&r, "lines[0].marking_codes").contains("unreachable"));
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
    // Service refusing connections: refused too; nothing was sold.
    on.control("faults", json!({"down": true})).await;
    on.srv
        .post("/api/v1/receipts", sale_of(store, term, cigs, &[&code]))
        .await
        .problem(422, Some("lines[0].marking_codes"));
    assert!(events(&srv, "marking.sold").await.is_empty());
    // Unmarked goods never wait on it.
    let bread = srv.create_product("BREAD", PRICE).await;
    on.srv
        .post(
            "/api/v1/receipts",
            receipt(store, term, json!([{"product_id": bread, "qty": 1}]), PRICE),
        )
        .await
        .ok(201);
}

backend_tests!(
    refusals,
    return_cycle,
    same_code_on_two_tills,
    online_verdicts,
    offline_allow_then_recheck,
    offline_refuse,
);
