//! What outbound webhooks need from storage (subscriptions and deliveries).
//!
//! The signing secret is a credential. Storage holds it sealed by the credential vault (the
//! caller seals, bound to the tenant and the webhook id) plus its last four characters for the
//! mask; it is never part of [`Webhook`] (only the masked hint is), never logged and never put
//! in an event. Rows written before sealing existed hold the secret as issued (`whsec_…`) until
//! they are sealed through [`WebhookStore::swap_webhook_secrets`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::Result;
use crate::model::Actor;

/// One event's deliveries, one per subscription in `webhook_ids`.
#[derive(Debug, Clone)]
pub struct EventDeliveries {
    pub tenant: Uuid,
    pub webhook_ids: Vec<Uuid>,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: Value,
}

/// A subscription, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub url: String,
    /// Event types (`receipt.created`), group wildcards (`receipt.*`) or `*`.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// The secret, masked: `whsec_****abcd`.
    pub secret: String,
    /// Failing continuously since then (the first failure after the last success).
    pub failing_since: Option<DateTime<Utc>>,
    /// Why the endpoint was disabled automatically, if it was.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The keys that sign a delivery: the current secret and, for a while after a rotation, the
/// previous one, as stored: vault values (or, for rows not sealed yet, the secret as issued).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecrets {
    pub current: String,
    pub previous: Option<(String, DateTime<Utc>)>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecrets(****)")
    }
}

impl WebhookSecrets {
    /// The secrets that sign at `now`, current first.
    pub fn signing(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut v = vec![self.current.as_str()];
        if let Some((prev, until)) = &self.previous
            && now < *until
        {
            v.push(prev.as_str());
        }
        v
    }
}

/// `whsec_****abcd`: enough to recognise a secret, not to use it.
pub fn mask_secret(secret: &str) -> String {
    format!("whsec_****{}", secret_hint(secret))
}

/// The last four characters of a secret: what the mask shows.
pub fn secret_hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// A stored value that is a secret as issued rather than a vault value (rows from before
/// sealing).
pub fn is_plaintext_secret(stored: &str) -> bool {
    stored.starts_with("whsec_")
}

/// A signing secret as storage keeps it: sealed, and its last four characters for the mask.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub sealed: String,
    pub hint: String,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret(****{})", self.hint)
    }
}

#[derive(Clone)]
pub struct NewWebhook {
    /// Chosen by the caller: the sealed secret is bound to it.
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub secret: SealedSecret,
}

/// A webhook's stored secrets, for re-sealing (a key rotation, rows from before sealing).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecrets {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub secret: String,
    pub prev_secret: Option<String>,
}

impl std::fmt::Debug for StoredSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredSecrets({}/{}, ****)", self.tenant_id, self.id)
    }
}

#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// Enabling resets the failure clock and the disabled reason.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "succeeded" => DeliveryStatus::Succeeded,
            "failed" => DeliveryStatus::Failed,
            "dead" => DeliveryStatus::Dead,
            _ => return None,
        })
    }
}

/// One event for one endpoint, with its attempts so far. `failed` means "failed, a retry is
/// scheduled at `next_attempt_at`"; `dead` means no more automatic attempts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub response_code: Option<u16>,
    pub latency_ms: Option<i64>,
    /// The start of the last response body (at most 2 KiB).
    pub response_body: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery claimed for sending, with what sending needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub tenant_id: Uuid,
    pub url: String,
    /// The CloudEvent to send.
    pub payload: Value,
    pub secrets: WebhookSecrets,
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: Uuid,
    pub success: bool,
    pub response_code: Option<u16>,
    pub latency_ms: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// When to try again after a failure; `None` makes the delivery dead.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
    /// Disable the endpoint when it has been failing for at least this long.
    pub disable_after: chrono::Duration,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, actor: &Actor, new: &NewWebhook) -> Result<Webhook>;
    async fn list_webhooks(&self, tenant: Uuid) -> Result<Vec<Webhook>>;
    async fn get_webhook(&self, tenant: Uuid, id: Uuid) -> Result<Webhook>;
    async fn update_webhook(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: &WebhookPatch,
    ) -> Result<Webhook>;
    async fn delete_webhook(&self, actor: &Actor, id: Uuid) -> Result<()>;
    /// Replace the secret; the previous one keeps signing until `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        actor: &Actor,
        id: Uuid,
        new_secret: &SealedSecret,
        previous_until: DateTime<Utc>,
    ) -> Result<Webhook>;
    /// Every tenant's stored webhook secrets, by id after `after`, `limit` at a time (an
    /// operator's re-sealing pass, not a tenant's request).
    async fn webhook_secrets_batch(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<StoredSecrets>>;
    /// Replace the stored secrets with re-sealed ones of the same values, only if they are still
    /// `old` (a concurrent rotation wins). `hint` is set when given. Returns whether it changed.
    async fn swap_webhook_secrets(
        &self,
        old: &StoredSecrets,
        secret: &str,
        prev_secret: Option<&str>,
        hint: Option<&str>,
    ) -> Result<bool>;
    /// The tenant's enabled subscriptions (the caller matches event types).
    async fn enabled_webhooks(&self, tenant: Uuid) -> Result<Vec<Webhook>>;
    /// One pending delivery per webhook, due at `now`; an existing (webhook, event) pair is left
    /// alone. Returns how many were created.
    async fn enqueue_deliveries(
        &self,
        tenant: Uuid,
        webhook_ids: &[Uuid],
        event_id: Uuid,
        event_type: &str,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let events = [EventDeliveries {
            tenant,
            webhook_ids: webhook_ids.to_vec(),
            event_id,
            event_type: event_type.to_owned(),
            payload: payload.clone(),
        }];
        self.enqueue_deliveries_many(&events, now).await
    }
    /// [`WebhookStore::enqueue_deliveries`] for several events in one transaction (a consumer's
    /// batch: one commit instead of one per event). All or none.
    async fn enqueue_deliveries_many(
        &self,
        events: &[EventDeliveries],
        now: DateTime<Utc>,
    ) -> Result<usize>;
    async fn list_deliveries(
        &self,
        tenant: Uuid,
        webhook_id: Uuid,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    async fn get_delivery(&self, tenant: Uuid, webhook_id: Uuid, id: Uuid) -> Result<Delivery>;
    /// Queue a delivery again, due at `now`.
    async fn requeue_delivery(
        &self,
        tenant: Uuid,
        webhook_id: Uuid,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Delivery>;
    /// Claim up to `limit` deliveries due at `now` on enabled endpoints, hiding them from other
    /// workers until `lease_until`.
    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>>;
    /// Record an attempt; on failure, start or check the endpoint's failure clock and disable it
    /// (emitting `webhook.disabled` in the same transaction) when it ran out. Returns whether
    /// the endpoint was disabled now.
    async fn record_attempt(&self, rec: &AttemptRecord) -> Result<bool>;
}
