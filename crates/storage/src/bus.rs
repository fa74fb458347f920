//! What the event bus needs from storage: the relay's claim-publish-mark step, the published
//! feed in order, consumer positions, and the consumer inbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_core::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use crate::Result;
use crate::model::OutboxEvent;

/// Publishes a batch; `Ok` only when every event is durably accepted by the bus. The events'
/// `seq` (the outbox sequence on both backends) is not part of what is published; the publishing
/// sequence is given after the bus accepted the batch.
pub type PublishFn<'a> = &'a (
        dyn for<'b> Fn(&'b [OutboxEvent]) -> BoxFuture<'b, std::result::Result<(), String>>
            + Send
            + Sync
    );

/// What one relay step did.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Events handed to the bus.
    pub published: usize,
    /// The events this step numbered (usually all of them; on SQLite a relay in another
    /// process may number some first), `seq` being the publishing sequence, in that order.
    pub numbered: Vec<OutboxEvent>,
    /// Rows committed before this step may still be waiting (it stopped at its limit). When
    /// false, another step would find only what was committed since.
    pub more: bool,
}

/// A consumer's record of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxState {
    /// Never seen: this consumer now holds it (status `processing`).
    New,
    /// Seen before and not finished (a crash, or a retry): the attempts made so far.
    Retry { attempts: u32 },
    /// Applied already: skip.
    Done,
    /// Gave up after the configured attempts.
    Dead,
}

#[derive(Debug, Clone)]
pub struct InboxEntry {
    pub consumer: String,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub event: Option<Value>,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Claim up to `limit` unpublished events (per tenant in order; on PostgreSQL under a
    /// per-tenant lock, so several relays never publish the same row), publish them with
    /// `publish`, and mark them published with a publishing sequence (in `outbox_pub`).
    /// Returns how many were published.
    async fn relay_batch(&self, limit: u32, publish: PublishFn<'_>) -> Result<usize> {
        Ok(self.relay(limit, publish).await?.published)
    }
    /// [`EventStore::relay_batch`], also returning the events this call numbered, with their
    /// publishing sequence as `seq`: the in-process bus hands them to this process's consumers
    /// from memory instead of each consumer reading them back.
    async fn relay(&self, limit: u32, publish: PublishFn<'_>) -> Result<Relayed>;
    /// Events published after `pub_seq`, all tenants, in publishing order.
    async fn published_after(&self, pub_seq: i64, limit: u32) -> Result<Vec<OutboxEvent>>;
    /// Highest publishing sequence so far (for lag).
    async fn last_pub_seq(&self) -> Result<i64>;
    /// Unpublished events waiting for the relay.
    async fn outbox_backlog(&self) -> Result<i64>;

    async fn consumer_position(&self, consumer: &str) -> Result<i64>;
    async fn save_consumer_position(&self, consumer: &str, pub_seq: i64) -> Result<()>;

    /// Record that `consumer` starts on an event (keeping the event for retries).
    async fn inbox_begin(&self, consumer: &str, event: &OutboxEvent) -> Result<InboxState>;
    async fn inbox_done(&self, consumer: &str, event_id: Uuid) -> Result<()>;
    /// A failed attempt: retry at `next_attempt_at`, or dead when `None`.
    async fn inbox_fail(
        &self,
        consumer: &str,
        event_id: Uuid,
        error: &str,
        next_attempt_at: Option<DateTime<Utc>>,
    ) -> Result<()>;
    /// Take a due retry (status `retry`, due at `now`) for one attempt by moving its next
    /// attempt to `lease_until`; `false` when another worker took it first. If the worker dies
    /// during the attempt, the event is due again when the lease ends.
    async fn inbox_claim(
        &self,
        consumer: &str,
        event_id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// [`EventStore::inbox_claim`] for several due retries in one statement; returns the ids it
    /// took (those another worker took first, or not due, are left out).
    async fn inbox_claim_many(
        &self,
        consumer: &str,
        event_ids: &[Uuid],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Uuid>>;
    /// Events whose retry is due.
    async fn inbox_due(
        &self,
        consumer: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(OutboxEvent, u32)>>;
    async fn inbox_entries(
        &self,
        consumer: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<InboxEntry>>;
    /// Count of entries by status for a consumer (metrics).
    async fn inbox_counts(&self, consumer: &str) -> Result<Vec<(String, i64)>>;
}
