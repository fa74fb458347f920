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
    (
        15,
        "outbox_pub",
        include_str!("../../migrations/sqlite/0015_outbox_pub.sql"),
    ),
    (
        16,
        "outbox_tenant_index",
        include_str!("../../migrations/sqlite/0016_outbox_tenant_index.sql"),
    ),
    (
        17,
        "customer_loyalty_updated_at",
        include_str!("../../migrations/sqlite/0017_customer_loyalty_updated_at.sql"),
    ),
];

#[derive(Clone)]
pub struct SqliteStore {
    write: sqlx::Pool<Db>,
    read: sqlx::Pool<Db>,
    outbox_notify: std::sync::Arc<tokio::sync::Notify>,
    /// Group commit for receipts (`SAVDO_GROUP_COMMIT`).
    group: super::group_commit::Slot,
    /// Relays of this store take turns (`relay_batch_impl`).
    relay_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Keeps the checkpoint task running (`checkpoint`).
    _checkpoints: std::sync::Arc<super::checkpoint::Alive>,
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
        // No ping when a connection is taken from a pool (sqlx's default): the connection is in
        // this process, and a ping is only a round trip to its thread before every statement.
        let write = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .connect_with(opts.clone().pragma(
                "wal_autocheckpoint",
                super::checkpoint::WRITER_THRESHOLD_PAGES.to_string(),
            ))
            .await?;
        let read = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .connect_with(opts.clone().read_only(false))
            .await?;
        Ok(SqliteStore {
            write,
            read,
            outbox_notify: Default::default(),
            group: super::group_commit::Slot::from_env(super::group_commit::GroupCommit::ON)?,
            relay_turn: Default::default(),
            _checkpoints: super::checkpoint::start(opts),
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

    /// Read the oldest unpublished rows from a reader, publish them, then number and mark them in
    /// a short write (in the receipt writer's next transaction, see `relay_mark`): the write
    /// lock is not held during the bus round trip, so checkouts do not queue behind it. Relays
    /// of this store take turns, so one process never hands an event to the bus twice. A relay
    /// in another process on the same file (`savdo serve` next to a `savdo worker`) may publish
    /// the same rows again (the bus deduplicates by event id), but marking numbers only rows
    /// still unmarked, counting from the highest publishing sequence inside the write
    /// transaction: each row gets one sequence, dense and in outbox order. `publish` sees the
    /// events with their outbox `seq`.
    ///
    /// Numbers live in `outbox_pub` (a row is published when it has one there), so marking
    /// writes a few narrow rows instead of rewriting each event's row. Rows commit in `seq`
    /// order and every relay marks its chunks in that order, each chunk after the one before
    /// it, so the published rows are always a prefix of the outbox: the unpublished ones are
    /// those after the highest `seq` in `outbox_pub`.
    ///
    /// A large batch goes out in chunks, pipelined: the next chunk is read and the previous one
    /// marked while one is being published.
    async fn relay_batch_impl(
        &self,
        limit: i64,
        publish: crate::bus::PublishFn<'_>,
    ) -> Result<crate::bus::Relayed> {
        const CHUNK: i64 = 256;
        let _turn = self.relay_turn.lock().await;
        let mut current = self.relay_read(0, limit.min(CHUNK)).await?;
        let mut left = limit - current.len() as i64;
        let mut marking: Vec<crate::model::OutboxEvent> = Vec::new();
        let mut relayed = crate::bus::Relayed::default();
        // Three stages at once: read the next chunk, publish this one, mark the previous one.
        while !current.is_empty() {
            let after = current.last().map_or(0, |e| e.seq);
            let more = left > 0 && current.len() as i64 == CHUNK;
            let (published, marked, next) =
                tokio::join!(publish(&current), self.relay_mark(&mut marking), async {
                    if more {
                        self.relay_read(after, left.min(CHUNK)).await
                    } else {
                        Ok(Vec::new())
                    }
                });
            marked?;
            relayed.numbered.append(&mut marking);
            published.map_err(crate::StorageError::Publish)?;
            relayed.published += current.len();
            let next = match next {
                Ok(next) => next,
                Err(e) => {
                    // Published: mark it rather than hand it to the bus again next time.
                    self.relay_mark(&mut current).await?;
                    return Err(e);
                }
            };
            marking = std::mem::replace(&mut current, next);
            left -= current.len() as i64;
        }
        self.relay_mark(&mut marking).await?;
        relayed.numbered.append(&mut marking);
        // Stopped by the limit rather than by a short read: more may be waiting.
        relayed.more = relayed.published as i64 >= limit;
        Ok(relayed)
    }

    /// Up to `limit` unmarked rows after outbox `seq` `after`, in outbox order (a range of the
    /// primary key: no sort). Every unmarked row between the first and the last returned is
    /// among them, since rows commit in `seq` order here.
    async fn relay_read(&self, after: i64, limit: i64) -> Result<Vec<crate::model::OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT seq, id, tenant_id, type, data, created_at FROM outbox \
             WHERE seq > MAX($1, (SELECT COALESCE(MAX(seq), 0) FROM outbox_pub)) ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| outbox_from_row(r, "seq")).collect()
    }

    /// Number and mark a published run of rows (consecutive among the unmarked rows when read:
    /// every unmarked row between its first and last `seq` is in it). Leaves in `events` the
    /// rows it numbered, their `seq` now the publishing sequence, in that order.
    ///
    /// With group commit on, the numbering rides in the receipt writer's next transaction: the
    /// single writer connection is what bounds checkout throughput, and a transaction of its
    /// own per relay round cost it about a millisecond each time. Should that batch fail, the
    /// numbering is done again in a transaction of its own.
    async fn relay_mark(&self, events: &mut Vec<crate::model::OutboxEvent>) -> Result<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        let in_batch = match self.group_queue() {
            Some(queue) => queue.number(first, last).await.ok(),
            None => None,
        };
        let numbered = match in_batch {
            Some(numbered) => numbered,
            None => {
                let mut tx = self.begin().await?;
                let numbered = Self::number_published(&mut tx, first, last).await?;
                tx.commit().await?;
                numbered
            }
        };
        let numbered: std::collections::HashMap<i64, i64> = numbered.into_iter().collect();
        events.retain_mut(|e| match numbered.get(&e.seq) {
            Some(&p) => {
                e.seq = p;
                true
            }
            None => false,
        });
        events.sort_unstable_by_key(|e| e.seq);
        Ok(())
    }

    /// In `tx`: give the unmarked rows from `first` to `last` the next publishing sequences, in
    /// outbox order; returns `(seq, pub_seq)` for each.
    async fn number_published(
        tx: &mut sqlx::Transaction<'static, Db>,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "INSERT INTO outbox_pub (pub_seq, seq, tenant_id, published_at) \
             SELECT (SELECT COALESCE(MAX(pub_seq), 0) FROM outbox_pub) + ROW_NUMBER() OVER (ORDER BY seq), seq, tenant_id, $3 \
             FROM outbox WHERE seq BETWEEN $1 AND $2 AND seq > (SELECT COALESCE(MAX(seq), 0) FROM outbox_pub) \
             ORDER BY seq RETURNING seq, pub_seq",
        )
        .bind(first)
        .bind(last)
        .bind(super::now_micros())
        .fetch_all(&mut **tx)
        .await?)
    }
}

type Backend = SqliteStore;

include!("shared.rs");
include!("receipt_batch_impl.rs");
include!("bus_impl.rs");
include!("webhooks_impl.rs");
include!("integrations_impl.rs");
include!("fiscal_impl.rs");
include!("marking_impl.rs");
include!("loyalty_impl.rs");
include!("payments_impl.rs");
include!("marketplace_impl.rs");
include!("marketplace_orders_impl.rs");
