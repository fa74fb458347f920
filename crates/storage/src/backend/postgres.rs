//! PostgreSQL: one pool; concurrent writers are serialised by row locks where it matters
//! (per-store receipt counters, stock rows, unique keys).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::Dialect;
use crate::Result;

pub type Db = sqlx::Postgres;
const DIALECT: Dialect = Dialect::Postgres;
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "core",
        include_str!("../../migrations/postgres/0001_core.sql"),
    ),
    (
        2,
        "bus",
        include_str!("../../migrations/postgres/0002_bus.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../../migrations/postgres/0003_webhooks.sql"),
    ),
    (
        4,
        "integrations",
        include_str!("../../migrations/postgres/0004_integrations.sql"),
    ),
    (
        5,
        "marking",
        include_str!("../../migrations/postgres/0005_marking.sql"),
    ),
    (
        6,
        "fiscal",
        include_str!("../../migrations/postgres/0006_fiscal.sql"),
    ),
    (
        7,
        "loyalty",
        include_str!("../../migrations/postgres/0007_loyalty.sql"),
    ),
    (
        8,
        "payments",
        include_str!("../../migrations/postgres/0008_payments.sql"),
    ),
    (
        9,
        "marketplace_items",
        include_str!("../../migrations/postgres/0009_marketplace_items.sql"),
    ),
    (
        10,
        "marketplace_stock",
        include_str!("../../migrations/postgres/0010_marketplace_stock.sql"),
    ),
    (
        11,
        "marketplace_orders",
        include_str!("../../migrations/postgres/0011_marketplace_orders.sql"),
    ),
    (
        13,
        "webhook_secret_hint",
        include_str!("../../migrations/postgres/0013_webhook_secret_hint.sql"),
    ),
    (
        14,
        "reconcile",
        include_str!("../../migrations/postgres/0014_reconcile.sql"),
    ),
    (
        15,
        "outbox_unused_index",
        include_str!("../../migrations/postgres/0015_outbox_unused_index.sql"),
    ),
];

#[derive(Clone)]
pub struct PgStore {
    write: sqlx::Pool<Db>,
    read: sqlx::Pool<Db>,
    outbox_notify: std::sync::Arc<tokio::sync::Notify>,
    /// Group commit for receipts (`SAVDO_GROUP_COMMIT`).
    group: super::group_commit::Slot,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(PgStore {
            write: pool.clone(),
            read: pool,
            outbox_notify: Default::default(),
            group: super::group_commit::Slot::from_env(super::group_commit::GroupCommit::ON)?,
        })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Db>> {
        Ok(self.write.begin().await?)
    }

    async fn commit(&self, tx: sqlx::Transaction<'static, Db>) -> Result<()> {
        tx.commit().await?;
        self.outbox_notify.notify_one();
        Ok(())
    }

    /// Several relays may run: each takes a transaction-scoped advisory lock per tenant, so a
    /// tenant's events go through one relay at a time and in order, and claims its rows with
    /// `FOR UPDATE SKIP LOCKED`. Publishing happens inside the transaction; if the process dies
    /// before commit the rows are published again (the bus deduplicates by event id).
    ///
    /// The publishing sequence is taken only after the bus accepted the batch, under one
    /// transaction-scoped lock shared by all relays and held until commit: publishing
    /// sequences then become visible in increasing order, so a reader paging
    /// `published_after` / `events()` with its last sequence never skips a batch that another
    /// relay numbered lower but committed later. `publish` therefore sees the events with
    /// their outbox `seq`.
    async fn relay_batch_impl(
        &self,
        limit: i64,
        publish: crate::bus::PublishFn<'_>,
    ) -> Result<crate::bus::Relayed> {
        let mut tx = self.write.begin().await?;
        let tenants: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT tenant_id FROM (SELECT tenant_id, MIN(seq) AS first FROM outbox WHERE pub_seq IS NULL GROUP BY tenant_id) t ORDER BY first LIMIT 64",
        )
        .fetch_all(&mut *tx)
        .await?;
        if tenants.is_empty() {
            return Ok(Default::default());
        }
        // One round trip for all the tenants' locks (evaluated row by row, in order).
        let keys: Vec<i64> = tenants
            .iter()
            .map(|t| {
                i64::from_be_bytes(t.as_bytes()[8..16].try_into().unwrap_or_default()) % 2147483647
            })
            .collect();
        let mine: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT t FROM unnest($1::uuid[], $2::bigint[]) AS u(t, k) WHERE pg_try_advisory_xact_lock(7300, k::int)",
        )
        .bind(&tenants)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        if mine.is_empty() {
            return Ok(Default::default());
        }
        let rows = sqlx::query(
            "SELECT seq, id, tenant_id, type, data, created_at FROM outbox WHERE pub_seq IS NULL AND tenant_id = ANY($1)              ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(&mine)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Default::default());
        }
        let mut events = rows
            .iter()
            .map(|r| outbox_from_row(r, "seq"))
            .collect::<Result<Vec<_>>>()?;
        publish(&events)
            .await
            .map_err(crate::StorageError::Publish)?;
        sqlx::query("SELECT pg_advisory_xact_lock(7301, 0)")
            .execute(&mut *tx)
            .await?;
        // All the batch's publishing sequences in one round trip (the lock above keeps them
        // from interleaving with another relay's), and one UPDATE.
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let mut pub_seqs: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('outbox_pub_seq_gen') FROM generate_series(1, $1)")
                .bind(seqs.len() as i64)
                .fetch_all(&mut *tx)
                .await?;
        pub_seqs.sort_unstable();
        sqlx::query(
            "UPDATE outbox SET pub_seq = u.p, published_at = $3 FROM unnest($1::bigint[], $2::bigint[]) AS u(s, p) WHERE outbox.seq = u.s",
        )
        .bind(&seqs)
        .bind(&pub_seqs)
        .bind(super::now_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // `events` and `pub_seqs` are both ascending: the i-th event got the i-th number.
        for (e, p) in events.iter_mut().zip(pub_seqs) {
            e.seq = p;
        }
        Ok(crate::bus::Relayed {
            published: events.len(),
            numbered: events,
        })
    }
}

type Backend = PgStore;

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
