//! One worker per device: takes the device's journaled jobs strictly in order (the pending ones
//! at the head of its queue together: one commit marks them sent, one records their outcomes),
//! and keeps retrying an unreachable device with backoff, asking it about a job before
//! re-sending it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use crate::driver::{Command, DriverError, FiscalDriver, Lookup, Outcome};
use crate::journal::{Job, JobState, Journal};

/// What the API layer knows about a device between status queries.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub online: bool,
    pub last_error: Option<String>,
}

pub struct Device {
    pub id: String,
    pub driver: Arc<dyn FiscalDriver>,
    wake: Notify,
    health: Mutex<Health>,
}

impl Device {
    pub fn new(id: String, driver: Arc<dyn FiscalDriver>) -> Self {
        Self {
            id,
            driver,
            wake: Notify::new(),
            health: Mutex::new(Health {
                online: true,
                last_error: None,
            }),
        }
    }

    /// Tells the worker there is new work (a permit is kept if it is busy, so none is lost).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_health(&self, online: bool, last_error: Option<String>) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Health { online, last_error };
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// Callers waiting for jobs to finish, by job id: each is handed the finished job (no read).
#[derive(Default)]
pub struct Finished {
    waiters: Mutex<HashMap<Uuid, Vec<oneshot::Sender<Job>>>>,
}

impl Finished {
    /// Register before the job can finish (before submitting it), so no outcome is missed.
    pub fn wait(&self, id: Uuid) -> oneshot::Receiver<Job> {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(id).or_default().push(tx);
        rx
    }

    /// Forgets waiters that gave up on a job.
    pub fn forget(&self, id: Uuid) {
        let mut w = self.lock();
        if let Some(v) = w.get_mut(&id) {
            v.retain(|tx| !tx.is_closed());
            if v.is_empty() {
                w.remove(&id);
            }
        }
    }

    pub fn done(&self, job: &Job) {
        let waiting = self.lock().remove(&job.id);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(job.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<oneshot::Sender<Job>>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Most jobs a worker takes from its queue at once.
const BATCH: u32 = 64;

pub struct Worker {
    pub device: Arc<Device>,
    pub journal: Journal,
    pub finished: Arc<Finished>,
    pub backoff: Backoff,
}

/// The run of pending jobs at the head of the queue that can go to the device together: it
/// stops at a job that may already have been sent (that one is looked up alone) and before a
/// refund of a sale in the run (its command carries the sale's journaled answer).
fn take_run(head: Vec<Job>) -> Vec<Job> {
    let mut run: Vec<Job> = Vec::with_capacity(head.len());
    for job in head {
        let sale = job
            .body
            .receipt
            .as_ref()
            .and_then(|r| r.sale_id.as_deref())
            .and_then(|s| Uuid::parse_str(s).ok());
        if job.state != JobState::Pending || sale.is_some_and(|s| run.iter().any(|j| j.id == s)) {
            break;
        }
        run.push(job);
    }
    run
}

impl Worker {
    pub async fn run(self) {
        loop {
            match self.journal.head(&self.device.id, BATCH).await {
                Ok(head) if head.is_empty() => {
                    // The timeout is a safety net only; submissions wake us.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), self.device.wake.notified())
                            .await;
                }
                Ok(mut head) if head[0].state == JobState::Sent => {
                    head.truncate(1);
                    if let Some(job) = head.pop() {
                        self.process(job).await;
                    }
                }
                Ok(head) => self.process_run(take_run(head)).await,
                Err(e) => {
                    tracing::error!(device = %self.device.id, error = %e, "journal read failed");
                    tokio::time::sleep(self.backoff.max).await;
                }
            }
        }
    }

    async fn command(&self, job: &Job) -> Command {
        let original = match job.body.receipt.as_ref().and_then(|r| r.sale_id.as_deref()) {
            Some(sale) => match Uuid::parse_str(sale) {
                Ok(sale) => self
                    .journal
                    .get(sale)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|j| j.answer),
                Err(_) => None,
            },
            None => None,
        };
        Command {
            device_ref: job.device_ref,
            op: job.op,
            cashier: job.body.cashier.clone(),
            receipt: job.body.receipt.clone(),
            original,
        }
    }

    /// One job found `sent`: it may have reached the device before a crash, so ask first.
    async fn process(&self, job: Job) {
        let cmd = self.command(&job).await;
        let outcome = self.settle(&job, &cmd, true).await;
        self.finish(vec![job], vec![outcome]).await;
    }

    /// Pending jobs in queue order: one commit marks them all sent, the device gets them in
    /// order, one commit records their outcomes.
    async fn process_run(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        // Durable before the device hears of any of them: after a crash each is looked up.
        while let Err(e) = self.journal.mark_sent_all(ids.clone()).await {
            tracing::error!(device = %self.device.id, error = %e, "cannot journal the attempt");
            tokio::time::sleep(self.backoff.max).await;
        }
        let mut cmds = Vec::with_capacity(jobs.len());
        for job in &jobs {
            cmds.push(self.command(job).await);
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        while outcomes.len() < jobs.len() {
            let i = outcomes.len();
            let mut failed = None;
            // A driver answering more than it was asked must not run past the jobs.
            let asked = cmds.len() - i;
            for r in self
                .device
                .driver
                .execute_batch(&cmds[i..])
                .await
                .into_iter()
                .take(asked)
            {
                match r {
                    Ok(o) => outcomes.push(o),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if outcomes.len() == i && failed.is_none() {
                failed = Some(DriverError::Protocol("the driver answered nothing".into()));
            }
            if let Some(e) = failed {
                // This one may or may not have reached the device; the rest were not sent.
                let i = outcomes.len();
                tracing::warn!(device = %self.device.id, job = %jobs[i].id, error = %e, "device attempt failed, retrying");
                self.device.set_health(false, Some(e.to_string()));
                tokio::time::sleep(self.backoff.initial).await;
                outcomes.push(self.settle(&jobs[i], &cmds[i], true).await);
            }
        }
        self.finish(jobs, outcomes).await;
    }

    /// Gets the device's final word on one job, retrying an unreachable device with backoff.
    /// `sent`: the device may have it already, so it is looked up before being sent again.
    async fn settle(&self, job: &Job, cmd: &Command, mut sent: bool) -> Outcome {
        let mut delay = self.backoff.initial;
        loop {
            let attempt: Result<Option<Outcome>, DriverError> = if sent {
                match self.device.driver.lookup(cmd).await {
                    Ok(Lookup::Finished(o)) => Ok(Some(o)),
                    Ok(Lookup::InProgress) => Ok(None),
                    Ok(Lookup::NotFound) => {
                        sent = false;
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                if let Err(e) = self.journal.mark_sent(job.id).await {
                    tracing::error!(job = %job.id, error = %e, "cannot journal the attempt");
                    tokio::time::sleep(self.backoff.max).await;
                    continue;
                }
                sent = true;
                self.device.driver.execute(cmd).await.map(Some)
            };
            match attempt {
                Ok(Some(o)) => return o,
                Ok(None) => tokio::time::sleep(self.backoff.initial).await,
                Err(e) => {
                    tracing::warn!(device = %self.device.id, job = %job.id, error = %e, "device attempt failed, retrying");
                    self.device.set_health(false, Some(e.to_string()));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.max);
                }
            }
        }
    }

    /// Commits the outcomes (the device has spoken: this must happen, however long the disk
    /// needs), then answers whoever waits for these jobs.
    async fn finish(&self, jobs: Vec<Job>, outcomes: Vec<Outcome>) {
        let mut results = Vec::with_capacity(outcomes.len());
        for (job, outcome) in jobs.iter().zip(outcomes) {
            results.push((
                job.id,
                match outcome {
                    Outcome::Done(answer) => {
                        self.device.set_health(true, None);
                        Ok(answer)
                    }
                    Outcome::Refused(reason) => {
                        self.device.set_health(true, Some(reason.clone()));
                        Err(reason)
                    }
                },
            ));
        }
        while let Err(e) = self.journal.finish_all(results.clone()).await {
            tracing::error!(device = %self.device.id, error = %e, "cannot journal the outcome, retrying");
            tokio::time::sleep(self.backoff.max).await;
        }
        for (mut job, (_, result)) in jobs.into_iter().zip(results) {
            match result {
                Ok(answer) => {
                    job.state = JobState::Done;
                    job.answer = Some(answer);
                    job.reason = None;
                }
                Err(reason) => {
                    job.state = JobState::Failed;
                    job.answer = None;
                    job.reason = Some(reason);
                }
            }
            self.finished.done(&job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JobBody;
    use crate::model::{Operation, Payments, Receipt};

    fn job(id: Uuid, state: JobState, sale: Option<Uuid>) -> Job {
        Job {
            seq: 0,
            id,
            device_id: "d".into(),
            op: if sale.is_some() {
                Operation::Refund
            } else {
                Operation::Sale
            },
            body: JobBody {
                cashier: String::new(),
                receipt: Some(Receipt {
                    id: id.to_string(),
                    device_id: "d".into(),
                    cashier: String::new(),
                    items: Vec::new(),
                    payments: Payments::default(),
                    total: 0,
                    sale_id: sale.map(|s| s.to_string()),
                }),
            },
            state,
            device_ref: Uuid::now_v7(),
            answer: None,
            reason: None,
        }
    }

    #[test]
    fn a_run_stops_at_a_sent_job_and_before_a_refund_of_its_own_sale() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let other_sale = Uuid::now_v7();
        let head = vec![
            job(ids[0], JobState::Pending, None),
            job(ids[1], JobState::Pending, Some(other_sale)),
            job(ids[2], JobState::Pending, None),
            job(ids[3], JobState::Pending, Some(ids[2])),
            job(ids[4], JobState::Pending, None),
        ];
        let run: Vec<Uuid> = take_run(head).iter().map(|j| j.id).collect();
        assert_eq!(run, ids[..3]);
        let head = vec![
            job(ids[0], JobState::Pending, None),
            job(ids[1], JobState::Sent, None),
            job(ids[2], JobState::Pending, None),
        ];
        let run: Vec<Uuid> = take_run(head).iter().map(|j| j.id).collect();
        assert_eq!(run, ids[..1]);
    }
}
