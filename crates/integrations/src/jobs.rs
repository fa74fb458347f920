//! Sync jobs: `POST /integrations/{id}/sync {"what"}` queues one; a [`JobRunner`] claims it
//! under a lease and drives the [`SyncHandler`] registered for (integration type, what) step by
//! step, saving progress and the handler's cursor after every step. A job whose runner stopped
//! or died is picked up again (at once after a clean stop, after the lease otherwise) and
//! continues from its last saved cursor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use savdo_domain::clock::{Clock, SystemClock};
use savdo_hub::{ConnectorError, Credentials, HttpHub, Registry};
use savdo_storage::integrations::{Integration, IntegrationStatus, Job, JobProgress, JobStatus};
use savdo_storage::{Storage, StorageError};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::vault::VaultHandle;

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// Items handled by this step (added to the job's `done`).
    pub processed: i64,
    /// The total, once known.
    pub total: Option<i64>,
    /// Where the next step starts; saved with the progress.
    pub cursor: Option<Value>,
    /// Items that failed (`{item, code, message}`), recorded in the job's errors.
    pub errors: Vec<Value>,
    /// Nothing left to do.
    pub finished: bool,
}

/// Everything a step may use.
pub struct SyncContext {
    pub store: Arc<dyn Storage>,
    pub integration: Integration,
    pub credentials: Credentials,
    pub job_id: Uuid,
    pub what: String,
    pub registry: Arc<Registry>,
    pub hub: Option<HttpHub>,
}

/// One kind of sync of one integration type (marketplace `stock`, `catalog`…).
#[async_trait]
pub trait SyncHandler: Send + Sync {
    /// Do the next bounded piece of work from `cursor` (`None` at the start). A step should be
    /// idempotent: after a crash between its effects and the saved progress it runs again.
    async fn step(&self, ctx: &SyncContext, cursor: Option<&Value>)
    -> Result<Step, ConnectorError>;
}

/// Sync handlers by (integration type, what).
#[derive(Clone, Default)]
pub struct SyncRegistry {
    handlers: BTreeMap<(String, String), Arc<dyn SyncHandler>>,
}

impl std::fmt::Debug for SyncRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl SyncRegistry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, kind: &str, what: &str, handler: Arc<dyn SyncHandler>) {
        self.handlers
            .insert((kind.to_owned(), what.to_owned()), handler);
    }
    pub fn get(&self, kind: &str, what: &str) -> Option<Arc<dyn SyncHandler>> {
        self.handlers
            .get(&(kind.to_owned(), what.to_owned()))
            .cloned()
    }
    /// The `what`s a type supports.
    pub fn whats(&self, kind: &str) -> Vec<String> {
        self.handlers
            .keys()
            .filter(|(k, _)| k == kind)
            .map(|(_, w)| w.clone())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// How long a claimed job stays hidden from other runners without progress.
    pub lease: Duration,
    /// Pause between looks for work when there is none.
    pub idle: Duration,
    /// Consecutive failed steps before the job fails.
    pub max_step_failures: u32,
    /// Pause after a failed (retryable) step.
    pub retry_delay: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            lease: Duration::from_secs(60),
            idle: Duration::from_secs(1),
            max_step_failures: 5,
            retry_delay: Duration::from_secs(5),
        }
    }
}

pub struct JobRunner {
    store: Arc<dyn Storage>,
    vault: Arc<VaultHandle>,
    registry: Arc<Registry>,
    hub: Option<HttpHub>,
    handlers: Arc<SyncRegistry>,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
    owner: Uuid,
}

enum Ended {
    Finished,
    Stopped,
    LostLease,
}

fn error_entry(now: chrono::DateTime<chrono::Utc>, code: &str, message: &str) -> Value {
    json!({ "at": now, "code": code, "message": message })
}

impl JobRunner {
    pub fn new(
        store: Arc<dyn Storage>,
        vault: Arc<VaultHandle>,
        registry: Arc<Registry>,
        hub: Option<HttpHub>,
        handlers: Arc<SyncRegistry>,
    ) -> Self {
        JobRunner {
            store,
            vault,
            registry,
            hub,
            handlers,
            clock: Arc::new(SystemClock),
            config: RunnerConfig::default(),
            owner: savdo_domain::ids::new_id(),
        }
    }

    pub fn with_config(mut self, config: RunnerConfig) -> Self {
        self.config = config;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn lease_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(60))
    }

    /// Claim and run jobs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(runner = %self.owner, "sync job runner started");
        while !*stop.borrow() {
            match self.run_once(&stop).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "sync job runner: storage error"),
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(self.config.idle) => {}
            }
        }
        tracing::info!(runner = %self.owner, "sync job runner stopped");
    }

    /// Claim one job and run it to its end (or until `stop`). False when there was none.
    pub async fn run_once(&self, stop: &watch::Receiver<bool>) -> Result<bool, StorageError> {
        let Some(job) = self
            .store
            .claim_job(self.owner, self.clock.now(), self.lease_until())
            .await?
        else {
            return Ok(false);
        };
        match self.run_job(job.clone(), stop).await? {
            Ended::Stopped => self.store.release_job(job.id, self.owner).await?,
            Ended::Finished | Ended::LostLease => {}
        }
        Ok(true)
    }

    async fn fail(&self, job: &Job, code: &str, message: &str) -> Result<Ended, StorageError> {
        tracing::warn!(job = %job.id, integration = %job.integration_id, code, "sync job failed");
        self.store
            .save_job_progress(
                job.id,
                self.owner,
                &JobProgress {
                    done: job.done,
                    total: job.total,
                    cursor: job.cursor.clone(),
                    new_errors: vec![error_entry(self.clock.now(), code, message)],
                    finish: Some(JobStatus::Failed),
                    lease_until: self.clock.now(),
                },
            )
            .await?;
        Ok(Ended::Finished)
    }

    async fn run_job(&self, job: Job, stop: &watch::Receiver<bool>) -> Result<Ended, StorageError> {
        let integration = match self
            .store
            .get_integration(job.tenant_id, job.integration_id)
            .await
        {
            Ok(i) => i,
            Err(StorageError::NotFound(_)) => {
                return self
                    .fail(&job, "not_found", "the integration no longer exists")
                    .await;
            }
            Err(e) => return Err(e),
        };
        if integration.status == IntegrationStatus::Disabled {
            return self
                .fail(&job, "disabled", "the integration is disabled")
                .await;
        }
        let Some(handler) = self.handlers.get(&integration.kind, &job.what) else {
            let msg = format!("no sync handler for {} / {}", integration.kind, job.what);
            return self.fail(&job, "no_handler", &msg).await;
        };
        let credentials = match self
            .vault
            .open_credentials(
                integration.tenant_id,
                integration.id,
                &integration.credentials_sealed,
            )
            .map_err(|e| e.to_string())
            .and_then(|v| Credentials::from_value(v).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => return self.fail(&job, "credentials", &e).await,
        };
        let ctx = SyncContext {
            store: self.store.clone(),
            integration,
            credentials,
            job_id: job.id,
            what: job.what.clone(),
            registry: self.registry.clone(),
            hub: self.hub.clone(),
        };
        let mut done = job.done;
        let mut total = job.total;
        let mut cursor = job.cursor.clone();
        let mut failures = 0u32;
        tracing::info!(job = %job.id, what = %job.what, done, resumed = cursor.is_some(), "sync job running");
        loop {
            if *stop.borrow() {
                return Ok(Ended::Stopped);
            }
            let (progress, pause) = match handler.step(&ctx, cursor.as_ref()).await {
                Ok(step) => {
                    failures = 0;
                    done += step.processed;
                    total = step.total.or(total);
                    cursor = step.cursor;
                    let now = self.clock.now();
                    let errors = step
                        .errors
                        .into_iter()
                        .map(|mut e| {
                            if let Some(m) = e.as_object_mut() {
                                m.entry("at").or_insert(json!(now));
                            }
                            e
                        })
                        .collect();
                    (
                        JobProgress {
                            done,
                            total,
                            cursor: cursor.clone(),
                            new_errors: errors,
                            finish: step.finished.then_some(JobStatus::Succeeded),
                            lease_until: self.lease_until(),
                        },
                        false,
                    )
                }
                Err(e) => {
                    failures += 1;
                    let give_up = !e.is_retryable() || failures >= self.config.max_step_failures;
                    (
                        JobProgress {
                            done,
                            total,
                            cursor: cursor.clone(),
                            new_errors: vec![error_entry(
                                self.clock.now(),
                                e.code(),
                                &e.to_string(),
                            )],
                            finish: give_up.then_some(JobStatus::Failed),
                            lease_until: self.lease_until(),
                        },
                        !give_up,
                    )
                }
            };
            let finished = progress.finish;
            if !self
                .store
                .save_job_progress(job.id, self.owner, &progress)
                .await?
            {
                tracing::warn!(job = %job.id, "sync job lease lost to another runner");
                return Ok(Ended::LostLease);
            }
            if let Some(status) = finished {
                tracing::info!(job = %job.id, status = status.as_str(), done, "sync job finished");
                return Ok(Ended::Finished);
            }
            if pause {
                let mut stop = stop.clone();
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(self.config.retry_delay) => {}
                }
            }
        }
    }
}
