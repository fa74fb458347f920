//! SQLite: WAL, one writer connection (SQLite has one writer anyway; queueing in the pool is
//! cheaper than `SQLITE_BUSY` retries), several readers.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Dialect;
use crate::Result;

pub type Db = sqlx::Sqlite;
const DIALECT: Dialect = Dialect::Sqlite;
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../../migrations/sqlite/0001_core.sql"),
    ),
    (
        2,
        "bus",
        include_str!("../../migrations/sqlite/0002_bus.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../../migrations/sqlite/0003_webhooks.sql"),
    ),
    (
        4,
        "integrations",
        include_str!("../../migrations/sqlite/0004_integrations.sql"),
    ),
    (
        5,
        "marking",
        include_str!("../../migrations/sqlite/0005_marking.sql"),
    ),
    (
        6,
        "fiscal",
        include_str!("../../migrations/sqlite/0006_fiscal.sql"),
    ),
    (
        7,
        "loyalty",
        include_str!("../../migrations/sqlite/0007_loyalty.sql"),
    ),
    (
        8,
        "payments",
        include_str!("../../migrations/sqlite/0008_payments.sql"),
    ),
    (
        9,
        "marketplace_items",
        include_str!("../../migrations/sqlite/0009_marketplace_items.sql"),
    ),
    (
        10,
        "marketplace_stock",
        include_str!("../../migrations/sqlite/0010_marketplace_stock.sql"),
    ),
    (
        11,
        "marketplace_orders",
        include_str!("../../migrations/sqlite/0011_marketplace_orders.sql"),
    ),
    (
        13,
        "webhook_secret_hint",
        include_str!("../../migrations/sqlite/0013_webhook_secret_hint.sql"),
    ),
    (
        14,
        "reconcile",
        include_str!("../../migrations/sqlite/0014_reconcile.sql"),
    ),
];

#[derive(Clone)]
pub struct SqliteStore {
    write: sqlx::Pool<Db>,
    read: sqlx::Pool<Db>,
    outbox_notify: std::sync::Arc<tokio::sync::Notify>,
    /// Group commit for receipts (`SAVDO_GROUP_COMMIT`).
    group: super::group_commit::Slot,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `url` (`sqlite://path` or a plain path).
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable across process crashes; only power loss can lose
            // the last transactions, which is SQLite's documented trade-off.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(false))
            .await?;
        Ok(SqliteStore {
            write,
            read,
            outbox_notify: Default::default(),
            group: super::group_commit::Slot::from_env(super::group_commit::GroupCommit::ON)?,
        })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Db>> {
        // IMMEDIATE takes the write lock up front, so a second process (a worker) waits on
        // busy_timeout instead of failing on a read-to-write upgrade.
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn commit(&self, tx: sqlx::Transaction<'static, Db>) -> Result<()> {
        tx.commit().await?;
        self.outbox_notify.notify_one();
        Ok(())
    }

    /// Read in insert order (which is commit order here), publish, then number and mark, all
    /// under the write lock: a second relay on the same file (`savdo serve` next to a
    /// `savdo worker`, or two tasks) waits and then sees the rows as published, instead of
    /// reading them before the first one marks them and publishing them again.
    async fn relay_batch_impl(
        &self,
        limit: i64,
        publish: crate::bus::PublishFn<'_>,
    ) -> Result<usize> {
        use sqlx::Row;
        // Nothing waiting (the common case): answer from a reader, without the write lock.
        let waiting: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM outbox WHERE pub_seq IS NULL LIMIT 1")
                .fetch_optional(&self.read)
                .await?;
        if waiting.is_none() {
            return Ok(0);
        }
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(
            "SELECT seq, id, tenant_id, type, data, created_at FROM outbox WHERE pub_seq IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events = rows
            .iter()
            .map(|r| outbox_from_row(r, "seq"))
            .collect::<Result<Vec<_>>>()?;
        let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(pub_seq), 0) FROM outbox")
            .fetch_one(&mut *tx)
            .await?;
        let mut numbered = events.clone();
        for (i, e) in numbered.iter_mut().enumerate() {
            e.seq = base + 1 + i as i64;
        }
        publish(&numbered)
            .await
            .map_err(crate::StorageError::Publish)?;
        let now = super::now_micros();
        for (e, n) in events.iter().zip(&numbered) {
            sqlx::query("UPDATE outbox SET pub_seq = $2, published_at = $3 WHERE seq = $1")
                .bind(e.seq)
                .bind(n.seq)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let _ = rows.first().map(|r| r.len());
        Ok(events.len())
    }
}

type Backend = SqliteStore;

include!("shared.rs");
include!("bus_impl.rs");
include!("webhooks_impl.rs");
include!("integrations_impl.rs");
include!("fiscal_impl.rs");
include!("marking_impl.rs");
include!("loyalty_impl.rs");
include!("payments_impl.rs");
include!("marketplace_impl.rs");
include!("marketplace_orders_impl.rs");
