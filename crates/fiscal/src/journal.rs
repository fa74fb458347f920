//! The journal: every operation is committed here (SQLite, WAL, `synchronous=FULL`) before it
//! reaches a device, and its outcome is committed when the device answers.
//!
//! A job moves `pending` -> `sent` -> `done` | `failed`. `sent` is written before each call to
//! the device, so after a crash the worker knows the device may already have printed and asks
//! it (by `device_ref`) before sending anything again.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot};
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
    /// The transaction holding this write did not commit: nothing of it was kept.
    #[error("journal commit failed: {0}")]
    Commit(String),
    #[error("the journal is closed")]
    Closed,
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

/// The journal. Writes go through one writer task that owns the only writing connection: it
/// takes every write already queued (group commit), runs each in a savepoint of one
/// transaction, commits once, and answers each caller only after that commit. Reads use a
/// separate pool (WAL lets them run beside the writer), so they never wait behind a commit.
#[derive(Clone)]
pub struct Journal {
    reads: SqlitePool,
    writes: mpsc::UnboundedSender<Msg>,
}

/// The future a write runs on the writer's connection, inside the batch's transaction.
pub type WriteFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'c>>;

/// Most writes in one transaction: bounds how long the first of them waits for its commit.
const MAX_BATCH: usize = 128;

enum Msg {
    Write(Box<dyn Write>),
    Close(oneshot::Sender<()>),
}

/// A queued write: run it inside the batch, or fail it without running.
trait Write: Send {
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = Box<dyn Ran>> + Send + 'c>>;
    fn fail(self: Box<Self>, why: String);
}

/// A write that ran and waits for the batch's commit before its caller hears of it.
trait Ran: Send {
    fn failed(&self) -> bool;
    fn deliver(self: Box<Self>, commit: Result<(), String>);
}

struct Op<F, T> {
    f: F,
    to: oneshot::Sender<Result<T, JournalError>>,
}

struct Reply<T> {
    result: Result<T, JournalError>,
    to: oneshot::Sender<Result<T, JournalError>>,
}

impl<F, T> Write for Op<F, T>
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T> + Send + 'static,
    T: Send + 'static,
{
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
    ) -> Pin<Box<dyn Future<Output = Box<dyn Ran>> + Send + 'c>> {
        let Op { f, to } = *self;
        Box::pin(async move {
            let result = f(conn).await;
            Box::new(Reply { result, to }) as Box<dyn Ran>
        })
    }
    fn fail(self: Box<Self>, why: String) {
        let _ = self.to.send(Err(JournalError::Commit(why)));
    }
}

impl<T: Send> Ran for Reply<T> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }
    fn deliver(self: Box<Self>, commit: Result<(), String>) {
        let result = match (self.result, commit) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(why)) => Err(JournalError::Commit(why)),
            (Ok(v), Ok(())) => Ok(v),
        };
        let _ = self.to.send(result);
    }
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

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), String> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The writer task: batches whatever is queued into one transaction and one commit.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch: Vec<Box<dyn Write>> = Vec::new();
    loop {
        let mut close = None;
        match rx.recv().await {
            None => break,
            Some(Msg::Close(ack)) => close = Some(ack),
            Some(Msg::Write(w)) => batch.push(w),
        }
        while close.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Write(w)) => batch.push(w),
                Ok(Msg::Close(ack)) => close = Some(ack),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(&mut conn, std::mem::take(&mut batch)).await;
        }
        if let Some(ack) = close {
            // Writes queued after the close are dropped: their callers get `Closed`.
            rx.close();
            let _ = conn.close().await;
            let _ = ack.send(());
            return;
        }
    }
    let _ = conn.close().await;
}

async fn run_batch(conn: &mut SqliteConnection, batch: Vec<Box<dyn Write>>) {
    // A lone write needs no savepoint: its failure rolls back the whole transaction. In a batch
    // each write runs in its own savepoint, opened in the same round trip as the statement
    // before it (statements go one by one to the connection's thread).
    let single = batch.len() == 1;
    let begin = if single {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN IMMEDIATE; SAVEPOINT w"
    };
    if let Err(e) = exec(conn, begin).await {
        for w in batch {
            w.fail(e.clone());
        }
        return;
    }
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(batch.len());
    let mut pending = batch.into_iter().peekable();
    let mut broken = None;
    while let Some(w) = pending.next() {
        let r = w.run(conn).await;
        if !single {
            let more = pending.peek().is_some();
            // A failed write leaves nothing behind; the others in the batch go on.
            let next = match (r.failed(), more) {
                (false, true) => "RELEASE w; SAVEPOINT w",
                (false, false) => "RELEASE w",
                (true, true) => "ROLLBACK TO w; RELEASE w; SAVEPOINT w",
                (true, false) => "ROLLBACK TO w; RELEASE w",
            };
            if let Err(e) = exec(conn, next).await {
                ran.push(r);
                broken = Some(e);
                break;
            }
        }
        ran.push(r);
    }
    let commit = match broken {
        Some(e) => Err(e),
        None if single && ran.iter().all(|r| r.failed()) => {
            exec(conn, "ROLLBACK").await.ok();
            for r in ran {
                r.deliver(Ok(()));
            }
            return;
        }
        None => exec(conn, "COMMIT").await,
    };
    if let Err(e) = &commit {
        // Whatever the batch wrote is gone: every caller is told, none is answered success.
        exec(conn, "ROLLBACK").await.ok();
        for w in pending {
            w.fail(e.clone());
        }
    }
    for r in ran {
        r.deliver(commit.clone());
    }
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
        // The only writing connection: SQLite has one writer anyway, and it makes
        // check-then-insert of refunds atomic without lock upgrades.
        let mut conn = opts.connect().await?;
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let (writes, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn, rx));
        Ok(Journal { reads, writes })
    }

    /// The pool for reads; every write goes through [`Journal::write`].
    pub fn pool(&self) -> &SqlitePool {
        &self.reads
    }

    /// Stops the writer after the writes already queued, and closes the connections.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.writes.send(Msg::Close(ack)).is_ok() {
            let _ = done.await;
        }
        self.reads.close().await;
    }

    /// Queues a write for the writer at once (queue order is call order); the future answers
    /// after the transaction holding it committed. A failing write is rolled back alone.
    pub fn write<T, F>(&self, f: F) -> impl Future<Output = Result<T, JournalError>> + use<T, F>
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T> + Send + 'static,
        T: Send + 'static,
    {
        let (to, rx) = oneshot::channel();
        let queued = self.writes.send(Msg::Write(Box::new(Op { f, to }))).is_ok();
        async move {
            if !queued {
                return Err(JournalError::Closed);
            }
            rx.await.unwrap_or(Err(JournalError::Closed))
        }
    }

    /// Journals a new operation, or answers a repeat of its id. Queued at the call.
    pub fn submit(
        &self,
        id: Uuid,
        device_id: &str,
        op: Operation,
        body: JobBody,
    ) -> impl Future<Output = Result<Submitted, JournalError>> + use<> {
        let prepared = body_hash(op, &body);
        let device_id = device_id.to_string();
        let write = prepared.map(|(hash, json)| {
            self.write(move |conn| Box::pin(submit_in(conn, id, device_id, op, body, hash, json)))
        });
        async move { write?.await }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Job>, JournalError> {
        let mut conn = self.reads.acquire().await?;
        get_in(&mut conn, id).await
    }

    /// The oldest unfinished job of a device: the head of its queue.
    pub async fn next_for(&self, device_id: &str) -> Result<Option<Job>, JournalError> {
        Ok(self.head(device_id, 1).await?.into_iter().next())
    }

    /// The first `limit` unfinished jobs of a device, in queue order.
    pub async fn head(&self, device_id: &str, limit: u32) -> Result<Vec<Job>, JournalError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE device_id = ? AND state IN ('pending', 'sent') \
             ORDER BY seq LIMIT ?"
        )))
        .bind(device_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(row_to_job).collect()
    }

    pub async fn queued(&self, device_id: &str) -> Result<u32, JournalError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE device_id = ? AND state IN ('pending', 'sent')",
        )
        .bind(device_id)
        .fetch_one(&self.reads)
        .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Committed before every call to the device.
    pub async fn mark_sent(&self, id: Uuid) -> Result<(), JournalError> {
        self.mark_sent_all(vec![id]).await
    }

    /// Marks several jobs sent in one commit, before the device hears of any of them.
    pub async fn mark_sent_all(&self, ids: Vec<Uuid>) -> Result<(), JournalError> {
        self.write(move |conn| {
            Box::pin(async move {
                let at = now();
                for id in ids {
                    sqlx::query(
                        "UPDATE jobs SET state = 'sent', attempts = attempts + 1, updated_at = ? \
                         WHERE id = ?",
                    )
                    .bind(&at)
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn finish(
        &self,
        id: Uuid,
        outcome: &Result<DeviceAnswer, String>,
    ) -> Result<(), JournalError> {
        self.finish_all(vec![(id, outcome.clone())]).await
    }

    /// Records the device's outcomes of several jobs in one commit.
    pub async fn finish_all(
        &self,
        outcomes: Vec<(Uuid, Result<DeviceAnswer, String>)>,
    ) -> Result<(), JournalError> {
        let mut rows = Vec::with_capacity(outcomes.len());
        for (id, outcome) in outcomes {
            rows.push(match outcome {
                Ok(a) => (
                    id,
                    JobState::Done,
                    Some(
                        serde_json::to_string(&a)
                            .map_err(|e| JournalError::Corrupt(e.to_string()))?,
                    ),
                    None,
                ),
                Err(r) => (id, JobState::Failed, None, Some(r)),
            });
        }
        self.write(move |conn| {
            Box::pin(async move {
                let at = now();
                for (id, state, answer, reason) in rows {
                    sqlx::query(
                        "UPDATE jobs SET state = ?, answer = ?, reason = ?, updated_at = ? \
                         WHERE id = ?",
                    )
                    .bind(state.as_str())
                    .bind(answer)
                    .bind(reason)
                    .bind(&at)
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }
}

async fn get_in(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<Job>, JournalError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
    )))
    .bind(id.to_string())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(row_to_job).transpose()
}

/// The submit write, on the writer's connection.
async fn submit_in(
    conn: &mut SqliteConnection,
    id: Uuid,
    device_id: String,
    op: Operation,
    body: JobBody,
    hash: String,
    json: String,
) -> Result<Submitted, JournalError> {
    let sale_id = body.receipt.as_ref().and_then(|r| r.sale_id.clone());
    let total = body.receipt.as_ref().map_or(0, |r| r.total);
    let refund_of = match (op, &sale_id) {
        (Operation::Refund, Some(sale)) => Some(sale.clone()),
        _ => None,
    };
    // A new id (the usual case) is one insert; only a repeat or a refund reads first.
    if refund_of.is_none() || repeat_of(conn, id, op, &hash).await?.is_none() {
        if let Some(sale) = &refund_of {
            check_refund(conn, sale, total).await?;
        }
        let at = now();
        let device_ref = Uuid::now_v7();
        let done = sqlx::query(
            "INSERT INTO jobs (id, device_id, op, body_hash, body, sale_id, total, state, \
             device_ref, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) \
             ON CONFLICT(id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&device_id)
        .bind(op.as_str())
        .bind(&hash)
        .bind(json)
        .bind(sale_id)
        .bind(total)
        .bind(device_ref.to_string())
        .bind(&at)
        .bind(&at)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Submitted::New(Job {
                seq: done.last_insert_rowid(),
                id,
                device_id,
                op,
                body,
                state: JobState::Pending,
                device_ref,
                answer: None,
                reason: None,
            }));
        }
    }
    let retried = repeat_of(conn, id, op, &hash)
        .await?
        .ok_or_else(|| JournalError::Corrupt("job vanished".into()))?;
    if retried {
        // The device refused it, so it was never registered: safe to try again, under a new
        // device ref because the device remembers its answer for the old one.
        sqlx::query(
            "UPDATE jobs SET state = 'pending', device_ref = ?, reason = NULL, updated_at = ? \
             WHERE id = ?",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(now())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    }
    let job = get_in(conn, id)
        .await?
        .ok_or_else(|| JournalError::Corrupt("job vanished".into()))?;
    Ok(if retried {
        Submitted::Retried(job)
    } else {
        Submitted::Existing(job)
    })
}

/// For an id already journaled: `Some(true)` when it was refused (to be tried again),
/// `Some(false)` for any other state; a conflict when the request differs.
async fn repeat_of(
    conn: &mut SqliteConnection,
    id: Uuid,
    op: Operation,
    hash: &str,
) -> Result<Option<bool>, JournalError> {
    let Some(row) = sqlx::query("SELECT op, body_hash, state FROM jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let old_op: String = row.try_get("op")?;
    let old_hash: String = row.try_get("body_hash")?;
    let state: String = row.try_get("state")?;
    if old_op != op.as_str() || old_hash != hash {
        return Err(JournalError::Conflict(id));
    }
    Ok(Some(state == JobState::Failed.as_str()))
}

/// A refund must name a sale this gateway took, which the device did not refuse, and together
/// with earlier refunds of it may not return more than was paid.
async fn check_refund(
    conn: &mut SqliteConnection,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Payments;

    fn sale(id: Uuid, total: i64) -> JobBody {
        JobBody {
            cashier: "Dilnoza".into(),
            receipt: Some(Receipt {
                id: id.to_string(),
                device_id: "till-1".into(),
                cashier: "Dilnoza".into(),
                items: Vec::new(),
                payments: Payments {
                    cash: total,
                    card: 0,
                    other: 0,
                },
                total,
                sale_id: None,
            }),
        }
    }

    /// Rows another connection sees: only what was committed.
    async fn committed(dir: &Path, sql: &'static str) -> i64 {
        let opts = SqliteConnectOptions::new().filename(dir.join("fiscal-journal.sqlite"));
        let mut conn = opts.connect().await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        n
    }

    /// A write that signals when it runs, then holds its batch open until released.
    fn hold(
        journal: &Journal,
    ) -> (
        tokio::task::JoinHandle<Result<(), JournalError>>,
        oneshot::Receiver<()>,
        oneshot::Sender<()>,
    ) {
        let (running_tx, running) = oneshot::channel();
        let (release, release_rx) = oneshot::channel::<()>();
        let write = journal.write(move |_conn| {
            Box::pin(async move {
                let _ = running_tx.send(());
                let _ = release_rx.await;
                Ok(())
            })
        });
        (tokio::spawn(write), running, release)
    }

    #[tokio::test]
    async fn concurrent_writes_share_a_commit_and_are_answered_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let taken = Uuid::now_v7();
        journal
            .submit(taken, "till-1", Operation::Sale, sale(taken, 100))
            .await
            .unwrap();

        // The writer is busy with a first batch while the next writes queue up.
        let (first, running, release_first) = hold(&journal);
        running.await.unwrap();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let receipts: Vec<_> = ids
            .iter()
            .map(|&id| tokio::spawn(journal.submit(id, "till-1", Operation::Sale, sale(id, 500))))
            .collect();
        // Two failures in the same batch: an id reused with another body, and a write that
        // fails after writing something (rolled back alone).
        let conflict =
            tokio::spawn(journal.submit(taken, "till-1", Operation::Sale, sale(taken, 999)));
        let broken = tokio::spawn(journal.write(|conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO virtual_fm (terminal_id) VALUES ('half-done')")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        }));
        let (last, running, release_last) = hold(&journal);
        release_first.send(()).unwrap();
        first.await.unwrap().unwrap();

        // The second batch ran every queued write and now waits on its last one: nothing of it
        // is committed, so nobody has an answer yet.
        running.await.unwrap();
        tokio::task::yield_now().await;
        assert!(receipts.iter().all(|r| !r.is_finished()));
        assert!(!conflict.is_finished() && !broken.is_finished());
        assert_eq!(
            committed(dir.path(), "SELECT COUNT(*) FROM jobs").await,
            1,
            "the batch is not committed yet"
        );

        release_last.send(()).unwrap();
        last.await.unwrap().unwrap();
        for (r, id) in receipts.into_iter().zip(&ids) {
            match r.await.unwrap().unwrap() {
                Submitted::New(job) => {
                    assert_eq!(job.id, *id);
                    assert_eq!(job.state, JobState::Pending);
                }
                other => panic!("expected a new job, got {other:?}"),
            }
        }
        assert!(matches!(
            conflict.await.unwrap(),
            Err(JournalError::Conflict(id)) if id == taken
        ));
        assert!(matches!(broken.await.unwrap(), Err(JournalError::Db(_))));
        assert_eq!(committed(dir.path(), "SELECT COUNT(*) FROM jobs").await, 6);
        assert_eq!(
            committed(dir.path(), "SELECT COUNT(*) FROM virtual_fm").await,
            0,
            "the failed write left nothing"
        );
        // Each job reads back as submitted.
        for id in &ids {
            let job = journal.get(*id).await.unwrap().unwrap();
            assert_eq!(job.total(), 500);
        }
        journal.close().await;
    }

    #[tokio::test]
    async fn a_lone_failed_write_rolls_back_and_the_next_commits() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let failed = journal
            .write(|conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO virtual_fm (terminal_id) VALUES ('a')")
                        .execute(&mut *conn)
                        .await?;
                    Err::<(), _>(JournalError::Corrupt("refused".into()))
                })
            })
            .await;
        assert!(matches!(failed, Err(JournalError::Corrupt(_))));
        let id = Uuid::now_v7();
        let job = journal
            .submit(id, "till-1", Operation::Sale, sale(id, 100))
            .await
            .unwrap();
        assert!(matches!(job, Submitted::New(_)));
        journal.mark_sent_all(vec![id]).await.unwrap();
        assert_eq!(
            journal.get(id).await.unwrap().unwrap().state,
            JobState::Sent
        );
        assert_eq!(
            committed(dir.path(), "SELECT COUNT(*) FROM virtual_fm").await,
            0
        );
        journal.close().await;
        assert!(matches!(
            journal
                .submit(id, "till-1", Operation::Sale, sale(id, 100))
                .await,
            Err(JournalError::Closed)
        ));
    }
}
