//! The journal: every operation is committed here (SQLite, WAL, `synchronous=FULL`) before it
//! reaches a device, and its outcome is committed when the device answers.
//!
//! A job moves `pending` -> `sent` -> `done` | `failed`. `sent` is written before each call to
//! the device, so after a crash the worker knows the device may already have printed and asks
//! it (by `device_ref`) before sending anything again.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use uuid::Uuid;

use crate::model::{DeviceAnswer, Operation, Receipt};
use crate::validate::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot create the data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal row is corrupt: {0}")]
    Corrupt(String),
    #[error("id {0} was already used for a different request")]
    Conflict(Uuid),
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Sent,
    Done,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Sent => "sent",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => JobState::Pending,
            "sent" => JobState::Sent,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }
}

/// The request part of a job, stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobBody {
    pub cashier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// One journaled operation on one device.
#[derive(Debug, Clone)]
pub struct Job {
    pub seq: i64,
    pub id: Uuid,
    pub device_id: String,
    pub op: Operation,
    pub body: JobBody,
    pub state: JobState,
    /// The id the device knows this attempt by (ATOL task uuid, KKMServer IdCommand).
    pub device_ref: Uuid,
    pub answer: Option<DeviceAnswer>,
    pub reason: Option<String>,
}

impl Job {
    pub fn total(&self) -> i64 {
        self.body.receipt.as_ref().map_or(0, |r| r.total)
    }
}

/// How a submission was taken.
#[derive(Debug)]
pub enum Submitted {
    /// First time this id was seen.
    New(Job),
    /// A repeat: the stored job (same body).
    Existing(Job),
    /// A repeat of a job the device had refused: queued again under a fresh device ref.
    Retried(Job),
}

impl Submitted {
    pub fn job(&self) -> &Job {
        match self {
            Submitted::New(j) | Submitted::Existing(j) | Submitted::Retried(j) => j,
        }
    }
    pub fn needs_worker(&self) -> bool {
        !matches!(self, Submitted::Existing(_))
    }
}

#[derive(Clone)]
pub struct Journal {
    pool: SqlitePool,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL,
    op TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    sale_id TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    device_ref TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    answer TEXT,
    reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(device_id, state, seq);
CREATE INDEX IF NOT EXISTS jobs_sale ON jobs(sale_id);
CREATE TABLE IF NOT EXISTS virtual_fm (
    terminal_id TEXT PRIMARY KEY,
    receipt_count INTEGER NOT NULL DEFAULT 0,
    shift_no INTEGER NOT NULL DEFAULT 0,
    shift_open INTEGER NOT NULL DEFAULT 0,
    shift_opened_at TEXT,
    shift_sales INTEGER NOT NULL DEFAULT 0,
    shift_refunds INTEGER NOT NULL DEFAULT 0,
    shift_receipts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS virtual_docs (
    terminal_id TEXT NOT NULL,
    device_ref TEXT NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (terminal_id, device_ref)
);
"#;

const JOB_COLUMNS: &str = "seq, id, device_id, op, body, state, device_ref, answer, reason";

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// SHA-256 of the canonical (re-serialized) body: key order and whitespace of the caller's JSON
/// do not matter, only the values.
fn body_hash(op: Operation, body: &JobBody) -> Result<(String, String), JournalError> {
    let json = serde_json::to_string(body).map_err(|e| JournalError::Corrupt(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(op.as_str().as_bytes());
    h.update(b"\n");
    h.update(json.as_bytes());
    Ok((hex::encode(h.finalize()), json))
}

fn row_to_job(row: &SqliteRow) -> Result<Job, JournalError> {
    let corrupt = |what: &str| JournalError::Corrupt(what.to_string());
    let id: String = row.try_get("id")?;
    let op: String = row.try_get("op")?;
    let body: String = row.try_get("body")?;
    let state: String = row.try_get("state")?;
    let device_ref: String = row.try_get("device_ref")?;
    let answer: Option<String> = row.try_get("answer")?;
    Ok(Job {
        seq: row.try_get("seq")?,
        id: Uuid::from_str(&id).map_err(|_| corrupt("id"))?,
        device_id: row.try_get("device_id")?,
        op: Operation::parse(&op).ok_or_else(|| corrupt("op"))?,
        body: serde_json::from_str(&body).map_err(|_| corrupt("body"))?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("state"))?,
        device_ref: Uuid::from_str(&device_ref).map_err(|_| corrupt("device_ref"))?,
        answer: match answer {
            Some(a) => Some(serde_json::from_str(&a).map_err(|_| corrupt("answer"))?),
            None => None,
        },
        reason: row.try_get("reason")?,
    })
}

impl Journal {
    pub async fn open(data_dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir)?;
        let opts = SqliteConnectOptions::new()
            .filename(data_dir.join("fiscal-journal.sqlite"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before we tell anyone, or before the device is called.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // One connection: SQLite has one writer anyway, and it makes check-then-insert of
        // refunds atomic without lock upgrades.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Journal { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Journals a new operation, or answers a repeat of its id.
    pub async fn submit(
        &self,
        id: Uuid,
        device_id: &str,
        op: Operation,
        body: JobBody,
    ) -> Result<Submitted, JournalError> {
        let (hash, json) = body_hash(op, &body)?;
        let sale_id = body.receipt.as_ref().and_then(|r| r.sale_id.clone());
        let total = body.receipt.as_ref().map_or(0, |r| r.total);
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query("SELECT op, body_hash, state FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            let old_op: String = row.try_get("op")?;
            let old_hash: String = row.try_get("body_hash")?;
            let state: String = row.try_get("state")?;
            if old_op != op.as_str() || old_hash != hash {
                return Err(JournalError::Conflict(id));
            }
            let retried = state == JobState::Failed.as_str();
            if retried {
                // The device refused it, so it was never registered: safe to try again, under a
                // new device ref because the device remembers its answer for the old one.
                sqlx::query(
                    "UPDATE jobs SET state = 'pending', device_ref = ?, reason = NULL, \
                     updated_at = ? WHERE id = ?",
                )
                .bind(Uuid::now_v7().to_string())
                .bind(now())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            }
            let job = self.get_in(&mut tx, id).await?;
            tx.commit().await?;
            let job = job.ok_or_else(|| JournalError::Corrupt("job vanished".into()))?;
            return Ok(if retried {
                Submitted::Retried(job)
            } else {
                Submitted::Existing(job)
            });
        }
        if let (Operation::Refund, Some(sale)) = (op, &sale_id) {
            check_refund(&mut tx, sale, total).await?;
        }
        let at = now();
        sqlx::query(
            "INSERT INTO jobs (id, device_id, op, body_hash, body, sale_id, total, state, \
             device_ref, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(device_id)
        .bind(op.as_str())
        .bind(hash)
        .bind(json)
        .bind(sale_id)
        .bind(total)
        .bind(Uuid::now_v7().to_string())
        .bind(&at)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        let job = self.get_in(&mut tx, id).await?;
        tx.commit().await?;
        job.map(Submitted::New)
            .ok_or_else(|| JournalError::Corrupt("job vanished".into()))
    }

    async fn get_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        id: Uuid,
    ) -> Result<Option<Job>, JournalError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(row_to_job).transpose()
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Job>, JournalError> {
        let mut conn = self.pool.acquire().await?;
        self.get_in(&mut conn, id).await
    }

    /// The oldest unfinished job of a device: the head of its queue.
    pub async fn next_for(&self, device_id: &str) -> Result<Option<Job>, JournalError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = ? AND state IN ('pending', 'sent') \
             ORDER BY seq LIMIT 1"
        )))
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_job).transpose()
    }

    pub async fn queued(&self, device_id: &str) -> Result<u32, JournalError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE device_id = ? AND state IN ('pending', 'sent')",
        )
        .bind(device_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Committed before every call to the device.
    pub async fn mark_sent(&self, id: Uuid) -> Result<(), JournalError> {
        sqlx::query(
            "UPDATE jobs SET state = 'sent', attempts = attempts + 1, updated_at = ? WHERE id = ?",
        )
        .bind(now())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish(
        &self,
        id: Uuid,
        outcome: &Result<DeviceAnswer, String>,
    ) -> Result<(), JournalError> {
        let (state, answer, reason) = match outcome {
            Ok(a) => (
                JobState::Done,
                Some(serde_json::to_string(a).map_err(|e| JournalError::Corrupt(e.to_string()))?),
                None,
            ),
            Err(r) => (JobState::Failed, None, Some(r.clone())),
        };
        sqlx::query(
            "UPDATE jobs SET state = ?, answer = ?, reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(answer)
        .bind(reason)
        .bind(now())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A refund must name a sale this gateway took, which the device did not refuse, and together
/// with earlier refunds of it may not return more than was paid.
async fn check_refund(
    conn: &mut sqlx::SqliteConnection,
    sale_id: &str,
    total: i64,
) -> Result<(), JournalError> {
    let sale = sqlx::query("SELECT op, state, total FROM jobs WHERE id = ?")
        .bind(sale_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(sale) = sale else {
        return Err(JournalError::Invalid(FieldError::new(
            "sale_id",
            "no sale with this id was registered through this gateway",
        )));
    };
    let op: String = sale.try_get("op")?;
    let state: String = sale.try_get("state")?;
    let sale_total: i64 = sale.try_get("total")?;
    if op != Operation::Sale.as_str() {
        return Err(JournalError::Invalid(FieldError::new(
            "sale_id",
            "this id is not a sale",
        )));
    }
    if state == JobState::Failed.as_str() {
        return Err(JournalError::Invalid(FieldError::new(
            "sale_id",
            "this sale was not registered (the device refused it)",
        )));
    }
    let refunded: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(total), 0) FROM jobs WHERE sale_id = ? AND op = 'refund' \
         AND state != 'failed'",
    )
    .bind(sale_id)
    .fetch_one(&mut *conn)
    .await?;
    if refunded.saturating_add(total) > sale_total {
        return Err(JournalError::Invalid(FieldError::new(
            "total",
            format!(
                "refunds would return {} tiyin of a sale of {sale_total} tiyin",
                refunded.saturating_add(total)
            ),
        )));
    }
    Ok(())
}
