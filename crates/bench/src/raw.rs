//! The raw limit: the database work of `submit_receipt` (its writes, in its transaction shape)
//! executed directly with sqlx, without HTTP, JSON parsing, validation or the reads that
//! validation makes. What the API reaches is compared with this, measured in the same run.
//!
//! Per receipt, as in `write_receipt` (storage `backend/shared.rs`): take the store's receipt
//! number, insert the receipt row with its JSON document, the lines (one multi-row `INSERT`), the
//! stock levels (one multi-row upsert), the movements (one multi-row `INSERT`), the
//! `receipt.created` outbox row, the marking code (marked line only) and the `stock.changed`
//! outbox rows (one multi-row `INSERT`); commit.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use crate::setup::{Fixture, Keys, marking_code};
use crate::stats::{Latency, histogram, record};

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawConfig {
    pub concurrency: usize,
    pub per_tx: usize,
    pub keys: Keys,
    pub marked: bool,
    #[serde(skip)]
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    pub label: String,
    pub concurrency: usize,
    pub receipts_per_tx: usize,
    pub keys: Keys,
    pub receipts: u64,
    pub seconds: f64,
    pub receipts_per_s: f64,
    /// Per transaction, commit included.
    pub tx_latency: Latency,
    pub errors: u64,
}

impl RawResult {
    pub fn line(&self) -> String {
        format!(
            "raw {:<24} {:>8.0} receipts/s  ({} receipts in {:.1} s, {} errors; tx {})",
            self.label,
            self.receipts_per_s,
            self.receipts,
            self.seconds,
            self.errors,
            self.tx_latency.line()
        )
    }
}

/// A tiny deterministic generator: which products a receipt takes.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// `k` distinct indices below `n` (k ≤ n).
    pub fn distinct(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k.min(n) {
            let i = (self.next() % n as u64) as usize;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

/// What one raw receipt writes.
struct RawReceipt {
    id: Uuid,
    lines: Vec<(Uuid, i64, i64)>,      // product, qty (milli), amount
    marking: Option<(String, String)>, // label, code
    doc: Value,
    total: i64,
}

fn build_receipt(fx: &Fixture, keys: Keys, rng: &mut Rng, marked: bool, serial: u64) -> RawReceipt {
    let id = keys.new_id();
    let picks = rng.distinct(5, fx.plain_products.len());
    let mut lines: Vec<(Uuid, i64, i64)> = picks
        .iter()
        .map(|&i| {
            let p = &fx.plain_products[i];
            (p.id, 1000, p.price)
        })
        .collect();
    let mut marking = None;
    if marked && let Some(m) = &fx.marked_product {
        lines[4] = (m.id, 1000, m.price);
        let code = marking_code(serial);
        marking = Some((
            format!("{}{}", crate::setup::MARKED_GTIN, serial_of(serial)),
            code,
        ));
    }
    let total = lines.iter().map(|l| l.2).sum();
    let doc_lines: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, (p, q, a))| {
            json!({"line_no": i + 1, "product_id": p, "sku": format!("SKU-{i}"), "name": "Mahsulot",
                   "qty": *q as f64 / 1000.0, "price": a, "discount": 0, "amount": a, "vat_percent": 12,
                   "vat_amount": a * 12 / 112, "mxik": "10202001001000000", "package_code": "1508583",
                   "unit": 1, "marking_codes": []})
        })
        .collect();
    let doc = json!({
        "id": id, "number": 0, "type": "sale", "refund_of": null, "store_id": fx.store_id,
        "terminal_id": fx.terminal_ids[0], "shift_id": null, "cashier_token_id": null, "customer_id": null,
        "lines": doc_lines, "payments": [{"method": "cash", "amount": total, "payment_id": null}],
        "total": total, "vat_total": total * 12 / 112, "discount_total": 0, "warnings": [],
        "loyalty": null, "fiscal": null, "note": null,
        "sold_at": chrono::Utc::now(), "created_at": chrono::Utc::now(),
    });
    RawReceipt {
        id,
        lines,
        marking,
        doc,
        total,
    }
}

pub fn serial_of(n: u64) -> String {
    format!("B{n:012}")
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

// The same statements on both databases; `$n` placeholders work on SQLite too.
const UPDATE_STORE: &str = "UPDATE stores SET next_receipt_no = next_receipt_no + 1 WHERE tenant_id = $1 AND id = $2 RETURNING next_receipt_no - 1";
const INSERT_RECEIPT: &str = "INSERT INTO receipts (tenant_id, id, number, kind, refund_of, store_id, terminal_id, total, request_hash, doc, sold_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id";
// Multi-row statements, as the server writes them: one per kind of row, whatever the lines.
const INSERT_LINES: &str =
    "INSERT INTO receipt_lines (tenant_id, receipt_id, line_no, product_id, qty, amount) ";
const UPSERT_LEVELS: &str =
    "INSERT INTO stock_levels (tenant_id, store_id, product_id, on_hand, reserved) ";
const UPSERT_LEVELS_TAIL: &str = " ON CONFLICT (tenant_id, store_id, product_id) DO UPDATE \
     SET on_hand = stock_levels.on_hand + excluded.on_hand, reserved = stock_levels.reserved + excluded.reserved \
     RETURNING tenant_id, store_id, product_id, on_hand, reserved";
const INSERT_MOVEMENTS: &str = "INSERT INTO stock_movements (id, tenant_id, store_id, product_id, doc_type, doc_id, delta, created_at) ";
const INSERT_OUTBOX_ROWS: &str = "INSERT INTO outbox (id, tenant_id, type, data, created_at) ";
const INSERT_OUTBOX: &str =
    "INSERT INTO outbox (id, tenant_id, type, data, created_at) VALUES ($1, $2, $3, $4, $5)";
const INSERT_MARKING: &str = "INSERT INTO marking_codes (tenant_id, label, gtin, code, product_id, state, sale_receipt_id, sale_line_no, refund_receipt_id, online_check, check_note, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'sold', $6, $7, NULL, $8, NULL, $9) \
     ON CONFLICT (tenant_id, label) DO UPDATE SET gtin = excluded.gtin, code = excluded.code, product_id = excluded.product_id, \
     state = 'sold', sale_receipt_id = excluded.sale_receipt_id, sale_line_no = excluded.sale_line_no, refund_receipt_id = NULL, \
     online_check = excluded.online_check, check_note = NULL, updated_at = excluded.updated_at \
     WHERE marking_codes.state = 'returned' RETURNING label";

/// One backend's raw loop. A macro because sqlx's executors are typed per database.
macro_rules! raw_backend {
    ($name:ident, $db:ty, $begin:expr) => {
        async fn $name(
            pool: sqlx::Pool<$db>,
            fx: Arc<Fixture>,
            cfg: RawConfig,
            task: usize,
            serials: Arc<std::sync::atomic::AtomicU64>,
            deadline: Instant,
        ) -> (u64, u64, Histogram<u64>) {
            use sqlx::Row;
            let mut rng = Rng::new(task as u64 + 1);
            let mut h = histogram();
            let (mut done, mut errors) = (0u64, 0u64);
            let tenant = fx.tenant_id;
            let store = fx.store_id;
            let terminal = fx.terminal_ids[task % fx.terminal_ids.len()];
            while Instant::now() < deadline {
                let batch: Vec<RawReceipt> = (0..cfg.per_tx)
                    .map(|_| {
                        let s = serials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        build_receipt(&fx, cfg.keys, &mut rng, cfg.marked, s)
                    })
                    .collect();
                let started = Instant::now();
                let result: Result<(), sqlx::Error> = async {
                    let mut tx = $begin(&pool).await?;
                    for r in &batch {
                        let number: i64 = sqlx::query_scalar(UPDATE_STORE)
                            .bind(tenant)
                            .bind(store)
                            .fetch_one(&mut *tx)
                            .await?;
                        let now = now_micros();
                        sqlx::query(INSERT_RECEIPT)
                            .bind(tenant)
                            .bind(r.id)
                            .bind(number)
                            .bind("sale")
                            .bind(None::<Uuid>)
                            .bind(store)
                            .bind(terminal)
                            .bind(r.total)
                            .bind("0000000000000000000000000000000000000000000000000000000000000000")
                            .bind(Json(&r.doc))
                            .bind(now)
                            .bind(now)
                            .fetch_all(&mut *tx)
                            .await?;
                        let mut qb = sqlx::QueryBuilder::<$db>::new(INSERT_LINES);
                        qb.push_values(r.lines.iter().enumerate(), |mut b, (i, (product, qty, amount))| {
                            b.push_bind(tenant)
                                .push_bind(r.id)
                                .push_bind(i as i64 + 1)
                                .push_bind(*product)
                                .push_bind(*qty)
                                .push_bind(*amount);
                        });
                        qb.build().execute(&mut *tx).await?;
                        let mut qb = sqlx::QueryBuilder::<$db>::new(UPSERT_LEVELS);
                        qb.push_values(r.lines.iter(), |mut b, (product, qty, _)| {
                            b.push_bind(tenant)
                                .push_bind(store)
                                .push_bind(*product)
                                .push_bind(-qty)
                                .push_bind(0i64);
                        });
                        qb.push(UPSERT_LEVELS_TAIL);
                        let mut levels = Vec::with_capacity(r.lines.len());
                        for row in qb.build().fetch_all(&mut *tx).await? {
                            let product: Uuid = row.try_get("product_id")?;
                            let on_hand: i64 = row.try_get("on_hand")?;
                            let reserved: i64 = row.try_get("reserved")?;
                            levels.push((product, json!({"store_id": store, "product_id": product,
                                "on_hand": on_hand as f64 / 1000.0, "reserved": reserved as f64 / 1000.0,
                                "available": (on_hand - reserved) as f64 / 1000.0})));
                        }
                        // The server emits them in product order.
                        levels.sort_by_key(|(p, _)| *p);
                        let now = now_micros();
                        let mut qb = sqlx::QueryBuilder::<$db>::new(INSERT_MOVEMENTS);
                        qb.push_values(r.lines.iter(), |mut b, (product, qty, _)| {
                            b.push_bind(cfg.keys.new_id())
                                .push_bind(tenant)
                                .push_bind(store)
                                .push_bind(*product)
                                .push_bind("sale")
                                .push_bind(r.id)
                                .push_bind(-qty)
                                .push_bind(now);
                        });
                        qb.build().execute(&mut *tx).await?;
                        sqlx::query(INSERT_OUTBOX)
                            .bind(cfg.keys.new_id())
                            .bind(tenant)
                            .bind("receipt.created")
                            .bind(Json(&r.doc))
                            .bind(now_micros())
                            .execute(&mut *tx)
                            .await?;
                        if let Some((label, code)) = &r.marking {
                            let _won: Option<String> = sqlx::query_scalar(INSERT_MARKING)
                                .bind(tenant)
                                .bind(label)
                                .bind(crate::setup::MARKED_GTIN)
                                .bind(code)
                                .bind(r.lines[4].0)
                                .bind(r.id)
                                .bind(5i64)
                                .bind("not_configured")
                                .bind(now_micros())
                                .fetch_optional(&mut *tx)
                                .await?;
                        }
                        let mut qb = sqlx::QueryBuilder::<$db>::new(INSERT_OUTBOX_ROWS);
                        qb.push_values(levels.iter(), |mut b, (_, l)| {
                            b.push_bind(cfg.keys.new_id())
                                .push_bind(tenant)
                                .push_bind("stock.changed")
                                .push_bind(Json(l.clone()))
                                .push_bind(now);
                        });
                        qb.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => {
                        record(&mut h, started.elapsed());
                        done += batch.len() as u64;
                    }
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("raw: transaction failed: {e}");
                        }
                    }
                }
            }
            (done, errors, h)
        }
    };
}

async fn sqlite_begin(
    pool: &sqlx::Pool<sqlx::Sqlite>,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

async fn pg_begin(
    pool: &sqlx::Pool<sqlx::Postgres>,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin().await
}

raw_backend!(run_sqlite_task, sqlx::Sqlite, sqlite_begin);
raw_backend!(run_pg_task, sqlx::Postgres, pg_begin);

/// Open a pool like the server's: SQLite with its pragmas and one writer connection,
/// PostgreSQL with up to 16 connections; neither pings a connection it hands out (the server
/// pings only PostgreSQL connections idle for a second, which a run at full speed never has).
pub async fn run(
    url: &str,
    fx: Arc<Fixture>,
    cfg: RawConfig,
    label: &str,
) -> anyhow::Result<RawResult> {
    let serials = Arc::new(std::sync::atomic::AtomicU64::new(1_000_000_000));
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let mut handles = Vec::new();
    if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .test_before_acquire(false)
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .context("raw: cannot connect to PostgreSQL")?;
        for t in 0..cfg.concurrency {
            handles.push(tokio::spawn(run_pg_task(
                pool.clone(),
                fx.clone(),
                cfg,
                t,
                serials.clone(),
                deadline,
            )));
        }
    } else {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
        };
        let opts = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000");
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts)
            .await
            .context("raw: cannot open SQLite")?;
        for t in 0..cfg.concurrency {
            handles.push(tokio::spawn(run_sqlite_task(
                pool.clone(),
                fx.clone(),
                cfg,
                t,
                serials.clone(),
                deadline,
            )));
        }
    }
    let mut h = histogram();
    let (mut receipts, mut errors) = (0, 0);
    for j in handles {
        let (d, e, th) = j.await?;
        receipts += d;
        errors += e;
        h.add(th).ok();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RawResult {
        label: label.to_string(),
        concurrency: cfg.concurrency,
        receipts_per_tx: cfg.per_tx,
        keys: cfg.keys,
        receipts,
        seconds,
        receipts_per_s: receipts as f64 / seconds,
        tx_latency: Latency::of(&h),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_picks() {
        let mut r = Rng::new(7);
        for _ in 0..100 {
            let mut v = r.distinct(5, 50);
            assert_eq!(v.len(), 5);
            v.sort();
            v.dedup();
            assert_eq!(v.len(), 5);
            assert!(v.iter().all(|&i| i < 50));
        }
    }
}
