//! Marketplace mapping and stock push, end to end: the real `uzum`, `wildberries` and `ozon`
//! connectors against their simulators over HTTP, real storage (SQLite, and PostgreSQL when
//! `SAVDO_TEST_DATABASE_URL` is set), the sync job runner, the `stock.changed` consumer through
//! the outbox and the pusher on a test clock. Request counts come from the simulators' stats.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use savdo_bus::{Bus, ConsumerRunner};
use savdo_connectors::marketplace::mapping::register_sync;
use savdo_connectors::marketplace::stock_push::{
    ConnectorPool, PushConfig, PushEngine, StockChanges, StockPusher,
};
use savdo_domain::Qty;
use savdo_domain::clock::{Clock, ManualClock};
use savdo_hub::{HttpHub, MemorySink, Registry, Vault};
use savdo_integrations::{JobRunner, SyncRegistry, VaultHandle};
use savdo_storage::integrations::{IntegrationStatus, Job, JobStatus, NewIntegration};
use savdo_storage::marketplace::{LinkChange, Mapping, MappingFilter};
use savdo_storage::{Actor, NewStockDoc, ProductFields, StockDocKind, StockDocLine, Storage};
use savdo_testkit::Backend;
use serde_json::{Value, json};
use uuid::Uuid;

const BUFFER_UNITS: i64 = 2;

// ----------------------------------------------------------------------------- databases

/// Run `f` on a fresh environment; the PostgreSQL database is dropped whatever happens.
async fn run<F, Fut>(backend: Backend, f: F)
where
    F: FnOnce(Env) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some((store, db)) = savdo_testkit::fresh_store(backend, "savdo_mp").await else {
        return;
    };
    let res = tokio::spawn(async move {
        let env = Env::new(store).await;
        f(env).await
    })
    .await;
    db.drop_db().await;
    // Tasks the test started may still use the SQLite file: keep its directory.
    std::mem::forget(db);
    if let Err(e) = res {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::run(super::Backend::Sqlite, super::$name).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::run(super::Backend::Postgres, super::$name).await;
                }
            }
        )*
    };
}

// ----------------------------------------------------------------------------- marketplaces

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Market {
    Uzum,
    Wildberries,
    Ozon,
}

const MARKETS: [Market; 3] = [Market::Uzum, Market::Wildberries, Market::Ozon];

impl Market {
    fn kind(self) -> &'static str {
        match self {
            Market::Uzum => "uzum",
            Market::Wildberries => "wildberries",
            Market::Ozon => "ozon",
        }
    }

    fn credentials(self) -> Value {
        match self {
            Market::Uzum => json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}),
            Market::Wildberries => json!({"token": savdo_sandbox::wildberries::DEFAULT_TOKEN}),
            Market::Ozon => json!({"client_id": savdo_sandbox::ozon::DEFAULT_CLIENT_ID,
                                   "api_key": savdo_sandbox::ozon::DEFAULT_API_KEY}),
        }
    }

    fn settings(self, sandbox: &str, stores: &[Uuid]) -> Value {
        let (field, base) = match self {
            Market::Uzum => ("shop_id", format!("{sandbox}/uzum/api/seller-openapi")),
            Market::Wildberries => ("warehouse_id", format!("{sandbox}/wildberries")),
            Market::Ozon => ("warehouse_id", format!("{sandbox}/ozon")),
        };
        let mut s = json!({"store_ids": stores.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                           "safety_buffer": BUFFER_UNITS, "base_url": base});
        s[field] = json!("1");
        if self == Market::Uzum {
            s["push_prices"] = json!(true);
        }
        s
    }

    /// A catalogue item with a numeric id `n`, its barcodes and the marketplace's own stock.
    fn seed_item(self, n: u64, barcodes: &[String]) -> Value {
        match self {
            Market::Uzum => json!({"sku_id": n, "product_id": n + 500_000, "barcode": barcodes[0],
                                   "title": format!("Item {n}"), "price": 10_000, "amount": 7}),
            Market::Wildberries => json!({"chrt_id": n, "nm_id": n + 500_000, "barcodes": barcodes,
                                          "title": format!("Item {n}"), "amount": 7}),
            Market::Ozon => {
                json!({"offer_id": format!("OF-{n}"), "product_id": n, "barcodes": barcodes,
                                   "name": format!("Item {n}"), "stock": 7})
            }
        }
    }

    /// Our external id of the item seeded as `n`.
    fn external_id(self, n: u64) -> String {
        match self {
            Market::Ozon => format!("OF-{n}"),
            _ => n.to_string(),
        }
    }

    /// Several barcodes on one item (Uzum SKUs carry one).
    fn multi_barcode(self) -> bool {
        self != Market::Uzum
    }
}

// ----------------------------------------------------------------------------- environment

struct Env {
    sandbox: savdo_sandbox::RunningSandbox,
    http: reqwest::Client,
    store: Arc<dyn Storage>,
    tenant: Uuid,
    actor: Actor,
    clock: Arc<ManualClock>,
    hub: HttpHub,
    registry: Arc<Registry>,
    vault: Arc<VaultHandle>,
    sync: Arc<SyncRegistry>,
    pusher: StockPusher,
    /// Stores feeding the marketplaces, and one that does not.
    feeding: [Uuid; 2],
    other: Uuid,
}

impl Env {
    async fn new(store: Arc<dyn Storage>) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let hub = HttpHub::new(clock.clone(), Arc::new(MemorySink::new())).unwrap();
        let mut registry = Registry::builtin();
        savdo_connectors::uzum::register(&mut registry);
        savdo_connectors::wildberries::register(&mut registry);
        savdo_connectors::ozon::register(&mut registry);
        let registry = Arc::new(registry);
        let vault = Arc::new(VaultHandle::new(Vault::ephemeral().unwrap()));
        // Push at once: these tests count requests per round after the changes are in.
        let engine = Arc::new(PushEngine::new(
            store.clone(),
            clock.clone(),
            PushConfig {
                settle: Duration::ZERO,
                ..PushConfig::default()
            },
        ));
        let mut sync = SyncRegistry::new();
        register_sync(&mut sync, engine.clone(), None);
        let pool = Arc::new(ConnectorPool::new(
            vault.clone(),
            registry.clone(),
            hub.clone(),
        ));
        let pusher = StockPusher::new(engine, pool);
        let tenant = store.create_tenant("Marketplace shop").await.unwrap().id;
        let actor = Actor::system(tenant);
        let mut ids = Vec::new();
        for name in ["Chilonzor", "Yunusobod", "Warehouse (not online)"] {
            ids.push(store.create_store(&actor, name, None).await.unwrap().id);
        }
        Env {
            sandbox,
            http: reqwest::Client::new(),
            store,
            tenant,
            actor,
            clock,
            hub,
            registry,
            vault,
            sync: Arc::new(sync),
            pusher,
            feeding: [ids[0], ids[1]],
            other: ids[2],
        }
    }

    async fn control(&self, m: Market, path: &str, body: Value) -> Value {
        savdo_testkit::marketplace::control_post(
            &self.http,
            &self.sandbox.url(),
            m.kind(),
            path,
            body,
        )
        .await
    }

    async fn control_get(&self, m: Market, path: &str) -> Value {
        savdo_testkit::marketplace::control_get(&self.http, &self.sandbox.url(), m.kind(), path)
            .await
    }

    async fn seed(&self, m: Market, items: Vec<Value>) {
        self.control(m, "seed", json!({"clear": true, "products": items}))
            .await;
    }

    async fn integration(&self, m: Market) -> Uuid {
        let id = savdo_domain::ids::new_id();
        let sealed = self
            .vault
            .seal_credentials(self.tenant, id, &m.credentials())
            .unwrap();
        self.store
            .create_integration(
                &self.actor,
                &NewIntegration {
                    id,
                    kind: m.kind().into(),
                    name: m.kind().into(),
                    status: IntegrationStatus::Active,
                    settings: m.settings(&self.sandbox.url(), &self.feeding),
                    credentials_sealed: sealed,
                },
            )
            .await
            .unwrap()
            .id
    }

    async fn product(&self, sku: &str, barcodes: &[String]) -> Uuid {
        self.store
            .create_product(
                &self.actor,
                &ProductFields {
                    barcodes: barcodes.to_vec(),
                    ..savdo_testkit::product_fields(sku, &format!("Product {sku}"), 1_500_000)
                },
            )
            .await
            .unwrap()
            .id
    }

    /// Run one sync job of the integration to its end through the job runner.
    async fn sync_job(&self, integration: Uuid, what: &str) -> Job {
        let job = self
            .store
            .create_job(self.tenant, integration, what)
            .await
            .unwrap();
        let runner = JobRunner::new(
            self.store.clone(),
            self.vault.clone(),
            self.registry.clone(),
            Some(self.hub.clone()),
            self.sync.clone(),
        );
        let (_tx, rx) = tokio::sync::watch::channel(false);
        assert!(runner.run_once(&rx).await.unwrap(), "the job ran");
        self.store
            .get_job(self.tenant, integration, job.id)
            .await
            .unwrap()
    }

    async fn mappings(&self, integration: Uuid) -> BTreeMap<String, Mapping> {
        let (items, next) = self
            .store
            .list_mappings(
                self.tenant,
                integration,
                &MappingFilter {
                    limit: 500,
                    ..MappingFilter::default()
                },
            )
            .await
            .unwrap();
        assert!(next.is_none());
        items
            .into_iter()
            .map(|m| (m.external_id.clone(), m))
            .collect()
    }

    async fn stock_doc(&self, kind: StockDocKind, store: Uuid, lines: &[(Uuid, i64)]) {
        self.store
            .create_stock_doc(
                &self.actor,
                &NewStockDoc {
                    kind,
                    store_id: store,
                    to_store_id: None,
                    note: None,
                    lines: lines
                        .iter()
                        .map(|(p, milli)| StockDocLine {
                            product_id: *p,
                            qty: Qty::from_milli(*milli),
                            cost: None,
                        })
                        .collect(),
                },
            )
            .await
            .unwrap();
    }

    /// Publish the outbox and feed every event to the stock consumer; returns the
    /// `stock.changed` events seen.
    async fn consume(&self) -> usize {
        savdo_bus::relay::drain(&self.store, &Bus::in_process())
            .await
            .unwrap();
        let runner = ConsumerRunner::new(self.store.clone(), self.clock.clone());
        let consumer = StockChanges::new(self.store.clone());
        let mut n = 0;
        loop {
            let read = runner.poll_outbox(&consumer).await.unwrap();
            if read == 0 {
                return n;
            }
            n += read;
        }
    }

    /// What each product should show: the feeding stores' available sum minus the buffer, in
    /// whole units (the marketplaces count whole units; a fraction is not offered).
    async fn expected_units(&self, product: Uuid) -> i64 {
        let levels = self
            .store
            .stock(self.tenant, None, Some(product))
            .await
            .unwrap();
        let sum: i64 = levels
            .iter()
            .filter(|l| self.feeding.contains(&l.store_id))
            .map(|l| l.available.milli())
            .sum();
        (sum - BUFFER_UNITS * 1000).max(0) / 1000
    }

    /// The marketplace's stock by our external id.
    async fn remote_stock(&self, m: Market) -> HashMap<String, i64> {
        let v = self.control_get(m, "stock").await;
        match m {
            Market::Uzum => v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["sku_id"].to_string(), i["amount"].as_i64().unwrap()))
                .collect(),
            Market::Wildberries => v["by_chrt_id"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, a)| (k.clone(), a.as_i64().unwrap()))
                .collect(),
            Market::Ozon => v["by_offer_id"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, a)| (k.clone(), a.as_i64().unwrap()))
                .collect(),
        }
    }

    /// Stock pushes the simulator received (whatever their answer) and its 429 count.
    async fn stock_requests(&self, m: Market) -> (u64, u64) {
        let endpoint = match m {
            Market::Uzum => "POST /api/seller-openapi/v2/fbs/sku/stocks",
            Market::Wildberries => "PUT /api/v3/stocks/{warehouse_id}",
            Market::Ozon => "POST /v2/products/stocks",
        };
        let s = self.control_get(m, "stats").await;
        let requests = s["endpoints"][endpoint]["total"].as_u64().unwrap_or(0);
        (requests, s["responses_429"].as_u64().unwrap())
    }

    /// Move our clock, and the simulators' limiter clocks, forward.
    /// A stock pusher of this environment with its own settings.
    fn pusher_with(&self, config: PushConfig) -> StockPusher {
        let engine = Arc::new(PushEngine::new(
            self.store.clone(),
            self.clock.clone(),
            config,
        ));
        let pool = Arc::new(ConnectorPool::new(
            self.vault.clone(),
            self.registry.clone(),
            self.hub.clone(),
        ));
        StockPusher::new(engine, pool)
    }

    async fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
        for m in MARKETS {
            self.control(m, "clock", json!({ "advance_secs": secs }))
                .await;
        }
    }
}

fn barcode(n: u64) -> String {
    format!("4600{n:09}")
}

// ----------------------------------------------------------------------------- mapping

/// Barcode links, an ambiguous item (barcodes of two products), an unknown barcode, a manual
/// link and a manual unlink kept across a second pull, against one simulator.
async fn mapping_on(env: &Env, m: Market) {
    // Barcodes are unique in a tenant: each marketplace's test uses its own.
    let off = match m {
        Market::Uzum => 0,
        Market::Wildberries => 100,
        Market::Ozon => 200,
    };
    let barcode = |n: u64| barcode(off + n);
    let p_a = env.product(&format!("{}-A", m.kind()), &[barcode(1)]).await;
    let p_b1 = env
        .product(&format!("{}-B1", m.kind()), &[barcode(2)])
        .await;
    let p_b2 = env
        .product(&format!("{}-B2", m.kind()), &[barcode(3)])
        .await;
    let p_d = env.product(&format!("{}-D", m.kind()), &[barcode(5)]).await;
    let p_e = env.product(&format!("{}-E", m.kind()), &[barcode(6)]).await;
    let mut items = vec![
        m.seed_item(101, &[barcode(1)]),
        m.seed_item(103, &[barcode(4)]),
        m.seed_item(104, &[barcode(5)]),
    ];
    if m.multi_barcode() {
        items.push(m.seed_item(102, &[barcode(2), barcode(3)]));
    }
    env.seed(m, items).await;
    let id = env.integration(m).await;

    let job = env.sync_job(id, "products").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let seeded = if m.multi_barcode() { 4 } else { 3 };
    assert_eq!(job.done, seeded);
    let maps = env.mappings(id).await;
    assert_eq!(maps.len() as i64, seeded, "{maps:?}");
    let a = &maps[&m.external_id(101)];
    assert_eq!(a.product_id, Some(p_a));
    assert_eq!(a.mapped_by.as_deref(), Some("barcode"));
    assert_eq!(
        a.product_sku.as_deref(),
        Some(format!("{}-A", m.kind()).as_str())
    );
    assert!(a.stock.pending, "a new link schedules a push");
    let c = &maps[&m.external_id(103)];
    assert_eq!(c.product_id, None);
    assert!(c.note.as_deref().unwrap().contains(&barcode(4)), "{c:?}");
    assert_eq!(maps[&m.external_id(104)].product_id, Some(p_d));
    if m.multi_barcode() {
        let b = &maps[&m.external_id(102)];
        assert_eq!(b.product_id, None, "ambiguous items stay unmapped");
        let note = b.note.as_deref().unwrap();
        assert!(note.starts_with("ambiguous"), "{note}");
        assert!(note.contains(&p_b1.to_string()) && note.contains(&p_b2.to_string()));
        assert!(
            job.errors
                .iter()
                .any(|e| e["code"] == "ambiguous_barcode" && e["item"] == m.external_id(102)),
            "{:?}",
            job.errors
        );
    }

    // By hand: 104 to E (its barcode says D), 101 unlinked.
    let changed = env
        .store
        .set_links(
            &env.actor,
            id,
            &[
                LinkChange {
                    external_id: m.external_id(104),
                    product_id: Some(p_e),
                },
                LinkChange {
                    external_id: m.external_id(101),
                    product_id: None,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(changed, 2);
    let job = env.sync_job(id, "products").await;
    assert_eq!(job.status, JobStatus::Succeeded);
    let maps = env.mappings(id).await;
    let d = &maps[&m.external_id(104)];
    assert_eq!(
        (d.product_id, d.mapped_by.as_deref()),
        (Some(p_e), Some("manual"))
    );
    let a = &maps[&m.external_id(101)];
    assert_eq!(
        (a.product_id, a.mapped_by.as_deref()),
        (None, Some("manual"))
    );
    let counts = env.store.mapping_counts(env.tenant, id).await.unwrap();
    assert_eq!(counts.mapped, 1);
    // A, D (and B1, B2 where ambiguous) are linked to nothing now.
    let local = env
        .store
        .unmapped_local(env.tenant, id, None, 100)
        .await
        .unwrap()
        .0;
    let local: Vec<Uuid> = local.iter().map(|p| p.id).collect();
    assert!(local.contains(&p_a) && local.contains(&p_d) && !local.contains(&p_e));
}

async fn mapping_by_barcode(env: Env) {
    for m in MARKETS {
        mapping_on(&env, m).await;
    }
}

// ----------------------------------------------------------------------------- stock push

/// Products and a catalogue of `n` items on every marketplace, mapped by barcode; one
/// product weighed (fractions), one below the buffer.
async fn catalogue(env: &Env, n: u64) -> (Vec<Uuid>, HashMap<Market, Uuid>) {
    let mut products = Vec::new();
    for i in 0..n {
        products.push(env.product(&format!("SKU-{i}"), &[barcode(1000 + i)]).await);
    }
    let mut ids = HashMap::new();
    for m in MARKETS {
        let items = (0..n)
            .map(|i| m.seed_item(10_000 + i, &[barcode(1000 + i)]))
            .collect();
        env.seed(m, items).await;
        let id = env.integration(m).await;
        let job = env.sync_job(id, "products").await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        assert_eq!(
            env.store.count_mapped(env.tenant, id).await.unwrap(),
            n as i64
        );
        ids.insert(m, id);
    }
    (products, ids)
}

/// A deterministic stream of pseudo-random numbers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// `changes` stock changes over `products` in documents of 50 lines: supplies and write-offs
/// in the feeding stores and in a store that feeds nothing.
async fn burst(env: &Env, products: &[Uuid], changes: usize, rng: &mut Lcg) {
    let mut left = changes;
    let mut doc = 0usize;
    while left > 0 {
        let n = left.min(50).min(products.len());
        let start = rng.next(products.len() as u64) as usize;
        let lines: Vec<(Uuid, i64)> = (0..n)
            .map(|k| {
                let p = products[(start + k) % products.len()];
                (p, 250 + rng.next(3000) as i64)
            })
            .collect();
        let store = match doc % 5 {
            0 | 1 => env.feeding[0],
            2 | 3 => env.feeding[1],
            _ => env.other,
        };
        // Supplies twice as often as write-offs, so stock stays positive.
        let kind = if doc % 3 == 2 {
            StockDocKind::Writeoff
        } else {
            StockDocKind::Supply
        };
        env.stock_doc(kind, store, &lines).await;
        left -= n;
        doc += 1;
    }
}

async fn assert_remote_equals_ours(env: &Env, m: Market, products: &[Uuid]) {
    let remote = env.remote_stock(m).await;
    for (i, p) in products.iter().enumerate() {
        let want = env.expected_units(*p).await;
        let got = remote
            .get(&m.external_id(10_000 + i as u64))
            .copied()
            .unwrap_or(-1);
        assert_eq!(
            got, want,
            "{m:?} item {i}: marketplace shows {got}, we have {want}"
        );
    }
}

/// 10,000 changes reach each marketplace in the fewest requests its limits allow, with the
/// final values and no 429.
async fn burst_of_changes(env: Env) {
    const ITEMS: u64 = 120;
    let (products, ids) = catalogue(&env, ITEMS).await;
    // Starting stock; one product weighed, one below the buffer.
    let first: Vec<(Uuid, i64)> = products.iter().map(|p| (*p, 40_000)).collect();
    env.stock_doc(StockDocKind::Supply, env.feeding[0], &first)
        .await;
    env.stock_doc(
        StockDocKind::Writeoff,
        env.feeding[0],
        &[(products[0], 38_500), (products[1], 1_250)],
    )
    .await;
    env.consume().await;
    // Round 1: everything mapped and changed.
    let r = env.pusher.drain().await.unwrap();
    assert_eq!(r.failed, 0, "{r:?}");
    for m in MARKETS {
        assert_remote_equals_ours(&env, m, &products).await;
    }
    let round1: HashMap<Market, (u64, u64)> = {
        let mut h = HashMap::new();
        for m in MARKETS {
            h.insert(m, env.stock_requests(m).await);
        }
        h
    };
    // batch sizes: Uzum 500, WB 1000, Ozon 100.
    let minimum = |m: Market| match m {
        Market::Ozon => ITEMS.div_ceil(100),
        _ => 1,
    };
    for m in MARKETS {
        assert_eq!(round1[&m], (minimum(m), 0), "{m:?} round 1");
    }

    // The burst.
    let mut rng = Lcg(42);
    burst(&env, &products, 10_000, &mut rng).await;
    let seen = env.consume().await;
    assert!(seen >= 10_000, "{seen} events");
    let r = env.pusher.drain().await.unwrap();
    assert_eq!(r.failed, 0, "{r:?}");
    for m in [Market::Uzum, Market::Wildberries] {
        assert_remote_equals_ours(&env, m, &products).await;
        assert_eq!(
            env.stock_requests(m).await,
            (2 * minimum(m), 0),
            "{m:?} after the burst"
        );
    }
    // Ozon: every item was pushed less than two minutes ago; nothing goes before the window.
    assert_eq!(
        env.stock_requests(Market::Ozon).await,
        (minimum(Market::Ozon), 0)
    );
    let maps = env.mappings(ids[&Market::Ozon]).await;
    assert!(
        maps.values()
            .all(|m| m.stock.pending && m.stock.last_error.is_none())
    );
    env.advance(121).await;
    env.pusher.drain().await.unwrap();
    assert_remote_equals_ours(&env, Market::Ozon, &products).await;
    assert_eq!(
        env.stock_requests(Market::Ozon).await,
        (2 * minimum(Market::Ozon), 0)
    );
    let maps = env.mappings(ids[&Market::Ozon]).await;
    assert!(maps.values().all(|m| !m.stock.pending), "all pushed");
    // Product 0 is below the buffer, product 1 weighed: their values are exact.
    assert_eq!(
        env.expected_units(products[0]).await,
        env.remote_stock(Market::Ozon).await[&Market::Ozon.external_id(10_000)]
    );
}

/// A change made while a push is in flight stays due (the sequence, not a flag).
async fn change_during_push_stays_due(env: Env) {
    let (products, ids) = catalogue(&env, 3).await;
    let wb = ids[&Market::Wildberries];
    env.stock_doc(
        StockDocKind::Supply,
        env.feeding[0],
        &[(products[0], 9_000)],
    )
    .await;
    env.consume().await;
    // What a pusher read before the change below: the item and its sequence.
    let due = env
        .store
        .due_items(
            env.tenant,
            wb,
            savdo_storage::marketplace::Channel::Stock,
            &savdo_storage::marketplace::DueQuery {
                now: env.clock.now(),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let item = due
        .iter()
        .find(|d| d.product_id == products[0])
        .unwrap()
        .clone();
    env.stock_doc(
        StockDocKind::Supply,
        env.feeding[0],
        &[(products[0], 1_000)],
    )
    .await;
    env.consume().await;
    env.store
        .record_push(
            env.tenant,
            wb,
            savdo_storage::marketplace::Channel::Stock,
            &[savdo_storage::marketplace::PushOutcome {
                external_id: item.external_id.clone(),
                seq: item.seq,
                result: savdo_storage::marketplace::PushResult::Pushed { value: 7_000 },
            }],
            env.clock.now(),
        )
        .await
        .unwrap();
    let maps = env.mappings(wb).await;
    assert!(
        maps[&item.external_id].stock.pending,
        "changed in flight: still due"
    );
    env.pusher.drain().await.unwrap();
    assert_remote_equals_ours(&env, Market::Wildberries, &products).await;
}

/// A resync pushes every mapped item with progress, within the batch size.
async fn full_resync_reports_progress(env: Env) {
    let (products, ids) = catalogue(&env, 130).await;
    env.stock_doc(
        StockDocKind::Supply,
        env.feeding[1],
        &products.iter().map(|p| (*p, 5_000)).collect::<Vec<_>>(),
    )
    .await;
    // No consumer ran: only the resync can bring the new stock out.
    let ozon = ids[&Market::Ozon];
    let job = env.sync_job(ozon, "stock").await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!((job.done, job.total), (130, Some(130)));
    assert_remote_equals_ours(&env, Market::Ozon, &products).await;
    assert_eq!(env.stock_requests(Market::Ozon).await, (2, 0));
    let wb = ids[&Market::Wildberries];
    let job = env.sync_job(wb, "stock").await;
    assert_eq!(
        (job.status, job.done, job.total),
        (JobStatus::Succeeded, 130, Some(130))
    );
    assert_remote_equals_ours(&env, Market::Wildberries, &products).await;
    assert_eq!(env.stock_requests(Market::Wildberries).await, (1, 0));
}

/// 5xx and 429 answers: items wait (backoff, or the integration is blocked) and the final
/// stock is still right.
async fn faults_are_survived(env: Env) {
    let (products, ids) = catalogue(&env, 20).await;
    let wb = ids[&Market::Wildberries];
    env.stock_doc(
        StockDocKind::Supply,
        env.feeding[0],
        &products.iter().map(|p| (*p, 12_000)).collect::<Vec<_>>(),
    )
    .await;
    env.consume().await;
    for m in [Market::Uzum, Market::Wildberries] {
        env.control(m, "faults", json!({"error_rate": 1.0, "status": 503}))
            .await;
    }
    env.control(
        Market::Ozon,
        "faults",
        json!({"error_rate": 1.0, "status": 429}),
    )
    .await;
    let r = env.pusher.drain().await.unwrap();
    assert!(r.failed > 0 || r.blocked > 0, "{r:?}");
    let maps = env.mappings(wb).await;
    let m = maps.values().next().unwrap();
    assert!(m.stock.pending && m.stock.last_error.is_some(), "{m:?}");
    let status = env
        .store
        .push_status(env.tenant, ids[&Market::Ozon])
        .await
        .unwrap()
        .expect("the pusher recorded its state");
    assert!(
        status.last_error.is_some() && status.blocked_until.is_some(),
        "{status:?}"
    );
    // More changes while the marketplaces are down.
    env.stock_doc(
        StockDocKind::Writeoff,
        env.feeding[0],
        &[(products[3], 4_000)],
    )
    .await;
    env.consume().await;
    for m in MARKETS {
        env.control(m, "faults", json!({})).await;
    }
    // Past every backoff, block and breaker cool-down.
    env.advance(3600).await;
    env.pusher.drain().await.unwrap();
    for m in MARKETS {
        assert_remote_equals_ours(&env, m, &products).await;
    }
    let maps = env.mappings(wb).await;
    assert!(
        maps.values()
            .all(|m| !m.stock.pending && m.stock.last_error.is_none())
    );
    let status = env
        .store
        .push_status(env.tenant, wb)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.blocked_until, status.last_error), (None, None));
}

/// Uzum prices follow ours (push_prices on): a price change is pushed, coalesced.
async fn prices_follow_ours(env: Env) {
    let (products, ids) = catalogue(&env, 2).await;
    env.pusher.drain().await.unwrap();
    let p = env
        .store
        .get_product(env.tenant, products[1])
        .await
        .unwrap();
    for price in [2_000_000, 2_100_000, 2_300_000] {
        env.store
            .update_product(
                &env.actor,
                p.id,
                &ProductFields {
                    sku: p.sku.clone(),
                    name: p.name.clone(),
                    barcodes: p.barcodes.clone(),
                    price,
                    vat_percent: p.vat_percent,
                    mxik: None,
                    package_code: None,
                    unit: 1,
                    marked: false,
                    active: true,
                },
            )
            .await
            .unwrap();
    }
    env.consume().await;
    let r = env.pusher.drain().await.unwrap();
    assert_eq!(r.requests, 1, "three changes, one push: {r:?}");
    let stock = env.control_get(Market::Uzum, "stock").await;
    let item = stock["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku_id"] == json!(10_001))
        .unwrap()
        .clone();
    assert_eq!(item["price"], json!(23_000), "{item}");
    let maps = env.mappings(ids[&Market::Uzum]).await;
    assert_eq!(maps["10001"].price_push.pushed_value, Some(2_300_000));
}

/// One pusher per integration across processes: the lease is exclusive (also under a race),
/// renewable by its owner, taken over when it runs out, and a provider's block holds everyone.
async fn push_lease_is_exclusive(env: Env) {
    let id = env.integration(Market::Wildberries).await;
    let t = env.tenant;
    let lease = |secs: i64| env.clock.now() + chrono::Duration::seconds(secs);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    assert!(
        env.store
            .claim_push(t, id, a, env.clock.now(), lease(60))
            .await
            .unwrap()
    );
    assert!(
        !env.store
            .claim_push(t, id, b, env.clock.now(), lease(60))
            .await
            .unwrap()
    );
    assert!(
        env.store
            .claim_push(t, id, a, env.clock.now(), lease(60))
            .await
            .unwrap(),
        "renewed"
    );
    // A crashed owner's lease runs out.
    env.clock.advance(chrono::Duration::seconds(61));
    assert!(
        env.store
            .claim_push(t, id, b, env.clock.now(), lease(60))
            .await
            .unwrap()
    );
    // A 429 blocks the integration for everyone until its time.
    env.store
        .release_push(t, id, b, Some(lease(30)), Some("rate limited"))
        .await
        .unwrap();
    assert!(
        !env.store
            .claim_push(t, id, a, env.clock.now(), lease(60))
            .await
            .unwrap()
    );
    env.clock.advance(chrono::Duration::seconds(31));
    assert!(
        env.store
            .claim_push(t, id, a, env.clock.now(), lease(60))
            .await
            .unwrap()
    );
    env.store.release_push(t, id, a, None, None).await.unwrap();
    // Many claimers at once: exactly one wins.
    let now = env.clock.now();
    let until = lease(60);
    let claims: Vec<_> = (0..8)
        .map(|_| {
            let store = env.store.clone();
            tokio::spawn(async move {
                store
                    .claim_push(t, id, Uuid::now_v7(), now, until)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for c in claims {
        won += usize::from(c.await.unwrap());
    }
    assert_eq!(won, 1);
}

/// An item the marketplace refuses is recorded with the reason and retried with backoff; the
/// rest of its batch goes through.
async fn rejected_items_back_off(env: Env) {
    let (products, ids) = catalogue(&env, 3).await;
    let ozon = ids[&Market::Ozon];
    // Item 2 disappears from Ozon after the mapping.
    env.seed(
        Market::Ozon,
        (0..2)
            .map(|i| Market::Ozon.seed_item(10_000 + i, &[barcode(1000 + i)]))
            .collect(),
    )
    .await;
    let gone = Market::Ozon.external_id(10_002);
    env.pusher.drain().await.unwrap();
    let maps = env.mappings(ozon).await;
    let m = &maps[&gone];
    assert!(m.stock.pending);
    assert_eq!(m.stock.attempts, 1);
    assert!(
        m.stock.last_error.as_deref().unwrap().contains("NOT_FOUND"),
        "{m:?}"
    );
    assert!(m.stock.next_attempt_at.unwrap() > env.clock.now());
    assert!(
        maps.values()
            .filter(|m| m.external_id != gone)
            .all(|m| !m.stock.pending)
    );
    // Not retried before its time.
    let r = env.pusher.drain().await.unwrap();
    assert_eq!(r.requests, 0);
    // Back on Ozon; after the backoff it goes.
    env.control(
        Market::Ozon,
        "seed",
        json!({"products": [Market::Ozon.seed_item(10_002, &[barcode(1002)])]}),
    )
    .await;
    env.advance(3600).await;
    env.pusher.drain().await.unwrap();
    assert_remote_equals_ours(&env, Market::Ozon, &products).await;
    let m = &env.mappings(ozon).await[&gone];
    assert!(!m.stock.pending && m.stock.last_error.is_none() && m.stock.attempts == 0);
}

/// Changes that arrive over several seconds (as they do through the event path) leave in one
/// request once they stop coming, and never wait longer than `max_settle`.
async fn changes_arriving_over_time_settle(env: Env) {
    let (products, _ids) = catalogue(&env, 12).await;
    env.pusher.drain().await.unwrap();
    let pusher = env.pusher_with(PushConfig {
        settle: Duration::from_secs(2),
        max_settle: Duration::from_secs(6),
        // Urgent or not, the same cap here (the difference has its own test).
        calm_max_settle: Duration::from_secs(6),
        ..PushConfig::default()
    });
    let wb = Market::Wildberries;
    let base = env.stock_requests(wb).await.0;
    let sent = |n: u64| n - base;

    // Three waves a second apart, then quiet: nothing goes until the set stops growing for 2 s.
    for wave in 0..3 {
        let lines: Vec<(Uuid, i64)> = products[wave * 3..wave * 3 + 3]
            .iter()
            .map(|p| (*p, 1_000))
            .collect();
        env.stock_doc(StockDocKind::Supply, env.feeding[0], &lines)
            .await;
        env.consume().await;
        pusher.pass().await.unwrap();
        assert_eq!(
            sent(env.stock_requests(wb).await.0),
            0,
            "wave {wave}: still settling"
        );
        env.advance(1).await;
    }
    pusher.pass().await.unwrap();
    assert_eq!(
        sent(env.stock_requests(wb).await.0),
        0,
        "1 s quiet: not yet"
    );
    env.advance(1).await;
    pusher.pass().await.unwrap();
    assert_eq!(
        sent(env.stock_requests(wb).await.0),
        1,
        "9 items in one request"
    );
    assert_remote_equals_ours(&env, wb, &products).await;

    // A steady trickle: pushed once max_settle has passed, not held back for ever.
    let before = env.stock_requests(wb).await.0;
    let mut pushed_at = None;
    for k in 0..9_usize {
        env.stock_doc(
            StockDocKind::Supply,
            env.feeding[1],
            &[(products[k % products.len()], 1_000)],
        )
        .await;
        env.consume().await;
        pusher.pass().await.unwrap();
        if pushed_at.is_none() && env.stock_requests(wb).await.0 > before {
            pushed_at = Some(k);
        }
        env.advance(1).await;
    }
    assert_eq!(
        pushed_at,
        Some(6),
        "pushed when max_settle (6 s) had passed"
    );
    env.pusher.drain().await.unwrap();
    assert_remote_equals_ours(&env, wb, &products).await;
}

/// A steady flow of ordinary changes waits up to `calm_max_settle`; one that sells an item out
/// goes after `max_settle`.
async fn ordinary_changes_wait_longer_than_urgent_ones(env: Env) {
    let (products, _ids) = catalogue(&env, 20).await;
    let stocked: Vec<(Uuid, i64)> = products.iter().map(|p| (*p, 100_000)).collect();
    env.stock_doc(StockDocKind::Supply, env.feeding[0], &stocked)
        .await;
    env.consume().await;
    env.pusher.drain().await.unwrap();
    let pusher = env.pusher_with(PushConfig {
        settle: Duration::from_secs(2),
        max_settle: Duration::from_secs(6),
        calm_max_settle: Duration::from_secs(12),
        ..PushConfig::default()
    });
    let wb = Market::Wildberries;

    // A delivery a second, each to another product (100 units each, far from zero), so the due
    // set keeps growing: not urgent.
    let trickle = |sell_out_at: Option<usize>| {
        let (env, products, pusher) = (&env, &products, &pusher);
        async move {
            let before = env.stock_requests(wb).await.0;
            for k in 0..16_usize {
                env.stock_doc(
                    StockDocKind::Supply,
                    env.feeding[1],
                    &[(products[k], 10_000)],
                )
                .await;
                if sell_out_at == Some(k) {
                    env.stock_doc(
                        StockDocKind::Writeoff,
                        env.feeding[0],
                        &[(products[19], 100_000)],
                    )
                    .await;
                }
                env.consume().await;
                pusher.pass().await.unwrap();
                if env.stock_requests(wb).await.0 > before {
                    return Some(k);
                }
                env.advance(1).await;
            }
            None
        }
    };
    assert_eq!(
        trickle(None).await,
        Some(12),
        "pushed at calm_max_settle (12 s)"
    );
    env.pusher.drain().await.unwrap();
    assert_remote_equals_ours(&env, wb, &products).await;
    assert_eq!(
        trickle(Some(3)).await,
        Some(6),
        "a sold-out item goes at max_settle (6 s)"
    );
    env.pusher.drain().await.unwrap();
    assert_remote_equals_ours(&env, wb, &products).await;
}

backend_tests!(
    ordinary_changes_wait_longer_than_urgent_ones,
    changes_arriving_over_time_settle,
    rejected_items_back_off,
    push_lease_is_exclusive,
    mapping_by_barcode,
    burst_of_changes,
    change_during_push_stays_due,
    full_resync_reports_progress,
    faults_are_survived,
    prices_follow_ours,
);
