//! Group commit of receipts, on SQLite and (with `SAVDO_TEST_DATABASE_URL`) PostgreSQL.
//!
//! Batches are made deterministic without timing: a second connection holds the lock the
//! writer needs (SQLite's write lock; the store's row on PostgreSQL), so the writer's first
//! receipt waits while the others queue, and the queue's counters say when they are all there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use savdo_domain::Qty;
use savdo_domain::receipt::{PaymentMethod, ReceiptType};
use savdo_storage::backend::group_commit::{GroupCommit, GroupCommitStats};
use savdo_storage::{
    Actor, NewStockDoc, PaymentInput, PgStore, ReceiptInput, ReceiptLineInput, ReceiptOutcome,
    SqliteStore, StockDocKind, StockDocLine, Storage, StorageError,
};
use savdo_testkit::{PG_ENV, PgDb};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::types::Json;
use uuid::Uuid;

const PRICE: i64 = 10_000;

/// For each `async fn name(kind: Kind)`, a module `name` with a `sqlite` and a `postgres` test.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::Kind::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if std::env::var(super::PG_ENV).is_ok_and(|v| !v.trim().is_empty()) {
                        super::$name(super::Kind::Postgres).await;
                    } else {
                        eprintln!("SKIP postgres: {} is not set", super::PG_ENV);
                    }
                }
            }
        )*
    };
}

backend_tests!(
    concurrent_receipts_commit_once_each,
    one_refused_receipt_fails_alone,
    retries_in_one_batch_are_replays,
    tenants_share_a_batch_not_their_data,
    one_receipt_alone_is_written_as_before,
    plain_sales_together_answer_as_one_by_one,
    an_id_stored_by_another_writer_is_answered_as_stored,
    stored_receipts_in_a_batch_are_replays,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Concrete {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

/// A migrated fresh database with group commit set as asked; removed afterwards.
struct Db {
    store: Arc<dyn Storage>,
    concrete: Concrete,
    raw: Raw,
    url: String,
    dir: Option<std::path::PathBuf>,
    drop_pg: Option<PgDb>,
}

impl Db {
    async fn open(kind: Kind, gc: GroupCommit) -> Db {
        match kind {
            Kind::Sqlite => {
                let dir = std::env::temp_dir().join(format!("savdo-gc-{}", Uuid::new_v4()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}", dir.join("savdo.db").display());
                let s = SqliteStore::connect(&url)
                    .await
                    .expect("open sqlite")
                    .with_group_commit(gc);
                s.migrate().await.expect("migrate");
                let raw = sqlx::SqlitePool::connect(&url).await.expect("raw pool");
                Db {
                    store: Arc::new(s.clone()),
                    concrete: Concrete::Sqlite(s),
                    raw: Raw::Sqlite(raw),
                    url,
                    dir: Some(dir),
                    drop_pg: None,
                }
            }
            Kind::Postgres => {
                let admin = std::env::var(PG_ENV).expect("postgres url");
                let pg = PgDb::create_on(admin, "savdo_gc").await;
                let url = pg.url();
                let s = PgStore::connect(&url)
                    .await
                    .expect("open postgres")
                    .with_group_commit(gc);
                s.migrate().await.expect("migrate");
                Db {
                    store: Arc::new(s.clone()),
                    concrete: Concrete::Pg(s),
                    raw: Raw::Pg(sqlx::PgPool::connect(&url).await.expect("raw pool")),
                    url,
                    dir: None,
                    drop_pg: Some(pg),
                }
            }
        }
    }

    fn stats(&self) -> GroupCommitStats {
        match &self.concrete {
            Concrete::Sqlite(s) => s.group_commit_stats(),
            Concrete::Pg(s) => s.group_commit_stats(),
        }
        .expect("group commit is on")
    }

    /// Hold what the writer's next transaction needs, until [`Lock::release`].
    async fn lock(&self, store_id: Uuid) -> Lock {
        match &self.raw {
            Raw::Sqlite(_) => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .expect("write lock");
                Lock::Sqlite(c)
            }
            Raw::Pg(_) => {
                let mut c = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN").execute(&mut c).await.expect("begin");
                sqlx::query("SELECT id FROM stores WHERE id = $1 FOR UPDATE")
                    .bind(store_id)
                    .fetch_one(&mut c)
                    .await
                    .expect("row lock");
                Lock::Pg(c)
            }
        }
    }

    /// (receipt id, event type) of every receipt event of a tenant.
    async fn receipt_events(&self, tenant: Uuid) -> Vec<(Uuid, String)> {
        let sql = "SELECT type, data FROM outbox WHERE tenant_id = $1 AND type LIKE 'receipt.%' ORDER BY seq";
        let rows: Vec<(String, Json<Value>)> = match &self.raw {
            Raw::Sqlite(p) => sqlx::query_as(sql).bind(tenant).fetch_all(p).await,
            Raw::Pg(p) => sqlx::query_as(sql).bind(tenant).fetch_all(p).await,
        }
        .expect("read outbox");
        rows.into_iter()
            .map(|(t, d)| {
                let id = d.0["id"].as_str().and_then(|s| s.parse().ok());
                (id.expect("receipt id in the event"), t)
            })
            .collect()
    }

    /// Receipt rows of a tenant, by id.
    async fn receipt_rows(&self, tenant: Uuid) -> HashMap<Uuid, i64> {
        let sql = "SELECT id, COUNT(*) FROM receipts WHERE tenant_id = $1 GROUP BY id";
        let rows: Vec<(Uuid, i64)> = match &self.raw {
            Raw::Sqlite(p) => sqlx::query_as(sql).bind(tenant).fetch_all(p).await,
            Raw::Pg(p) => sqlx::query_as(sql).bind(tenant).fetch_all(p).await,
        }
        .expect("read receipts");
        rows.into_iter().collect()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(pg) = self.drop_pg.take() {
            pg.drop_db_blocking();
        }
    }
}

enum Lock {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Lock {
    /// Commit what was written through the lock's connection, releasing it.
    async fn commit(self) {
        match self {
            Lock::Sqlite(mut c) => sqlx::raw_sql("COMMIT").execute(&mut c).await.map(drop),
            Lock::Pg(mut c) => sqlx::raw_sql("COMMIT").execute(&mut c).await.map(drop),
        }
        .expect("commit");
    }

    /// Store a receipt row through the lock's connection (another writer's).
    async fn insert_receipt(&mut self, tenant: Uuid, r: &savdo_storage::Receipt, hash: &str) {
        let sql = "INSERT INTO receipts (tenant_id, id, number, kind, refund_of, store_id, terminal_id, total, request_hash, doc, sold_at, created_at) \
                   VALUES ($1, $2, $3, 'sale', NULL, $4, $5, $6, $7, $8, $9, $9)";
        macro_rules! run {
            ($c:expr) => {
                sqlx::query(sql)
                    .bind(tenant)
                    .bind(r.id)
                    .bind(r.number)
                    .bind(r.store_id)
                    .bind(r.terminal_id)
                    .bind(r.total)
                    .bind(hash)
                    .bind(Json(r))
                    .bind(r.created_at.timestamp_micros())
                    .execute($c)
                    .await
                    .map(drop)
            };
        }
        match self {
            Lock::Sqlite(c) => run!(&mut *c),
            Lock::Pg(c) => run!(&mut *c),
        }
        .expect("insert a receipt");
    }

    async fn release(self) {
        match self {
            Lock::Sqlite(mut c) => sqlx::raw_sql("ROLLBACK").execute(&mut c).await.map(drop),
            Lock::Pg(mut c) => sqlx::raw_sql("ROLLBACK").execute(&mut c).await.map(drop),
        }
        .expect("release");
    }
}

/// Wait until `cond` holds; a hang guard, not a timing assertion.
async fn until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// A tenant with a store, a terminal and `n` products with `stock` units each.
struct Shop {
    actor: Actor,
    store_id: Uuid,
    terminal_id: Uuid,
    products: Vec<Uuid>,
}

async fn shop(store: &Arc<dyn Storage>, name: &str, n: usize, stock: i64) -> Shop {
    let t = store.create_tenant(name).await.expect("tenant");
    let actor = Actor::system(t.id);
    let s = store
        .create_store(&actor, "Chilonzor", None)
        .await
        .expect("store");
    let term = store
        .create_terminal(&actor, s.id, "Till 1")
        .await
        .expect("terminal");
    let mut products = Vec::new();
    for i in 0..n {
        let p = store
            .create_product(
                &actor,
                &savdo_testkit::product_fields(&format!("SKU-{i}"), &format!("Product {i}"), PRICE),
            )
            .await
            .expect("product");
        products.push(p.id);
    }
    store
        .create_stock_doc(
            &actor,
            &NewStockDoc {
                kind: StockDocKind::Supply,
                store_id: s.id,
                to_store_id: None,
                note: None,
                lines: products
                    .iter()
                    .map(|&product_id| StockDocLine {
                        product_id,
                        qty: Qty::units(stock),
                        cost: None,
                    })
                    .collect(),
            },
        )
        .await
        .expect("supply");
    Shop {
        actor,
        store_id: s.id,
        terminal_id: term.id,
        products,
    }
}

/// A cash sale of `(product, units)` lines, with a loyalty record.
fn sale(shop: &Shop, lines: &[(Uuid, i64)]) -> ReceiptInput {
    ReceiptInput {
        id: Uuid::now_v7(),
        kind: ReceiptType::Sale,
        refund_of: None,
        store_id: shop.store_id,
        terminal_id: shop.terminal_id,
        customer_id: None,
        lines: lines
            .iter()
            .map(|&(product_id, units)| ReceiptLineInput {
                product_id,
                qty: Qty::units(units),
                price: None,
                discount: None,
                marking_codes: Vec::new(),
            })
            .collect(),
        payments: vec![PaymentInput {
            method: PaymentMethod::Cash,
            amount: lines.iter().map(|(_, u)| u * PRICE).sum(),
            payment_id: None,
        }],
        sold_at: None,
        fiscal: None,
        note: None,
        loyalty: Some(json!({"card": "JC-1", "points": 12})),
    }
}

type Answer = tokio::task::JoinHandle<Result<ReceiptOutcome, StorageError>>;

fn submit(db: &Db, actor: &Actor, input: &ReceiptInput, hash: &str) -> Answer {
    let (store, actor, input, hash) = (
        db.store.clone(),
        actor.clone(),
        input.clone(),
        hash.to_owned(),
    );
    tokio::spawn(async move { store.submit_receipt(&actor, &input, &hash).await })
}

/// Submit one at a time into the queue, so the batch keeps this order.
async fn submit_in_order(db: &Db, items: Vec<(Actor, ReceiptInput, String)>) -> Vec<Answer> {
    let mut out = Vec::new();
    for (actor, input, hash) in items {
        let before = db.stats().queued;
        out.push(submit(db, &actor, &input, &hash));
        until("the receipt is queued", || db.stats().queued > before).await;
    }
    out
}

/// Hold the lock, put a first receipt into the writer (where it waits), queue `items` in order,
/// release: `items` are then written as one batch. Returns the first answer and the items'.
async fn one_batch(
    db: &Db,
    first: (&Shop, ReceiptInput),
    items: Vec<(Actor, ReceiptInput, String)>,
) -> (
    Result<ReceiptOutcome, StorageError>,
    Vec<Result<ReceiptOutcome, StorageError>>,
) {
    let before = db.stats();
    let lock = db.lock(first.0.store_id).await;
    let head = submit(db, &first.0.actor, &first.1, "first");
    until("the first receipt is in the writer", || {
        let s = db.stats();
        s.batches == before.batches + 1 && s.queued == 0
    })
    .await;
    let n = items.len() as u64;
    let answers = submit_in_order(db, items).await;
    lock.release().await;
    let head = head.await.expect("task");
    let mut out = Vec::new();
    for a in answers {
        out.push(a.await.expect("task"));
    }
    let after = db.stats();
    assert_eq!(
        after.batches,
        before.batches + 2,
        "the first alone, then one batch"
    );
    assert_eq!(after.largest_batch, before.largest_batch.max(n));
    (head, out)
}

fn created(r: &Result<ReceiptOutcome, StorageError>) -> &savdo_storage::Receipt {
    match r {
        Ok(ReceiptOutcome::Created(r)) => r,
        other => panic!("expected a created receipt, got {other:?}"),
    }
}

/// Every stock level of the store equals the sum of its movements.
async fn stock_matches_movements(store: &Arc<dyn Storage>, shop: &Shop) -> BTreeMap<Uuid, i64> {
    let tenant = shop.actor.tenant_id;
    let mut sums: BTreeMap<Uuid, i64> = BTreeMap::new();
    for m in store
        .movements(tenant, Some(shop.store_id), None)
        .await
        .expect("movements")
    {
        *sums.entry(m.product_id).or_default() += m.delta.milli();
    }
    let levels = store
        .stock(tenant, Some(shop.store_id), None)
        .await
        .expect("stock");
    for l in &levels {
        assert_eq!(
            l.on_hand.milli(),
            sums.get(&l.product_id).copied().unwrap_or(0),
            "stock of {} = sum of its movements",
            l.product_id
        );
    }
    levels
        .iter()
        .map(|l| (l.product_id, l.on_hand.milli()))
        .collect()
}

// ---------------------------------------------------------------------------------------------

async fn concurrent_receipts_commit_once_each(kind: Kind) {
    let db = Db::open(kind, GroupCommit::ON).await;
    let shop = shop(&db.store, "Many tills", 5, 1000).await;
    let inputs: Vec<ReceiptInput> = (0..64)
        .map(|i| {
            let p = &shop.products;
            sale(
                &shop,
                &[(p[i % 5], 1), (p[(i + 1) % 5], 2), (p[(i + 2) % 5], 1)],
            )
        })
        .collect();
    // The writer's first transaction waits on the lock while the rest queue behind it.
    let lock = db.lock(shop.store_id).await;
    let answers: Vec<Answer> = inputs
        .iter()
        .map(|r| submit(&db, &shop.actor, r, &format!("h-{}", r.id)))
        .collect();
    until("every receipt is taken or queued", || {
        let s = db.stats();
        s.batches == 1 && s.receipts + s.queued == 64
    })
    .await;
    lock.release().await;
    let mut numbers = Vec::new();
    for a in answers {
        let r = created(&a.await.expect("task")).clone();
        assert_eq!(r.loyalty, Some(json!({"card": "JC-1", "points": 12})));
        numbers.push(r.number);
    }
    let s = db.stats();
    assert_eq!(s.receipts, 64);
    assert!(s.largest_batch > 1, "receipts were batched: {s:?}");
    assert!(s.largest_batch <= 32, "no batch above the cap: {s:?}");
    assert!(s.plain > 0, "plain sales took the fast path: {s:?}");
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 64, "each receipt its own number");

    let tenant = shop.actor.tenant_id;
    let rows = db.receipt_rows(tenant).await;
    assert_eq!(rows.len(), 64);
    for r in &inputs {
        assert_eq!(rows.get(&r.id), Some(&1), "stored once");
        let stored = db.store.get_receipt(tenant, r.id).await.expect("stored");
        assert_eq!(stored.loyalty, Some(json!({"card": "JC-1", "points": 12})));
    }
    let events = db.receipt_events(tenant).await;
    assert_eq!(events.len(), 64);
    for r in &inputs {
        let n = events
            .iter()
            .filter(|(id, t)| *id == r.id && t == "receipt.created")
            .count();
        assert_eq!(n, 1, "one receipt.created for {}", r.id);
    }
    let levels = stock_matches_movements(&db.store, &shop).await;
    let sold: i64 = inputs
        .iter()
        .flat_map(|r| r.lines.iter().map(|l| l.qty.milli()))
        .sum();
    assert_eq!(levels.values().sum::<i64>(), 5 * 1_000_000 - sold);
}

async fn one_refused_receipt_fails_alone(kind: Kind) {
    // The same receipts, one transaction each, without group commit: what "before" answers.
    let expected = {
        let db = Db::open(kind, GroupCommit::OFF).await;
        let shop = shop(&db.store, "Strict", 3, 5).await;
        db.store
            .update_settings(&shop.actor, &json!({"forbid_negative_stock": true}))
            .await
            .expect("settings");
        let p = &shop.products;
        let mut errors = Vec::new();
        for lines in [vec![(p[0], 3)], vec![(p[1], 1), (p[0], 3)], vec![(p[2], 2)]] {
            errors.push(
                db.store
                    .submit_receipt(&shop.actor, &sale(&shop, &lines), "h")
                    .await
                    .err()
                    .map(|e| format!("{e:?}")),
            );
        }
        errors
    };
    assert!(expected[0].is_none() && expected[1].is_some() && expected[2].is_none());

    let db = Db::open(kind, GroupCommit::ON).await;
    let shop = shop(&db.store, "Strict", 3, 5).await;
    db.store
        .update_settings(&shop.actor, &json!({"forbid_negative_stock": true}))
        .await
        .expect("settings");
    let p = shop.products.clone();
    let first = sale(&shop, &[(p[2], 1)]);
    let batch = [
        sale(&shop, &[(p[0], 3)]),
        // Line 2 takes 3 of the 2 left after the receipt before it in the same batch.
        sale(&shop, &[(p[1], 1), (p[0], 3)]),
        sale(&shop, &[(p[2], 2)]),
    ];
    let items = batch
        .iter()
        .map(|r| (shop.actor.clone(), r.clone(), "h".to_string()))
        .collect();
    let (head, answers) = one_batch(&db, (&shop, first.clone()), items).await;
    created(&head);
    created(&answers[0]);
    created(&answers[2]);
    let got = answers[1].as_ref().err().map(|e| format!("{e:?}"));
    assert_eq!(got, expected[1], "the same problem as without group commit");
    match &answers[1] {
        Err(StorageError::Invalid(f)) => assert_eq!(f[0].field, "lines[1].qty"),
        other => panic!("expected a field problem, got {other:?}"),
    }

    let tenant = shop.actor.tenant_id;
    let rows = db.receipt_rows(tenant).await;
    assert_eq!(rows.len(), 3, "the refused receipt left nothing");
    assert!(!rows.contains_key(&batch[1].id));
    let events = db.receipt_events(tenant).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|(id, _)| *id != batch[1].id));
    let levels = stock_matches_movements(&db.store, &shop).await;
    assert_eq!(
        levels[&p[0]], 2000,
        "only the committed sale of product 0 counts"
    );
    assert_eq!(
        levels[&p[1]], 5000,
        "the refused receipt's first line was undone"
    );
    assert_eq!(levels[&p[2]], 2000);
    // Receipt numbers: the refused one took none.
    let mut numbers: Vec<i64> = [&head, &answers[0], &answers[2]]
        .iter()
        .map(|a| created(a).number)
        .collect();
    numbers.sort();
    assert_eq!(numbers, vec![numbers[0], numbers[0] + 1, numbers[0] + 2]);
}

async fn retries_in_one_batch_are_replays(kind: Kind) {
    let db = Db::open(kind, GroupCommit::ON).await;
    let shop = shop(&db.store, "Retries", 2, 100).await;
    let p = shop.products.clone();
    let first = sale(&shop, &[(p[1], 1)]);
    let r = sale(&shop, &[(p[0], 2), (p[1], 1)]);
    let other = sale(&shop, &[(p[0], 1)]);
    let mut changed = r.clone();
    changed.note = Some("another content, same id".into());
    let a = shop.actor.clone();
    let items = vec![
        (a.clone(), r.clone(), "h-r".to_string()),
        (a.clone(), r.clone(), "h-r".to_string()),
        (a.clone(), other.clone(), "h-o".to_string()),
        (a.clone(), changed, "h-changed".to_string()),
        (a.clone(), r.clone(), "h-r".to_string()),
    ];
    let (head, answers) = one_batch(&db, (&shop, first), items).await;
    created(&head);
    let stored = created(&answers[0]).clone();
    for i in [1, 4] {
        match &answers[i] {
            Ok(ReceiptOutcome::Replayed(x)) => {
                assert_eq!(x.id, stored.id);
                assert_eq!(x.number, stored.number);
            }
            other => panic!("retry {i}: expected a replay, got {other:?}"),
        }
    }
    created(&answers[2]);
    match &answers[3] {
        Err(StorageError::Conflict { field, .. }) => assert_eq!(field.as_deref(), Some("id")),
        other => panic!("expected a conflict on id, got {other:?}"),
    }
    // After the batch, a retry is a replay from the database, as always.
    match db.store.submit_receipt(&shop.actor, &r, "h-r").await {
        Ok(ReceiptOutcome::Replayed(x)) => assert_eq!(x.number, stored.number),
        other => panic!("expected a replay, got {other:?}"),
    }

    let tenant = shop.actor.tenant_id;
    let rows = db.receipt_rows(tenant).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.get(&r.id), Some(&1));
    let events = db.receipt_events(tenant).await;
    assert_eq!(events.iter().filter(|(id, _)| *id == r.id).count(), 1);
    let moves = db
        .store
        .movements(tenant, Some(shop.store_id), None)
        .await
        .expect("movements");
    assert_eq!(moves.iter().filter(|m| m.doc_id == r.id).count(), 2);
    let levels = stock_matches_movements(&db.store, &shop).await;
    assert_eq!(levels[&p[0]], 97_000);
    assert_eq!(levels[&p[1]], 98_000);
}

async fn tenants_share_a_batch_not_their_data(kind: Kind) {
    let db = Db::open(kind, GroupCommit::ON).await;
    let a = shop(&db.store, "Shop A", 1, 10).await;
    let b = shop(&db.store, "Shop B", 1, 10).await;
    let ra = sale(&a, &[(a.products[0], 1)]);
    // The same client id at another tenant is another receipt.
    let mut rb = sale(&b, &[(b.products[0], 2)]);
    rb.id = ra.id;
    // A receipt of tenant B naming tenant A's store and product is refused.
    let cross = sale(&a, &[(a.products[0], 1)]);
    let items = vec![
        (a.actor.clone(), ra.clone(), "h".to_string()),
        (b.actor.clone(), rb.clone(), "h".to_string()),
        (b.actor.clone(), cross.clone(), "h".to_string()),
    ];
    let (_, answers) = one_batch(&db, (&a, sale(&a, &[(a.products[0], 1)])), items).await;
    assert_eq!(created(&answers[0]).total, PRICE);
    assert_eq!(created(&answers[1]).total, 2 * PRICE);
    assert!(
        matches!(&answers[2], Err(StorageError::Invalid(_))),
        "{:?}",
        answers[2]
    );
    let ga = db
        .store
        .get_receipt(a.actor.tenant_id, ra.id)
        .await
        .unwrap();
    let gb = db
        .store
        .get_receipt(b.actor.tenant_id, ra.id)
        .await
        .unwrap();
    assert_eq!((ga.total, gb.total), (PRICE, 2 * PRICE));
    assert_eq!(db.receipt_rows(a.actor.tenant_id).await.len(), 2);
    assert_eq!(db.receipt_rows(b.actor.tenant_id).await.len(), 1);
    assert_eq!(
        stock_matches_movements(&db.store, &a).await[&a.products[0]],
        8000
    );
    assert_eq!(
        stock_matches_movements(&db.store, &b).await[&b.products[0]],
        8000
    );
}

async fn one_receipt_alone_is_written_as_before(kind: Kind) {
    let db = Db::open(kind, GroupCommit::ON).await;
    let shop = shop(&db.store, "Quiet", 1, 10).await;
    let mut numbers = Vec::new();
    for _ in 0..3 {
        let r = sale(&shop, &[(shop.products[0], 1)]);
        let got = db.store.submit_receipt(&shop.actor, &r, "h").await;
        numbers.push(created(&got).number);
        // A retry after the answer is a replay (the writer looks it up: a batch of one).
        let again = db.store.submit_receipt(&shop.actor, &r, "h").await;
        assert!(matches!(again, Ok(ReceiptOutcome::Replayed(_))));
    }
    let s = db.stats();
    assert_eq!((s.batches, s.receipts, s.largest_batch), (6, 6, 1), "{s:?}");
    assert_eq!(numbers, vec![numbers[0], numbers[0] + 1, numbers[0] + 2]);
    let levels = stock_matches_movements(&db.store, &shop).await;
    assert_eq!(levels[&shop.products[0]], 7000);
}

/// (receipt id, event type, [(product, on hand)]) per receipt event.
type Trail<P> = Vec<(Uuid, String, Vec<(P, i64)>)>;

/// Each receipt event of a tenant in outbox order, with the `stock.changed` events that follow
/// it: (receipt id, type, [(product, on hand)]).
async fn receipt_trail(db: &Db, tenant: Uuid) -> Trail<Uuid> {
    let sql = "SELECT type, data FROM outbox WHERE tenant_id = $1 AND (type LIKE 'receipt.%' OR type = 'stock.changed') ORDER BY seq";
    let rows: Vec<(String, Json<Value>)> = match &db.raw {
        Raw::Sqlite(p) => sqlx::query_as(sql).bind(tenant).fetch_all(p).await,
        Raw::Pg(p) => sqlx::query_as(sql).bind(tenant).fetch_all(p).await,
    }
    .expect("read outbox");
    let mut trail: Trail<Uuid> = Vec::new();
    for (kind, data) in rows {
        let id = |k: &str| data.0[k].as_str().and_then(|s| s.parse::<Uuid>().ok());
        if kind == "stock.changed" {
            // Stock documents before the first receipt (the supply) have no receipt to follow.
            if let Some(last) = trail.last_mut() {
                let on_hand = data.0["on_hand"].as_f64().expect("on_hand") * 1000.0;
                last.2
                    .push((id("product_id").expect("product"), on_hand.round() as i64));
            }
        } else {
            trail.push((id("id").expect("receipt id"), kind, Vec::new()));
        }
    }
    trail
}

async fn plain_sales_together_answer_as_one_by_one(kind: Kind) {
    // The same receipts on a database without group commit, then in one batch with it: the
    // same answers, and each receipt's events carry the levels right after it.
    async fn run(kind: Kind, gc: GroupCommit) -> (Db, Vec<String>, Trail<usize>) {
        let db = Db::open(kind, gc).await;
        let shop = shop(&db.store, "Bozor", 4, 10).await;
        let tenant = shop.actor.tenant_id;
        let customer = db
            .store
            .create_customer(
                &shop.actor,
                &savdo_storage::CustomerFields {
                    name: "Dilnoza".into(),
                    phone: None,
                    loyalty_card: None,
                    external_ids: Default::default(),
                },
            )
            .await
            .expect("customer");
        let p = shop.products.clone();
        let head = sale(&shop, &[(p[3], 2)]);
        let mut with_customer = sale(&shop, &[(p[1], 1)]);
        with_customer.customer_id = Some(customer.id);
        let mut unknown_customer = sale(&shop, &[(p[0], 1)]);
        unknown_customer.customer_id = Some(Uuid::now_v7());
        let mut refund = sale(&shop, &[(p[3], 1)]);
        refund.kind = ReceiptType::Refund;
        refund.refund_of = Some(head.id);
        let unknown_product = sale(&shop, &[(p[0], 1), (Uuid::now_v7(), 1)]);
        let mut bound = shop.actor.clone();
        bound.store_id = Some(Uuid::now_v7());
        let mut underpaid = sale(&shop, &[(p[2], 1)]);
        underpaid.payments[0].amount -= 1;
        let items = vec![
            (shop.actor.clone(), sale(&shop, &[(p[0], 2), (p[1], 1)])),
            (shop.actor.clone(), with_customer),
            (shop.actor.clone(), unknown_customer),
            (shop.actor.clone(), refund),
            // The same product on two lines.
            (
                shop.actor.clone(),
                sale(&shop, &[(p[0], 1), (p[2], 3), (p[0], 2)]),
            ),
            (shop.actor.clone(), unknown_product),
            (bound, sale(&shop, &[(p[0], 1)])),
            (shop.actor.clone(), underpaid),
            (shop.actor.clone(), sale(&shop, &[(p[2], 1)])),
        ];
        let answers = if gc.enabled() {
            let items = items
                .into_iter()
                .map(|(a, r)| (a, r, "h".to_string()))
                .collect();
            let (head, answers) = one_batch(&db, (&shop, head), items).await;
            created(&head);
            answers
        } else {
            created(&db.store.submit_receipt(&shop.actor, &head, "h").await);
            let mut answers = Vec::new();
            for (a, r) in &items {
                answers.push(db.store.submit_receipt(a, r, "h").await);
            }
            answers
        };
        let shape = answers
            .iter()
            .map(|a| match a {
                Ok(ReceiptOutcome::Created(r)) => {
                    format!("created {} lines, total {}", r.lines.len(), r.total)
                }
                Ok(ReceiptOutcome::Replayed(_)) => "replayed".into(),
                Err(e) => format!("{e:?}"),
            })
            .collect();
        let index = |id: Uuid| p.iter().position(|&x| x == id).expect("a shop product");
        let trail = receipt_trail(&db, tenant)
            .await
            .into_iter()
            .map(|(id, kind, levels)| {
                (
                    id,
                    kind,
                    levels.into_iter().map(|(pr, q)| (index(pr), q)).collect(),
                )
            })
            .collect();
        stock_matches_movements(&db.store, &shop).await;
        (db, shape, trail)
    }
    let (_, expected_shape, expected_trail) = run(kind, GroupCommit::OFF).await;
    let (db, shape, trail) = run(kind, GroupCommit::ON).await;
    assert_eq!(shape, expected_shape, "the same answers");
    assert_eq!(shape.iter().filter(|s| s.starts_with("created")).count(), 5);
    assert!(
        shape[2].contains("customer_id") && shape[5].contains("lines[1].product_id"),
        "{shape:?}"
    );
    assert!(
        shape[6].contains("store_id") && shape[7].contains("payments"),
        "{shape:?}"
    );
    assert_eq!(
        db.stats().plain,
        4,
        "the four good plain sales went together"
    );
    // Event trails: the refund (one by one) comes after the plain sales here; it touches only
    // product 3, which they do not, so each receipt's levels are the same either way.
    let by_kind = |t: &Trail<usize>| -> Vec<(String, Vec<(usize, i64)>)> {
        let mut v: Vec<_> = t.iter().map(|(_, k, l)| (k.clone(), l.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(trail.len(), expected_trail.len());
    assert_eq!(by_kind(&trail), by_kind(&expected_trail));
    // Within the plain sales, batch order: product 0 goes 10 -> 8 -> 5 units.
    let p0: Vec<i64> = trail
        .iter()
        .flat_map(|(_, _, l)| l.iter().filter(|(p, _)| *p == 0).map(|(_, q)| *q))
        .collect();
    assert_eq!(p0, vec![8000, 5000]);
}

async fn an_id_stored_by_another_writer_is_answered_as_stored(kind: Kind) {
    let db = Db::open(kind, GroupCommit::ON).await;
    let shop = shop(&db.store, "Race", 2, 100).await;
    let tenant = shop.actor.tenant_id;
    let p = shop.products.clone();
    let earlier = created(
        &db.store
            .submit_receipt(&shop.actor, &sale(&shop, &[(p[1], 1)]), "h-0")
            .await,
    )
    .clone();
    let items: Vec<ReceiptInput> = (0..3).map(|_| sale(&shop, &[(p[0], 1)])).collect();
    let raced = items[1].id;

    let before = db.stats();
    let mut lock = db.lock(shop.store_id).await;
    let head = submit(&db, &shop.actor, &sale(&shop, &[(p[1], 1)]), "h");
    until("the first receipt is in the writer", || {
        let s = db.stats();
        s.batches == before.batches + 1 && s.queued == 0
    })
    .await;
    let answers = submit_in_order(
        &db,
        items
            .iter()
            .map(|r| (shop.actor.clone(), r.clone(), format!("h-{}", r.id)))
            .collect(),
    )
    .await;
    // Another writer (a retry in another process) stores the second id before the batch runs.
    let mut theirs = earlier.clone();
    theirs.id = raced;
    theirs.number = 1_000_000;
    lock.insert_receipt(tenant, &theirs, &format!("h-{raced}"))
        .await;
    lock.commit().await;
    created(&head.await.expect("task"));
    let mut got = Vec::new();
    for a in answers {
        got.push(a.await.expect("task"));
    }
    created(&got[0]);
    match &got[1] {
        Ok(ReceiptOutcome::Replayed(r)) => assert_eq!(
            r.number, 1_000_000,
            "answered as the other writer stored it"
        ),
        other => panic!("expected a replay, got {other:?}"),
    }
    created(&got[2]);
    assert_eq!(
        db.stats().plain,
        before.plain + 2,
        "the others went together"
    );
    let rows = db.receipt_rows(tenant).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.values().all(|&n| n == 1));
    let moves = db
        .store
        .movements(tenant, Some(shop.store_id), None)
        .await
        .expect("movements");
    assert_eq!(
        moves.iter().filter(|m| m.doc_id == raced).count(),
        0,
        "the raced receipt moved no stock"
    );
    assert_eq!(
        stock_matches_movements(&db.store, &shop).await[&p[0]],
        98_000
    );
}

async fn stored_receipts_in_a_batch_are_replays(kind: Kind) {
    let db = Db::open(kind, GroupCommit::ON).await;
    let shop = shop(&db.store, "Retry later", 2, 100).await;
    let p = shop.products.clone();
    let a = shop.actor.clone();
    let r0 = sale(&shop, &[(p[0], 1)]);
    let r1 = sale(&shop, &[(p[1], 1)]);
    let n0 = created(&db.store.submit_receipt(&a, &r0, "h-0").await).number;
    created(&db.store.submit_receipt(&a, &r1, "h-1").await);
    // Stock changed since: a retry is still answered as stored, not checked again.
    db.store
        .update_settings(&a, &json!({"forbid_negative_stock": true}))
        .await
        .expect("settings");
    let items = vec![
        (a.clone(), sale(&shop, &[(p[0], 2)]), "h-a".to_string()),
        (a.clone(), r0.clone(), "h-0".to_string()),
        (a.clone(), r1.clone(), "h-other".to_string()),
        (a.clone(), sale(&shop, &[(p[1], 3)]), "h-b".to_string()),
    ];
    let before = db.stats();
    let (_, answers) = one_batch(&db, (&shop, sale(&shop, &[(p[0], 1)])), items).await;
    created(&answers[0]);
    match &answers[1] {
        Ok(ReceiptOutcome::Replayed(r)) => assert_eq!((r.id, r.number), (r0.id, n0)),
        other => panic!("expected a replay, got {other:?}"),
    }
    match &answers[2] {
        Err(StorageError::Conflict { field, .. }) => assert_eq!(field.as_deref(), Some("id")),
        other => panic!("expected a conflict on id, got {other:?}"),
    }
    created(&answers[3]);
    assert_eq!(
        db.stats().plain,
        before.plain + 2,
        "the new sales went together"
    );
    let tenant = a.tenant_id;
    let rows = db.receipt_rows(tenant).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.values().all(|&n| n == 1));
    let events = db.receipt_events(tenant).await;
    assert_eq!(events.iter().filter(|(id, _)| *id == r0.id).count(), 1);
    let levels = stock_matches_movements(&db.store, &shop).await;
    assert_eq!(levels[&p[0]], 96_000);
    assert_eq!(levels[&p[1]], 96_000);
}

fn accept(
    _: &[savdo_storage::OutboxEvent],
) -> futures_core::future::BoxFuture<'_, Result<(), String>> {
    Box::pin(async { Ok(()) })
}

/// Ids of the events published so far, in publishing order, with their publishing sequence.
async fn published(store: &Arc<dyn Storage>) -> Vec<(i64, Uuid)> {
    store
        .published_after(0, 10_000)
        .await
        .expect("published")
        .into_iter()
        .map(|e| (e.seq, e.id))
        .collect()
}

/// SQLite: the relay's numbering does not take the writer for a transaction of its own; it
/// waits in the receipt queue and is written in the writer's next transaction, beside the
/// receipts queued with it, and answered after that commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_relay_numbering_rides_in_the_receipt_writer() {
    let db = Db::open(Kind::Sqlite, GroupCommit::ON).await;
    let shop = shop(&db.store, "Relay", 2, 100).await;
    let setup = db.store.outbox_backlog().await.expect("backlog");
    assert!(setup > 0, "the setup wrote events");

    let before = db.stats();
    let lock = db.lock(shop.store_id).await;
    let head = submit(
        &db,
        &shop.actor,
        &sale(&shop, &[(shop.products[0], 1)]),
        "h",
    );
    until("the first receipt is in the writer", || {
        let s = db.stats();
        s.batches == before.batches + 1 && s.queued == 0
    })
    .await;
    // The relay reads and publishes what is committed; its numbering waits for the writer,
    // which waits for the lock.
    let store = db.store.clone();
    let relay = tokio::spawn(async move { store.relay(1024, &accept).await });
    let queued: Vec<(Actor, ReceiptInput, String)> = (0..3)
        .map(|_| {
            let r = sale(&shop, &[(shop.products[1], 1)]);
            (shop.actor.clone(), r, "h".to_owned())
        })
        .collect();
    let answers = submit_in_order(&db, queued).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!relay.is_finished(), "numbering waits for the writer");
    assert_eq!(db.stats().numberings, before.numberings);
    lock.release().await;

    created(&head.await.expect("task"));
    for a in answers {
        created(&a.await.expect("task"));
    }
    let relayed = relay.await.expect("task").expect("relay");
    assert_eq!(relayed.published as i64, setup);
    let s = db.stats();
    assert_eq!(s.numberings, before.numberings + 1, "{s:?}");
    assert_eq!(
        s.batches,
        before.batches + 2,
        "a numbering is not a batch of its own when receipts wait with it"
    );
    // The setup's events, numbered 1.. in outbox order, exactly as the relay answered.
    let numbered: Vec<(i64, Uuid)> = relayed.numbered.iter().map(|e| (e.seq, e.id)).collect();
    assert_eq!(published(&db.store).await, numbered);
    assert_eq!(
        numbered.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        (1..=setup).collect::<Vec<_>>()
    );

    // The receipts' events go next, once each, after the setup's.
    let waiting = db.store.outbox_backlog().await.expect("backlog");
    assert!(
        waiting >= 4 * 2,
        "four receipts, a receipt event and a stock event each"
    );
    let next = db.store.relay(1024, &accept).await.expect("relay");
    assert_eq!(next.published as i64, waiting);
    let all = published(&db.store).await;
    let ids: std::collections::HashSet<Uuid> = all.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), all.len(), "no event published twice");
    assert_eq!(db.store.outbox_backlog().await.expect("backlog"), 0);
}
