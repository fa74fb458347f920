//! Marketplace orders in: each new order on Uzum, Wildberries or Ozon becomes an outgoing
//! invoice exactly once, reserving stock; a cancellation on the marketplace cancels the invoice
//! and releases the reservation; `auto_confirm` confirms the order on the marketplace.
//!
//! None of the three protocols has order webhooks, so the [`OrderPoller`] asks: every
//! `interval` it claims each due marketplace integration under a lease (several processes on
//! PostgreSQL split the integrations between them and never poll one twice at once), fetches
//! new orders since its persisted cursor, retries the orders that need attention, applies the
//! cancellations, and confirms what is still unconfirmed.
//!
//! Exactly once: the invoice's `external_ref` is `<type>:<order id>`, unique per tenant, so a
//! crash between creating the invoice and recording the order only makes the next attempt find
//! the same invoice; recording an order imported (and its event) happens once, by state.
//!
//! Mapping: an order line's item is our product through `marketplace_items` (the pulled
//! catalogue and its links). Only an item the catalogue does not know at all (listed on the
//! marketplace after the last products sync) falls back to the one product carrying the line's
//! barcode; an item the catalogue has but is not linked stays unmapped, because someone chose
//! not to link it or barcode matching found nothing. An order with an unmapped item, or whose
//! reservation is refused (`forbid_negative_stock`), is recorded `needs_attention` with a
//! reason naming the items, never dropped, and retried on every poll (or at once through
//! `POST /api/v1/integrations/{id}/orders/{external_id}/retry`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use savdo_domain::Qty;
use savdo_domain::clock::Clock;
use savdo_hub::connector::{MarketplaceOrder, MarketplaceOrderLine, OrderState, OrderStatusChange};
use savdo_hub::{Capability, Connector, ConnectorError, HttpHub, Registry};
use savdo_integrations::{ConnectorCache, VaultHandle};
use savdo_storage::integrations::Integration;
use savdo_storage::marketplace_orders::{
    CancelOutcome, MarketplaceOrderRecord, MarketplaceOrderState, OrderCancellation, OrderFilter,
    OrderInput, OrderPollClaim, OrderPollDone, external_ref,
};
use savdo_storage::{Actor, NewInvoice, Storage, StorageError};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

/// How the poller paces itself.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Between two polls of one integration.
    pub interval: Duration,
    /// How long a claim of an integration lasts; a process that dies holding one delays that
    /// integration by at most this.
    pub lease: Duration,
    /// The first cancellations fetch looks this far back.
    pub first_cancel_lookback: Duration,
    /// Each cursor restarts this much before the last poll began (clock skew, late commits on
    /// the marketplace's side); what comes again is applied by order id, so nothing twice.
    pub overlap: Duration,
    /// Confirm calls per order before giving up (the error stays on the record).
    pub max_confirm_attempts: i64,
    /// Orders needing attention retried per poll.
    pub retry_batch: u32,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            interval: Duration::from_secs(60),
            lease: Duration::from_secs(600),
            first_cancel_lookback: Duration::from_secs(24 * 3600),
            overlap: Duration::from_secs(600),
            max_confirm_attempts: 10,
            retry_batch: 100,
        }
    }
}

/// Builds the connector of one integration.
#[async_trait]
pub trait ConnectorSource: Send + Sync {
    async fn connector(
        &self,
        integration: &Integration,
    ) -> Result<Arc<dyn Connector>, ConnectorError>;
}

/// Connectors built through the registry on the shared HTTP stack, kept while the integration
/// is unchanged (so its rate limit and breaker live across polls).
pub struct HubConnectors(ConnectorCache);

impl HubConnectors {
    pub fn new(vault: Arc<VaultHandle>, registry: Arc<Registry>, hub: HttpHub) -> Self {
        HubConnectors(ConnectorCache::new(vault, registry, hub))
    }
}

#[async_trait]
impl ConnectorSource for HubConnectors {
    async fn connector(&self, i: &Integration) -> Result<Arc<dyn Connector>, ConnectorError> {
        self.0.get(i)
    }
}

/// The marketplace types of a registry that have a connector: what the poller serves.
pub fn marketplace_kinds(registry: &Registry) -> Vec<String> {
    registry
        .catalog()
        .iter()
        .filter(|t| t.has(Capability::Marketplace) && registry.has_factory(&t.kind))
        .map(|t| t.kind.clone())
        .collect()
}

/// What happened to one order.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportOutcome {
    /// Imported now (`true`) or before (`false`).
    Imported(MarketplaceOrderRecord, bool),
    NeedsAttention(MarketplaceOrderRecord),
    /// Cancelled before: left alone.
    Cancelled(MarketplaceOrderRecord),
}

impl ImportOutcome {
    pub fn record(&self) -> &MarketplaceOrderRecord {
        match self {
            ImportOutcome::Imported(r, _)
            | ImportOutcome::NeedsAttention(r)
            | ImportOutcome::Cancelled(r) => r,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("marketplace order not found")]
    NotFound,
    #[error("the order is {0}, only an order that needs attention is retried")]
    NotRetryable(&'static str),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Turns one marketplace order into an invoice and its record; storage only (no marketplace
/// call), so the API's retry uses it too.
#[derive(Clone)]
pub struct OrderImporter {
    store: Arc<dyn Storage>,
}

impl OrderImporter {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        OrderImporter { store }
    }

    /// Import `order` unless it is imported or cancelled already.
    pub async fn import(
        &self,
        integration: &Integration,
        order: &MarketplaceOrder,
    ) -> Result<ImportOutcome, StorageError> {
        let tenant = integration.tenant_id;
        if let Some(r) = self
            .store
            .get_marketplace_order(tenant, integration.id, &order.external_id)
            .await?
        {
            match r.state {
                MarketplaceOrderState::Imported => return Ok(ImportOutcome::Imported(r, false)),
                MarketplaceOrderState::Cancelled => return Ok(ImportOutcome::Cancelled(r)),
                MarketplaceOrderState::NeedsAttention => {}
            }
        }
        let input = OrderInput {
            integration_id: integration.id,
            kind: integration.kind.clone(),
            external_id: order.external_id.clone(),
            raw_status: order.raw_status.clone(),
            total: order.total,
            payload: serde_json::to_value(order)?,
        };
        let Some(store_id) = feeding_store(&integration.settings) else {
            return self
                .attention(
                    tenant,
                    &input,
                    "settings.store_ids names no store to book marketplace orders in",
                )
                .await;
        };
        if order.lines.is_empty() {
            return self
                .attention(tenant, &input, "the order has no lines")
                .await;
        }
        let keys: Vec<(String, Option<String>)> = order
            .lines
            .iter()
            .map(|l| (l.external_id.clone(), l.barcode.clone()))
            .collect();
        let mapped = self
            .store
            .map_order_lines(tenant, integration.id, &keys)
            .await?;
        let unmapped: Vec<String> = order
            .lines
            .iter()
            .zip(&mapped)
            .filter(|(_, p)| p.is_none())
            .map(|(l, _)| describe(l))
            .collect();
        if !unmapped.is_empty() {
            let reason = format!(
                "unmapped item{}: {}; link {} to our products, then retry",
                if unmapped.len() == 1 { "" } else { "s" },
                unmapped.join(", "),
                if unmapped.len() == 1 { "it" } else { "them" },
            );
            return self.attention(tenant, &input, &reason).await;
        }
        let lines = order
            .lines
            .iter()
            .zip(&mapped)
            .filter_map(|(l, p)| p.map(|p| (p, Qty::from_milli(l.quantity), Some(l.price))))
            .collect();
        let new = NewInvoice {
            store_id,
            customer_id: None,
            channel: Some(integration.kind.clone()),
            external_ref: Some(external_ref(&integration.kind, &order.external_id)),
            note: Some(format!("{} order {}", integration.name, order.external_id)),
            lines,
            reserve: true,
        };
        match self
            .store
            .create_invoice(&Actor::system(tenant), &new)
            .await
        {
            Ok((invoice, _)) => {
                let (r, now) = self
                    .store
                    .record_order_imported(tenant, &input, invoice.id)
                    .await?;
                Ok(match r.state {
                    MarketplaceOrderState::Cancelled => ImportOutcome::Cancelled(r),
                    _ => ImportOutcome::Imported(r, now),
                })
            }
            Err(StorageError::Invalid(errors)) => {
                let reason = refusal(order, &errors);
                self.attention(tenant, &input, &reason).await
            }
            Err(e) => Err(e),
        }
    }

    async fn attention(
        &self,
        tenant: Uuid,
        input: &OrderInput,
        reason: &str,
    ) -> Result<ImportOutcome, StorageError> {
        let (r, _) = self
            .store
            .record_order_attention(tenant, input, reason)
            .await?;
        Ok(match r.state {
            MarketplaceOrderState::NeedsAttention => ImportOutcome::NeedsAttention(r),
            MarketplaceOrderState::Imported => ImportOutcome::Imported(r, false),
            MarketplaceOrderState::Cancelled => ImportOutcome::Cancelled(r),
        })
    }

    /// Import again an order that needs attention, from the order as it was last fetched.
    pub async fn retry(
        &self,
        integration: &Integration,
        external_id: &str,
    ) -> Result<ImportOutcome, RetryError> {
        let r = self
            .store
            .get_marketplace_order(integration.tenant_id, integration.id, external_id)
            .await?
            .ok_or(RetryError::NotFound)?;
        if r.state != MarketplaceOrderState::NeedsAttention {
            return Err(RetryError::NotRetryable(r.state.as_str()));
        }
        let order: MarketplaceOrder = serde_json::from_value(r.payload.clone())
            .map_err(|e| StorageError::Corrupt(format!("stored marketplace order: {e}")))?;
        Ok(self.import(integration, &order).await?)
    }

    /// Apply a cancellation seen on the marketplace.
    pub async fn cancel(
        &self,
        integration: &Integration,
        change: &OrderStatusChange,
    ) -> Result<CancelOutcome, StorageError> {
        self.store
            .cancel_marketplace_order(
                integration.tenant_id,
                &OrderCancellation {
                    integration_id: integration.id,
                    kind: integration.kind.clone(),
                    external_id: change.external_id.clone(),
                    raw_status: change.raw_status.clone(),
                    reason: change.reason.clone(),
                },
            )
            .await
    }
}

/// The store marketplace orders are booked in: the first of `store_ids`.
fn feeding_store(settings: &Value) -> Option<Uuid> {
    settings
        .get("store_ids")?
        .as_array()?
        .first()?
        .as_str()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
}

/// An order line for people: the marketplace's id, barcode and title.
fn describe(l: &MarketplaceOrderLine) -> String {
    let mut s = format!("item {}", l.external_id);
    let mut extra = Vec::new();
    if let Some(b) = l.barcode.as_deref().filter(|b| !b.is_empty()) {
        extra.push(format!("barcode {b}"));
    }
    if let Some(t) = l.title.as_deref().filter(|t| !t.is_empty()) {
        extra.push(format!("\"{t}\""));
    }
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

/// Why the invoice was refused, naming the order's items (`lines[i]` of the invoice is line
/// `i` of the order).
fn refusal(order: &MarketplaceOrder, errors: &[savdo_storage::FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let line = e
                .field
                .strip_prefix("lines[")
                .and_then(|r| r.split(']').next())
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| order.lines.get(i));
            match line {
                Some(l) => format!("{}: {}", describe(l), e.message),
                None => format!("{}: {}", e.field, e.message),
            }
        })
        .collect();
    let stock = errors
        .iter()
        .any(|e| e.message.contains("not enough stock"));
    format!(
        "{}: {}",
        if stock {
            "stock reservation refused"
        } else {
            "invoice refused"
        },
        parts.join("; ")
    )
}

/// What one poll of one integration did (tests and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub fetched: usize,
    pub imported: usize,
    pub needs_attention: usize,
    pub cancelled: usize,
    pub confirmed: usize,
    pub errors: Vec<String>,
}

/// Polls every enabled marketplace integration of every tenant for orders.
pub struct OrderPoller {
    store: Arc<dyn Storage>,
    importer: OrderImporter,
    connectors: Arc<dyn ConnectorSource>,
    kinds: Vec<String>,
    clock: Arc<dyn Clock>,
    config: PollerConfig,
    owner: Uuid,
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl OrderPoller {
    pub fn new(
        store: Arc<dyn Storage>,
        connectors: Arc<dyn ConnectorSource>,
        kinds: Vec<String>,
        clock: Arc<dyn Clock>,
        config: PollerConfig,
    ) -> Self {
        OrderPoller {
            importer: OrderImporter::new(store.clone()),
            store,
            connectors,
            kinds,
            clock,
            config,
            owner: Uuid::now_v7(),
        }
    }

    /// Poll every integration that is due, once each; the number polled.
    pub async fn poll_due(&self) -> Result<Vec<(Uuid, PollReport)>, StorageError> {
        let mut done = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let now = self.clock.now();
            let Some(claim) = self
                .store
                .claim_order_poll(
                    &self.kinds,
                    self.owner,
                    now,
                    now + chrono_dur(self.config.lease),
                )
                .await?
            else {
                break;
            };
            let id = claim.integration.id;
            let tenant = claim.integration.tenant_id;
            let (report, next) = self.poll_claimed(&claim).await;
            if !report.errors.is_empty() {
                tracing::warn!(integration = %id, kind = %claim.integration.kind,
                    errors = ?report.errors, "marketplace order poll had errors");
            }
            if !self
                .store
                .finish_order_poll(tenant, id, self.owner, &next)
                .await?
            {
                tracing::warn!(integration = %id, "order poll lease lost before it finished");
            }
            done.push((id, report));
            // The clock may stand still (tests): never take the same integration twice.
            if !seen.insert(id) {
                break;
            }
        }
        Ok(done)
    }

    /// One integration: new orders, retries, cancellations, confirms. Never fails as a whole:
    /// what failed is in the report and the next poll tries again.
    async fn poll_claimed(&self, claim: &OrderPollClaim) -> (PollReport, OrderPollDone) {
        let i = &claim.integration;
        let started = self.clock.now();
        let mut report = PollReport::default();
        let mut next = OrderPollDone {
            new_since: claim.new_since,
            cancel_since: claim.cancel_since,
            next_poll_at: started + chrono_dur(self.config.interval),
            error: None,
        };
        let connector = match self.connectors.connector(i).await {
            Ok(c) => c,
            Err(e) => {
                report.errors.push(format!("connector: {e}"));
                next.error = Some(e.to_string());
                return (report, next);
            }
        };
        let Some(mc) = connector.as_marketplace() else {
            next.error = Some(format!("{} is not a marketplace", i.kind));
            return (report, next);
        };
        let overlap = chrono_dur(self.config.overlap);
        let mut back_off: Option<Duration> = None;
        let mut note = |report: &mut PollReport, what: &str, e: &ConnectorError| {
            report.errors.push(format!("{what}: {e}"));
            if let Some(after) = e.retry_after() {
                back_off = Some(back_off.map_or(after, |b| b.max(after)));
            }
        };

        // New orders.
        let mut handled = HashSet::new();
        match mc.fetch_new_orders(claim.new_since).await {
            Ok(orders) => {
                report.fetched = orders.len();
                for o in &orders {
                    if matches!(o.state, OrderState::Cancelled | OrderState::Returned) {
                        continue;
                    }
                    handled.insert(o.external_id.clone());
                    self.count(
                        &mut report,
                        &o.external_id,
                        self.importer.import(i, o).await,
                    );
                }
                let newest = orders.iter().filter_map(|o| o.created_at).max();
                next.new_since = match (claim.new_since, newest) {
                    (Some(a), Some(b)) => Some(a.max(b - overlap)),
                    (a, b) => a.or(b.map(|b| b - overlap)),
                };
            }
            Err(e) => note(&mut report, "new orders", &e),
        }

        // Orders that need attention: their items may be mapped by now.
        match self
            .store
            .list_marketplace_orders(
                i.tenant_id,
                i.id,
                &OrderFilter {
                    state: Some(MarketplaceOrderState::NeedsAttention),
                    limit: self.config.retry_batch,
                    ..OrderFilter::default()
                },
            )
            .await
        {
            Ok((waiting, _)) => {
                for r in waiting.iter().filter(|r| !handled.contains(&r.external_id)) {
                    let res = match self.importer.retry(i, &r.external_id).await {
                        Ok(o) => Ok(o),
                        Err(RetryError::Storage(e)) => Err(e),
                        Err(_) => continue,
                    };
                    self.count(&mut report, &r.external_id, res);
                }
            }
            Err(e) => report.errors.push(format!("orders needing attention: {e}")),
        }

        // Cancellations.
        let since = claim
            .cancel_since
            .unwrap_or(started - chrono_dur(self.config.first_cancel_lookback));
        match mc.fetch_cancellations(since).await {
            Ok(changes) => {
                let mut ok = true;
                for c in changes.iter().filter(|c| c.state == OrderState::Cancelled) {
                    match self.importer.cancel(i, c).await {
                        Ok(CancelOutcome::Cancelled(_)) => report.cancelled += 1,
                        Ok(_) => {}
                        Err(e) => {
                            ok = false;
                            report
                                .errors
                                .push(format!("cancel order {}: {e}", c.external_id));
                        }
                    }
                }
                if ok {
                    next.cancel_since = Some(since.max(started - overlap));
                }
            }
            Err(e) => note(&mut report, "cancellations", &e),
        }

        // Confirm on the marketplace.
        if auto_confirm(&i.settings) {
            self.confirm_pending(i, mc, &mut report).await;
        }

        if let Some(after) = back_off {
            next.next_poll_at = next.next_poll_at.max(started + chrono_dur(after));
        }
        if !report.errors.is_empty() {
            next.error = Some(report.errors.join("; ").chars().take(2000).collect());
        }
        (report, next)
    }

    fn count(
        &self,
        report: &mut PollReport,
        external_id: &str,
        res: Result<ImportOutcome, StorageError>,
    ) {
        match res {
            Ok(ImportOutcome::Imported(_, true)) => report.imported += 1,
            Ok(ImportOutcome::NeedsAttention(_)) => report.needs_attention += 1,
            Ok(_) => {}
            Err(e) => report
                .errors
                .push(format!("import order {external_id}: {e}")),
        }
    }

    async fn confirm_pending(
        &self,
        i: &Integration,
        mc: &dyn savdo_hub::MarketplaceConnector,
        report: &mut PollReport,
    ) {
        let pending = match self
            .store
            .list_marketplace_orders(
                i.tenant_id,
                i.id,
                &OrderFilter {
                    unconfirmed_below: Some(self.config.max_confirm_attempts),
                    limit: 100,
                    ..OrderFilter::default()
                },
            )
            .await
        {
            Ok((p, _)) => p,
            Err(e) => {
                report.errors.push(format!("orders to confirm: {e}"));
                return;
            }
        };
        for r in pending {
            let outcome = match mc.confirm_order(&r.external_id).await {
                Ok(_) => Ok(self.clock.now()),
                Err(e @ ConnectorError::Rejected { .. }) => {
                    // A confirm whose answer was lost: the marketplace already moved on.
                    match mc.order_status(&r.external_id).await {
                        Ok(s)
                            if matches!(
                                s.state,
                                OrderState::Confirmed
                                    | OrderState::Packing
                                    | OrderState::Shipping
                                    | OrderState::Delivered
                            ) =>
                        {
                            Ok(self.clock.now())
                        }
                        _ => Err(e.to_string()),
                    }
                }
                Err(e) => {
                    let stop = e.retry_after().is_some();
                    let msg = e.to_string();
                    report
                        .errors
                        .push(format!("confirm order {}: {msg}", r.external_id));
                    if let Err(e) = self
                        .store
                        .set_order_confirmed(i.tenant_id, i.id, &r.external_id, Err(msg))
                        .await
                    {
                        report.errors.push(e.to_string());
                    }
                    if stop {
                        return;
                    }
                    continue;
                }
            };
            match &outcome {
                Ok(_) => report.confirmed += 1,
                Err(m) => report
                    .errors
                    .push(format!("confirm order {}: {m}", r.external_id)),
            }
            if let Err(e) = self
                .store
                .set_order_confirmed(i.tenant_id, i.id, &r.external_id, outcome)
                .await
            {
                report.errors.push(e.to_string());
            }
        }
    }

    /// Poll until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let tick = self.config.interval.min(Duration::from_secs(5));
        tracing::info!(kinds = ?self.kinds, interval_s = self.config.interval.as_secs(), "marketplace order poller started");
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = self.poll_due().await {
                tracing::warn!(error = %e, "marketplace order poll failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

fn auto_confirm(settings: &Value) -> bool {
    settings
        .get("auto_confirm")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use savdo_storage::FieldError;

    fn line(id: &str) -> MarketplaceOrderLine {
        MarketplaceOrderLine {
            external_id: id.into(),
            barcode: Some("4780000000017".into()),
            title: Some("Choy".into()),
            quantity: 2000,
            price: 2_500_000,
            marking_required: false,
        }
    }

    #[test]
    fn refusal_names_the_items() {
        let order = MarketplaceOrder {
            external_id: "1".into(),
            created_at: None,
            state: OrderState::New,
            raw_status: "CREATED".into(),
            lines: vec![line("101"), line("102")],
            total: 0,
            ship_by: None,
        };
        let r = refusal(
            &order,
            &[FieldError::new(
                "lines[1].qty",
                "not enough stock: 0 available (forbid_negative_stock is on)",
            )],
        );
        assert!(r.starts_with("stock reservation refused: item 102"), "{r}");
        assert!(r.contains("barcode 4780000000017"), "{r}");
    }

    #[test]
    fn store_and_confirm_settings() {
        let id = Uuid::now_v7();
        let s = serde_json::json!({"store_ids": [id.to_string(), "x"], "auto_confirm": true});
        assert_eq!(feeding_store(&s), Some(id));
        assert!(auto_confirm(&s));
        assert_eq!(feeding_store(&serde_json::json!({"store_ids": []})), None);
        assert!(!auto_confirm(&serde_json::json!({})));
    }
}
