//! Marketplace catalogues and what we push to them. `marketplace_items` holds each
//! integration's catalogue as last pulled (one row per item: Uzum skuId, Wildberries chrtId,
//! Ozon offer_id) with its link to our product, made by barcode or by hand; a manual link (or
//! a manual unlink) is never replaced by the barcode matcher.
//!
//! Stock and prices are pushed through a queue kept on the same rows: a change bumps the item's
//! sequence for that [`Channel`]; a push records the sequence it read, so a change while the
//! push was in flight leaves the item due. Values are read at push time (latest wins).
//! One pusher at a time per integration holds a lease ([`MarketplaceStore::claim_push`]).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::model::Actor;
use crate::{Paged, Result};

pub const MAPPED_BY_BARCODE: &str = "barcode";
pub const MAPPED_BY_MANUAL: &str = "manual";

/// One item of a marketplace catalogue page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    pub external_id: String,
    /// The marketplace's product card id, when distinct.
    pub product_ext_id: Option<String>,
    pub title: String,
    pub barcodes: Vec<String>,
    /// Tiyin.
    pub price: Option<i64>,
    /// Thousandths, as the marketplace reported.
    pub remote_stock: Option<i64>,
}

/// What storing a catalogue page did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogOutcome {
    pub upserted: usize,
    /// Items linked by barcode just now: `(external_id, product_id)`. Their push is scheduled.
    pub mapped: Vec<(String, Uuid)>,
    /// Items left unmapped and why: `(external_id, reason)`.
    pub unmapped: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingState {
    Mapped,
    Unmapped,
}

#[derive(Debug, Clone, Default)]
pub struct MappingFilter {
    pub state: Option<MappingState>,
    /// Continue after this external id.
    pub cursor: Option<String>,
    pub limit: u32,
}

/// The push state of one item on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PushState {
    /// A change waits to be pushed.
    pub pending: bool,
    /// The last value the marketplace accepted (stock: thousandths; price: tiyin).
    pub pushed_value: Option<i64>,
    pub pushed_at: Option<DateTime<Utc>>,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// Why the last attempt failed, while it is not yet pushed.
    pub last_error: Option<String>,
    /// Not retried before this moment.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One marketplace item and its link to our product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Mapping {
    /// The marketplace's item id (Uzum skuId, Wildberries chrtId, Ozon offer_id).
    pub external_id: String,
    /// The marketplace's product card id, when distinct.
    pub product_ext_id: Option<String>,
    pub title: String,
    pub barcodes: Vec<String>,
    /// The marketplace's price, tiyin, as last pulled.
    pub price: Option<i64>,
    /// The marketplace's stock, thousandths, as last pulled.
    pub remote_stock: Option<i64>,
    /// Our product, `null` while unmapped.
    pub product_id: Option<Uuid>,
    pub product_sku: Option<String>,
    pub product_name: Option<String>,
    /// `barcode` or `manual` (`manual` with no product: unlinked by hand, never matched again).
    pub mapped_by: Option<String>,
    /// Why the barcode matcher left it unmapped.
    pub note: Option<String>,
    pub stock: PushState,
    pub price_push: PushState,
    pub seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MappingCounts {
    /// Marketplace items of the integration.
    pub items: i64,
    pub mapped: i64,
    pub unmapped: i64,
    /// Our active products no item of this integration links to.
    pub unmapped_local: i64,
}

/// The integration's pusher state: whether the marketplace asked us to wait, and the last
/// failure of a whole request (429, open circuit, unusable settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PushStatus {
    /// No request goes before this moment.
    pub blocked_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Our product, as the unmapped side of a mapping lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LocalProduct {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub barcodes: Vec<String>,
}

/// A link set by hand: `product_id` `None` unlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    pub external_id: String,
    pub product_id: Option<Uuid>,
}

/// What is pushed: available stock or price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Stock,
    Price,
}

impl Channel {
    /// The column prefix of the channel's queue fields.
    pub fn prefix(self) -> &'static str {
        match self {
            Channel::Stock => "stock",
            Channel::Price => "price",
        }
    }
}

/// A mapped item due for a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueItem {
    pub external_id: String,
    pub product_id: Uuid,
    pub barcodes: Vec<String>,
    /// The change sequence read with it: recorded on success.
    pub seq: i64,
    pub attempts: i64,
    /// The value last accepted by the marketplace; `None` before the first push.
    pub pushed_value: Option<i64>,
}

/// How one item's push ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// Accepted with this value.
    Pushed { value: i64 },
    /// Refused or failed: retried not before `retry_at`.
    Failed {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// Not sent now (e.g. too soon after the previous push): due again at `retry_at`, no error.
    Deferred { retry_at: DateTime<Utc> },
    /// Nothing to send (the channel is off for this integration): no longer due.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub external_id: String,
    pub seq: i64,
    pub result: PushResult,
}

/// Which due items to take.
#[derive(Debug, Clone, Default)]
pub struct DueQuery {
    pub now: DateTime<Utc>,
    /// Only items last pushed at or before this moment (a per-item interval such as Ozon's).
    pub pushed_before: Option<DateTime<Utc>>,
    /// Only these items.
    pub only: Option<Vec<String>>,
    pub limit: u32,
}

#[async_trait]
pub trait MarketplaceStore: Send + Sync {
    /// Upsert a catalogue page, then link its unmapped items by barcode: an item whose barcodes
    /// name exactly one active product of the tenant is linked (`mapped_by = barcode`) and its
    /// stock and price pushes are scheduled; several products leave it unmapped with a note.
    /// Manual links and manual unlinks are kept.
    async fn upsert_catalog(
        &self,
        tenant: Uuid,
        integration: Uuid,
        items: &[CatalogItem],
        now: DateTime<Utc>,
    ) -> Result<CatalogOutcome>;
    /// Items in external id order.
    async fn list_mappings(
        &self,
        tenant: Uuid,
        integration: Uuid,
        filter: &MappingFilter,
    ) -> Result<(Vec<Mapping>, Option<String>)>;
    async fn mapping_counts(&self, tenant: Uuid, integration: Uuid) -> Result<MappingCounts>;
    /// Our active products no item of this integration links to, in id order.
    async fn unmapped_local(
        &self,
        tenant: Uuid,
        integration: Uuid,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Paged<LocalProduct>>;
    /// Set or clear links by hand, all or nothing. Unknown items or products are refused naming
    /// `links[i].external_id` / `links[i].product_id`. A changed link schedules its pushes and
    /// is audited. Returns how many links changed.
    async fn set_links(
        &self,
        actor: &Actor,
        integration: Uuid,
        links: &[LinkChange],
    ) -> Result<usize>;

    /// Schedule a push of `channel` for the items of these products in these integrations.
    async fn mark_dirty(
        &self,
        tenant: Uuid,
        integrations: &[Uuid],
        products: &[Uuid],
        channel: Channel,
    ) -> Result<u64>;
    /// Schedule a push of every mapped item after `after` (external id order), at most `limit`;
    /// returns their external ids (a full resync, page by page).
    async fn mark_page_dirty(
        &self,
        tenant: Uuid,
        integration: Uuid,
        channel: Channel,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Mapped items of the integration.
    async fn count_mapped(&self, tenant: Uuid, integration: Uuid) -> Result<i64>;
    /// `(tenant, integration)` pairs with items due on some channel and no block or foreign
    /// lease in force: the pusher's work list, across tenants like the job queue.
    async fn push_candidates(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<(Uuid, Uuid)>>;
    /// Take the integration's push lease for `owner` until `lease_until`: false while another
    /// owner holds it or the provider asked us to wait (`blocked_until`).
    async fn claim_push(
        &self,
        tenant: Uuid,
        integration: Uuid,
        owner: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Give the lease back, with the moment the next request may go (after a 429) and the
    /// integration-level error, if any.
    async fn release_push(
        &self,
        tenant: Uuid,
        integration: Uuid,
        owner: Uuid,
        blocked_until: Option<DateTime<Utc>>,
        error: Option<&str>,
    ) -> Result<()>;
    /// The integration's pusher state, once it has pushed.
    async fn push_status(&self, tenant: Uuid, integration: Uuid) -> Result<Option<PushStatus>>;
    /// Mapped items due on `channel`, oldest pushes first.
    async fn due_items(
        &self,
        tenant: Uuid,
        integration: Uuid,
        channel: Channel,
        q: &DueQuery,
    ) -> Result<Vec<DueItem>>;
    /// Record push results; an item keeps being due when it changed since `seq` was read.
    async fn record_push(
        &self,
        tenant: Uuid,
        integration: Uuid,
        channel: Channel,
        outcomes: &[PushOutcome],
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Sum of `on_hand - reserved` over `stores` per product, thousandths (products without
    /// stock rows are absent).
    async fn available_stock(
        &self,
        tenant: Uuid,
        stores: &[Uuid],
        products: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>>;
    /// Our current prices, tiyin.
    async fn product_prices(&self, tenant: Uuid, products: &[Uuid]) -> Result<HashMap<Uuid, i64>>;
}
