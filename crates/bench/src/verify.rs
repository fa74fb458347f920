//! `load` and `verify`: the halves of the kill drill (`scripts/drill-kill-server.sh`).
//! `load` drives tills against a running server and survives its deaths (a till retries the same
//! receipt id until it is answered, as a real till does); `verify` checks the database after.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use uuid::Uuid;

use crate::checkout;
use crate::setup::{self, Api};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Base URL of a running server, e.g. http://127.0.0.1:18080.
    #[arg(long)]
    pub url: String,
    /// An owner token of the tenant (from `savdo tenant create`).
    #[arg(long)]
    pub token: String,
    #[arg(long, default_value_t = 4)]
    pub tills: usize,
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Where to write the ids of acknowledged receipts, one a line.
    #[arg(long)]
    pub acked_file: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The database (`sqlite://…` or `postgres://…`).
    #[arg(long)]
    pub database_url: String,
    /// Ids of acknowledged receipts, one a line.
    #[arg(long)]
    pub acked_file: PathBuf,
    /// How long to wait for the relay and consumers to catch up before judging delivery.
    #[arg(long, default_value_t = 30)]
    pub wait_events: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub acked: usize,
    pub acked_missing: usize,
    pub receipts_stored: i64,
    pub receipts_with_wrong_movements: i64,
    pub stock_rows_not_matching_movements: i64,
    pub receipts_without_exactly_one_event: i64,
    pub events_unpublished: i64,
    pub receipt_events_not_consumed: i64,
    /// The last publishing sequence number, and each consumer's saved position against it:
    /// when delivery is judged short, whether a consumer is behind (late) or at the end (lost).
    pub last_published: i64,
    pub consumer_positions: Vec<(String, i64)>,
    pub ok: bool,
}

pub async fn load(a: LoadArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.url, &a.token)?;
    let fx = Arc::new(setup::seed_api(&api, Uuid::nil(), a.tills, false).await?);
    // A subscription to `receipt.created`: the webhooks consumer's effect (one delivery per
    // subscription and event) is what `verify` counts. Nothing listens on the discard port, so
    // the deliveries stay pending with retries; the server runs with private URLs allowed.
    let (status, body) = api
        .post(
            "/webhooks",
            &serde_json::json!({"url": "http://127.0.0.1:9/drill", "events": ["receipt.created"]}),
        )
        .await?;
    anyhow::ensure!(
        status == 201,
        "creating the drill's webhook: {status} {body}"
    );
    let (ok, errors, seconds, _h, acked) = checkout::load(
        &api,
        &fx,
        a.tills,
        Duration::from_secs(a.duration),
        None,
        false,
        true,
    )
    .await?;
    let text: String = acked.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&a.acked_file, text)?;
    println!(
        "load: {ok} receipts acknowledged in {seconds:.1} s, {errors} failed attempts (retried)"
    );
    Ok(())
}

macro_rules! checks {
    ($pool:expr, $event_receipt_id:expr, $unpublished:expr) => {{
        let pool = $pool;
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM receipts").fetch_all(&pool).await?;
        // Aggregates fetched once and compared here: correlated subqueries over the outbox
        // are quadratic without an index on the receipt id.
        let lines: Vec<(Uuid, i64)> = sqlx::query_as("SELECT receipt_id, COUNT(*) FROM receipt_lines GROUP BY receipt_id")
            .fetch_all(&pool)
            .await?;
        let moves: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT doc_id, COUNT(*) FROM stock_movements WHERE doc_type = 'sale' GROUP BY doc_id")
                .fetch_all(&pool)
                .await?;
        let moves: HashMap<Uuid, i64> = moves.into_iter().collect();
        let wrong_movements = lines.iter().filter(|(id, n)| moves.get(id) != Some(n)).count() as i64;
        let stock: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM stock_levels s WHERE s.on_hand <> COALESCE((SELECT SUM(m.delta) FROM stock_movements m \
             WHERE m.tenant_id = s.tenant_id AND m.store_id = s.store_id AND m.product_id = s.product_id), 0)",
        )
        .fetch_one(&pool)
        .await?;
        let per_receipt: Vec<(Option<String>, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} AS rid, COUNT(*) FROM outbox WHERE type = 'receipt.created' GROUP BY rid",
            $event_receipt_id
        )))
        .fetch_all(&pool)
        .await?;
        let per_receipt: HashMap<String, i64> = per_receipt.into_iter().filter_map(|(k, n)| Some((k?, n))).collect();
        let events = ids.iter().filter(|id| per_receipt.get(&id.to_string()) != Some(&1)).count() as i64;
        let unpublished: i64 = sqlx::query_scalar($unpublished).fetch_one(&pool).await?;
        // The webhooks consumer takes events without inbox rows (its deliveries are keyed by
        // subscription and event): each receipt event must have become exactly one delivery.
        let unconsumed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox o WHERE o.type = 'receipt.created' AND \
             (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.event_id = o.id) <> 1",
        )
        .fetch_one(&pool)
        .await?;
        (ids, wrong_movements, stock, events, unpublished, unconsumed)
    }};
}

/// The last publishing sequence number and the consumers' saved positions.
macro_rules! progress {
    ($pool:expr) => {{
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(pub_seq), 0) FROM outbox_pub")
            .fetch_one(&$pool)
            .await?;
        let consumers: Vec<(String, i64)> =
            sqlx::query_as("SELECT consumer, position FROM consumer_positions ORDER BY consumer")
                .fetch_all(&$pool)
                .await?;
        (last, consumers)
    }};
}

pub async fn verify(a: VerifyArgs) -> anyhow::Result<bool> {
    let acked: Vec<Uuid> = std::fs::read_to_string(&a.acked_file)
        .with_context(|| format!("cannot read {}", a.acked_file.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()?;
    let until = Instant::now() + Duration::from_secs(a.wait_events);
    let v = loop {
        let positions: (i64, Vec<(String, i64)>);
        let (ids, wrong, stock, events, unpublished, unconsumed) = if a
            .database_url
            .starts_with("postgres")
        {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&a.database_url)
                .await?;
            positions = progress!(pool);
            checks!(
                pool,
                "data->>'id'",
                "SELECT COUNT(*) FROM outbox o, outbox_relay r WHERE o.txid >= r.floor \
                 AND NOT EXISTS (SELECT 1 FROM outbox_pub p WHERE p.seq = o.seq)"
            )
        } else {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&a.database_url)
                .await?;
            positions = progress!(pool);
            checks!(
                pool,
                "json_extract(data, '$.id')",
                "SELECT COUNT(*) FROM outbox WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM outbox_pub)"
            )
        };
        let stored: HashSet<Uuid> = ids.iter().copied().collect();
        let missing = acked.iter().filter(|id| !stored.contains(id)).count();
        let v = Verdict {
            acked: acked.len(),
            acked_missing: missing,
            receipts_stored: ids.len() as i64,
            receipts_with_wrong_movements: wrong,
            stock_rows_not_matching_movements: stock,
            receipts_without_exactly_one_event: events,
            events_unpublished: unpublished,
            receipt_events_not_consumed: unconsumed,
            last_published: positions.0,
            consumer_positions: positions.1,
            ok: missing == 0
                && ids.len() == stored.len()
                && wrong == 0
                && stock == 0
                && events == 0
                && unpublished == 0
                && unconsumed == 0,
        };
        // Only delivery can still change: wait for the relay and consumers, bounded.
        if v.ok
            || Instant::now() > until
            || (v.events_unpublished == 0 && v.receipt_events_not_consumed == 0)
        {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("acknowledged receipts:               {}", v.acked);
        println!("  missing from the database:         {}", v.acked_missing);
        println!("receipts stored:                     {}", v.receipts_stored);
        println!(
            "  with movements != lines:           {}",
            v.receipts_with_wrong_movements
        );
        println!(
            "  without exactly one receipt event: {}",
            v.receipts_without_exactly_one_event
        );
        println!(
            "stock rows != sum of movements:      {}",
            v.stock_rows_not_matching_movements
        );
        println!(
            "events not yet published:           {}",
            v.events_unpublished
        );
        println!(
            "receipt events not delivered once:   {}",
            v.receipt_events_not_consumed
        );
        if v.receipt_events_not_consumed > 0 {
            // Saved at most about once a second: a consumer at the end may read a little short.
            println!("  last published sequence number:    {}", v.last_published);
            for (consumer, at) in &v.consumer_positions {
                println!("  consumer {consumer:<24} at {at}");
            }
        }
        println!("VERDICT: {}", if v.ok { "PASS" } else { "FAIL" });
    }
    Ok(v.ok)
}
