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
    (
        16,
        "outbox_pub",
        include_str!("../../migrations/postgres/0016_outbox_pub.sql"),
    ),
    (
        17,
        "customer_loyalty_updated_at",
        include_str!("../../migrations/postgres/0017_customer_loyalty_updated_at.sql"),
    ),
];

#[derive(Clone)]
pub struct PgStore {
    write: sqlx::Pool<Db>,
    read: sqlx::Pool<Db>,
    /// The relay's connections (see `connect`).
    relay: sqlx::Pool<Db>,
    outbox_notify: std::sync::Arc<tokio::sync::Notify>,
    /// The relay's floor as this process last saw it (0: not read yet). Another relay may have
    /// raised it further; a lower floor only makes the relay look at more rows.
    relay_floor: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// When this process last tried to raise the floor (see `FLOOR_EVERY`).
    floor_tried: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Group commit for receipts (`SAVDO_GROUP_COMMIT`).
    group: super::group_commit::Slot,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = pool_options()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        // The relay's statements read a short stretch of the outbox above the floor and look
        // each of its rows up in `outbox_pub` by `seq`. They stay prepared but are planned for
        // each floor they are given (planned once for any floor, they would read the whole
        // outbox), and only as index lookups: until the first ANALYZE of a new outbox
        // (autovacuum's first visit can be a minute away) the planner takes the stretch for a
        // third of the table and hashes all of `outbox_pub` instead, or starts parallel
        // workers: 8-10 ms a statement at 30,000 events and growing, against 0.5 ms.
        let relay_options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let relay = pool_options()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(relay_options.options([
                ("plan_cache_mode", "force_custom_plan"),
                ("enable_hashjoin", "off"),
                ("enable_mergejoin", "off"),
                ("max_parallel_workers_per_gather", "0"),
            ]));
        Ok(PgStore {
            write: pool.clone(),
            read: pool,
            relay,
            outbox_notify: Default::default(),
            relay_floor: Default::default(),
            floor_tried: Default::default(),
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
    /// tenant's events go through one relay at a time and in order. Publishing happens inside
    /// the transaction; if the process dies before commit the rows are published again (the
    /// bus deduplicates by event id).
    ///
    /// A row is published when it has a number in `outbox_pub`; the outbox rows themselves are
    /// never locked or rewritten. Rows commit out of `seq` order here, so the unpublished ones
    /// are found among the rows written by transactions not older than `outbox_relay.floor`
    /// (see `advance_floor`).
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
        let floor = self.relay_floor().await?;
        let mut tx = self.relay.begin().await?;
        // The tenants with the oldest waiting events, and a turn for each that no other relay
        // holds (the lock is tried row by row after the limit). The floor is bound, and the
        // relay's connections plan each statement for the value it is given.
        const TENANTS: usize = 64;
        let candidates: Vec<(uuid::Uuid, bool)> = sqlx::query_as(
            "SELECT tenant_id, pg_try_advisory_xact_lock(7300, hashtext(tenant_id::text)) FROM \
             (SELECT o.tenant_id, MIN(o.seq) AS first FROM outbox o \
             WHERE o.txid >= $1 AND NOT EXISTS (SELECT 1 FROM outbox_pub p WHERE p.seq = o.seq) \
             GROUP BY o.tenant_id ORDER BY first LIMIT 64) t",
        )
        .bind(floor)
        .fetch_all(&mut *tx)
        .await?;
        // Tenants past the limit wait for another step; those another relay holds are its.
        let more_tenants = candidates.len() >= TENANTS;
        let mine: Vec<uuid::Uuid> = candidates
            .into_iter()
            .filter_map(|(t, locked)| locked.then_some(t))
            .collect();
        if mine.is_empty() {
            return Ok(crate::bus::Relayed {
                more: more_tenants,
                ..Default::default()
            });
        }
        // A statement of its own: its snapshot is taken after the locks, so it sees every
        // number committed by the relay that held a tenant before.
        let rows = sqlx::query(
            "SELECT o.seq, o.id, o.tenant_id, o.type, o.data, o.created_at FROM outbox o \
             WHERE o.txid >= $3 AND o.tenant_id = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM outbox_pub p WHERE p.seq = o.seq) \
             ORDER BY o.seq LIMIT $2",
        )
        .bind(&mine)
        .bind(limit)
        .bind(floor)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(crate::bus::Relayed {
                more: more_tenants,
                ..Default::default()
            });
        }
        let more = more_tenants || rows.len() as i64 >= limit;
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
        // Under the lock the last number is the previous holder's, committed: the batch's
        // numbers follow it densely, in outbox order.
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let tenants: Vec<uuid::Uuid> = events.iter().map(|e| e.tenant_id).collect();
        let mut pub_seqs: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO outbox_pub (pub_seq, seq, tenant_id, published_at) \
             SELECT (SELECT COALESCE(MAX(pub_seq), 0) FROM outbox_pub) + ROW_NUMBER() OVER (ORDER BY u.s), u.s, u.t, $3 \
             FROM unnest($1::bigint[], $2::uuid[]) AS u(s, t) RETURNING pub_seq",
        )
        .bind(&seqs)
        .bind(&tenants)
        .bind(super::now_micros())
        .fetch_all(&mut *tx)
        .await?;
        pub_seqs.sort_unstable();
        let raised = if self.floor_due() {
            advance_floor(&mut tx, floor).await?
        } else {
            None
        };
        tx.commit().await?;
        if let Some(f) = raised {
            self.relay_floor
                .fetch_max(f, std::sync::atomic::Ordering::Relaxed);
        }
        // `events` and `pub_seqs` are both ascending: the i-th event got the i-th number.
        for (e, p) in events.iter_mut().zip(pub_seqs) {
            e.seq = p;
        }
        Ok(crate::bus::Relayed {
            published: events.len(),
            numbered: events,
            more,
        })
    }
}

/// How often at most a relay tries to raise the floor: the statement costs about as much as the
/// rest of a round, and a floor a few rounds behind only means a few more rows to look at.
const FLOOR_EVERY: Duration = Duration::from_millis(100);

impl PgStore {
    fn floor_due(&self) -> bool {
        let mut tried = self.floor_tried.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if tried.is_some_and(|t| now.duration_since(t) < FLOOR_EVERY) {
            return false;
        }
        *tried = Some(now);
        true
    }

    async fn relay_floor(&self) -> Result<i64> {
        use std::sync::atomic::Ordering::Relaxed;
        let known = self.relay_floor.load(Relaxed);
        if known > 0 {
            return Ok(known);
        }
        let floor: i64 = sqlx::query_scalar("SELECT floor FROM outbox_relay")
            .fetch_one(&self.relay)
            .await?;
        self.relay_floor.fetch_max(floor, Relaxed);
        Ok(floor)
    }

    /// The relay numbers in transactions of its own here (per tenant, under a lock; see
    /// `relay_batch_impl`), never in a receipt batch: nothing queues a numbering.
    async fn number_published(
        _tx: &mut sqlx::Transaction<'static, Db>,
        _first: i64,
        _last: i64,
    ) -> Result<Vec<(i64, i64)>> {
        Err(crate::StorageError::Corrupt(
            "a numbering was queued to PostgreSQL's receipt writer".into(),
        ))
    }
}

/// Raise the relay's floor as far as is safe, and return it: to the oldest transaction still
/// running, or to the oldest row not numbered yet (from `floor` on) if that is lower. Every
/// transaction below the first has finished, so the statement's snapshot sees all its rows;
/// the rows still to number are all at or above the second; a row to come is written by a
/// transaction at or above the first. Waiting instead for no row below the oldest running
/// transaction to be unnumbered held the floor still under steady load (some batch always
/// commits while a round publishes), and every round then read a longer stretch of the
/// outbox. A row numbered by another relay that has not committed yet only keeps the floor
/// at it until a later round. Runs under the numbering lock, so relays take turns at it.
async fn advance_floor(tx: &mut sqlx::Transaction<'static, Db>, floor: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE outbox_relay r SET floor = s.x \
         FROM (SELECT LEAST(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, \
         (SELECT MIN(o.txid) FROM outbox o WHERE o.txid >= $1 \
         AND NOT EXISTS (SELECT 1 FROM outbox_pub p WHERE p.seq = o.seq))) AS x) s \
         WHERE s.x > r.floor RETURNING r.floor",
    )
    .bind(floor)
    .fetch_optional(&mut **tx)
    .await?)
}

/// How long a pooled connection may sit idle and still be used without a ping first.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// sqlx pings every connection it takes from the pool: a round trip before every transaction
/// and every read. Here only a connection idle for [`PING_IDLE_AFTER`] is pinged (the server or
/// the network may have dropped it meanwhile); one in steady use goes straight to its statement.
/// The price: a connection that died within that second fails the one statement that finds
/// out (after a server restart under load: at most one request per pooled connection).
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
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
