//! Test support: a fresh real database (SQLite always, PostgreSQL when
//! `SAVDO_TEST_DATABASE_URL` is set), a shop with a store and a terminal, a recording consumer
//! and a recording publish function.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use savdo_bus::{Consumer, HandleError};
use savdo_domain::Qty;
use savdo_domain::event::CloudEvent;
use savdo_domain::receipt::{PaymentMethod, ReceiptType};
use savdo_storage::{
    Actor, OutboxEvent, PaymentInput, ProductFields, ReceiptInput, ReceiptLineInput, Storage,
};
use savdo_testkit::PgDb;
use uuid::Uuid;

pub const PG_ENV: &str = "SAVDO_TEST_DATABASE_URL";
pub const NATS_ENV: &str = "SAVDO_TEST_NATS_URL";

/// For each `async fn name(db: &Db)`, a module `name` with a `sqlite` and a `postgres` test.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::common::Db::sqlite().await;
                    super::$name(&db).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(db) = $crate::common::Db::postgres().await else { return };
                    super::$name(&db).await;
                }
            }
        )*
    };
}

/// Direct access to the database under the store, to look at the outbox table itself.
pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

/// A migrated database, dropped (PostgreSQL) or deleted (SQLite) afterwards.
pub struct Db {
    pub store: Arc<dyn Storage>,
    pub raw: Raw,
    pub pg: bool,
    _dir: Option<tempfile::TempDir>,
    drop_pg: Option<PgDb>,
}

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Db {
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("savdo.db").display());
        let store = savdo_storage::connect(&url).await.expect("open sqlite");
        store.migrate().await.expect("migrate sqlite");
        let raw = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("raw sqlite pool");
        Db {
            store,
            raw: Raw::Sqlite(raw),
            pg: false,
            _dir: Some(dir),
            drop_pg: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (after saying so) without the variable. A
    /// configured but unreachable server fails the test.
    pub async fn postgres() -> Option<Db> {
        let Some(admin) = env(PG_ENV) else {
            eprintln!("SKIP postgres: {PG_ENV} is not set");
            return None;
        };
        let db_guard = PgDb::create_on(admin, "savdo_t").await;
        let url = db_guard.url();
        let store = savdo_storage::connect(&url).await.expect("open postgres");
        store.migrate().await.expect("migrate postgres");
        let raw = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("raw postgres pool");
        Some(Db {
            store,
            raw: Raw::Pg(raw),
            pg: true,
            _dir: None,
            drop_pg: Some(db_guard),
        })
    }

    /// Outbox rows of a tenant, published or not, in insertion order.
    pub async fn outbox_ids(&self, tenant: Uuid) -> Vec<Uuid> {
        let sql = "SELECT id FROM outbox WHERE tenant_id = $1 ORDER BY seq";
        match &self.raw {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).bind(tenant).fetch_all(p).await,
            Raw::Pg(p) => sqlx::query_scalar(sql).bind(tenant).fetch_all(p).await,
        }
        .expect("read outbox")
    }

    /// Every outbox row, all tenants.
    pub async fn outbox_total(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM outbox";
        match &self.raw {
            Raw::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Raw::Pg(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .expect("count outbox")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(pg) = self.drop_pg.take() {
            pg.drop_db_blocking();
        }
    }
}

/// A tenant with one store and one terminal.
#[derive(Clone)]
pub struct Shop {
    pub tenant: Uuid,
    pub actor: Actor,
    pub store_id: Uuid,
    pub terminal_id: Uuid,
}

pub async fn shop(store: &Arc<dyn Storage>, name: &str) -> Shop {
    let t = store.create_tenant(name).await.expect("tenant");
    let actor = Actor::system(t.id);
    let s = store
        .create_store(&actor, "Chilonzor", Some("Tashkent"))
        .await
        .expect("store");
    let term = store
        .create_terminal(&actor, s.id, "Till 1")
        .await
        .expect("terminal");
    Shop {
        tenant: t.id,
        actor,
        store_id: s.id,
        terminal_id: term.id,
    }
}

pub fn product(sku: &str, price: i64) -> ProductFields {
    savdo_testkit::product_fields(sku, &format!("Product {sku}"), price)
}

/// A cash sale of `units` of one product at `price`, paid with `paid`.
pub fn sale(shop: &Shop, product_id: Uuid, units: i64, price: i64, paid: i64) -> ReceiptInput {
    ReceiptInput {
        id: Uuid::now_v7(),
        kind: ReceiptType::Sale,
        refund_of: None,
        store_id: shop.store_id,
        terminal_id: shop.terminal_id,
        customer_id: None,
        lines: vec![ReceiptLineInput {
            product_id,
            qty: Qty::units(units),
            price: Some(price),
            discount: None,
            marking_codes: Vec::new(),
        }],
        payments: vec![PaymentInput {
            method: PaymentMethod::Cash,
            amount: paid,
            payment_id: None,
        }],
        sold_at: None,
        fiscal: None,
        note: None,
        loyalty: None,
    }
}

/// `n` events for a tenant: one `product.created` each.
pub async fn products(store: &Arc<dyn Storage>, shop: &Shop, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .create_product(&shop.actor, &product(&format!("{prefix}-{i}"), 1000))
            .await
            .expect("product");
    }
}

/// Wait until `cond` holds, or fail with `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What publish calls saw, in call order: (event id, tenant, publishing seq).
pub type PublishLog = Arc<Mutex<Vec<(Uuid, Uuid, i64)>>>;

/// A publish function that records every event it is given and then waits `delay`.
pub fn recording_publish(
    log: PublishLog,
    delay: Duration,
) -> impl for<'b> Fn(&'b [OutboxEvent]) -> BoxFuture<'b, Result<(), String>> + Send + Sync {
    move |evs: &[OutboxEvent]| -> BoxFuture<'_, Result<(), String>> {
        log.lock()
            .unwrap()
            .extend(evs.iter().map(|e| (e.id, e.tenant_id, e.seq)));
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(())
        })
    }
}

/// Event ids that occur more than once.
pub fn duplicates(ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    let mut dup = Vec::new();
    for id in ids {
        if !seen.insert(id) {
            dup.push(id);
        }
    }
    dup
}

/// The ids of one tenant, in the order given.
pub fn of_tenant(log: &[(Uuid, Uuid, i64)], tenant: Uuid) -> Vec<Uuid> {
    log.iter()
        .filter(|(_, t, _)| *t == tenant)
        .map(|(id, _, _)| *id)
        .collect()
}

#[derive(Debug, Clone)]
pub enum Behaviour {
    Succeed,
    /// Fail with `Retry` on attempts `1..=k`, then succeed.
    FailTimes(u32),
    AlwaysRetry,
    Permanent,
    RetryAfter(Duration),
}

/// A consumer that records every call and every success, and can hang on one event (a crash
/// in the middle of handling, when the task is aborted).
pub struct Recorder {
    pub name: String,
    pub behaviour: Behaviour,
    /// Only events of this tenant are recorded as applied (others are accepted and ignored).
    pub tenant: Option<Uuid>,
    pub calls: Mutex<Vec<(Uuid, u32)>>,
    pub applied: Mutex<Vec<(Uuid, u32)>>,
    pub hang_on: Mutex<Option<Uuid>>,
    pub entered: tokio::sync::Notify,
}

impl Recorder {
    pub fn new(name: &str, behaviour: Behaviour) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_string(),
            behaviour,
            tenant: None,
            calls: Mutex::new(Vec::new()),
            applied: Mutex::new(Vec::new()),
            hang_on: Mutex::new(None),
            entered: tokio::sync::Notify::new(),
        })
    }

    pub fn applied_ids(&self) -> Vec<Uuid> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn calls_for(&self, id: Uuid) -> Vec<u32> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Every id applied exactly once, and nothing else applied.
    pub fn assert_applied_once(&self, expected: &[Uuid]) {
        let applied = self.applied_ids();
        let dup = duplicates(applied.iter().copied());
        assert!(dup.is_empty(), "applied more than once: {dup:?}");
        let got: HashSet<Uuid> = applied.into_iter().collect();
        let want: HashSet<Uuid> = expected.iter().copied().collect();
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(missing.is_empty(), "never applied: {missing:?}");
        assert!(extra.is_empty(), "applied but not expected: {extra:?}");
    }
}

#[async_trait]
impl Consumer for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn accepts(&self, _event_type: &str) -> bool {
        true
    }
    async fn handle(&self, event: &CloudEvent, attempt: u32) -> Result<(), HandleError> {
        if self.tenant.is_some_and(|t| t != event.tenantid) {
            return Ok(());
        }
        self.calls.lock().unwrap().push((event.id, attempt));
        let hang = {
            let mut h = self.hang_on.lock().unwrap();
            if *h == Some(event.id) {
                h.take();
                true
            } else {
                false
            }
        };
        if hang {
            self.entered.notify_one();
            std::future::pending::<()>().await;
        }
        let result = match &self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::FailTimes(k) if attempt <= *k => Err(HandleError::Retry(format!(
                "provider down (attempt {attempt})"
            ))),
            Behaviour::FailTimes(_) => Ok(()),
            Behaviour::AlwaysRetry => Err(HandleError::Retry("provider down".into())),
            Behaviour::Permanent => Err(HandleError::Permanent("invalid for us".into())),
            Behaviour::RetryAfter(after) => Err(HandleError::RetryAfter {
                message: "rate limited".into(),
                after: *after,
            }),
        };
        if result.is_ok() {
            self.applied.lock().unwrap().push((event.id, attempt));
        }
        result
    }
}

/// Inbox statuses of a consumer by event id.
pub async fn inbox_status(store: &Arc<dyn Storage>, consumer: &str) -> HashMap<Uuid, String> {
    store
        .inbox_entries(consumer, None, 1000)
        .await
        .expect("inbox entries")
        .into_iter()
        .map(|e| (e.event_id, e.status))
        .collect()
}

/// Gives a publish closure the higher-ranked signature `relay_batch` takes.
pub fn publish_fn<F>(f: F) -> F
where
    F: for<'b> Fn(&'b [OutboxEvent]) -> BoxFuture<'b, Result<(), String>> + Send + Sync,
{
    f
}
