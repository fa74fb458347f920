//! Marketplace orders (Uzum, Wildberries, Ozon) as imported: one record per order and
//! integration, the outgoing invoice it became, and the order poller's cursors and lease.
//!
//! A record is `imported` (its invoice exists, stock reserved), `needs_attention` (not imported:
//! an item is unmapped or the reservation was refused; the reason names the items, the order is
//! retried) or `cancelled` (on the marketplace; the invoice is cancelled and its reservation
//! released in the same transaction). Every change of state writes its event
//! (`marketplace.order_imported`, `marketplace.order_needs_attention`,
//! `marketplace.order_cancelled`) into the outbox in the same transaction, once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::integrations::Integration;
use crate::{Paged, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarketplaceOrderState {
    Imported,
    NeedsAttention,
    Cancelled,
}

impl MarketplaceOrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            MarketplaceOrderState::Imported => "imported",
            MarketplaceOrderState::NeedsAttention => "needs_attention",
            MarketplaceOrderState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "imported" => MarketplaceOrderState::Imported,
            "needs_attention" => MarketplaceOrderState::NeedsAttention,
            "cancelled" => MarketplaceOrderState::Cancelled,
            _ => return None,
        })
    }
}

/// One marketplace order as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct MarketplaceOrderRecord {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub integration_id: Uuid,
    /// The integration type (`uzum`, `wildberries`, `ozon`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The marketplace's order id.
    pub external_id: String,
    pub state: MarketplaceOrderState,
    /// The marketplace's own status word when last seen.
    pub raw_status: String,
    /// Why the order needs attention (or what happened on cancellation).
    pub reason: Option<String>,
    pub invoice_id: Option<Uuid>,
    /// Tiyin, as the marketplace reported.
    pub total: i64,
    /// The order as the connector reported it (lines with external ids, quantities in
    /// thousandths, unit prices in tiyin).
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Import attempts so far.
    pub attempts: i64,
    /// When the order was confirmed on the marketplace (auto_confirm).
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The last confirm failure, while not confirmed.
    pub confirm_error: Option<String>,
    pub confirm_attempts: i64,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MarketplaceOrderRecord {
    /// The invoice's `external_ref`: `<type>:<order id>`.
    pub fn external_ref(&self) -> String {
        external_ref(&self.kind, &self.external_id)
    }
}

/// The invoice `external_ref` of a marketplace order: `<type>:<order id>` (`uzum:123`).
pub fn external_ref(kind: &str, external_id: &str) -> String {
    format!("{kind}:{external_id}")
}

/// What is known of an order when it is recorded.
#[derive(Debug, Clone)]
pub struct OrderInput {
    pub integration_id: Uuid,
    pub kind: String,
    pub external_id: String,
    pub raw_status: String,
    pub total: i64,
    pub payload: Value,
}

/// A cancellation seen on the marketplace.
#[derive(Debug, Clone)]
pub struct OrderCancellation {
    pub integration_id: Uuid,
    pub kind: String,
    pub external_id: String,
    pub raw_status: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// Cancelled now (the invoice too, when there was one).
    Cancelled(MarketplaceOrderRecord),
    /// Cancelled before: nothing changed.
    Already(MarketplaceOrderRecord),
    /// Neither a record nor an invoice of this order exists: nothing to do.
    Unknown,
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub state: Option<MarketplaceOrderState>,
    /// Only imported orders not confirmed yet, with fewer confirm attempts than this.
    pub unconfirmed_below: Option<i64>,
    pub cursor: Option<Uuid>,
    pub limit: u32,
}

/// An integration claimed for one poll, with its cursors.
#[derive(Debug, Clone)]
pub struct OrderPollClaim {
    pub integration: Integration,
    /// `since` of the next new-orders fetch (`None` the first time).
    pub new_since: Option<DateTime<Utc>>,
    /// `since` of the next cancellations fetch (`None` the first time).
    pub cancel_since: Option<DateTime<Utc>>,
}

/// What a finished poll leaves for the next one.
#[derive(Debug, Clone)]
pub struct OrderPollDone {
    pub new_since: Option<DateTime<Utc>>,
    pub cancel_since: Option<DateTime<Utc>>,
    pub next_poll_at: DateTime<Utc>,
    pub error: Option<String>,
}

#[async_trait]
pub trait MarketplaceOrderStore: Send + Sync {
    /// Claim the integration of one of `kinds` (enabled, any tenant) whose poll is due longest
    /// and not leased, for `owner` until `lease_until`. The one query across tenants: the
    /// poller serves them all. Concurrent pollers (PostgreSQL) skip each other's claims.
    async fn claim_order_poll(
        &self,
        kinds: &[String],
        owner: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<OrderPollClaim>>;
    /// Save the cursors and release the lease; false when `owner` lost it meanwhile.
    async fn finish_order_poll(
        &self,
        tenant: Uuid,
        integration: Uuid,
        owner: Uuid,
        done: &OrderPollDone,
    ) -> Result<bool>;

    async fn get_marketplace_order(
        &self,
        tenant: Uuid,
        integration: Uuid,
        external_id: &str,
    ) -> Result<Option<MarketplaceOrderRecord>>;
    /// Oldest first, cursor paging by id.
    async fn list_marketplace_orders(
        &self,
        tenant: Uuid,
        integration: Uuid,
        filter: &OrderFilter,
    ) -> Result<Paged<MarketplaceOrderRecord>>;

    /// Our product for each order line `(external id, barcode)`, in order: the mapping in
    /// `marketplace_items`; for an item the pulled catalogue does not have at all, the one
    /// product carrying the line's barcode. `None` = unmapped.
    async fn map_order_lines(
        &self,
        tenant: Uuid,
        integration: Uuid,
        lines: &[(String, Option<String>)],
    ) -> Result<Vec<Option<Uuid>>>;

    /// Record the order as imported into `invoice_id` (emitting `marketplace.order_imported`)
    /// unless it is already imported (nothing changes, `false`). A record cancelled meanwhile
    /// stays cancelled and the invoice is cancelled with it.
    async fn record_order_imported(
        &self,
        tenant: Uuid,
        order: &OrderInput,
        invoice_id: Uuid,
    ) -> Result<(MarketplaceOrderRecord, bool)>;
    /// Record (or update) the order as needing attention for `reason`; imported or cancelled
    /// records do not change. `marketplace.order_needs_attention` is emitted when the order
    /// enters the state or the reason changes (`true`).
    async fn record_order_attention(
        &self,
        tenant: Uuid,
        order: &OrderInput,
        reason: &str,
    ) -> Result<(MarketplaceOrderRecord, bool)>;
    /// Cancel the order and its invoice (releasing the reservation) exactly once, emitting
    /// `marketplace.order_cancelled`. An order never recorded whose invoice exists (a crash
    /// between invoice and record) is recorded cancelled too.
    async fn cancel_marketplace_order(
        &self,
        tenant: Uuid,
        c: &OrderCancellation,
    ) -> Result<CancelOutcome>;
    /// The outcome of a confirm call: `Ok` = confirmed at, `Err` = the failure.
    async fn set_order_confirmed(
        &self,
        tenant: Uuid,
        integration: Uuid,
        external_id: &str,
        outcome: std::result::Result<DateTime<Utc>, String>,
    ) -> Result<()>;
}
