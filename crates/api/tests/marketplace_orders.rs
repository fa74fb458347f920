//! The marketplace orders API over HTTP, on SQLite and (with `SAVDO_TEST_DATABASE_URL`)
//! PostgreSQL, with orders imported from the Uzum simulator by the real poller: the list with
//! its state filter and cursor paging, the retry of an order that needs attention once its item
//! is mapped, problems naming the field, roles, tenant isolation and the OpenAPI entries. The
//! import itself is tested in `crates/connectors/tests/marketplace_orders.rs`.
//!
//! The catalogue links come from the stock half's "products" sync handler, run step by step.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use savdo_api::AppState;
use savdo_connectors::marketplace::mapping::ProductsSync;
use savdo_connectors::marketplace::orders::{
    HubConnectors, OrderPoller, PollReport, PollerConfig, marketplace_kinds,
};
use savdo_domain::Qty;
use savdo_domain::clock::{ManualClock, SystemClock};
use savdo_domain::tenant::Role;
use savdo_hub::{Credentials, HttpHub, MemorySink, RateLimit, Registry, Vault};
use savdo_integrations::{SyncContext, SyncHandler, VaultHandle};
use savdo_storage::integrations::{Integration, IntegrationStatus, NewIntegration};
use savdo_storage::{
    Actor, Invoice, InvoiceFilter, InvoiceStatus, NewStockDoc, NewToken, ProductFields,
    StockDocKind, StockDocLine, Storage,
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

backend_tests!(orders_api);

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
        ) -> futures::future::BoxFuture<'_, Result<(), String>> {
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

// ----------------------------------------------------------------------------- API

struct Api {
    base: String,
    client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start(w: &World) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(w.store.clone(), w.vault.clone());
        tokio::spawn(savdo_api::serve(listener, state, async {
            let _ = rx.await;
        }));
        Api {
            base: format!("http://{addr}/api/v1"),
            client: reqwest::Client::new(),
            shutdown: Some(tx),
        }
    }

    async fn send(&self, method: reqwest::Method, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert!(
                ct.starts_with("application/problem+json"),
                "{status} {ct} {body}"
            );
        }
        (status, body)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn token(w: &World, tenant: Uuid, role: Role) -> String {
    let token = savdo_api::routes::tokens::generate_token();
    w.store
        .create_token(
            &Actor::system(tenant),
            &NewToken {
                name: "t".into(),
                role,
                store_id: None,
            },
            &savdo_api::extract::hash_token(&token),
        )
        .await
        .unwrap();
    token
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn orders_api(w: &World) {
    use reqwest::Method;
    let api = Api::start(w).await;
    let owner = token(w, w.tenant, Role::Owner).await;
    let uzum = w.integration("uzum", false).await;
    let u1 = w.order("uzum", &[(CHOY, 1)]).await;
    let u2 = w.order("uzum", &[(SUV, 1)]).await;
    let u3 = w.order("uzum", &[(NON, 1)]).await;
    let poller = w.poller();
    w.poll(&poller).await;

    let path = format!("/integrations/{}/orders", uzum.id);
    let (s, all) = api.send(Method::GET, &owner, &path).await;
    assert_eq!(s, 200, "{all}");
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    for id in [&u1, &u2, &u3] {
        assert!(ids.contains(&id.as_str()));
    }
    let (_, attention) = api
        .send(
            Method::GET,
            &owner,
            &format!("{path}?state=needs_attention"),
        )
        .await;
    let items = attention["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["external_id"], u2.as_str());
    assert_eq!(items[0]["type"], "uzum");
    assert!(items[0]["reason"].as_str().unwrap().contains(SUV));
    assert!(items[0].get("tenant_id").is_none());
    // Cursor paging.
    let (_, p1) = api
        .send(Method::GET, &owner, &format!("{path}?limit=2"))
        .await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let next = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = api
        .send(
            Method::GET,
            &owner,
            &format!("{path}?limit=2&cursor={next}"),
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["next_cursor"].is_null());
    // Bad input names the field.
    let (s, b) = api
        .send(Method::GET, &owner, &format!("{path}?state=lost"))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(fields(&b), vec!["state"]);
    let (s, b) = api
        .send(Method::GET, &owner, &format!("{path}?cursor=nope"))
        .await;
    assert_eq!((s, fields(&b)), (422, vec!["cursor".to_owned()]));
    let (s, b) = api
        .send(Method::GET, &owner, &format!("{path}?limit=0"))
        .await;
    assert_eq!((s, fields(&b)), (422, vec!["limit".to_owned()]));

    // Retry: still unmapped -> still needs attention; mapped -> imported; then 409.
    let retry = format!("{path}/{u2}/retry");
    let (s, b) = api.send(Method::POST, &owner, &retry).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "needs_attention");
    let suv = w
        .store
        .create_product(&w.actor(), &product("SUV", "Suv 1.5 l", SUV, 600_000))
        .await
        .unwrap();
    w.supply_product(suv.id, 3).await;
    w.products_sync(&uzum, &json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}))
        .await;
    let (s, b) = api.send(Method::POST, &owner, &retry).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "imported");
    assert_eq!(b["reason"], Value::Null);
    let inv = w.invoice_of("uzum", &u2).await;
    assert_eq!(b["invoice_id"], inv.id.to_string());
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    let (s, b) = api.send(Method::POST, &owner, &retry).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["errors"][0]["field"], "state", "{b}");
    let (s, _) = api
        .send(Method::POST, &owner, &format!("{path}/999999/retry"))
        .await;
    assert_eq!(s, 404);
    // The poller then finds it imported: nothing twice.
    w.poll(&poller).await;
    assert_eq!(w.events("marketplace.order_imported").await.len(), 3);

    // Roles and tenants.
    let cashier = token(w, w.tenant, Role::Cashier).await;
    let (s, _) = api.send(Method::GET, &cashier, &path).await;
    assert_eq!(s, 403);
    let other = w.store.create_tenant("Other shop").await.unwrap().id;
    let stranger = token(w, other, Role::Owner).await;
    let (s, _) = api.send(Method::GET, &stranger, &path).await;
    assert_eq!(s, 404);
    let (s, _) = api.send(Method::POST, &stranger, &retry).await;
    assert_eq!(s, 404);
    let (s, _) = api
        .send(
            Method::GET,
            &owner,
            &format!("/integrations/{}/orders", Uuid::now_v7()),
        )
        .await;
    assert_eq!(s, 404);
    // The OpenAPI document lists both routes.
    let (s, doc) = api.send(Method::GET, &owner, "/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/integrations/{id}/orders"]["get"].is_object());
    assert!(
        doc["paths"]["/api/v1/integrations/{id}/orders/{external_id}/retry"]["post"].is_object()
    );
}

impl World {
    async fn supply_product(&self, product: Uuid, units: i64) {
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
