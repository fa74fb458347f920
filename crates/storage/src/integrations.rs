//! What the integration hub needs from storage: integrations (with vault-sealed credentials),
//! the exchange log, sync jobs and the inbox of inbound hook deliveries.
//!
//! Storage never sees a plaintext credential: the caller seals the credentials document with
//! the vault before it gets here, and [`Integration`] carries only that ciphertext (never
//! serialised). Events about integrations carry ids, type, name and status only.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::model::Actor;
use crate::{Paged, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationStatus {
    Active,
    Disabled,
    /// The last health check or call failed.
    Failing,
}

impl IntegrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Active => "active",
            IntegrationStatus::Disabled => "disabled",
            IntegrationStatus::Failing => "failing",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => IntegrationStatus::Active,
            "disabled" => IntegrationStatus::Disabled,
            "failing" => IntegrationStatus::Failing,
            _ => return None,
        })
    }
}

/// One integration. `credentials_sealed` is vault ciphertext, bound to (tenant, id).
#[derive(Clone, PartialEq)]
pub struct Integration {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: String,
    pub name: String,
    pub status: IntegrationStatus,
    pub settings: Value,
    pub credentials_sealed: String,
    /// The last health result (`{status, checked_at, latency_ms?, message?}`).
    pub health: Option<Value>,
    pub health_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A new integration. The caller chooses the id, because the sealed credentials are bound to it.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub status: IntegrationStatus,
    pub settings: Value,
    pub credentials_sealed: String,
}

#[derive(Debug, Clone, Default)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub status: Option<IntegrationStatus>,
    pub settings: Option<Value>,
    pub credentials_sealed: Option<String>,
}

/// One exchange of the log, already redacted by the hub.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub operation: Option<String>,
    pub started_at: DateTime<Utc>,
    pub attempt: u32,
    pub method: String,
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    #[schema(value_type = Vec<Vec<String>>)]
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

/// Which log entries to list.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// `ok` (2xx/3xx without error), `error` (anything else) or one HTTP status.
    pub status: Option<LogStatus>,
    pub since: Option<DateTime<Utc>>,
    /// Continue after (older than) this entry.
    pub cursor: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    Ok,
    Error,
    Code(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }
}

/// A sync job and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub what: String,
    pub status: JobStatus,
    pub done: i64,
    pub total: Option<i64>,
    /// `[{at, message, item?}]`, the most recent last.
    pub errors: Vec<Value>,
    /// Where the job continues after a restart (the handler's own format).
    pub cursor: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Progress of a running job, saved after every step under the runner's lease.
#[derive(Debug, Clone)]
pub struct JobProgress {
    pub done: i64,
    pub total: Option<i64>,
    pub cursor: Option<Value>,
    /// Appended to the job's errors.
    pub new_errors: Vec<Value>,
    /// `Some` finishes the job (`succeeded` or `failed`).
    pub finish: Option<JobStatus>,
    pub lease_until: DateTime<Utc>,
}

/// An inbound hook delivery as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct HookDelivery {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    pub delivery_id: String,
    /// `received` (being handled) or `handled`.
    pub status: String,
    /// The stored answer, for duplicates.
    pub result: Option<Value>,
    pub received_at: DateTime<Utc>,
}

/// The outcome of recording a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum HookInsert {
    /// First time: handle it, then [`IntegrationStore::finish_hook`].
    New(Uuid),
    /// Seen before: answer with its stored result (or, while it is still being handled, ask
    /// the provider to retry).
    Duplicate(HookDelivery),
}

#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// Emits `integration.created`.
    async fn create_integration(&self, actor: &Actor, new: &NewIntegration) -> Result<Integration>;
    async fn list_integrations(&self, tenant: Uuid) -> Result<Vec<Integration>>;
    async fn get_integration(&self, tenant: Uuid, id: Uuid) -> Result<Integration>;
    /// The integration an inbound hook URL names (`/hooks/<type>/<id>`): the one lookup not
    /// scoped by a tenant, because the provider knows only the URL. The id and the type must
    /// both match; the caller verifies the provider's signature before trusting anything.
    async fn integration_for_hook(&self, kind: &str, id: Uuid) -> Result<Option<Integration>>;
    /// Emits `integration.updated`.
    async fn update_integration(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: &IntegrationPatch,
    ) -> Result<Integration>;
    /// Deletes its log, jobs and hook inbox too. Emits `integration.deleted`.
    async fn delete_integration(&self, actor: &Actor, id: Uuid) -> Result<()>;
    /// Store a health result. `failing` moves an active integration to `failing` (emitting
    /// `integration.failed`) and a failing one back to `active` when false; a disabled one keeps
    /// its status.
    async fn record_health(
        &self,
        tenant: Uuid,
        id: Uuid,
        health: &Value,
        failing: bool,
    ) -> Result<Integration>;

    /// Every integration's sealed credentials, across tenants, in id order after `after`
    /// (vault rotation). `(tenant, id, sealed)`.
    async fn sealed_credentials_batch(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<(Uuid, Uuid, String)>>;
    /// Replace sealed credentials only if they are still `old` (a concurrent PATCH wins).
    async fn swap_sealed_credentials(
        &self,
        tenant: Uuid,
        id: Uuid,
        old: &str,
        new: &str,
    ) -> Result<bool>;

    /// Append exchanges (ids are assigned here) and keep at most `keep` per integration.
    async fn append_log(&self, entries: &[LogEntry], keep: u32) -> Result<()>;
    /// Newest first.
    async fn list_log(
        &self,
        tenant: Uuid,
        integration: Uuid,
        filter: &LogFilter,
    ) -> Result<Paged<LogEntry>>;

    async fn create_job(&self, tenant: Uuid, integration: Uuid, what: &str) -> Result<Job>;
    /// Newest first.
    async fn list_jobs(&self, tenant: Uuid, integration: Uuid, limit: u32) -> Result<Vec<Job>>;
    async fn get_job(&self, tenant: Uuid, integration: Uuid, id: Uuid) -> Result<Job>;
    /// Claim the oldest queued job, or a running one whose lease ran out, for `owner` until
    /// `lease_until`; it becomes `running`.
    async fn claim_job(
        &self,
        owner: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Job>>;
    /// Save progress while `owner` still holds the lease; false when it lost it.
    async fn save_job_progress(&self, id: Uuid, owner: Uuid, p: &JobProgress) -> Result<bool>;
    /// Give the lease up at once (a runner stopping), leaving the job for another runner.
    async fn release_job(&self, id: Uuid, owner: Uuid) -> Result<()>;

    /// Record a verified delivery, deduplicated by `(integration, delivery_id)`.
    #[allow(clippy::too_many_arguments)]
    async fn insert_hook(
        &self,
        tenant: Uuid,
        integration: Uuid,
        delivery_id: &str,
        body: &[u8],
        headers: &Value,
        now: DateTime<Utc>,
    ) -> Result<HookInsert>;
    /// Take over a delivery left `received` since before `stale_before` (its handler crashed).
    async fn retake_hook(
        &self,
        id: Uuid,
        stale_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    async fn finish_hook(&self, id: Uuid, result: &Value) -> Result<()>;
    /// Give a delivery back unhandled (its handler failed for a passing reason), so the
    /// provider's next retry of it is handled again at once instead of replayed.
    async fn release_hook(&self, id: Uuid) -> Result<()>;
    /// Deliveries of an integration, newest first (tests and support).
    async fn list_hooks(
        &self,
        tenant: Uuid,
        integration: Uuid,
        limit: u32,
    ) -> Result<Vec<HookDelivery>>;
}
