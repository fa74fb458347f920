//! Group commit for receipts: concurrent `submit_receipt` calls hand their work to one writer
//! task, which writes whatever is already queued (up to a cap) in one transaction, each receipt
//! under its own savepoint, and answers every caller only after that transaction committed.
//!
//! The writer never waits to gather a batch: it takes one receipt, then whatever else is queued
//! at that moment. With one request in flight a batch is that one receipt, written exactly as
//! without group commit. The batch itself is written by the backend (`shared.rs`), which knows
//! its transaction type; this module is the queue, the writer loop and the setting. On SQLite
//! the relay's numbering of what it published waits in the same queue and is written first in
//! the next batch's transaction (`Numbering`), so the one writer connection is taken once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StorageError};
use crate::marking::MarkingPrecheck;
use crate::model::{Actor, ReceiptInput, ReceiptOutcome};

/// The environment variable that switches group commit: `on`, `off`, or the largest batch.
pub const ENV: &str = "SAVDO_GROUP_COMMIT";
/// The largest batch when group commit is on without a size.
pub const DEFAULT_MAX_BATCH: usize = 32;

/// Whether receipts are group-committed, and how many at most per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// 0 or 1: off (each receipt in its own transaction, written by its caller).
    pub max_batch: usize,
}

impl GroupCommit {
    pub const OFF: GroupCommit = GroupCommit { max_batch: 0 };
    pub const ON: GroupCommit = GroupCommit {
        max_batch: DEFAULT_MAX_BATCH,
    };

    pub fn enabled(self) -> bool {
        self.max_batch > 1
    }

    /// The setting from [`ENV`], or `default` when it is unset or empty.
    pub fn from_env(default: GroupCommit) -> Result<GroupCommit> {
        match std::env::var(ENV) {
            Ok(v) => Self::parse(&v, default),
            Err(_) => Ok(default),
        }
    }

    /// `on` / `off` (also `true`/`false`, `1`/`0`) or the largest batch (`0` and `1` are off).
    pub fn parse(v: &str, default: GroupCommit) -> Result<GroupCommit> {
        let v = v.trim();
        match v.to_ascii_lowercase().as_str() {
            "" => Ok(default),
            "on" | "true" | "yes" => Ok(GroupCommit::ON),
            "off" | "false" | "no" => Ok(GroupCommit::OFF),
            n => match n.parse::<usize>() {
                Ok(n) if n <= 256 => Ok(GroupCommit { max_batch: n }),
                _ => Err(StorageError::invalid(
                    ENV,
                    format!("{v:?}: expected on, off or the largest batch (0 to 256)"),
                )),
            },
        }
    }
}

/// One receipt waiting for the writer, and where its answer goes.
pub(crate) struct Job {
    pub actor: Actor,
    pub input: ReceiptInput,
    pub request_hash: String,
    pub precheck: MarkingPrecheck,
    pub reply: oneshot::Sender<Result<ReceiptOutcome>>,
}

/// The relay's numbering of a published run of outbox rows (`seq` from `first` to `last`),
/// riding in the next batch's transaction instead of taking the writer for a transaction of its
/// own (SQLite, where the writer is the bottleneck). Answered with the `(seq, pub_seq)` pairs
/// it numbered, after the commit.
pub(crate) struct Numbering {
    pub first: i64,
    pub last: i64,
    pub reply: oneshot::Sender<Result<Vec<(i64, i64)>>>,
}

/// What the writer task takes from the queue.
// Nearly every item is a receipt: boxing it would allocate once per receipt to save a few
// hundred bytes on the occasional numbering.
#[expect(clippy::large_enum_variant)]
enum Work {
    Receipt(Job),
    Numbering(Numbering),
}

/// Writes a batch of receipts (and the relay's numbering, if any is waiting) in one
/// transaction; the queue answers each job after it returns, that is after the commit.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    async fn write_batch(&self, jobs: &[Job], numbering: &[Numbering]) -> Written;
}

/// What a batch came to.
pub(crate) struct Written {
    /// One per job, in job order.
    pub answers: Vec<Result<ReceiptOutcome>>,
    /// One per numbering, in order.
    pub numbered: Vec<Result<Vec<(i64, i64)>>>,
    /// Receipts stored by the fast path for plain sales.
    pub plain: u64,
}

/// What the writer has done so far (for tests, benchmarks and operators).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions the writer ran (batches, including batches of one).
    pub batches: u64,
    /// Receipts taken from the queue into batches.
    pub receipts: u64,
    /// The largest batch so far.
    pub largest_batch: u64,
    /// Receipts stored by the fast path, which checks and writes a batch's plain sales together
    /// (the others are written one by one, each under its savepoint).
    pub plain: u64,
    /// Receipts waiting in the queue, not yet in a batch.
    pub queued: u64,
    /// The relay's numberings written in the writer's transactions.
    pub numberings: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    receipts: AtomicU64,
    largest: AtomicU64,
    plain: AtomicU64,
    queued: AtomicUsize,
    numberings: AtomicU64,
}

/// The submitting side. The writer task ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: mpsc::UnboundedSender<Work>,
    counters: Arc<Counters>,
}

impl Queue {
    /// Start the writer task on the current runtime. `writer` must not hold this queue (or
    /// the task would keep itself alive).
    pub fn start(writer: impl BatchWriter, max_batch: usize) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(
            Arc::new(writer),
            rx,
            max_batch.max(1),
            counters.clone(),
        ));
        Queue { tx, counters }
    }

    /// Queue a receipt and wait for its answer, which comes after its batch committed.
    pub async fn submit(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &MarkingPrecheck,
    ) -> Result<ReceiptOutcome> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            actor: actor.clone(),
            input: input.clone(),
            request_hash: request_hash.to_owned(),
            precheck: precheck.clone(),
            reply,
        };
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Work::Receipt(job)).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(writer_gone());
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Number the published outbox rows from `first` to `last` in the writer's next
    /// transaction; returns the `(seq, pub_seq)` pairs after its commit.
    pub async fn number(&self, first: i64, last: i64) -> Result<Vec<(i64, i64)>> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Numbering(Numbering { first, last, reply });
        if self.tx.send(work).is_err() {
            return Err(writer_gone());
        }
        answer.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    pub fn stats(&self) -> GroupCommitStats {
        let c = &self.counters;
        GroupCommitStats {
            batches: c.batches.load(Ordering::Relaxed),
            receipts: c.receipts.load(Ordering::Relaxed),
            largest_batch: c.largest.load(Ordering::Relaxed),
            plain: c.plain.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed) as u64,
            numberings: c.numberings.load(Ordering::Relaxed),
        }
    }
}

/// A backend's group commit: the setting, and the queue once the first receipt started it
/// (on the runtime that submits receipts). Clones share the queue.
#[derive(Clone)]
pub(crate) struct Slot(Arc<SlotInner>);

struct SlotInner {
    setting: GroupCommit,
    queue: std::sync::OnceLock<Queue>,
}

impl Slot {
    pub fn new(setting: GroupCommit) -> Slot {
        Slot(Arc::new(SlotInner {
            setting,
            queue: std::sync::OnceLock::new(),
        }))
    }

    /// The setting from [`ENV`], `default` when unset.
    pub fn from_env(default: GroupCommit) -> Result<Slot> {
        Ok(Slot::new(GroupCommit::from_env(default)?))
    }

    pub fn setting(&self) -> GroupCommit {
        self.0.setting
    }

    /// The queue, started with the writer `start` makes on first use; `None` when off.
    pub fn queue<W: BatchWriter>(&self, start: impl FnOnce() -> W) -> Option<&Queue> {
        let s = &self.0;
        if !s.setting.enabled() {
            return None;
        }
        Some(
            s.queue
                .get_or_init(|| Queue::start(start(), s.setting.max_batch)),
        )
    }

    /// `None` when group commit is off.
    pub fn stats(&self) -> Option<GroupCommitStats> {
        let s = &self.0;
        if !s.setting.enabled() {
            return None;
        }
        Some(s.queue.get().map(Queue::stats).unwrap_or_default())
    }
}

fn writer_gone() -> StorageError {
    StorageError::Db(sqlx::Error::WorkerCrashed)
}

/// An error for every receipt of a batch whose transaction failed as a whole (`sqlx::Error`
/// cannot be cloned): none of them was committed, a retry with the same id is safe.
pub(crate) fn batch_failed(e: &StorageError) -> StorageError {
    StorageError::Db(sqlx::Error::Io(std::io::Error::other(format!(
        "the receipt's group commit failed: {e}"
    ))))
}

async fn run(
    writer: Arc<impl BatchWriter>,
    mut rx: mpsc::UnboundedReceiver<Work>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    while let Some(first) = rx.recv().await {
        let (mut jobs, mut numbering) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        // Only receipts count against the cap (the relay has at most one numbering waiting).
        while let Some(w) = next.take() {
            match w {
                Work::Receipt(j) => jobs.push(j),
                Work::Numbering(n) => numbering.push(n),
            }
            if jobs.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        let n = jobs.len();
        if n > 0 {
            counters.queued.fetch_sub(n, Ordering::Relaxed);
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters.receipts.fetch_add(n as u64, Ordering::Relaxed);
            counters.largest.fetch_max(n as u64, Ordering::Relaxed);
        }
        // A task per batch: should writing panic, its callers get an error (their answers are
        // dropped) and the writer goes on with the next batch.
        let w = writer.clone();
        let written = tokio::spawn(async move {
            let written = w.write_batch(&jobs, &numbering).await;
            (jobs, numbering, written)
        })
        .await;
        if let Ok((jobs, numbering, written)) = written {
            // Counted before anyone is answered: a caller sees its own batch in the stats.
            counters.plain.fetch_add(written.plain, Ordering::Relaxed);
            let mut answers = written.answers.into_iter();
            for job in jobs {
                let answer = answers.next().unwrap_or_else(|| {
                    Err(StorageError::Corrupt("group commit lost an answer".into()))
                });
                let _ = job.reply.send(answer);
            }
            let mut numbered = written.numbered.into_iter();
            for n in numbering {
                let answer = numbered.next().unwrap_or_else(|| {
                    Err(StorageError::Corrupt(
                        "group commit lost a numbering".into(),
                    ))
                });
                if answer.is_ok() {
                    counters.numberings.fetch_add(1, Ordering::Relaxed);
                }
                let _ = n.reply.send(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_setting() {
        let d = GroupCommit::ON;
        assert_eq!(GroupCommit::parse("", d).unwrap(), d);
        assert_eq!(GroupCommit::parse("off", d).unwrap(), GroupCommit::OFF);
        assert_eq!(
            GroupCommit::parse("ON", GroupCommit::OFF).unwrap(),
            GroupCommit::ON
        );
        assert_eq!(GroupCommit::parse("8", d).unwrap().max_batch, 8);
        assert!(!GroupCommit::parse("1", d).unwrap().enabled());
        assert!(GroupCommit::parse("lots", d).is_err());
        assert!(GroupCommit::parse("-3", d).is_err());
    }
}
