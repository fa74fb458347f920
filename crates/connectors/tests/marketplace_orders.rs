//! Marketplace order import against the Uzum, Wildberries and Ozon simulators over HTTP, with
//! the real connectors and the real order poller, on SQLite and (with
//! `SAVDO_TEST_DATABASE_URL`) PostgreSQL: orders become reserved invoices with the
//! marketplace's lines and prices exactly once across repeated polls, a restart, racing
//! pollers, racing importers and a crash between invoice and record; unmapped items and refused
//! reservations put an order into `needs_attention` with a reason and the next poll imports it
//! once mapped; cancellations cancel the invoice and release the stock; `auto_confirm` confirms
//! in the simulators. The orders API is tested in `crates/api/tests/marketplace_orders.rs`.
//!
//! The catalogue links come from the stock half's "products" sync handler, run step by step.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use savdo_connectors::marketplace::mapping::ProductsSync;
use savdo_connectors::marketplace::orders::{
    ConnectorSource, HubConnectors, ImportOutcome, OrderImporter, OrderPoller, PollReport,
    PollerConfig, marketplace_kinds,
};
use savdo_domain::Qty;
use savdo_domain::clock::{ManualClock, SystemClock};
use savdo_hub::{Credentials, HttpHub, MemorySink, RateLimit, Registry, Vault};
use savdo_integrations::{SyncContext, SyncHandler, VaultHandle};
use savdo_storage::integrations::{Integration, IntegrationStatus, NewIntegration};
use savdo_storage::marketplace_orders::{MarketplaceOrderRecord, MarketplaceOrderState};
use savdo_storage::{
    Actor, Invoice, InvoiceFilter, InvoiceStatus, NewStockDoc, ProductFields, StockDocKind,
    StockDocLine, Storage,
};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

const PG_ENV: &str = "SAVDO_TEST_DATABASE_URL";
const CHOY: &str = "4780000000017";
const NON: &str = "4780000000024";
const SUV: &str = "4780000000031";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(w) = super::World::new(super::Backend::Sqlite).await {
                        super::$name(&w).await;
                        w.drop_db().await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(w) = super::World::new(super::Backend::Postgres).await {
                        let w = std::sync::Arc::new(w);
                        let run = tokio::spawn({
                            let w = w.clone();
                            async move { super::$name(&w).await }
                        })
                        .await;
                        w.drop_db().await;
                        if let Err(e) = run {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                }
            }
        )*
    };
}

backend_tests!(
    orders_become_invoices_exactly_once,
    racing_pollers_import_once,
    concurrent_imports_book_once,
    crash_between_invoice_and_record,
    unmapped_items_wait_then_import,
    refused_reservation_needs_attention,
    cancellations_release_the_stock,
    auto_confirm_confirms_in_the_simulators,
);

// ----------------------------------------------------------------------------- the world

/// The admin URL with another database name.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

struct World {
    /// Opens the same database again (a restart).
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
    store: Arc<dyn Storage>,
    sandbox: savdo_sandbox::RunningSandbox,
    http: reqwest::Client,
    hub: HttpHub,
    registry: Arc<Registry>,
    vault: Arc<VaultHandle>,
    clock: Arc<ManualClock>,
    tenant: Uuid,
    store_id: Uuid,
    products: HashMap<&'static str, Uuid>,
}

impl World {
    async fn new(backend: Backend) -> Option<World> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (url, dir, pg) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("savdo.db").display());
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let Some(admin) = std::env::var(PG_ENV).ok().filter(|v| !v.is_empty()) else {
                    let _ = writeln!(std::io::stderr(), "SKIP postgres: {PG_ENV} is not set");
                    return None;
                };
                let db = format!("savdo_t_{}", Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}")
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
                    .execute(&mut c)
                    .await
                    .expect("create test database");
                (with_db(&admin, &db), None, Some((admin, db)))
            }
        };
        let store = savdo_storage::connect(&url).await.expect("open database");
        store.migrate().await.expect("migrate");
        let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let hub = HttpHub::new(Arc::new(SystemClock), Arc::new(MemorySink::new())).unwrap();
        // Uzum (about 1/s) and Ozon (80/min for stocks, which this test does not push) both
        // run faster here, the simulators' limits raised to match.
        let mut registry = Registry::builtin();
        for (kind, rate) in [("uzum", 20), ("ozon", 20)] {
            let mut d = registry.descriptor(kind).unwrap().clone();
            d.http.rate_limit = Some(RateLimit {
                requests: rate,
                per: Duration::from_secs(1),
                burst: 1,
                max_wait: Duration::from_secs(30),
            });
            registry.add_type(d);
        }
        savdo_connectors::uzum::register(&mut registry);
        savdo_connectors::wildberries::register(&mut registry);
        savdo_connectors::ozon::register(&mut registry);
        let tenant = store.create_tenant("Marketplace shop").await.unwrap().id;
        let actor = Actor::system(tenant);
        let store_id = store.create_store(&actor, "Main", None).await.unwrap().id;
        let mut products = HashMap::new();
        // Choy and Non are ours; Suv is not, so its marketplace items stay unmapped.
        for (sku, name, barcode, price) in [
            ("CHOY", "Choy Ahmad 100 g", CHOY, 2_600_000),
            ("NON", "Non", NON, 400_000),
        ] {
            let p = store
                .create_product(&actor, &product(sku, name, barcode, price))
                .await
                .unwrap();
            products.insert(barcode, p.id);
        }
        let w = World {
            url,
            _dir: dir,
            pg,
            store,
            sandbox,
            http: reqwest::Client::new(),
            hub,
            registry: Arc::new(registry),
            vault: Arc::new(VaultHandle::new(Vault::ephemeral().unwrap())),
            clock: Arc::new(ManualClock::new(Utc::now())),
            tenant,
            store_id,
            products,
        };
        w.supply(CHOY, 10).await;
        w.supply(NON, 10).await;
        w.control_post("uzum", "limits", json!({"burst": 20, "per_second": 50.0}))
            .await;
        Some(w)
    }

    async fn drop_db(&self) {
        if let Some((admin, db)) = &self.pg
            && let Ok(mut c) = sqlx::PgConnection::connect(admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }

    fn actor(&self) -> Actor {
        Actor::system(self.tenant)
    }

    async fn supply(&self, barcode: &str, units: i64) {
        self.store
            .create_stock_doc(
                &self.actor(),
                &NewStockDoc {
                    kind: StockDocKind::Supply,
                    store_id: self.store_id,
                    to_store_id: None,
                    note: None,
                    lines: vec![StockDocLine {
                        product_id: self.products[barcode],
                        qty: Qty::units(units),
                        cost: None,
                    }],
                },
            )
            .await
            .unwrap();
    }

    /// `(on_hand, reserved, available)` in whole units.
    async fn level(&self, barcode: &str) -> (i64, i64, i64) {
        let l = self
            .store
            .stock(
                self.tenant,
                Some(self.store_id),
                Some(self.products[barcode]),
            )
            .await
            .unwrap();
        let l = l.first().expect("a stock row");
        (
            l.on_hand.milli() / 1000,
            l.reserved.milli() / 1000,
            l.available.milli() / 1000,
        )
    }

    async fn control_post(&self, kind: &str, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_control/{kind}/{path}", self.sandbox.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{kind} {path}: {status} {v}");
        v
    }

    async fn control_get(&self, kind: &str, path: &str) -> Value {
        self.http
            .get(format!("{}/_control/{kind}/{path}", self.sandbox.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A new order in the simulator; its id as the connector reports it.
    async fn order(&self, kind: &str, items: &[(&str, i64)]) -> String {
        match kind {
            "uzum" => {
                let items: Vec<Value> = items
                    .iter()
                    .map(|(b, n)| json!({"barcode": b, "amount": n}))
                    .collect();
                let v = self
                    .control_post("uzum", "orders", json!({"items": items}))
                    .await;
                v["id"].to_string()
            }
            // One unit per Wildberries assembly task.
            "wildberries" => {
                assert_eq!(items.len(), 1);
                let v = self
                    .control_post("wildberries", "orders", json!({"barcode": items[0].0}))
                    .await;
                v["id"].to_string()
            }
            "ozon" => {
                let offers: HashMap<&str, &str> =
                    HashMap::from([(CHOY, "CHOY-100"), (NON, "NON-OBI"), (SUV, "SUV-1.5")]);
                let items: Vec<Value> = items
                    .iter()
                    .map(|(b, n)| json!({"offer_id": offers[b], "quantity": n}))
                    .collect();
                let v = self
                    .control_post("ozon", "orders", json!({"items": items}))
                    .await;
                v["posting_number"].as_str().unwrap().to_owned()
            }
            _ => unreachable!(),
        }
    }

    async fn cancel_in_sim(&self, kind: &str, id: &str) {
        self.control_post(kind, &format!("orders/{id}/cancel"), json!({}))
            .await;
    }

    /// Connect an integration of `kind` and run its "products" sync.
    async fn integration(&self, kind: &str, auto_confirm: bool) -> Integration {
        let base = self.sandbox.url();
        let (credentials, mut settings) = match kind {
            "uzum" => (
                json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}),
                json!({"shop_id": "1", "base_url": format!("{base}/uzum/api/seller-openapi")}),
            ),
            "wildberries" => (
                json!({"token": savdo_sandbox::wildberries::DEFAULT_TOKEN}),
                json!({"warehouse_id": "1", "base_url": format!("{base}/wildberries")}),
            ),
            "ozon" => (
                json!({"client_id": savdo_sandbox::ozon::DEFAULT_CLIENT_ID,
                       "api_key": savdo_sandbox::ozon::DEFAULT_API_KEY}),
                json!({"warehouse_id": "1", "base_url": format!("{base}/ozon")}),
            ),
            _ => unreachable!(),
        };
        settings["store_ids"] = json!([self.store_id.to_string()]);
        settings["auto_confirm"] = json!(auto_confirm);
        let id = Uuid::now_v7();
        let sealed = self
            .vault
            .seal_credentials(self.tenant, id, &credentials)
            .unwrap();
        let i = self
            .store
            .create_integration(
                &self.actor(),
                &NewIntegration {
                    id,
                    kind: kind.into(),
                    name: format!("{kind} shop"),
                    status: IntegrationStatus::Active,
                    settings,
                    credentials_sealed: sealed,
                },
            )
            .await
            .unwrap();
        self.products_sync(&i, &credentials).await;
        i
    }

    async fn products_sync(&self, i: &Integration, credentials: &Value) {
        let sync = ProductsSync::new(self.store.clone(), Arc::new(SystemClock));
        let ctx = SyncContext {
            store: self.store.clone(),
            integration: i.clone(),
            credentials: Credentials::from_value(credentials.clone()).unwrap(),
            job_id: Uuid::now_v7(),
            what: "products".into(),
            registry: self.registry.clone(),
            hub: Some(self.hub.clone()),
        };
        let mut cursor: Option<Value> = None;
        loop {
            let step = sync
                .step(&ctx, cursor.as_ref())
                .await
                .expect("products sync");
            if step.finished {
                break;
            }
            cursor = step.cursor;
        }
    }

    fn poller_on(&self, store: Arc<dyn Storage>) -> OrderPoller {
        let config = PollerConfig {
            // The simulators date orders by the wall clock while the poller's clock moves a
            // minute a poll: the overlap covers that.
            overlap: Duration::from_secs(3600),
            ..PollerConfig::default()
        };
        OrderPoller::new(
            store,
            Arc::new(HubConnectors::new(
                self.vault.clone(),
                self.registry.clone(),
                self.hub.clone(),
            )),
            marketplace_kinds(&self.registry),
            self.clock.clone(),
            config,
        )
    }

    fn poller(&self) -> OrderPoller {
        self.poller_on(self.store.clone())
    }

    /// One poll of everything that is due, then the clock moves past the interval.
    async fn poll(&self, poller: &OrderPoller) -> Vec<(Uuid, PollReport)> {
        let r = poller.poll_due().await.expect("poll");
        for (_, rep) in &r {
            assert!(rep.errors.is_empty(), "poll errors: {:?}", rep.errors);
        }
        self.clock.advance(chrono::Duration::seconds(61));
        r
    }

    async fn record(&self, i: &Integration, external_id: &str) -> MarketplaceOrderRecord {
        self.store
            .get_marketplace_order(self.tenant, i.id, external_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("order {external_id} recorded"))
    }

    async fn invoices(&self) -> Vec<Invoice> {
        self.store
            .list_invoices(
                self.tenant,
                &InvoiceFilter {
                    limit: 500,
                    ..InvoiceFilter::default()
                },
            )
            .await
            .unwrap()
            .0
    }

    async fn invoice_of(&self, kind: &str, external_id: &str) -> Invoice {
        let r = format!("{kind}:{external_id}");
        let list = self
            .store
            .list_invoices(
                self.tenant,
                &InvoiceFilter {
                    external_ref: Some(r.clone()),
                    limit: 10,
                    ..InvoiceFilter::default()
                },
            )
            .await
            .unwrap()
            .0;
        assert_eq!(list.len(), 1, "one invoice {r}");
        list.into_iter().next().unwrap()
    }

    /// Publish the outbox (no bus needed) and count this tenant's events of `kind`.
    async fn events(&self, kind: &str) -> Vec<Value> {
        fn publish(
            _: &[savdo_storage::OutboxEvent],
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>
        {
            Box::pin(async { Ok(()) })
        }
        while self.store.relay_batch(500, &publish).await.unwrap() > 0 {}
        self.store
            .events(self.tenant, 0, &[kind.to_owned()], 500)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.data)
            .collect()
    }
}

fn product(sku: &str, name: &str, barcode: &str, price: i64) -> ProductFields {
    ProductFields {
        sku: sku.into(),
        name: name.into(),
        barcodes: vec![barcode.into()],
        price,
        vat_percent: 12,
        mxik: None,
        package_code: None,
        unit: 1,
        marked: false,
        active: true,
    }
}

// ----------------------------------------------------------------------------- engine

async fn orders_become_invoices_exactly_once(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let wb = w.integration("wildberries", false).await;
    let ozon = w.integration("ozon", false).await;
    let u1 = w.order("uzum", &[(CHOY, 2), (NON, 1)]).await;
    let wb1 = w.order("wildberries", &[(CHOY, 1)]).await;
    let o1 = w.order("ozon", &[(NON, 3)]).await;

    let poller = w.poller();
    let polled = w.poll(&poller).await;
    assert_eq!(polled.len(), 3, "each integration polled once: {polled:?}");

    // Uzum: the simulator's prices are in sum, the invoice in tiyin.
    let inv = w.invoice_of("uzum", &u1).await;
    assert_eq!(inv.channel.as_deref(), Some("uzum"));
    assert_eq!(inv.store_id, w.store_id);
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    let lines: Vec<(Uuid, i64, i64)> = inv
        .lines
        .iter()
        .map(|l| (l.product_id, l.qty.milli(), l.price))
        .collect();
    assert_eq!(
        lines,
        vec![
            (w.products[CHOY], 2000, 2_500_000),
            (w.products[NON], 1000, 400_000)
        ]
    );
    assert_eq!(inv.total, 2 * 2_500_000 + 400_000);
    let inv = w.invoice_of("wildberries", &wb1).await;
    assert_eq!(inv.channel.as_deref(), Some("wildberries"));
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(
        (
            inv.lines[0].product_id,
            inv.lines[0].qty.milli(),
            inv.lines[0].price
        ),
        (w.products[CHOY], 1000, 2_500_000)
    );
    let inv = w.invoice_of("ozon", &o1).await;
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    assert_eq!(
        (
            inv.lines[0].product_id,
            inv.lines[0].qty.milli(),
            inv.lines[0].price
        ),
        (w.products[NON], 3000, 400_000)
    );
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::Imported);
    assert_eq!(r.invoice_id, Some(w.invoice_of("uzum", &u1).await.id));
    assert_eq!(
        w.record(&wb, &wb1).await.state,
        MarketplaceOrderState::Imported
    );
    assert_eq!(
        w.record(&ozon, &o1).await.state,
        MarketplaceOrderState::Imported
    );

    // Reserved: Choy 2 (Uzum) + 1 (WB), Non 1 (Uzum) + 3 (Ozon).
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 4, 6));

    // The same orders are still new on the marketplaces: polled again, nothing changes.
    w.poll(&poller).await;
    w.poll(&poller).await;
    // A restart: a new poller on the database opened again.
    let reopened = savdo_storage::connect(&w.url).await.unwrap();
    let restarted = w.poller_on(reopened.clone());
    let polled = w.poll(&restarted).await;
    assert_eq!(
        polled.len(),
        3,
        "the cursors and poll rows survive: {polled:?}"
    );
    // A new order after the restart is imported by the new poller.
    let u2 = w.order("uzum", &[(NON, 1)]).await;
    w.poll(&restarted).await;

    assert_eq!(w.invoices().await.len(), 4);
    assert_eq!(
        w.invoice_of("uzum", &u2).await.status,
        InvoiceStatus::Reserved
    );
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 5, 5));
    let imported = w.events("marketplace.order_imported").await;
    assert_eq!(imported.len(), 4, "{imported:?}");
    let ev = imported
        .iter()
        .find(|e| e["external_id"] == u1.as_str())
        .unwrap();
    assert_eq!(ev["type"], "uzum");
    assert_eq!(ev["external_ref"], format!("uzum:{u1}"));
    assert_eq!(ev["integration_id"], uzum.id.to_string());
    assert_eq!(ev["state"], "imported");
    assert!(
        !ev.to_string().contains(savdo_sandbox::uzum::DEFAULT_TOKEN),
        "no credentials in events"
    );
    assert_eq!(w.events("invoice.created").await.len(), 4);
}

async fn racing_pollers_import_once(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let ozon = w.integration("ozon", false).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(("uzum", w.order("uzum", &[(CHOY, 1)]).await));
        orders.push(("ozon", w.order("ozon", &[(NON, 1)]).await));
    }
    // Two processes' pollers on their own connections to the same database.
    let other = savdo_storage::connect(&w.url).await.unwrap();
    let (a, b) = (w.poller(), w.poller_on(other));
    let (ra, rb) = tokio::join!(a.poll_due(), b.poll_due());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let polled: Vec<Uuid> = ra.iter().chain(&rb).map(|(i, _)| *i).collect();
    assert_eq!(
        polled.len(),
        2,
        "each integration polled by one of them: {polled:?}"
    );
    assert!(polled.contains(&uzum.id) && polled.contains(&ozon.id));
    // Both again, later: still once.
    w.clock.advance(chrono::Duration::seconds(61));
    let (ra, rb) = tokio::join!(a.poll_due(), b.poll_due());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(w.invoices().await.len(), orders.len());
    for (kind, id) in &orders {
        assert_eq!(w.invoice_of(kind, id).await.status, InvoiceStatus::Reserved);
    }
    assert_eq!(
        w.events("marketplace.order_imported").await.len(),
        orders.len()
    );
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 3, 7));
}

/// The same order imported by two importers at once (no lease between them): one invoice,
/// one record, one event.
async fn concurrent_imports_book_once(w: &World) {
    let uzum = w.integration("uzum", false).await;
    for _ in 0..3 {
        w.order("uzum", &[(CHOY, 1), (NON, 2)]).await;
    }
    let c = HubConnectors::new(w.vault.clone(), w.registry.clone(), w.hub.clone())
        .connector(&uzum)
        .await
        .unwrap();
    let orders = c
        .as_marketplace()
        .unwrap()
        .fetch_new_orders(None)
        .await
        .unwrap();
    assert_eq!(orders.len(), 3);
    let other = savdo_storage::connect(&w.url).await.unwrap();
    let (a, b) = (
        OrderImporter::new(w.store.clone()),
        OrderImporter::new(other),
    );
    for o in &orders {
        let (ra, rb) = tokio::join!(a.import(&uzum, o), b.import(&uzum, o));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.record().invoice_id, rb.record().invoice_id);
        let fresh = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, ImportOutcome::Imported(_, true)))
            .count();
        assert_eq!(fresh, 1, "{ra:?} {rb:?}");
    }
    assert_eq!(w.invoices().await.len(), 3);
    assert_eq!(w.events("marketplace.order_imported").await.len(), 3);
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 6, 4));
}

/// A process that died after creating the invoice and before recording the order: the next
/// poll finds the invoice by its external_ref and records it (no second invoice), and a
/// cancellation of such an order cancels the invoice.
async fn crash_between_invoice_and_record(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let u1 = w.order("uzum", &[(CHOY, 2)]).await;
    let u2 = w.order("uzum", &[(NON, 1)]).await;
    for (id, barcode, qty) in [(&u1, CHOY, 2), (&u2, NON, 1)] {
        w.store
            .create_invoice(
                &w.actor(),
                &savdo_storage::NewInvoice {
                    store_id: w.store_id,
                    customer_id: None,
                    channel: Some("uzum".into()),
                    external_ref: Some(format!("uzum:{id}")),
                    note: None,
                    lines: vec![(w.products[barcode], Qty::units(qty), None)],
                    reserve: true,
                },
            )
            .await
            .unwrap();
    }
    w.cancel_in_sim("uzum", &u2).await;
    let poller = w.poller();
    w.poll(&poller).await;
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::Imported);
    assert_eq!(r.invoice_id, Some(w.invoice_of("uzum", &u1).await.id));
    let r = w.record(&uzum, &u2).await;
    assert_eq!(r.state, MarketplaceOrderState::Cancelled);
    assert_eq!(
        w.invoice_of("uzum", &u2).await.status,
        InvoiceStatus::Cancelled
    );
    assert_eq!(w.invoices().await.len(), 2);
    assert_eq!(w.level(CHOY).await, (10, 2, 8));
    assert_eq!(w.level(NON).await, (10, 0, 10));
    assert_eq!(w.events("marketplace.order_imported").await.len(), 1);
    assert_eq!(w.events("marketplace.order_cancelled").await.len(), 1);
}

async fn unmapped_items_wait_then_import(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let ozon = w.integration("ozon", false).await;
    let u1 = w.order("uzum", &[(CHOY, 1), (SUV, 2)]).await;
    let o1 = w.order("ozon", &[(SUV, 1)]).await;
    let poller = w.poller();
    w.poll(&poller).await;

    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::NeedsAttention);
    assert_eq!(r.invoice_id, None);
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("unmapped item") && reason.contains("103") && reason.contains(SUV),
        "{reason}"
    );
    assert!(
        !reason.contains("101"),
        "only the unmapped item is named: {reason}"
    );
    let r = w.record(&ozon, &o1).await;
    assert_eq!(r.state, MarketplaceOrderState::NeedsAttention);
    assert!(r.reason.unwrap().contains("SUV-1.5"));
    assert!(w.invoices().await.is_empty(), "nothing booked");
    assert_eq!(w.level(CHOY).await, (10, 0, 10));

    // Polled again while still unmapped: retried, still waiting, no second event.
    w.poll(&poller).await;
    assert_eq!(
        w.record(&uzum, &u1).await.state,
        MarketplaceOrderState::NeedsAttention
    );
    assert_eq!(w.events("marketplace.order_needs_attention").await.len(), 2);

    // We start selling Suv: the products sync links it by barcode, the next poll imports.
    let suv = w
        .store
        .create_product(&w.actor(), &product("SUV", "Suv 1.5 l", SUV, 600_000))
        .await
        .unwrap();
    w.products_sync(&uzum, &json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}))
        .await;
    w.poll(&poller).await;
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::Imported);
    assert_eq!(r.reason, None);
    let inv = w.invoice_of("uzum", &u1).await;
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    let lines: Vec<(Uuid, i64)> = inv
        .lines
        .iter()
        .map(|l| (l.product_id, l.qty.milli()))
        .collect();
    assert_eq!(lines, vec![(w.products[CHOY], 1000), (suv.id, 2000)]);
    // Ozon's catalogue was not synced again: still waiting.
    assert_eq!(
        w.record(&ozon, &o1).await.state,
        MarketplaceOrderState::NeedsAttention
    );
    assert_eq!(w.events("marketplace.order_imported").await.len(), 1);
}

async fn refused_reservation_needs_attention(w: &World) {
    w.store
        .update_settings(&w.actor(), &json!({"forbid_negative_stock": true}))
        .await
        .unwrap();
    let uzum = w.integration("uzum", false).await;
    let u1 = w.order("uzum", &[(NON, 12)]).await;
    let poller = w.poller();
    w.poll(&poller).await;
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::NeedsAttention);
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("stock reservation refused") && reason.contains("102"),
        "{reason}"
    );
    assert!(
        w.invoices().await.is_empty(),
        "the refused invoice rolled back"
    );
    assert_eq!(w.level(NON).await, (10, 0, 10));
    // Goods arrive: the next poll books it.
    w.supply(NON, 5).await;
    w.poll(&poller).await;
    assert_eq!(
        w.record(&uzum, &u1).await.state,
        MarketplaceOrderState::Imported
    );
    assert_eq!(w.level(NON).await, (15, 12, 3));
}

async fn cancellations_release_the_stock(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let wb = w.integration("wildberries", false).await;
    let ozon = w.integration("ozon", false).await;
    let u1 = w.order("uzum", &[(CHOY, 2)]).await;
    let u2 = w.order("uzum", &[(CHOY, 1)]).await;
    let wb1 = w.order("wildberries", &[(NON, 1)]).await;
    let o1 = w.order("ozon", &[(NON, 2)]).await;
    let poller = w.poller();
    w.poll(&poller).await;
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 3, 7));

    w.cancel_in_sim("uzum", &u1).await;
    w.cancel_in_sim("wildberries", &wb1).await;
    w.cancel_in_sim("ozon", &o1).await;
    w.poll(&poller).await;
    for (i, kind, id) in [
        (&uzum, "uzum", &u1),
        (&wb, "wildberries", &wb1),
        (&ozon, "ozon", &o1),
    ] {
        let r = w.record(i, id).await;
        assert_eq!(r.state, MarketplaceOrderState::Cancelled, "{kind} {id}");
        assert!(r.cancelled_at.is_some());
        assert!(
            r.reason
                .unwrap()
                .starts_with("cancelled on the marketplace")
        );
        assert_eq!(
            w.invoice_of(kind, id).await.status,
            InvoiceStatus::Cancelled,
            "{kind} {id}"
        );
    }
    // The other Uzum order stays.
    assert_eq!(
        w.record(&uzum, &u2).await.state,
        MarketplaceOrderState::Imported
    );
    assert_eq!(w.level(CHOY).await, (10, 1, 9));
    assert_eq!(w.level(NON).await, (10, 0, 10));

    // The cancellations come again on later polls: applied once.
    w.poll(&poller).await;
    w.poll(&poller).await;
    assert_eq!(w.events("marketplace.order_cancelled").await.len(), 3);
    assert_eq!(w.events("invoice.cancelled").await.len(), 3);
    assert_eq!(w.level(CHOY).await, (10, 1, 9));
    assert_eq!(w.level(NON).await, (10, 0, 10));
    // Releasing the reservation told the rest of Savdo (and the other marketplaces' push).
    let changed = w.events("stock.changed").await;
    assert!(
        changed
            .iter()
            .any(|e| e["product_id"] == w.products[NON].to_string()
                && e["reserved"] == json!(0)
                && e["available"] == json!(10)),
        "{changed:?}"
    );
}

async fn auto_confirm_confirms_in_the_simulators(w: &World) {
    let uzum = w.integration("uzum", true).await;
    let wb = w.integration("wildberries", true).await;
    let ozon = w.integration("ozon", true).await;
    let u1 = w.order("uzum", &[(CHOY, 1)]).await;
    let wb1 = w.order("wildberries", &[(CHOY, 1)]).await;
    let o1 = w.order("ozon", &[(NON, 1)]).await;
    let poller = w.poller();
    let polled = w.poll(&poller).await;
    assert!(
        polled.iter().all(|(_, r)| r.confirmed == 1),
        "one confirm each: {polled:?}"
    );
    for (i, id) in [(&uzum, &u1), (&wb, &wb1), (&ozon, &o1)] {
        let r = w.record(i, id).await;
        assert_eq!(r.state, MarketplaceOrderState::Imported);
        assert!(r.confirmed_at.is_some(), "{} {id} confirmed", i.kind);
        assert_eq!(r.confirm_error, None);
    }
    let sim = w.control_get("uzum", "orders").await;
    let o = sim["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == u1.parse::<u64>().unwrap())
        .unwrap();
    assert_eq!(o["status"], "PACKING");
    let sim = w.control_get("wildberries", "orders").await;
    let list = sim["orders"].as_array().cloned().unwrap_or_default();
    let o = list
        .iter()
        .find(|o| o["id"] == wb1.parse::<u64>().unwrap())
        .unwrap();
    assert_eq!(o["supplierStatus"], "confirm", "{o}");
    let sim = w.control_get("ozon", "orders").await;
    let o = sim["postings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["posting_number"] == o1.as_str())
        .unwrap();
    assert_ne!(o["status"], "awaiting_packaging", "{o}");

    // Confirmed once: the next polls do not confirm again.
    let polled = w.poll(&poller).await;
    assert!(polled.iter().all(|(_, r)| r.confirmed == 0), "{polled:?}");
}
