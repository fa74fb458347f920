//! The `uzum` connector against the Uzum Seller OpenAPI simulator over HTTP: connection checks,
//! catalogue paging with exact prices, stock pushes (rounding, clamping, per-item refusals), the
//! hub's rate limit against the simulator's, 429s honoured, orders (paging, states, confirm),
//! cancellations, prices, and a token that never shows.
//!
//! Most tests run the type's HTTP limit and the simulator's bucket both ten times faster than
//! the real ~1 request/second (same shape: our burst 1, theirs 3), so they stay short;
//! `default_limits_pass_the_simulator` keeps the registry's own limit.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use savdo_connectors::uzum;
use savdo_domain::clock::SystemClock;
use savdo_hub::connector::{OrderState, PriceUpdate, StockUpdate};
use savdo_hub::{
    Connector, ConnectorContext, ConnectorError, Credentials, HttpHub, MarketplaceConnector,
    MemorySink, RateLimit, Registry,
};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "uzum-test-token-7f3a9c51e2";
const SHOP: u64 = 7;

struct Env {
    sandbox: savdo_sandbox::RunningSandbox,
    http: reqwest::Client,
    sink: Arc<MemorySink>,
    hub: HttpHub,
    registry: Registry,
    connector: Arc<dyn Connector>,
}

impl Env {
    fn mp(&self) -> &dyn MarketplaceConnector {
        self.connector
            .as_marketplace()
            .expect("marketplace capability")
    }

    fn build(&self, token: &str, shop_id: &str) -> Result<Arc<dyn Connector>, ConnectorError> {
        build(&self.registry, &self.hub, &self.sandbox, token, shop_id)
    }

    /// The concrete connector, for what only it shows (`Debug`).
    fn concrete(&self) -> uzum::Uzum {
        let credentials = Credentials::from_value(json!({"token": TOKEN})).unwrap();
        let settings = settings(&self.sandbox, &SHOP.to_string());
        let (tenant, integration) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let cfg = self
            .registry
            .client_config(&tenant, &integration, "uzum", &credentials, &settings)
            .unwrap();
        uzum::Uzum::new(ConnectorContext {
            tenant_id: tenant,
            integration_id: integration,
            kind: "uzum".into(),
            credentials,
            settings,
            http: self.hub.client(cfg),
        })
        .unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        savdo_testkit::marketplace::control_post(
            &self.http,
            &self.sandbox.url(),
            "uzum",
            path,
            body,
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        savdo_testkit::marketplace::control_get(&self.http, &self.sandbox.url(), "uzum", path).await
    }

    async fn clear_stats(&self) {
        self.http
            .delete(format!("{}/_control/uzum/stats", self.sandbox.url()))
            .send()
            .await
            .unwrap();
    }

    /// `(amount, price)` of a SKU as the simulator holds it.
    async fn sku(&self, sku_id: u64) -> (i64, i64) {
        let stock = self.get("stock").await;
        let it = stock["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["sku_id"] == sku_id)
            .cloned()
            .unwrap_or_else(|| panic!("sku {sku_id} in {stock}"));
        (
            it["amount"].as_i64().unwrap(),
            it["price"].as_i64().unwrap(),
        )
    }
}

/// The type's limit at `per_second` (burst 1) and the simulator's bucket at the same rate
/// with its default burst of 3.
async fn env_at(per_second: Option<u32>) -> Env {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    // HttpHub installs the rustls crypto provider the test's own client needs too.
    let hub = HttpHub::new(Arc::new(SystemClock), sink.clone()).unwrap();
    let mut registry = Registry::builtin();
    if let Some(rate) = per_second {
        let mut d = registry.descriptor("uzum").unwrap().clone();
        d.http.rate_limit = Some(RateLimit {
            requests: rate,
            per: Duration::from_secs(1),
            burst: 1,
            max_wait: Duration::from_secs(30),
        });
        registry.add_type(d);
    }
    uzum::register(&mut registry);
    let http = reqwest::Client::new();
    let mut products = Vec::new();
    // 205 products, every tenth with a second SKU: three catalogue pages.
    for p in 0..205u64 {
        let product_id = 5000 + p;
        let sku_id = 10_000 + p * 10;
        products.push(
            json!({"sku_id": sku_id, "product_id": product_id, "shop_id": SHOP,
            "barcode": format!("47800{:08}", sku_id), "title": format!("Mahsulot {p}"),
            "price": 1_000 + p as i64 * 37, "amount": 5}),
        );
        if p % 10 == 0 {
            products.push(json!({"sku_id": sku_id + 1, "product_id": product_id,
                "shop_id": SHOP, "barcode": format!("47800{:08}", sku_id + 1),
                "title": format!("Mahsulot {p}"), "sku_title": "katta",
                "price": 2_000 + p as i64 * 37, "amount": 5}));
        }
    }
    // Another shop's SKU, which our token cannot reach.
    products.push(json!({"sku_id": 99_001, "product_id": 99_000, "shop_id": 8,
        "barcode": "4780099900011", "price": 100, "amount": 1}));
    let limits = match per_second {
        Some(rate) => json!({"burst": 3, "per_second": rate}),
        None => json!({}),
    };
    let seeded = http
        .post(format!("{}/_control/uzum/seed", sandbox.url()))
        .json(
            &json!({"clear": true, "tokens": [{"token": TOKEN, "shops": [SHOP]}],
               "shops": [{"id": SHOP, "name": "Savdo test"}, {"id": 8}],
               "products": products, "limits": limits}),
        )
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success(), "seed");
    let connector = build(&registry, &hub, &sandbox, TOKEN, &SHOP.to_string()).expect("connector");
    Env {
        sandbox,
        http,
        sink,
        hub,
        registry,
        connector,
    }
}

fn settings(sandbox: &savdo_sandbox::RunningSandbox, shop_id: &str) -> Value {
    json!({"shop_id": shop_id, "store_ids": [Uuid::new_v4().to_string()],
           "base_url": format!("{}/uzum/api/seller-openapi", sandbox.url())})
}

fn build(
    registry: &Registry,
    hub: &HttpHub,
    sandbox: &savdo_sandbox::RunningSandbox,
    token: &str,
    shop_id: &str,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    registry.build(
        hub,
        &Uuid::new_v4().to_string(),
        &Uuid::new_v4().to_string(),
        "uzum",
        &json!({"token": token}),
        &settings(sandbox, shop_id),
    )
}

async fn env() -> Env {
    env_at(Some(10)).await
}

fn stock(sku: u64, available: i64) -> StockUpdate {
    StockUpdate {
        external_id: sku.to_string(),
        barcode: None,
        available,
    }
}

#[tokio::test]
async fn test_connection_checks_token_and_shop() {
    let env = env().await;
    let health = env.connector.test_connection().await.expect("health");
    assert_eq!(health.status, savdo_hub::HealthStatus::Ok);
    assert_eq!(env.connector.kind(), "uzum");

    let wrong = env.build("not-the-token", &SHOP.to_string()).unwrap();
    match wrong.test_connection().await {
        Err(ConnectorError::Auth { message }) => assert!(message.contains("401"), "{message}"),
        other => panic!("expected Auth, got {other:?}"),
    }

    let other_shop = env.build(TOKEN, "77").unwrap();
    match other_shop.test_connection().await {
        Err(ConnectorError::Config { message }) => {
            assert!(message.contains("77") && message.contains('7'), "{message}")
        }
        other => panic!("expected Config, got {other:?}"),
    }
    // Using it anyway: Uzum refuses the shop.
    let err = other_shop
        .as_marketplace()
        .unwrap()
        .list_catalog(None)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Auth { .. }), "{err:?}");

    match env.build(TOKEN, "shop-seven") {
        Err(ConnectorError::Config { message }) => {
            assert!(message.contains("shop_id"), "{message}")
        }
        Err(other) => panic!("expected Config, got {other:?}"),
        Ok(_) => panic!("a non-numeric shop id was taken"),
    }
}

#[tokio::test]
async fn whole_catalogue_comes_through_pages_with_exact_prices() {
    let env = env().await;
    let mut cursor: Option<String> = None;
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let page = env.mp().list_catalog(cursor.as_deref()).await.unwrap();
        pages += 1;
        items.extend(page.items);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(items.len(), 205 + 21);
    let ids: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i.external_id.as_str()).collect();
    assert_eq!(ids.len(), items.len(), "no SKU twice");
    assert!(!ids.contains("99001"), "another shop's SKU");

    let p7 = items.iter().find(|i| i.external_id == "10070").unwrap();
    assert_eq!(p7.product_id.as_deref(), Some("5007"));
    assert_eq!(p7.barcodes, vec!["4780000010070".to_string()]);
    assert_eq!(p7.price, Some((1_000 + 7 * 37) * 100));
    assert_eq!(p7.stock, Some(5_000));
    assert_eq!(p7.title, "Mahsulot 7");
    let big = items.iter().find(|i| i.external_id == "10201").unwrap();
    assert_eq!(big.product_id.as_deref(), Some("5020"));
    assert_eq!(big.price, Some((2_000 + 20 * 37) * 100));
    assert!(big.title.contains("katta"), "{}", big.title);

    let err = env.mp().list_catalog(Some("garbage")).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Rejected { .. }), "{err:?}");
}

#[tokio::test]
async fn push_stock_rounds_down_clamps_and_rejects_per_item() {
    let env = env().await;
    assert!(env.mp().max_stock_batch() >= 100);
    let batch = vec![
        stock(10_000, 7_999), // 7.999 -> 7
        stock(10_010, 500),   // 0.5 -> 0
        stock(10_020, -3_000),
        StockUpdate {
            external_id: "10030".into(),
            barcode: Some("4780000010030".into()),
            available: 12_000,
        },
    ];
    let r = env.mp().push_stock(&batch).await.unwrap();
    assert_eq!(r.accepted, 4);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(env.sku(10_000).await.0, 7);
    assert_eq!(env.sku(10_010).await.0, 0);
    assert_eq!(env.sku(10_020).await.0, 0);
    assert_eq!(env.sku(10_030).await.0, 12);
    let by_barcode = env.get("stock").await["by_barcode"].clone();
    assert_eq!(by_barcode["4780000010000"], 7);

    // Unknown and other-shop SKUs are refused; the rest still land.
    let batch = vec![
        stock(10_040, 3_000),
        stock(424_242, 1_000),
        stock(99_001, 1_000),
        stock(10_050, 9_000),
        StockUpdate {
            external_id: "not-a-sku".into(),
            barcode: None,
            available: 1_000,
        },
    ];
    let r = env.mp().push_stock(&batch).await.unwrap();
    assert_eq!(r.accepted, 2);
    let mut refused: Vec<&str> = r.rejected.iter().map(|e| e.external_id.as_str()).collect();
    refused.sort();
    assert_eq!(refused, vec!["424242", "99001", "not-a-sku"]);
    assert!(
        r.rejected
            .iter()
            .any(|e| e.external_id == "424242" && e.code == "sku-not-found")
    );
    assert_eq!(env.sku(10_040).await.0, 3);
    assert_eq!(env.sku(10_050).await.0, 9);
    assert_eq!(env.sku(99_001).await.0, 1, "another shop's stock untouched");
}

#[tokio::test]
async fn a_burst_of_pushes_passes_the_limiter_without_429() {
    let env = env().await;
    env.clear_stats().await;
    let mut tasks = Vec::new();
    for i in 0..15i64 {
        let c = env.connector.clone();
        tasks.push(tokio::spawn(async move {
            let batch = vec![stock(10_000 + 10 * i as u64, (i + 1) * 1_000)];
            c.as_marketplace().unwrap().push_stock(&batch).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap().expect("push");
        assert_eq!(r.accepted, 1);
    }
    let stats = env.get("stats").await;
    assert_eq!(stats["responses_429"], 0, "{stats}");
    assert_eq!(
        stats["endpoints"]["POST /api/seller-openapi/v2/fbs/sku/stocks"]["total"], 15,
        "{stats}"
    );
    for i in 0..15u64 {
        assert_eq!(env.sku(10_000 + 10 * i).await.0, i as i64 + 1);
    }

    // The same burst without the hub's limit (and without retries) is refused: the limit above
    // is what kept the 429s away.
    let mut unlimited = env.registry.clone();
    let mut d = unlimited.descriptor("uzum").unwrap().clone();
    d.http.rate_limit = None;
    d.http.retry.max_attempts = 1;
    unlimited.add_type(d);
    let raw = build(&unlimited, &env.hub, &env.sandbox, TOKEN, &SHOP.to_string()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..15u64 {
        let c = raw.clone();
        tasks.push(tokio::spawn(async move {
            c.as_marketplace()
                .unwrap()
                .push_stock(&[stock(10_000 + 10 * i, 1_000)])
                .await
        }));
    }
    let mut limited = 0;
    for t in tasks {
        if let Err(ConnectorError::RateLimited { .. }) = t.await.unwrap() {
            limited += 1;
        }
    }
    assert!(limited > 0, "the simulator's limit did not bite");
}

#[tokio::test]
async fn a_429_is_waited_out_or_reported_with_retry_after() {
    let env = env().await;
    // One request at once, one a second: the second call of two quick ones gets a 429 with
    // `Retry-After: 1`, which the client sleeps through.
    env.control("limits", json!({"burst": 1, "per_second": 1}))
        .await;
    env.clear_stats().await;
    env.mp().fetch_new_orders(None).await.expect("first");
    env.mp()
        .fetch_new_orders(None)
        .await
        .expect("second, after the 429");
    let stats = env.get("stats").await;
    assert!(stats["responses_429"].as_u64().unwrap() >= 1, "{stats}");

    // A wait longer than the client would sleep comes back as RateLimited with the hint.
    env.control("limits", json!({"burst": 1, "per_second": 0.02}))
        .await;
    env.mp().fetch_new_orders(None).await.expect("burst of one");
    match env.mp().fetch_new_orders(None).await {
        Err(ConnectorError::RateLimited {
            retry_after: Some(d),
        }) => assert!(d >= Duration::from_secs(30), "{d:?}"),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn default_limits_pass_the_simulator() {
    let env = env_at(None).await;
    env.clear_stats().await;
    env.connector.test_connection().await.unwrap();
    env.mp().list_catalog(None).await.unwrap();
    env.mp().push_stock(&[stock(10_000, 2_000)]).await.unwrap();
    env.mp().push_stock(&[stock(10_000, 3_000)]).await.unwrap();
    env.mp().fetch_new_orders(None).await.unwrap();
    let stats = env.get("stats").await;
    assert_eq!(stats["responses_429"], 0, "{stats}");
    assert_eq!(stats["requests_total"], 5, "{stats}");
    assert_eq!(env.sku(10_000).await.0, 3);
}

#[tokio::test]
async fn new_orders_come_with_lines_prices_and_states() {
    let env = env().await;
    let a = env
        .control(
            "orders",
            json!({"shop_id": SHOP, "items": [{"sku_id": 10_000, "amount": 2},
                   {"sku_id": 10_001, "amount": 1, "price": 12_345}]}),
        )
        .await;
    let a_id = a["id"].to_string();
    env.control(
        "orders",
        json!({"shop_id": SHOP, "status": "PACKING", "items": [{"sku_id": 10_020}]}),
    )
    .await;
    // Another shop's order is not ours.
    env.control(
        "orders",
        json!({"shop_id": 8, "items": [{"sku_id": 99_001}]}),
    )
    .await;
    // 52 more new orders: two pages of orders.
    let more: Vec<Value> = (0..52)
        .map(|_| json!({"shop_id": SHOP, "items": [{"barcode": "4780000010100", "amount": 3}]}))
        .collect();
    env.control("seed", json!({"orders": more})).await;

    let orders = env.mp().fetch_new_orders(None).await.unwrap();
    assert_eq!(orders.len(), 53);
    let o = orders.iter().find(|o| o.external_id == a_id).unwrap();
    assert_eq!(o.state, OrderState::New);
    assert_eq!(o.raw_status, "CREATED");
    assert!(o.created_at.is_some());
    assert_eq!(o.lines.len(), 2);
    let l0 = &o.lines[0];
    assert_eq!(l0.external_id, "10000");
    assert_eq!(l0.barcode.as_deref(), Some("4780000010000"));
    assert_eq!(l0.quantity, 2_000);
    assert_eq!(l0.price, 1_000 * 100);
    let l1 = &o.lines[1];
    assert_eq!(l1.external_id, "10001");
    assert_eq!(l1.quantity, 1_000);
    assert_eq!(l1.price, 1_234_500);
    assert_eq!(o.total, 2 * 100_000 + 1_234_500);
    let other = orders.iter().find(|o| o.external_id != a_id).unwrap();
    assert_eq!(other.lines[0].quantity, 3_000);
    assert_eq!(other.total, 3 * (1_000 + 10 * 37) * 100);

    // The same orders again on the next call (import is keyed by the order id).
    let again = env.mp().fetch_new_orders(None).await.unwrap();
    assert_eq!(again, orders);

    // States of the others.
    assert_eq!(uzum::order_state("PENDING_DELIVERY"), OrderState::Shipping);
    assert_eq!(uzum::order_state("DELIVERED"), OrderState::Delivered);
}

#[tokio::test]
async fn confirm_moves_the_order_and_refuses_twice() {
    let env = env().await;
    let o = env
        .control(
            "orders",
            json!({"shop_id": SHOP, "items": [{"sku_id": 10_000}]}),
        )
        .await;
    let id = o["id"].to_string();
    let before = env.mp().order_status(&id).await.unwrap();
    assert_eq!(before.state, OrderState::New);

    let done = env.mp().confirm_order(&id).await.unwrap();
    assert_eq!(done.state, OrderState::Packing);
    assert_eq!(done.raw_status, "PACKING");
    let after = env.mp().order_status(&id).await.unwrap();
    assert_eq!(after.state, OrderState::Packing);
    assert!(after.changed_at.is_some());

    match env.mp().confirm_order(&id).await {
        Err(ConnectorError::Rejected { code, message }) => {
            assert_eq!(code, "wrong_status");
            assert!(message.contains("seller-order-02"), "{message}");
        }
        other => panic!("expected wrong_status, got {other:?}"),
    }
    match env.mp().confirm_order("987654321").await {
        Err(ConnectorError::Rejected { code, .. }) => assert_eq!(code, "not_found"),
        other => panic!("expected not_found, got {other:?}"),
    }
    match env.mp().order_status("987654321").await {
        Err(ConnectorError::Rejected { code, .. }) => assert_eq!(code, "not_found"),
        other => panic!("expected not_found, got {other:?}"),
    }
    // Confirmed orders are no longer new.
    let new = env.mp().fetch_new_orders(None).await.unwrap();
    assert!(new.iter().all(|o| o.external_id != id));

    // Delivered through the marketplace: order_status follows.
    env.control(
        &format!("orders/{id}/status"),
        json!({"status": "DELIVERING"}),
    )
    .await;
    let s = env.mp().order_status(&id).await.unwrap();
    assert_eq!(s.state, OrderState::Shipping);
    assert_eq!(s.raw_status, "DELIVERING");
}

#[tokio::test]
async fn cancellations_since_a_time() {
    let env = env().await;
    let since = Utc::now() - TimeDelta::minutes(1);
    let o = env
        .control(
            "orders",
            json!({"shop_id": SHOP, "items": [{"sku_id": 10_000}]}),
        )
        .await;
    let id = o["id"].to_string();
    let keep = env
        .control(
            "orders",
            json!({"shop_id": SHOP, "items": [{"sku_id": 10_010}]}),
        )
        .await;
    env.control(
        &format!("orders/{id}/cancel"),
        json!({"reason": "BUYER_CHANGED_MIND"}),
    )
    .await;

    let cancelled = env.mp().fetch_cancellations(since).await.unwrap();
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    let c = &cancelled[0];
    assert_eq!(c.external_id, id);
    assert_eq!(c.state, OrderState::Cancelled);
    assert_eq!(c.raw_status, "CANCELED");
    assert_eq!(c.reason.as_deref(), Some("BUYER_CHANGED_MIND"));
    assert!(c.changed_at.is_some_and(|t| t >= since));
    assert_eq!(
        env.mp().order_status(&id).await.unwrap().state,
        OrderState::Cancelled
    );
    let new = env.mp().fetch_new_orders(None).await.unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].external_id, keep["id"].to_string());

    // Nothing was cancelled after the future.
    let later = env
        .mp()
        .fetch_cancellations(Utc::now() + TimeDelta::hours(1))
        .await
        .unwrap();
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn prices_land_in_whole_sum() {
    let env = env().await;
    assert!(env.mp().supports_prices());
    let price = |id: &str, p: i64| PriceUpdate {
        external_id: id.into(),
        barcode: None,
        price: p,
    };
    let r = env
        .mp()
        .push_prices(&[
            price("10000", 3_000_000),
            price("10010", 12_345),   // 123.45 sum: not a whole sum
            price("10020", 0),        // not positive
            price("424242", 500_000), // unknown
            price("10030", 99_900),
        ])
        .await
        .unwrap();
    assert_eq!(r.accepted, 2, "{r:?}");
    let mut refused: Vec<(&str, &str)> = r
        .rejected
        .iter()
        .map(|e| (e.external_id.as_str(), e.code.as_str()))
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            ("10010", "bad_price"),
            ("10020", "bad_price"),
            ("424242", "sku-not-found")
        ]
    );
    assert_eq!(env.sku(10_000).await.1, 30_000);
    assert_eq!(env.sku(10_030).await.1, 999);
    assert_eq!(env.sku(10_010).await.1, 1_000 + 37, "unchanged");
    let page = env.mp().list_catalog(None).await.unwrap();
    let it = page
        .items
        .iter()
        .find(|i| i.external_id == "10000")
        .unwrap();
    assert_eq!(it.price, Some(3_000_000));
}

#[tokio::test]
async fn outage_is_unavailable() {
    let env = env().await;
    env.http
        .post(format!("{}/_control/uzum/faults", env.sandbox.url()))
        .json(&json!({"down": true}))
        .send()
        .await
        .unwrap();
    let err = env.mp().fetch_new_orders(None).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectorError::Unavailable { .. } | ConnectorError::CircuitOpen { .. }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn token_never_shows() {
    let env = env().await;
    env.connector.test_connection().await.unwrap();
    env.mp().push_stock(&[stock(10_000, 1_000)]).await.unwrap();
    let _ = env.mp().confirm_order("1").await;
    let wrong = env.build(&format!("{TOKEN}-x"), &SHOP.to_string()).unwrap();
    let _ = wrong.test_connection().await;

    let exchanges = env.sink.exchanges();
    assert!(exchanges.len() >= 4);
    for x in &exchanges {
        let shown = format!("{x:?} {}", serde_json::to_string(x).unwrap());
        assert!(!shown.contains(TOKEN), "token in the exchange log: {shown}");
        assert!(x.request_headers.iter().any(|(k, _)| k == "authorization"));
    }
    let debug = format!("{:?}", env.concrete());
    assert!(debug.contains("Uzum") && !debug.contains(TOKEN), "{debug}");
}
