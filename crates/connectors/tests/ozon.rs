//! The `ozon` connector against the Ozon Seller API simulator over HTTP: connection checks,
//! the catalogue through pages with exact prices, stock in batches of 100 with the two-minute
//! rule and the per-minute limit, FBS postings as orders (new, confirmed, cancelled), and an
//! Api-Key that never shows.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use savdo_connectors::ozon::{self, Ozon};
use savdo_domain::clock::SystemClock;
use savdo_hub::connector::{MarketplaceConnector, OrderState, StockUpdate};
use savdo_hub::{
    Connector, ConnectorContext, ConnectorError, Credentials, HttpHub, MemorySink, RateLimit,
    Registry,
};
use savdo_sandbox::ozon::{DEFAULT_API_KEY, DEFAULT_CLIENT_ID};
use serde_json::{Value, json};
use uuid::Uuid;

const STOCKS: &str = "POST /v2/products/stocks";

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

    fn base(&self) -> String {
        format!("{}/ozon", self.sandbox.url())
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        savdo_testkit::marketplace::control_post(
            &self.http,
            &self.sandbox.url(),
            "ozon",
            path,
            body,
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        savdo_testkit::marketplace::control_get(&self.http, &self.sandbox.url(), "ozon", path).await
    }

    async fn stock_of(&self, offer_id: &str) -> i64 {
        self.get("stock").await["by_offer_id"][offer_id]
            .as_i64()
            .unwrap_or_else(|| panic!("no stock for {offer_id}"))
    }

    async fn calls_to(&self, endpoint: &str) -> u64 {
        self.get("stats").await["endpoints"][endpoint]["total"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Another connector on the same sandbox and hub, with other credentials or settings.
    fn connector_with(&self, credentials: Value, settings: Value) -> Arc<dyn Connector> {
        build(
            &self.registry,
            &self.hub,
            &self.base(),
            credentials,
            settings,
        )
    }
}

fn build(
    registry: &Registry,
    hub: &HttpHub,
    base: &str,
    credentials: Value,
    settings: Value,
) -> Arc<dyn Connector> {
    let mut settings = settings;
    settings["base_url"] = json!(base);
    registry
        .build(
            hub,
            &Uuid::new_v4().to_string(),
            &Uuid::new_v4().to_string(),
            ozon::KIND,
            &credentials,
            &settings,
        )
        .expect("connector")
}

fn default_credentials() -> Value {
    json!({"client_id": DEFAULT_CLIENT_ID, "api_key": DEFAULT_API_KEY})
}

fn settings(warehouse: &str) -> Value {
    json!({"warehouse_id": warehouse, "store_ids": ["store-1"]})
}

async fn env_with_registry(registry: Registry) -> Env {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    // HttpHub installs the rustls crypto provider the test's own client needs too.
    let hub = HttpHub::new(Arc::new(SystemClock), sink.clone()).unwrap();
    let base = format!("{}/ozon", sandbox.url());
    let connector = build(&registry, &hub, &base, default_credentials(), settings("1"));
    Env {
        sandbox,
        http: reqwest::Client::new(),
        sink,
        hub,
        registry,
        connector,
    }
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    ozon::register(&mut r);
    r
}

/// The stock endpoint's own limit is Ozon's, 80 a minute (the type's general limit, under 50 a
/// second, covers the other methods); tests scale it to 80 per 2.1 s (and the simulator's
/// window to 80 per 2 s) so a burst beyond it stays short.
fn fast_registry() -> Registry {
    let mut registry = registry();
    let mut d = registry.descriptor(ozon::KIND).unwrap().clone();
    let general = d.http.rate_limit.expect("ozon has a rate limit");
    assert!(
        general.burst + general.requests <= 50 && general.per == Duration::from_secs(1),
        "within Ozon's 50 a second in any one second: {general:?}"
    );
    let [route] = d.http.route_limits.as_mut_slice() else {
        panic!("ozon limits its stock endpoint: {:?}", d.http.route_limits);
    };
    assert_eq!(route.path, "/v2/products/stocks");
    let real = route.limit;
    assert_eq!(
        (real.requests, real.per, real.burst),
        (80, Duration::from_secs(60), 1)
    );
    route.limit = RateLimit {
        requests: 80,
        per: Duration::from_millis(2_100),
        ..real
    };
    registry.add_type(d);
    registry
}

async fn env() -> Env {
    env_with_registry(registry()).await
}

fn update(offer: &str, available: i64) -> StockUpdate {
    StockUpdate {
        external_id: offer.into(),
        barcode: None,
        available,
    }
}

/// `n` products `OF-000`… with prices that exercise every decimal form Ozon sends.
async fn seed_products(env: &Env, n: usize) -> Vec<(String, i64)> {
    let mut products = Vec::new();
    let mut expected = Vec::new();
    for i in 0..n {
        let offer = format!("OF-{i:03}");
        let (price, tiyin) = match i % 4 {
            0 => (
                json!(format!("{}.000000", 1000 + i)),
                (1000 + i as i64) * 100,
            ),
            1 => (
                json!(format!("{}.5", 2000 + i)),
                (2000 + i as i64) * 100 + 50,
            ),
            2 => (json!(format!("{}.07", i)), i as i64 * 100 + 7),
            _ => (json!(format!("{}", 99_999 + i)), (99_999 + i as i64) * 100),
        };
        products.push(json!({"offer_id": offer, "name": format!("Mahsulot {i}"),
            "barcode": format!("478{i:010}"), "price": price, "stock": 3}));
        expected.push((offer, tiyin));
    }
    env.control("seed", json!({"clear": true, "products": products}))
        .await;
    expected
}

#[tokio::test]
async fn connection_checks_credentials_and_warehouse() {
    let env = env().await;
    let health = env.connector.test_connection().await.unwrap();
    assert_eq!(health.status, savdo_hub::HealthStatus::Ok);

    let wrong_key = env.connector_with(
        json!({"client_id": DEFAULT_CLIENT_ID, "api_key": "not-the-right-key-000"}),
        settings("1"),
    );
    let err = wrong_key.test_connection().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Auth { .. }), "{err:?}");

    let wrong_wh = env.connector_with(default_credentials(), settings("99"));
    let err = wrong_wh.test_connection().await.unwrap_err();
    match &err {
        ConnectorError::Config { message } => {
            assert!(message.contains("99"), "{message}");
            assert!(message.contains("1 (Toshkent FBS)"), "{message}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }

    // A warehouse id that is not a number never reaches Ozon.
    let built = env.registry.build(
        &env.hub,
        "t",
        "i",
        ozon::KIND,
        &default_credentials(),
        &json!({"warehouse_id": "main", "store_ids": ["s"], "base_url": env.base()}),
    );
    assert!(matches!(built, Err(ConnectorError::Config { .. })));
}

#[tokio::test]
async fn whole_catalogue_through_pages_with_exact_prices() {
    let env = env().await;
    let expected = seed_products(&env, 250).await;

    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = env.mp().list_catalog(cursor.as_deref()).await.unwrap();
        pages += 1;
        items.extend(page.items);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(items.len(), 250);
    for (item, (offer, tiyin)) in items.iter().zip(&expected) {
        assert_eq!(&item.external_id, offer);
        assert_eq!(item.price, Some(*tiyin), "{offer}");
        assert_eq!(item.stock, Some(3000), "{offer}");
        assert_eq!(item.barcodes.len(), 1);
        assert!(item.product_id.as_deref().is_some_and(|p| !p.is_empty()));
    }
    assert_eq!(items[2].price, Some(207)); // "2.07" UZS
    assert_eq!(items[5].barcodes, vec!["4780000000005".to_string()]);
    assert_eq!(env.calls_to("POST /v3/product/list").await, 3);
    assert_eq!(env.calls_to("POST /v3/product/info/list").await, 3);
}

#[tokio::test]
async fn push_of_250_items_takes_three_requests_with_exact_values() {
    let env = env().await;
    seed_products(&env, 250).await;
    let batch: Vec<StockUpdate> = (0..250)
        .map(|i| update(&format!("OF-{i:03}"), i * 1000 + 999))
        .collect();
    assert_eq!(env.mp().max_stock_batch(), 100);
    assert_eq!(
        env.mp().stock_item_interval(),
        Some(Duration::from_secs(120))
    );
    let r = env.mp().push_stock(&batch).await.unwrap();
    assert_eq!(r.accepted, 250);
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(env.calls_to(STOCKS).await, 3);
    let stock = env.get("stock").await;
    for i in 0..250i64 {
        assert_eq!(
            stock["by_offer_id"][format!("OF-{i:03}")].as_i64(),
            Some(i),
            "OF-{i:03}"
        );
    }
    let stats = env.get("stats").await;
    assert_eq!(stats["stock"]["items_updated"], 250);
    assert_eq!(stats["responses_429"], 0);
}

#[tokio::test]
async fn stock_rounds_down_and_never_goes_below_zero() {
    let env = env().await;
    let r = env
        .mp()
        .push_stock(&[
            update("CHOY-100", 2_999),
            update("NON-OBI", -5_000),
            update("SUV-1.5", 500),
        ])
        .await
        .unwrap();
    assert_eq!(r.accepted, 3, "{:?}", r.rejected);
    assert_eq!(env.stock_of("CHOY-100").await, 2);
    assert_eq!(env.stock_of("NON-OBI").await, 0);
    assert_eq!(env.stock_of("SUV-1.5").await, 0);
    let sent = &env
        .sink
        .exchanges()
        .into_iter()
        .find(|e| e.operation.as_deref() == Some("stocks.push"))
        .unwrap();
    let body: Value = serde_json::from_str(sent.request_body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"stocks": [
            {"offer_id": "CHOY-100", "stock": 2, "warehouse_id": 1},
            {"offer_id": "NON-OBI", "stock": 0, "warehouse_id": 1},
            {"offer_id": "SUV-1.5", "stock": 0, "warehouse_id": 1},
        ]})
    );
}

#[tokio::test]
async fn same_item_within_two_minutes_is_rejected_per_item() {
    let env = env().await;
    let r = env
        .mp()
        .push_stock(&[update("CHOY-100", 5_000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);

    // Too early for CHOY-100; NON-OBI is new and applies; an unknown offer is refused.
    let r = env
        .mp()
        .push_stock(&[
            update("CHOY-100", 6_000),
            update("NON-OBI", 7_000),
            update("NO-SUCH", 1_000),
        ])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);
    let codes: Vec<(&str, &str)> = r
        .rejected
        .iter()
        .map(|e| (e.external_id.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("CHOY-100", "TOO_MANY_REQUESTS"),
            ("NO-SUCH", "PRODUCT_NOT_FOUND")
        ]
    );
    assert_eq!(env.stock_of("CHOY-100").await, 5);
    assert_eq!(env.stock_of("NON-OBI").await, 7);

    env.control("clock", json!({"advance_secs": 121})).await;
    let r = env
        .mp()
        .push_stock(&[update("CHOY-100", 6_000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1, "{:?}", r.rejected);
    assert_eq!(env.stock_of("CHOY-100").await, 6);

    // The same offer twice in one batch is sent once, with the last value.
    env.control("clock", json!({"advance_secs": 121})).await;
    let r = env
        .mp()
        .push_stock(&[update("SUV-1.5", 1_000), update("SUV-1.5", 4_000)])
        .await
        .unwrap();
    assert_eq!((r.accepted, r.rejected.len()), (1, 0));
    assert_eq!(env.stock_of("SUV-1.5").await, 4);
}

#[tokio::test]
async fn burst_beyond_the_window_is_paced_by_the_hub_limiter() {
    let env = env_with_registry(fast_registry()).await;
    env.control(
        "limits",
        json!({"stocks_per_window": 80, "stocks_window_ms": 2_000, "item_interval_ms": 0}),
    )
    .await;

    for i in 0..100 {
        let r = env
            .mp()
            .push_stock(&[update("CHOY-100", i * 1000)])
            .await
            .unwrap();
        assert_eq!(r.accepted, 1, "push {i}: {:?}", r.rejected);
    }
    let stats = env.get("stats").await;
    assert_eq!(stats["responses_429"], 0, "{stats}");
    assert_eq!(stats["stock"]["requests_accepted"], 100);
    assert_eq!(env.stock_of("CHOY-100").await, 99);
}

#[tokio::test]
async fn rate_limit_answers_are_honoured() {
    let env = env_with_registry(fast_registry()).await;
    // Ozon's own per-minute refusal (no Retry-After): the client retries a little, then says
    // RateLimited, and nothing was applied.
    env.control(
        "limits",
        json!({"stocks_per_window": 1, "stocks_window_ms": 600_000}),
    )
    .await;
    env.mp()
        .push_stock(&[update("CHOY-100", 1_000)])
        .await
        .unwrap();
    let err = env
        .mp()
        .push_stock(&[update("NON-OBI", 9_000)])
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::RateLimited { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(env.stock_of("NON-OBI").await, 30);
    let stats = env.get("stats").await;
    let refused = stats["endpoints"][STOCKS]["by_status"]["429"].as_u64();
    assert!(refused.is_some_and(|n| (1..=3).contains(&n)), "{stats}");

    // Once the window has passed, the same push goes through.
    env.control("clock", json!({"advance_secs": 601})).await;
    let r = env
        .mp()
        .push_stock(&[update("NON-OBI", 9_000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(env.stock_of("NON-OBI").await, 9);

    // A 429 with Retry-After: the client waits as told and the push lands.
    env.control(
        "limits",
        json!({"stocks_per_window": 80, "stocks_window_ms": 60_000}),
    )
    .await;
    let r = env
        .http
        .post(format!("{}/_control/ozon/faults", env.sandbox.url()))
        .json(&json!({"rate_limit": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    env.sink.clear();
    env.mp()
        .push_stock(&[update("SUV-1.5", 11_000)])
        .await
        .unwrap();
    let r = env
        .mp()
        .push_stock(&[update("CHOY-100", 2_000)])
        .await
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(env.stock_of("SUV-1.5").await, 11);
    let statuses: Vec<Option<u16>> = env.sink.exchanges().iter().map(|e| e.status).collect();
    assert!(statuses.contains(&Some(429)), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&Some(200)));
}

#[tokio::test]
async fn new_postings_are_fetched_confirmed_and_tracked() {
    let env = env().await;
    env.control(
        "seed",
        json!({"warehouses": [{"id": 2, "name": "Samarqand"}]}),
    )
    .await;
    let created = env
        .control(
            "orders",
            json!({"items": [
                {"offer_id": "CHOY-100", "quantity": 2, "price": "25000.50"},
                {"offer_id": "NON-OBI", "quantity": 3}
            ]}),
        )
        .await;
    let number = created["posting_number"].as_str().unwrap().to_owned();
    // Another warehouse's posting is not ours.
    env.control(
        "orders",
        json!({"warehouse_id": 2, "items": [{"offer_id": "SUV-1.5"}]}),
    )
    .await;

    let since = Some(Utc::now() - chrono::Duration::hours(1));
    let orders = env.mp().fetch_new_orders(since).await.unwrap();
    assert_eq!(orders.len(), 1, "{orders:?}");
    let o = &orders[0];
    assert_eq!(o.external_id, number);
    assert_eq!(o.state, OrderState::New);
    assert_eq!(o.raw_status, "awaiting_packaging");
    assert_eq!(o.lines.len(), 2);
    assert_eq!(o.lines[0].external_id, "CHOY-100");
    assert_eq!(o.lines[0].quantity, 2_000);
    assert_eq!(o.lines[0].price, 2_500_050);
    assert!(!o.lines[0].marking_required);
    assert_eq!(o.lines[1].external_id, "NON-OBI");
    assert_eq!(o.lines[1].quantity, 3_000);
    assert_eq!(o.lines[1].price, 400_000);
    assert_eq!(o.total, 2 * 2_500_050 + 3 * 400_000);
    assert!(o.created_at.is_some() && o.ship_by.is_some());

    // Still there on the next call (the caller imports by posting number).
    let again = env.mp().fetch_new_orders(None).await.unwrap();
    assert_eq!(again, orders);

    let confirmed = env.mp().confirm_order(&number).await.unwrap();
    assert_eq!(confirmed.state, OrderState::Confirmed);
    assert_eq!(confirmed.raw_status, "awaiting_deliver");
    let status = env.mp().order_status(&number).await.unwrap();
    assert_eq!(
        (status.state, status.raw_status.as_str()),
        (OrderState::Confirmed, "awaiting_deliver")
    );
    assert!(env.mp().fetch_new_orders(since).await.unwrap().is_empty());

    // Confirming again changes nothing and ships nothing.
    let twice = env.mp().confirm_order(&number).await.unwrap();
    assert_eq!(twice.state, OrderState::Confirmed);
    assert_eq!(env.calls_to("POST /v4/posting/fbs/ship").await, 1);

    env.control(
        &format!("orders/{number}/status"),
        json!({"status": "delivering"}),
    )
    .await;
    let status = env.mp().order_status(&number).await.unwrap();
    assert_eq!(status.state, OrderState::Shipping);

    let err = env.mp().order_status("0000-0000-0").await.unwrap_err();
    match err {
        ConnectorError::Rejected { code, .. } => assert_eq!(code, "not_found"),
        other => panic!("expected not found, got {other:?}"),
    }
}

#[tokio::test]
async fn cancellations_are_reported_with_their_reason() {
    let env = env().await;
    let since = Utc::now() - chrono::Duration::minutes(5);
    let created = env
        .control(
            "orders",
            json!({"items": [{"offer_id": "SUV-1.5", "quantity": 1}]}),
        )
        .await;
    let number = created["posting_number"].as_str().unwrap().to_owned();
    let kept = env
        .control("orders", json!({"items": [{"offer_id": "NON-OBI"}]}))
        .await;
    assert!(
        env.mp()
            .fetch_cancellations(since)
            .await
            .unwrap()
            .is_empty()
    );

    env.control(
        &format!("orders/{number}/cancel"),
        json!({"reason": "Покупатель передумал"}),
    )
    .await;
    let cancelled = env.mp().fetch_cancellations(since).await.unwrap();
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(cancelled[0].external_id, number);
    assert_eq!(cancelled[0].state, OrderState::Cancelled);
    assert_eq!(cancelled[0].raw_status, "cancelled");
    assert_eq!(cancelled[0].reason.as_deref(), Some("Покупатель передумал"));

    let new: Vec<String> = env
        .mp()
        .fetch_new_orders(Some(since))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.external_id)
        .collect();
    assert_eq!(
        new,
        vec![kept["posting_number"].as_str().unwrap().to_owned()]
    );

    let err = env.mp().confirm_order(&number).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Rejected { code, .. } if code == "POSTING_CANCELLED"),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_key_never_shows() {
    let env = env().await;
    let key = "ozon-api-key-9f8e7d6c5b4a";
    env.control(
        "seed",
        json!({"credentials": [{"client_id": "shop-77", "api_key": key}]}),
    )
    .await;
    let credentials = json!({"client_id": "shop-77", "api_key": key});
    let connector = env.connector_with(credentials.clone(), settings("1"));
    let mp = connector.as_marketplace().unwrap();
    connector.test_connection().await.unwrap();
    mp.list_catalog(None).await.unwrap();
    mp.push_stock(&[update("CHOY-100", 1_000)]).await.unwrap();
    mp.fetch_new_orders(None).await.unwrap();
    let wrong = env.connector_with(
        json!({"client_id": "shop-77", "api_key": "ozon-api-key-wrong-000000"}),
        settings("1"),
    );
    let err = wrong.test_connection().await.unwrap_err();
    assert!(!format!("{err:?} {err}").contains("ozon-api-key-wrong-000000"));

    let exchanges = env.sink.exchanges();
    assert!(exchanges.len() >= 5);
    for e in &exchanges {
        let shown = format!("{e:?}");
        assert!(!shown.contains(key), "key in the log: {shown}");
        assert!(!shown.contains("ozon-api-key-wrong-000000"));
    }
    // The header was sent, masked in the log.
    let headers = &exchanges[0].request_headers;
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("api-key") && v.starts_with("****")),
        "{headers:?}"
    );

    // The connector itself prints no key either.
    let cfg_credentials = Credentials::from_value(credentials.clone()).unwrap();
    let settings = json!({"warehouse_id": "1", "store_ids": ["s"], "base_url": env.base()});
    let cfg = env
        .registry
        .client_config("t", "i", ozon::KIND, &cfg_credentials, &settings)
        .unwrap();
    let direct = Ozon::new(ConnectorContext {
        tenant_id: "t".into(),
        integration_id: "i".into(),
        kind: ozon::KIND.into(),
        credentials: cfg_credentials,
        settings,
        http: env.hub.client(cfg),
    })
    .unwrap();
    let shown = format!("{direct:?} {direct:#?}");
    assert!(!shown.contains(key), "{shown}");
    assert_eq!(direct.warehouse_id(), 1);
}
