//! One worker per device: takes the device's journaled jobs strictly in order, and keeps
//! retrying an unreachable device with backoff, asking it about a job before re-sending it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
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

pub struct Worker {
    pub device: Arc<Device>,
    pub journal: Journal,
    pub finished: broadcast::Sender<Uuid>,
    pub backoff: Backoff,
}

impl Worker {
    pub async fn run(self) {
        loop {
            match self.journal.next_for(&self.device.id).await {
                Ok(Some(job)) => self.process(job).await,
                Ok(None) => {
                    // The timeout is a safety net only; submissions wake us.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), self.device.wake.notified())
                            .await;
                }
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

    async fn process(&self, job: Job) {
        let cmd = self.command(&job).await;
        let mut sent = job.state == JobState::Sent;
        let mut delay = self.backoff.initial;
        let outcome = loop {
            let attempt: Result<Option<Outcome>, DriverError> = if sent {
                // It may have reached the device before a crash or a lost answer: ask first.
                match self.device.driver.lookup(&cmd).await {
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
                self.device.driver.execute(&cmd).await.map(Some)
            };
            match attempt {
                Ok(Some(o)) => break o,
                Ok(None) => tokio::time::sleep(self.backoff.initial).await,
                Err(e) => {
                    tracing::warn!(device = %self.device.id, job = %job.id, error = %e, "device attempt failed, retrying");
                    self.device.set_health(false, Some(e.to_string()));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff.max);
                }
            }
        };
        let result = match outcome {
            Outcome::Done(answer) => {
                self.device.set_health(true, None);
                Ok(answer)
            }
            Outcome::Refused(reason) => {
                self.device.set_health(true, Some(reason.clone()));
                Err(reason)
            }
        };
        // The device has spoken: this commit must happen, however long the disk needs.
        while let Err(e) = self.journal.finish(job.id, &result).await {
            tracing::error!(job = %job.id, error = %e, "cannot journal the outcome, retrying");
            tokio::time::sleep(self.backoff.max).await;
        }
        let _ = self.finished.send(job.id);
    }
}
