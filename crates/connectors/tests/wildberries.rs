//! The `wildberries` connector against the Wildberries simulator over HTTP: connection checks,
//! the catalogue through its pages, stock pushes that really land (batches, rounding, refused
//! sizes), the rate limits (no 429 in a burst, a 409's extra cost paid, `X-Ratelimit-Retry`
//! honoured), assembly orders, confirming through a supply, cancellations, and a token that
//! never shows.

use std::sync::Arc;
use std::time::Duration;

use savdo_connectors::wildberries;
use savdo_domain::clock::SystemClock;
use savdo_hub::connector::{MarketplaceConnector, OrderState, StockUpdate};
use savdo_hub::{Connector, ConnectorError, HttpHub, MemorySink, RateLimit, Registry};
use savdo_sandbox::wildberries::DEFAULT_TOKEN;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET_TOKEN: &str = "wb-jwt-Zq81-very-secret-token";

struct Env {
    sandbox: savdo_sandbox::RunningSandbox,
    http: reqwest::Client,
    sink: Arc<MemorySink>,
    hub: HttpHub,
    registry: Registry,
    connector: Arc<dyn Connector>,
}

impl Env {
    fn wb(&self) -> &dyn MarketplaceConnector {
        self.connector
            .as_marketplace()
            .expect("marketplace capability")
    }

    fn base(&self) -> String {
        format!("{}/wildberries", self.sandbox.url())
    }

    fn build(&self, token: &str, warehouse_id: &str) -> Result<Arc<dyn Connector>, ConnectorError> {
        build(&self.registry, &self.hub, &self.base(), token, warehouse_id)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        savdo_testkit::marketplace::control_post(
            &self.http,
            &self.sandbox.url(),
            "wildberries",
            path,
            body,
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        savdo_testkit::marketplace::control_get(
            &self.http,
            &self.sandbox.url(),
            "wildberries",
            path,
        )
        .await
    }

    async fn clear_stats(&self) {
        self.http
            .delete(format!("{}/_control/wildberries/stats", self.sandbox.url()))
            .send()
            .await
            .unwrap();
    }

    async fn stock_of(&self, chrt_id: u64) -> i64 {
        self.get("stock").await["by_chrt_id"][chrt_id.to_string()]
            .as_i64()
            .unwrap()
    }

    /// Answers with `status` from `endpoint` (`"PUT /api/v3/stocks/{warehouse_id}"`).
    async fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.get("stats").await["endpoints"][endpoint]["by_status"][status.to_string()]
            .as_u64()
            .unwrap_or(0)
    }

    async fn responses_429(&self) -> u64 {
        self.get("stats").await["responses_429"].as_u64().unwrap()
    }
}

const PUT_STOCKS: &str = "PUT /api/v3/stocks/{warehouse_id}";

/// A fresh simulator; `registry` lets a test scale the rate limit with the simulator's.
async fn env_with(mut registry: Registry) -> Env {
    wildberries::register(&mut registry);
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    // HttpHub installs the rustls crypto provider the test's own client needs too.
    let hub = HttpHub::new(Arc::new(SystemClock), sink.clone()).unwrap();
    let base = format!("{}/wildberries", sandbox.url());
    let connector = build(&registry, &hub, &base, SECRET_TOKEN, "1").expect("connector");
    let env = Env {
        sandbox,
        http: reqwest::Client::new(),
        sink,
        hub,
        registry,
        connector,
    };
    env.post(
        "seed",
        json!({"tokens": [SECRET_TOKEN], "products": [
            {"chrt_id": 301, "nm_id": 3001, "vendor_code": "SIGARET-1", "title": "Marked goods",
             "barcode": "4780000000048", "price": 30_000, "amount": 5, "required_meta": ["sgtin"]}
        ]}),
    )
    .await;
    env
}

async fn env() -> Env {
    env_with(Registry::builtin()).await
}

fn build(
    registry: &Registry,
    hub: &HttpHub,
    base: &str,
    token: &str,
    warehouse_id: &str,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    registry.build(
        hub,
        &Uuid::new_v4().to_string(),
        &Uuid::new_v4().to_string(),
        "wildberries",
        &json!({"token": token}),
        &json!({"warehouse_id": warehouse_id, "store_ids": ["main"], "base_url": base}),
    )
}

fn upd(chrt_id: u64, available: i64) -> StockUpdate {
    StockUpdate {
        external_id: chrt_id.to_string(),
        barcode: None,
        available,
    }
}

#[tokio::test]
async fn test_connection_checks_token_and_warehouse() {
    let env = env().await;
    let health = env.connector.test_connection().await.unwrap();
    assert_eq!(health.status, savdo_hub::HealthStatus::Ok);

    let wrong = env.build("not-a-token", "1").unwrap();
    match wrong.test_connection().await {
        Err(ConnectorError::Auth { message }) => assert!(message.contains("401"), "{message}"),
        other => panic!("expected Auth, got {other:?}"),
    }

    let elsewhere = env.build(DEFAULT_TOKEN, "999").unwrap();
    match elsewhere.test_connection().await {
        Err(ConnectorError::Config { message }) => {
            assert!(message.contains("warehouse_id"), "{message}");
            assert!(message.contains("999"), "{message}");
        }
        other => panic!("expected Config, got {other:?}"),
    }

    assert!(matches!(
        env.build(DEFAULT_TOKEN, "main"),
        Err(ConnectorError::Config { .. })
    ));
}

#[tokio::test]
async fn whole_catalogue_through_pages() {
    let env = env().await;
    // 230 cards, the first 20 with two sizes: 250 sizes on 3 pages of up to 100 cards.
    let mut products = Vec::new();
    for i in 0..230u64 {
        let nm = 50_000 + i;
        products.push(
            json!({"chrt_id": 60_000 + i * 2, "nm_id": nm, "title": format!("Card {i}"),
            "barcode": format!("47900{i:08}"), "amount": i % 7}),
        );
        if i < 20 {
            products.push(
                json!({"chrt_id": 60_000 + i * 2 + 1, "nm_id": nm, "size": "XL",
                "title": format!("Card {i}"), "barcode": format!("47901{i:08}"), "amount": 1}),
            );
        }
    }
    env.post("seed", json!({"clear": true, "products": products}))
        .await;

    let mut cursor: Option<String> = None;
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let page = env.wb().list_catalog(cursor.as_deref()).await.unwrap();
        pages += 1;
        items.extend(page.items);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
        assert!(pages < 10, "cursor does not advance");
    }
    assert_eq!(pages, 3);
    assert_eq!(items.len(), 250);
    let mut ids: Vec<&str> = items.iter().map(|i| i.external_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 250, "every size exactly once");

    let first = items.iter().find(|i| i.external_id == "60000").unwrap();
    assert_eq!(first.product_id.as_deref(), Some("50000"));
    assert_eq!(first.barcodes, vec!["4790000000000".to_string()]);
    assert_eq!(first.title, "Card 0");
    assert_eq!(first.stock, Some(0));
    assert_eq!(first.price, None);
    let xl = items.iter().find(|i| i.external_id == "60001").unwrap();
    assert_eq!(xl.product_id.as_deref(), Some("50000"));
    assert_eq!(xl.title, "Card 0 (XL)");
    assert_eq!(xl.stock, Some(1000));
    let c10 = items.iter().find(|i| i.external_id == "60020").unwrap();
    assert_eq!(c10.stock, Some(3000)); // 10 % 7 units, in thousandths

    assert!(matches!(
        env.wb().list_catalog(Some("garbage!")).await,
        Err(ConnectorError::Rejected { .. })
    ));
}

#[tokio::test]
async fn push_of_2500_items_takes_3_requests_and_lands_exactly() {
    let env = env().await;
    let products: Vec<Value> = (0..2500u64)
        .map(|i| json!({"chrt_id": 100_000 + i, "nm_id": 200_000 + i, "amount": 0}))
        .collect();
    env.post("seed", json!({"clear": true, "products": products}))
        .await;
    env.clear_stats().await;

    let wb = env.wb();
    assert_eq!(wb.max_stock_batch(), 1000);
    // i % 500 whole units plus a fraction that must be dropped.
    let updates: Vec<StockUpdate> = (0..2500u64)
        .map(|i| upd(100_000 + i, (i % 500) as i64 * 1000 + (i % 1000) as i64))
        .collect();
    let mut accepted = 0;
    for chunk in updates.chunks(wb.max_stock_batch()) {
        let r = wb.push_stock(chunk).await.unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        accepted += r.accepted;
    }
    assert_eq!(accepted, 2500);
    assert_eq!(env.count(PUT_STOCKS, 204).await, 3);
    let stats = env.get("stats").await;
    assert_eq!(stats["stock"]["items_updated"], 2500);
    assert_eq!(
        stats["stock"]["items_ignored"], 0,
        "field names must be right"
    );

    let stock = env.get("stock").await;
    for i in 0..2500u64 {
        assert_eq!(
            stock["by_chrt_id"][(100_000 + i).to_string()].as_i64(),
            Some((i % 500) as i64),
            "chrt {}",
            100_000 + i
        );
    }
}

#[tokio::test]
async fn rounding_down_and_clamping_at_zero() {
    let env = env().await;
    env.clear_stats().await;
    let r = env
        .wb()
        .push_stock(&[
            upd(201, 2999),
            upd(202, -5000),
            upd(203, 999),
            upd(301, 3000),
            // More than WB takes: refused here, not sent.
            upd(201, 100_001_000),
        ])
        .await
        .unwrap();
    assert_eq!(r.accepted, 4);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].external_id, "201");
    assert_eq!(r.rejected[0].code, "InvalidAmount");
    assert_eq!(env.stock_of(201).await, 2);
    assert_eq!(env.stock_of(202).await, 0);
    assert_eq!(env.stock_of(203).await, 0);
    assert_eq!(env.stock_of(301).await, 3);
    assert_eq!(env.count(PUT_STOCKS, 204).await, 1);
    assert_eq!(env.count(PUT_STOCKS, 409).await, 0);

    // The last update of a size in a batch wins.
    let r = env
        .wb()
        .push_stock(&[upd(201, 5000), upd(201, 8000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(env.stock_of(201).await, 8);
}

#[tokio::test]
async fn unknown_chrt_id_is_rejected_and_the_good_items_land() {
    let env = env().await;
    env.clear_stats().await;
    let r = env
        .wb()
        .push_stock(&[upd(201, 7000), upd(999_999, 5000), upd(203, 9000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 2);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].external_id, "999999");
    assert_eq!(r.rejected[0].code, "NotFound");
    assert_eq!(env.stock_of(201).await, 7);
    assert_eq!(env.stock_of(203).await, 9);
    assert_eq!(env.count(PUT_STOCKS, 409).await, 1);
    assert_eq!(env.count(PUT_STOCKS, 204).await, 1);

    // The refused size is not sent again soon: no second 409 (each costs ten requests).
    let r = env
        .wb()
        .push_stock(&[upd(999_999, 1000), upd(201, 4000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(r.rejected[0].external_id, "999999");
    assert_eq!(env.stock_of(201).await, 4);
    assert_eq!(env.count(PUT_STOCKS, 409).await, 1);
    assert_eq!(env.responses_429().await, 0);

    // A non-numeric id never leaves.
    let r = env
        .wb()
        .push_stock(&[StockUpdate {
            external_id: "CHOY-100".into(),
            barcode: None,
            available: 1000,
        }])
        .await
        .unwrap();
    assert_eq!(r.accepted, 0);
    assert_eq!(r.rejected[0].code, "InvalidId");
}

#[tokio::test]
async fn burst_of_40_pushes_draws_no_429() {
    // WB's limit scaled ten times on both sides (3000 a minute, burst 20; a 409 still costs
    // ten), so the burst runs in well under a second.
    let mut registry = Registry::builtin();
    let mut d = registry.descriptor("wildberries").unwrap().clone();
    d.http.rate_limit = Some(RateLimit::per_minute(3000, 20));
    registry.add_type(d);
    let env = env_with(registry).await;
    env.post(
        "limits",
        json!({"marketplace_burst": 20, "marketplace_per_second": 50.0}),
    )
    .await;
    env.clear_stats().await;

    for i in 0..40i64 {
        let mut batch = vec![upd(201, i * 1000), upd(202, (40 - i) * 1000)];
        if i == 0 || i == 20 {
            // Two 409s in the burst: their extra cost must be paid before the next calls.
            batch.push(upd(900_000 + i as u64, 1000));
        }
        let r = env.wb().push_stock(&batch).await.unwrap();
        assert_eq!(r.accepted, 2, "push {i}");
    }
    let stats = env.get("stats").await;
    assert_eq!(stats["responses_429"], 0, "{stats}");
    assert_eq!(env.count(PUT_STOCKS, 204).await, 40);
    assert_eq!(env.count(PUT_STOCKS, 409).await, 2);
    assert_eq!(env.stock_of(201).await, 39);
    assert_eq!(env.stock_of(202).await, 1);
}

#[tokio::test]
async fn a_429_is_honoured_through_x_ratelimit_retry() {
    let env = env().await;
    // One request a second: the second call is refused with X-Ratelimit-Retry: 1, and the
    // client waits that out and gets through.
    env.post(
        "limits",
        json!({"marketplace_burst": 1, "marketplace_per_second": 1.0}),
    )
    .await;
    env.clear_stats().await;
    env.connector.test_connection().await.unwrap();
    env.connector.test_connection().await.unwrap();
    assert_eq!(env.responses_429().await, 1);
    assert_eq!(env.count("GET /api/v3/warehouses", 200).await, 2);

    // A wait longer than the client sleeps through comes back as RateLimited with WB's delay.
    env.post(
        "limits",
        json!({"marketplace_burst": 1, "marketplace_per_second": 0.01}),
    )
    .await;
    env.connector.test_connection().await.unwrap();
    match env.wb().push_stock(&[upd(201, 1000)]).await {
        Err(ConnectorError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(100)));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn new_orders_confirm_and_status() {
    let env = env().await;
    let plain = env
        .post("orders", json!({"chrt_id": 201, "price": 25_000}))
        .await;
    let marked = env
        .post("orders", json!({"barcode": "4780000000048"}))
        .await;
    let plain_id = plain["id"].as_u64().unwrap().to_string();
    let marked_id = marked["id"].as_u64().unwrap().to_string();

    let orders = env.wb().fetch_new_orders(None).await.unwrap();
    assert_eq!(orders.len(), 2);
    let o = orders.iter().find(|o| o.external_id == plain_id).unwrap();
    assert_eq!(o.state, OrderState::New);
    assert_eq!(o.total, 2_500_000, "25 000 sum in tiyin");
    assert_eq!(o.lines.len(), 1);
    assert_eq!(o.lines[0].external_id, "201");
    assert_eq!(o.lines[0].barcode.as_deref(), Some("4780000000017"));
    assert_eq!(o.lines[0].quantity, 1000);
    assert_eq!(o.lines[0].price, 2_500_000);
    assert!(!o.lines[0].marking_required);
    assert!(o.created_at.is_some());
    let m = orders.iter().find(|o| o.external_id == marked_id).unwrap();
    assert!(m.lines[0].marking_required);
    assert_eq!(m.total, 3_000_000);

    // Not confirmed yet: the same orders come back.
    let again = env.wb().fetch_new_orders(None).await.unwrap();
    assert_eq!(again, orders);

    let st = env.wb().order_status(&plain_id).await.unwrap();
    assert_eq!(st.state, OrderState::New);
    assert_eq!(st.raw_status, "new/waiting");

    let c = env.wb().confirm_order(&plain_id).await.unwrap();
    assert_eq!(c.state, OrderState::Confirmed);
    let st = env.wb().order_status(&plain_id).await.unwrap();
    assert_eq!(st.state, OrderState::Confirmed);
    assert_eq!(st.raw_status, "confirm/waiting");
    env.wb().confirm_order(&marked_id).await.unwrap();

    // Both went into one supply; confirming again changes nothing.
    let all = env.get("orders").await;
    let supplies: Vec<&Value> = all["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["supplyId"])
        .collect();
    assert_eq!(supplies.len(), 2);
    assert!(supplies[0].is_string());
    assert_eq!(supplies[0], supplies[1]);
    assert_eq!(env.count("POST /api/v3/supplies", 201).await, 1);
    let again = env.wb().confirm_order(&plain_id).await.unwrap();
    assert_eq!(again.state, OrderState::Confirmed);

    assert!(env.wb().fetch_new_orders(None).await.unwrap().is_empty());
    assert!(matches!(
        env.wb().order_status("424242").await,
        Err(ConnectorError::Rejected { .. })
    ));
    assert!(matches!(
        env.wb().confirm_order("424242").await,
        Err(ConnectorError::Rejected { .. })
    ));

    // A cancelled order cannot be confirmed.
    let late = env.post("orders", json!({"chrt_id": 202})).await;
    let late_id = late["id"].as_u64().unwrap();
    env.post(&format!("orders/{late_id}/cancel"), json!({}))
        .await;
    assert!(matches!(
        env.wb().confirm_order(&late_id.to_string()).await,
        Err(ConnectorError::Rejected { .. })
    ));
}

#[tokio::test]
async fn cancellations_are_found() {
    let env = env().await;
    let since = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let mut ids = Vec::new();
    for chrt in [201, 202, 203] {
        let o = env.post("orders", json!({"chrt_id": chrt})).await;
        ids.push(o["id"].as_u64().unwrap());
    }
    // An order from three days ago, cancelled now, is found too.
    let old = env
        .post(
            "orders",
            json!({"chrt_id": 201,
                "created_at": (chrono::Utc::now() - chrono::TimeDelta::days(3)).to_rfc3339()}),
        )
        .await;
    let old_id = old["id"].as_u64().unwrap();

    assert!(
        env.wb()
            .fetch_cancellations(since)
            .await
            .unwrap()
            .is_empty()
    );

    env.post(&format!("orders/{}/cancel", ids[0]), json!({}))
        .await;
    env.post(
        &format!("orders/{}/cancel", ids[1]),
        json!({"wb_status": "canceled"}),
    )
    .await;
    env.post(&format!("orders/{old_id}/cancel"), json!({}))
        .await;

    let mut got = env.wb().fetch_cancellations(since).await.unwrap();
    got.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    let mut want = vec![ids[0].to_string(), ids[1].to_string(), old_id.to_string()];
    want.sort();
    assert_eq!(
        got.iter()
            .map(|c| c.external_id.clone())
            .collect::<Vec<_>>(),
        want
    );
    assert!(got.iter().all(|c| c.state == OrderState::Cancelled));
    let by_buyer = got
        .iter()
        .find(|c| c.external_id == ids[0].to_string())
        .unwrap();
    assert_eq!(by_buyer.reason.as_deref(), Some("cancelled by the buyer"));
    assert_eq!(by_buyer.raw_status, "new/canceled_by_client");
    let by_wb = got
        .iter()
        .find(|c| c.external_id == ids[1].to_string())
        .unwrap();
    assert_eq!(by_wb.reason.as_deref(), Some("cancelled by Wildberries"));

    // The buyer's cancellation shows in order_status too.
    let st = env.wb().order_status(&ids[0].to_string()).await.unwrap();
    assert_eq!(st.state, OrderState::Cancelled);
}

#[tokio::test]
async fn the_token_never_shows() {
    let env = env().await;
    env.connector.test_connection().await.unwrap();
    env.wb().list_catalog(None).await.unwrap();
    env.wb()
        .push_stock(&[upd(201, 1000), upd(777_777, 1000)])
        .await
        .unwrap();
    env.post("orders", json!({"chrt_id": 201})).await;
    env.wb().fetch_new_orders(None).await.unwrap();
    env.wb()
        .fetch_cancellations(chrono::Utc::now())
        .await
        .unwrap();
    let err = env
        .build("wrong-token-but-also-secret", "1")
        .unwrap()
        .test_connection()
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("wrong-token-but-also-secret"));

    let exchanges = env.sink.exchanges();
    assert!(exchanges.len() >= 6, "{}", exchanges.len());
    let log = serde_json::to_string(&exchanges).unwrap();
    assert!(!log.contains(SECRET_TOKEN), "token in the exchange log");
    assert!(!log.contains("wrong-token-but-also-secret"));
    for x in &exchanges {
        let auth = x
            .request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        assert!(auth.is_some(), "{} {}", x.method, x.url);
    }
    let shown = format!("{:?}", wildberries_debug(&env));
    assert!(!shown.contains(SECRET_TOKEN), "{shown}");
}

/// The connector's own `Debug`, built from a registry context like the factory does.
fn wildberries_debug(env: &Env) -> wildberries::Wildberries {
    let ctx = savdo_hub::registry::ConnectorContext {
        tenant_id: "t".into(),
        integration_id: Uuid::new_v4().to_string(),
        kind: "wildberries".into(),
        credentials: savdo_hub::registry::Credentials::from_value(json!({"token": SECRET_TOKEN}))
            .unwrap(),
        settings: json!({"warehouse_id": "1", "base_url": env.base()}),
        http: env
            .hub
            .client(savdo_hub::http::ClientConfig::new("t", "x", "wildberries")),
    };
    wildberries::Wildberries::new(ctx).unwrap()
}
