//! The loyalty journal and quotes. Savdo keeps no points of its own: JOWi Club (or another
//! loyalty provider) holds the ledger; we keep what we asked for and what it answered (every
//! call and its outcome), and the quotes a till may apply to a receipt within their validity.
//! The link between our customer and the provider's lives in `customers.external_ids`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::Result;

/// A quote the provider calculated for a receipt: per-line discounts and the points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredQuote {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    /// Our customer record.
    pub customer_id: Option<Uuid>,
    /// The provider's customer id.
    pub external_customer_id: String,
    /// The quoted lines, as sent.
    pub lines: Value,
    /// Per-line discounts, tiyin.
    pub discounts: Value,
    /// Points: `{spend_max, to_spend, to_earn, balance, balance_after, point_value}`.
    pub points: Value,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// One call to the loyalty provider and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JournalEntry {
    pub id: Uuid,
    /// `lookup`, `quote`, `redeem`, `accrual`, `refund`.
    pub kind: String,
    pub receipt_id: Option<Uuid>,
    /// The provider's customer id, when known.
    pub customer_ref: Option<String>,
    /// What was asked, without credentials.
    #[schema(value_type = Object)]
    pub request: Value,
    /// `ok`, `not_found`, `unavailable`, `rejected`, `error`.
    pub status: String,
    pub error: Option<String>,
    /// What the provider answered (points, balance), when it did.
    #[schema(value_type = Object)]
    pub result: Value,
    pub at: DateTime<Utc>,
}

/// What the provider says a customer now is; `None` leaves our field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderCustomer {
    pub name: Option<String>,
    /// Normalised (`+998…`).
    pub phone: Option<String>,
    /// When the provider says the change happened: a change older than the last one applied to
    /// the customer (a late delivery) is not applied. `None`: applied.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[async_trait]
pub trait LoyaltyStore: Send + Sync {
    async fn put_loyalty_quote(&self, q: &StoredQuote) -> Result<()>;
    /// `None` when unknown to this tenant (expiry is the caller's to judge).
    async fn get_loyalty_quote(&self, tenant: Uuid, id: Uuid) -> Result<Option<StoredQuote>>;
    async fn append_loyalty_journal(&self, tenant: Uuid, e: &JournalEntry) -> Result<()>;
    /// [`LoyaltyStore::append_loyalty_journal`] and an outbox event (`kind`, `data`), in one
    /// transaction: the entry is there exactly when the event will be delivered.
    async fn append_loyalty_journal_with_event(
        &self,
        tenant: Uuid,
        e: &JournalEntry,
        kind: &str,
        data: Value,
    ) -> Result<()>;
    /// Our customer linked to the provider's customer `external_id` (`external_ids[kind]`).
    async fn customer_by_external_id(
        &self,
        tenant: Uuid,
        kind: &str,
        external_id: &str,
    ) -> Result<Option<crate::model::Customer>>;
    /// Merge `patch` (an object) into the receipt's `loyalty` field; the receipt after it.
    async fn set_receipt_loyalty(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        patch: &Value,
    ) -> Result<crate::model::Receipt>;
    /// Write a loyalty event (`loyalty.*`, `customer.loyalty_updated`) into the outbox.
    async fn emit_loyalty_event(&self, tenant: Uuid, kind: &str, data: Value) -> Result<()>;
    /// The provider says a customer changed: in one transaction, refresh our customer's name
    /// and phone (only the given ones that differ; then `customer.updated` is written) and write
    /// `event` as `customer.loyalty_updated` with `changed` (the fields refreshed) added.
    /// Applying the same change again changes nothing and emits no `customer.updated`; neither
    /// does a change older (`update.at`) than the last one applied (the event says `stale`).
    async fn refresh_loyalty_customer(
        &self,
        tenant: Uuid,
        customer_id: Uuid,
        update: &ProviderCustomer,
        event: Value,
    ) -> Result<(crate::model::Customer, Vec<&'static str>)>;
    /// Newest first; only one receipt's calls when `receipt` is given.
    async fn list_loyalty_journal(
        &self,
        tenant: Uuid,
        receipt: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<JournalEntry>>;
}
