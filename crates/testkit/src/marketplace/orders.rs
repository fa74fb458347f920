//! The world of the marketplace order tests (the import in the connectors' tests, the API in
//! the API's): a fresh database with a shop, its products Choy and Non in stock, the three
//! simulators in a running sandbox, the connectors' registry, a vault and a test clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use savdo_connectors::marketplace::orders::{
    HubConnectors, OrderPoller, PollReport, PollerConfig, marketplace_kinds,
};
use savdo_domain::Qty;
use savdo_domain::clock::{ManualClock, SystemClock};
use savdo_hub::{HttpHub, MemorySink, Registry, Vault};
use savdo_integrations::VaultHandle;
use savdo_storage::integrations::Integration;
use savdo_storage::marketplace_orders::MarketplaceOrderRecord;
use savdo_storage::{
    Actor, Invoice, InvoiceFilter, NewStockDoc, ProductFields, StockDocKind, StockDocLine, Storage,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Backend, FreshDb};

/// For each `async fn name(w: &World)` in scope, a module `name` with a `sqlite` and a
/// `postgres` test on a fresh [`World`]; its database is dropped even when the test panics.
#[macro_export]
macro_rules! orders_backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    use $crate::marketplace::orders::World;
                    if let Some(w) = World::new($crate::Backend::Sqlite).await {
                        super::$name(&w).await;
                        w.drop_db().await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    use $crate::marketplace::orders::World;
                    if let Some(w) = World::new($crate::Backend::Postgres).await {
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

pub const CHOY: &str = "4780000000017";
pub const NON: &str = "4780000000024";
pub const SUV: &str = "4780000000031";

/// One test's world; [`World::drop_db`] at its end.
pub struct World {
    /// Where the database lives; its URL opens it again (a restart).
    pub db: FreshDb,
    pub store: Arc<dyn Storage>,
    pub sandbox: savdo_sandbox::RunningSandbox,
    pub http: reqwest::Client,
    pub hub: HttpHub,
    pub registry: Arc<Registry>,
    pub vault: Arc<VaultHandle>,
    pub clock: Arc<ManualClock>,
    pub tenant: Uuid,
    pub store_id: Uuid,
    pub products: HashMap<&'static str, Uuid>,
}

impl World {
    pub async fn new(backend: Backend) -> Option<World> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = FreshDb::new(backend, "savdo_t").await?;
        let store = db.store().await;
        let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let hub = HttpHub::new(Arc::new(SystemClock), Arc::new(MemorySink::new())).unwrap();
        // Uzum (about 1/s) and Ozon (80/min for stocks, which this test does not push) both
        // run faster here, the simulators' limits raised to match.
        let registry = crate::marketplace::registry(20);
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
            db,
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

    pub async fn drop_db(&self) {
        self.db.drop_db().await;
    }

    pub fn actor(&self) -> Actor {
        Actor::system(self.tenant)
    }

    pub async fn supply(&self, barcode: &str, units: i64) {
        self.supply_product(self.products[barcode], units).await;
    }

    /// `(on_hand, reserved, available)` in whole units.
    pub async fn level(&self, barcode: &str) -> (i64, i64, i64) {
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

    pub async fn control_post(&self, kind: &str, path: &str, body: Value) -> Value {
        crate::marketplace::control_post(&self.http, &self.sandbox.url(), kind, path, body).await
    }

    pub async fn control_get(&self, kind: &str, path: &str) -> Value {
        crate::marketplace::control_get(&self.http, &self.sandbox.url(), kind, path).await
    }

    /// A new order in the simulator; its id as the connector reports it.
    pub async fn order(&self, kind: &str, items: &[(&str, i64)]) -> String {
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

    pub async fn cancel_in_sim(&self, kind: &str, id: &str) {
        self.control_post(kind, &format!("orders/{id}/cancel"), json!({}))
            .await;
    }

    pub fn marketplace(&self) -> crate::marketplace::Env<'_> {
        crate::marketplace::Env {
            store: &self.store,
            registry: &self.registry,
            hub: &self.hub,
            vault: &self.vault,
            sandbox_url: self.sandbox.url(),
            tenant: self.tenant,
        }
    }

    /// Connect an integration of `kind` and run its "products" sync.
    pub async fn integration(&self, kind: &str, auto_confirm: bool) -> Integration {
        self.marketplace()
            .integration(kind, self.store_id, auto_confirm)
            .await
    }

    pub async fn products_sync(&self, i: &Integration, credentials: &Value) {
        self.marketplace().products_sync(i, credentials).await;
    }

    pub fn poller_on(&self, store: Arc<dyn Storage>) -> OrderPoller {
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

    pub fn poller(&self) -> OrderPoller {
        self.poller_on(self.store.clone())
    }

    /// One poll of everything that is due, then the clock moves past the interval.
    pub async fn poll(&self, poller: &OrderPoller) -> Vec<(Uuid, PollReport)> {
        let r = poller.poll_due().await.expect("poll");
        for (_, rep) in &r {
            assert!(rep.errors.is_empty(), "poll errors: {:?}", rep.errors);
        }
        self.clock.advance(chrono::Duration::seconds(61));
        r
    }

    pub async fn record(&self, i: &Integration, external_id: &str) -> MarketplaceOrderRecord {
        self.store
            .get_marketplace_order(self.tenant, i.id, external_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("order {external_id} recorded"))
    }

    pub async fn invoices(&self) -> Vec<Invoice> {
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

    pub async fn invoice_of(&self, kind: &str, external_id: &str) -> Invoice {
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
    pub async fn events(&self, kind: &str) -> Vec<Value> {
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

pub fn product(sku: &str, name: &str, barcode: &str, price: i64) -> ProductFields {
    ProductFields {
        barcodes: vec![barcode.into()],
        ..crate::product_fields(sku, name, price)
    }
}

impl World {
    pub async fn supply_product(&self, product: Uuid, units: i64) {
        self.store
            .create_stock_doc(
                &self.actor(),
                &NewStockDoc {
                    kind: StockDocKind::Supply,
                    store_id: self.store_id,
                    to_store_id: None,
                    note: None,
                    lines: vec![StockDocLine {
                        product_id: product,
                        qty: Qty::units(units),
                        cost: None,
                    }],
                },
            )
            .await
            .unwrap();
    }
}
