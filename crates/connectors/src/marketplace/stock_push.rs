//! Available stock (and, where the marketplace takes them, prices) out to the marketplaces.
//!
//! A `stock.changed` event only marks the product's mapped items due ([`StockChanges`]); the
//! [`StockPusher`] reads the value when it pushes, so a burst of changes becomes one push of the
//! latest value. Per integration, one request at a time (a lease in storage, so several
//! processes can run pushers), at most `max_stock_batch()` items a request, and an item not
//! again within `stock_item_interval()` (Ozon: 2 minutes). A 429 or an open circuit blocks the
//! integration until the provider's `retry_after`; refused items back off and retry, with their
//! error visible in the mappings listing. The "stock" sync job ([`StockResync`]) pushes every
//! mapped item through the same path.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use savdo_bus::consumer::{Consumer, HandleError};
use savdo_domain::clock::{Clock, SystemClock};
use savdo_domain::event::CloudEvent;
use savdo_hub::connector::{MarketplaceConnector, PriceUpdate, StockPushResult, StockUpdate};
use savdo_hub::{Connector, ConnectorError, HttpHub, Registry};
use savdo_integrations::{ConnectorCache, Step, SyncContext, SyncHandler, VaultHandle};
use savdo_storage::Storage;
use savdo_storage::integrations::{Integration, IntegrationStatus};
use savdo_storage::marketplace::{Channel, DueItem, DueQuery, PushOutcome, PushResult};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

/// The integration types this engine serves.
pub const KINDS: &[&str] = &["uzum", "wildberries", "ozon"];
/// The consumer's name (inbox key).
pub const CONSUMER: &str = "marketplace_stock";

/// What the engine reads from an integration's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarketplaceSettings {
    /// Our stores whose available stock feeds the marketplace.
    pub store_ids: Vec<Uuid>,
    /// Held back from every item, thousandths.
    pub safety_buffer: i64,
    pub push_prices: bool,
}

impl MarketplaceSettings {
    pub fn parse(settings: &Value) -> Self {
        let store_ids = settings["store_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s.trim()).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let units = settings["safety_buffer"].as_i64().unwrap_or(0).max(0);
        MarketplaceSettings {
            store_ids,
            safety_buffer: units.saturating_mul(1000),
            push_prices: settings["push_prices"].as_bool().unwrap_or(false),
        }
    }

    /// What the marketplace should show: the sum over the feeding stores minus the buffer,
    /// never below zero.
    pub fn pushed_stock(&self, available: i64) -> i64 {
        available.saturating_sub(self.safety_buffer).max(0)
    }
}

/// A change the marketplace should see soon: its value moves to, from or within `low`
/// (thousandths) — sold out or about to be (overselling), back in stock (lost sales) — or an
/// item never pushed has `low` or less (the marketplace may show stock we do not have).
fn urgent_change(pushed: Option<i64>, now: i64, low: i64) -> bool {
    match pushed {
        None => now <= low,
        Some(p) => p != now && (p <= low || now <= low),
    }
}

fn is_marketplace(i: &Integration) -> bool {
    KINDS.contains(&i.kind.as_str()) && i.status != IntegrationStatus::Disabled
}

fn storage_err(e: savdo_storage::StorageError) -> ConnectorError {
    ConnectorError::unavailable(format!("storage: {e}"))
}

/// Credentials as the registry's `build` takes them.
pub(crate) fn credentials_value(c: &savdo_hub::Credentials) -> Value {
    Value::Object(
        c.names()
            .filter_map(|n| c.get(n).map(|v| (n.to_owned(), v.clone())))
            .collect(),
    )
}

/// The connector of the job's integration, built on the job's HTTP stack.
pub fn connector_for_job(ctx: &SyncContext) -> Result<Arc<dyn Connector>, ConnectorError> {
    let hub = ctx
        .hub
        .as_ref()
        .ok_or_else(|| ConnectorError::config("no outbound HTTP stack in this process"))?;
    let i = &ctx.integration;
    ctx.registry.build(
        hub,
        &i.tenant_id.to_string(),
        &i.id.to_string(),
        &i.kind,
        &credentials_value(&ctx.credentials),
        &i.settings,
    )
}

/// Connectors of integrations by id, rebuilt when the integration changes (the hub keeps the
/// rate limiter and breaker of an integration across rebuilds).
pub struct ConnectorPool(ConnectorCache);

impl ConnectorPool {
    pub fn new(vault: Arc<VaultHandle>, registry: Arc<Registry>, hub: HttpHub) -> Self {
        ConnectorPool(ConnectorCache::new(vault, registry, hub))
    }

    pub fn get(&self, i: &Integration) -> Result<Arc<dyn Connector>, ConnectorError> {
        self.0.get(i)
    }
}

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// How long a claimed integration stays ours without finishing its round.
    pub lease: Duration,
    /// First retry of a refused item; doubles per attempt.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long to wait after a 429 or an open circuit that named no time.
    pub default_block: Duration,
    /// Pause between looks for work when there is none.
    pub idle: Duration,
    /// Batches one integration gets per claim before others get their turn.
    pub batches_per_claim: usize,
    /// Coalescing: while less than a claim's worth of batches is due and more items keep
    /// becoming due, the pusher waits until none has been added for this long…
    pub settle: Duration,
    /// …but never longer than this after it first saw them due when one of them is urgent
    /// (see [`PushConfig::low_stock`]). Zero `settle` pushes at once.
    pub max_settle: Duration,
    /// …and never longer than this when none is: a steady flow of ordinary changes (a busy
    /// day's receipts and deliveries) then leaves in few full rounds instead of one every
    /// `max_settle`.
    pub calm_max_settle: Duration,
    /// An item is urgent when the marketplace shows at most this many units, or will: its value
    /// changed to or from this level (sold out, nearly sold out, back in stock: overselling or
    /// lost sales), or it was never pushed and we have no more than this.
    pub low_stock: i64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            lease: Duration::from_secs(120),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(900),
            default_block: Duration::from_secs(1),
            idle: Duration::from_millis(500),
            batches_per_claim: 20,
            settle: Duration::from_secs(1),
            max_settle: Duration::from_secs(10),
            calm_max_settle: Duration::from_secs(60),
            low_stock: 5,
        }
    }
}

/// How one batch went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Items in the request (0: nothing was due, no request).
    pub sent: usize,
    pub pushed: usize,
    pub failed: usize,
    pub deferred: usize,
    /// Refused items: `{item, code, message}`.
    pub errors: Vec<Value>,
    /// The provider asked us to wait (429, open circuit) until then; nothing was recorded.
    pub blocked_until: Option<DateTime<Utc>>,
    /// A failure of the whole request (recorded on its items).
    pub error: Option<String>,
}

/// The push logic shared by the pusher loop and the resync job.
pub struct PushEngine {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    config: PushConfig,
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl PushEngine {
    pub fn new(store: Arc<dyn Storage>, clock: Arc<dyn Clock>, config: PushConfig) -> Self {
        PushEngine {
            store,
            clock,
            config,
        }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn config(&self) -> &PushConfig {
        &self.config
    }

    fn backoff(&self, attempts: i64) -> chrono::Duration {
        let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let d = self
            .config
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.config.backoff_max);
        to_chrono(d)
    }

    fn block_until(&self, e: &ConnectorError) -> DateTime<Utc> {
        self.clock.now() + to_chrono(e.retry_after().unwrap_or(self.config.default_block))
    }

    /// Claim the integration's lease for `owner`.
    pub async fn claim(&self, i: &Integration, owner: Uuid) -> Result<bool, ConnectorError> {
        let now = self.clock.now();
        self.store
            .claim_push(
                i.tenant_id,
                i.id,
                owner,
                now,
                now + to_chrono(self.config.lease),
            )
            .await
            .map_err(storage_err)
    }

    pub async fn release(
        &self,
        i: &Integration,
        owner: Uuid,
        report: &BatchReport,
    ) -> Result<(), ConnectorError> {
        self.store
            .release_push(
                i.tenant_id,
                i.id,
                owner,
                report.blocked_until,
                report.error.as_deref(),
            )
            .await
            .map_err(storage_err)
    }

    /// What the marketplace should show for each of `items` now (our available stock in the
    /// feeding stores, minus the buffer).
    async fn stock_values(
        &self,
        i: &Integration,
        settings: &MarketplaceSettings,
        items: &[DueItem],
    ) -> Result<Vec<i64>, ConnectorError> {
        let products: Vec<Uuid> = items
            .iter()
            .map(|d| d.product_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let available = self
            .store
            .available_stock(i.tenant_id, &settings.store_ids, &products)
            .await
            .map_err(storage_err)?;
        Ok(items
            .iter()
            .map(|d| settings.pushed_stock(available.get(&d.product_id).copied().unwrap_or(0)))
            .collect())
    }

    /// Push one batch of due stock (only `only`'s items when given). The caller holds the
    /// integration's lease.
    pub async fn push_stock_batch(
        &self,
        i: &Integration,
        c: &dyn MarketplaceConnector,
        only: Option<Vec<String>>,
    ) -> Result<BatchReport, ConnectorError> {
        let settings = MarketplaceSettings::parse(&i.settings);
        let now = self.clock.now();
        let interval = c.stock_item_interval();
        let due = self
            .store
            .due_items(
                i.tenant_id,
                i.id,
                Channel::Stock,
                &DueQuery {
                    now,
                    pushed_before: interval.map(|d| now - to_chrono(d)),
                    only,
                    limit: u32::try_from(c.max_stock_batch().max(1)).unwrap_or(u32::MAX),
                },
            )
            .await
            .map_err(storage_err)?;
        if due.is_empty() {
            return Ok(BatchReport::default());
        }
        // Read at push time: whatever changed before this line is in the value sent.
        let values = self.stock_values(i, &settings, &due).await?;
        let updates: Vec<StockUpdate> = due
            .iter()
            .zip(&values)
            .map(|(d, &available)| StockUpdate {
                external_id: d.external_id.clone(),
                barcode: d.barcodes.first().cloned(),
                available,
            })
            .collect();
        let result = c.push_stock(&updates).await;
        self.record(i, Channel::Stock, &due, &values, interval, result)
            .await
    }

    /// Push one batch of due prices (Uzum with `push_prices`); items of an integration that
    /// does not push prices are settled without a request.
    pub async fn push_price_batch(
        &self,
        i: &Integration,
        c: &dyn MarketplaceConnector,
    ) -> Result<BatchReport, ConnectorError> {
        let settings = MarketplaceSettings::parse(&i.settings);
        let now = self.clock.now();
        let due = self
            .store
            .due_items(
                i.tenant_id,
                i.id,
                Channel::Price,
                &DueQuery {
                    now,
                    pushed_before: None,
                    only: None,
                    limit: u32::try_from(c.max_stock_batch().max(1)).unwrap_or(u32::MAX),
                },
            )
            .await
            .map_err(storage_err)?;
        if due.is_empty() {
            return Ok(BatchReport::default());
        }
        if !(settings.push_prices && c.supports_prices()) {
            let outcomes: Vec<PushOutcome> = due
                .iter()
                .map(|d| PushOutcome {
                    external_id: d.external_id.clone(),
                    seq: d.seq,
                    result: PushResult::Skipped,
                })
                .collect();
            self.store
                .record_push(i.tenant_id, i.id, Channel::Price, &outcomes, now)
                .await
                .map_err(storage_err)?;
            return Ok(BatchReport::default());
        }
        let products: Vec<Uuid> = due.iter().map(|d| d.product_id).collect();
        let prices = self
            .store
            .product_prices(i.tenant_id, &products)
            .await
            .map_err(storage_err)?;
        let mut sendable = Vec::new();
        let mut gone = Vec::new();
        for d in &due {
            match prices.get(&d.product_id) {
                Some(p) => sendable.push((d.clone(), *p)),
                None => gone.push(PushOutcome {
                    external_id: d.external_id.clone(),
                    seq: d.seq,
                    result: PushResult::Skipped,
                }),
            }
        }
        self.store
            .record_push(i.tenant_id, i.id, Channel::Price, &gone, now)
            .await
            .map_err(storage_err)?;
        if sendable.is_empty() {
            return Ok(BatchReport::default());
        }
        let updates: Vec<PriceUpdate> = sendable
            .iter()
            .map(|(d, p)| PriceUpdate {
                external_id: d.external_id.clone(),
                barcode: d.barcodes.first().cloned(),
                price: *p,
            })
            .collect();
        let values: Vec<i64> = sendable.iter().map(|(_, p)| *p).collect();
        let items: Vec<DueItem> = sendable.into_iter().map(|(d, _)| d).collect();
        let result = c.push_prices(&updates).await;
        self.record(i, Channel::Price, &items, &values, None, result)
            .await
    }

    async fn record(
        &self,
        i: &Integration,
        channel: Channel,
        due: &[DueItem],
        values: &[i64],
        interval: Option<Duration>,
        result: Result<StockPushResult, ConnectorError>,
    ) -> Result<BatchReport, ConnectorError> {
        let now = self.clock.now();
        let mut report = BatchReport {
            sent: due.len(),
            ..BatchReport::default()
        };
        let outcomes: Vec<PushOutcome> = match result {
            Ok(r) => {
                let rejected: HashMap<&str, _> = r
                    .rejected
                    .iter()
                    .map(|e| (e.external_id.as_str(), e))
                    .collect();
                due.iter()
                    .zip(values)
                    .map(|(d, v)| {
                        let result = match rejected.get(d.external_id.as_str()) {
                            None => {
                                report.pushed += 1;
                                PushResult::Pushed { value: *v }
                            }
                            // The marketplace's own per-item interval: wait for it, no error.
                            Some(e) if interval.is_some() && is_too_soon(&e.code) => {
                                report.deferred += 1;
                                PushResult::Deferred {
                                    retry_at: now + to_chrono(interval.unwrap_or_default()),
                                }
                            }
                            Some(e) => {
                                report.failed += 1;
                                report.errors.push(json!({"item": d.external_id, "code": e.code, "message": e.message}));
                                PushResult::Failed {
                                    error: format!("{}: {}", e.code, e.message),
                                    retry_at: now + self.backoff(d.attempts),
                                }
                            }
                        };
                        PushOutcome {
                            external_id: d.external_id.clone(),
                            seq: d.seq,
                            result,
                        }
                    })
                    .collect()
            }
            Err(e @ (ConnectorError::RateLimited { .. } | ConnectorError::CircuitOpen { .. })) => {
                // Nothing happened to the items: they stay due, the integration waits.
                tracing::info!(integration = %i.id, error = %e, "marketplace push waits");
                report.sent = 0;
                report.blocked_until = Some(self.block_until(&e));
                report.error = Some(e.to_string());
                return Ok(report);
            }
            Err(e) => {
                tracing::warn!(integration = %i.id, channel = channel.prefix(), error = %e, "marketplace push failed");
                report.failed = due.len();
                report.error = Some(e.to_string());
                due.iter()
                    .map(|d| PushOutcome {
                        external_id: d.external_id.clone(),
                        seq: d.seq,
                        result: PushResult::Failed {
                            error: format!("{}: {e}", e.code()),
                            retry_at: now + self.backoff(d.attempts),
                        },
                    })
                    .collect()
            }
        };
        self.store
            .record_push(i.tenant_id, i.id, channel, &outcomes, now)
            .await
            .map_err(storage_err)?;
        Ok(report)
    }
}

fn is_too_soon(code: &str) -> bool {
    let c = code.to_ascii_uppercase();
    c.contains("TOO_MANY") || c.contains("TOO_SOON") || c == "429"
}

/// What one pass of the pusher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Requests sent (stock and prices).
    pub requests: usize,
    pub pushed: usize,
    pub failed: usize,
    /// Integrations that asked us to wait.
    pub blocked: usize,
}

/// The background pusher: claims integrations with due items and pushes them.
pub struct StockPusher {
    engine: Arc<PushEngine>,
    pool: Arc<ConnectorPool>,
    owner: Uuid,
    wake: Arc<Notify>,
    /// Integrations whose due set is still growing (see [`PushConfig::settle`]).
    settling: std::sync::Mutex<HashMap<Uuid, Settling>>,
}

/// What the pusher last saw of an integration's due stock while it waited for it to settle.
struct Settling {
    first_seen: DateTime<Utc>,
    last_growth: DateTime<Utc>,
    due: usize,
    /// When its items were last looked at for an urgent one (at most once per `settle`).
    urgent_checked: Option<DateTime<Utc>>,
}

impl StockPusher {
    pub fn new(engine: Arc<PushEngine>, pool: Arc<ConnectorPool>) -> Self {
        StockPusher {
            engine,
            pool,
            owner: savdo_domain::ids::new_id(),
            wake: Arc::new(Notify::new()),
            settling: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Whether the integration's due stock may go now: a full claim's worth of batches is due,
    /// or the due set has stopped growing for `settle`, or it has waited `max_settle` and holds
    /// an urgent item, or `calm_max_settle`. A burst of changes arriving over a few seconds
    /// through the event path thus leaves in full batches, not a request per pass; a sold-out
    /// item waits at most `max_settle`, an ordinary change at most `calm_max_settle`.
    async fn stock_settled(
        &self,
        i: &Integration,
        c: &dyn MarketplaceConnector,
    ) -> Result<bool, ConnectorError> {
        let cfg = &self.engine.config;
        if cfg.settle.is_zero() {
            return Ok(true);
        }
        // What one claim can send: more due than that goes at once, less waits to settle.
        let full = c
            .max_stock_batch()
            .max(1)
            .saturating_mul(cfg.batches_per_claim.max(1));
        let now = self.engine.clock.now();
        let items = self
            .engine
            .store
            .due_items(
                i.tenant_id,
                i.id,
                Channel::Stock,
                &DueQuery {
                    now,
                    pushed_before: None,
                    only: None,
                    limit: u32::try_from(full).unwrap_or(u32::MAX),
                },
            )
            .await
            .map_err(storage_err)?;
        let due = items.len();
        {
            let mut settling = self.settling.lock().unwrap_or_else(|e| e.into_inner());
            if due == 0 || due >= full {
                settling.remove(&i.id);
                return Ok(true);
            }
            let s = settling.entry(i.id).or_insert(Settling {
                first_seen: now,
                last_growth: now,
                due,
                urgent_checked: None,
            });
            if s.due != due {
                s.due = due;
                s.last_growth = now;
            }
            if now - s.last_growth >= to_chrono(cfg.settle)
                || now - s.first_seen >= to_chrono(cfg.calm_max_settle)
            {
                settling.remove(&i.id);
                return Ok(true);
            }
            let checked_lately = s
                .urgent_checked
                .is_some_and(|at| now - at < to_chrono(cfg.settle));
            if now - s.first_seen < to_chrono(cfg.max_settle) || checked_lately {
                return Ok(false);
            }
            s.urgent_checked = Some(now);
        };
        // Waited `max_settle`: go now if any item is urgent. Read only now, so a flow of
        // changes costs this read once a pass after `max_settle`, not on every pass.
        let ready = self.holds_urgent(i, &items).await?;
        if ready {
            self.settling
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&i.id);
        }
        Ok(ready)
    }

    /// Whether any of `items` is urgent by [`PushConfig::low_stock`], with values as a push
    /// would send them now.
    async fn holds_urgent(
        &self,
        i: &Integration,
        items: &[DueItem],
    ) -> Result<bool, ConnectorError> {
        let settings = MarketplaceSettings::parse(&i.settings);
        let values = self.engine.stock_values(i, &settings, items).await?;
        let low = self.engine.config.low_stock.saturating_mul(1000);
        Ok(items
            .iter()
            .zip(values)
            .any(|(d, now)| urgent_change(d.pushed_value, now, low)))
    }

    /// Woken by the consumer after it marks items, so a push need not wait for the next look.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Run until `stop`: one task per integration with due items, so a slow provider's pacing
    /// (Uzum: a request a second) never holds back another's pushes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "marketplace stock pusher started");
        let this = Arc::new(self);
        let mut in_flight: HashSet<Uuid> = HashSet::new();
        // Integrations whose last round sent nothing (settling, or nothing pushable): looked at
        // again on the next wake or idle tick, not in a busy loop.
        let mut resting: HashSet<Uuid> = HashSet::new();
        // A ticker, not a sleep per loop: finishing rounds must not postpone it.
        let mut tick = tokio::time::interval(this.engine.config.idle);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds: JoinSet<(Uuid, Result<PassReport, savdo_storage::StorageError>)> =
            JoinSet::new();
        while !*stop.borrow() {
            let woken = this.wake.notified();
            let now = this.engine.clock.now();
            match this.engine.store.push_candidates(now, 100).await {
                Ok(candidates) => {
                    for (tenant, id) in candidates {
                        if !resting.contains(&id) && in_flight.insert(id) {
                            let me = this.clone();
                            rounds.spawn(async move { (id, me.candidate_round(tenant, id).await) });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "marketplace pusher: storage error"),
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = woken => resting.clear(),
                _ = tick.tick() => resting.clear(),
                Some(done) = rounds.join_next(), if !rounds.is_empty() => {
                    if let Ok((id, result)) = done {
                        in_flight.remove(&id);
                        match result {
                            Ok(r) if r.requests > 0 => {}
                            Ok(_) => {
                                resting.insert(id);
                            }
                            Err(e) => {
                                resting.insert(id);
                                tracing::warn!(integration = %id, error = %e, "marketplace pusher: storage error");
                            }
                        }
                    } else {
                        // A round panicked: forget every id whose task is gone.
                        in_flight.clear();
                    }
                }
            }
        }
        // Let rounds in flight finish their request and release their lease.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while rounds.join_next().await.is_some() {}
        })
        .await;
        tracing::info!(owner = %this.owner, "marketplace stock pusher stopped");
    }

    /// One look at every integration with due items, one after another: up to
    /// `batches_per_claim` requests each.
    pub async fn pass(&self) -> Result<PassReport, savdo_storage::StorageError> {
        let mut report = PassReport::default();
        let now = self.engine.clock.now();
        for (tenant, id) in self.engine.store.push_candidates(now, 100).await? {
            let r = self.candidate_round(tenant, id).await?;
            report.requests += r.requests;
            report.pushed += r.pushed;
            report.failed += r.failed;
            report.blocked += r.blocked;
        }
        Ok(report)
    }

    async fn candidate_round(
        &self,
        tenant: Uuid,
        id: Uuid,
    ) -> Result<PassReport, savdo_storage::StorageError> {
        let mut report = PassReport::default();
        let i = match self.engine.store.get_integration(tenant, id).await {
            Ok(i) => i,
            Err(savdo_storage::StorageError::NotFound(_)) => return Ok(report),
            Err(e) => return Err(e),
        };
        if !is_marketplace(&i) {
            return Ok(report);
        }
        let conn = match self.pool.get(&i) {
            Ok(c) => c,
            Err(e) => {
                // Settings or credentials cannot work: look again in a minute, not at every
                // pass.
                tracing::warn!(integration = %i.id, error = %e, "marketplace connector unavailable");
                if let Ok(true) = self.engine.claim(&i, self.owner).await {
                    let blocked = BatchReport {
                        blocked_until: Some(
                            self.engine.clock.now() + chrono::Duration::seconds(60),
                        ),
                        error: Some(e.to_string()),
                        ..BatchReport::default()
                    };
                    let _ = self.engine.release(&i, self.owner, &blocked).await;
                }
                return Ok(report);
            }
        };
        let Some(mc) = conn.as_marketplace() else {
            return Ok(report);
        };
        if let Err(e) = self.integration_round(&i, mc, &mut report).await {
            tracing::warn!(integration = %i.id, error = %e, "marketplace push round failed");
        }
        Ok(report)
    }

    async fn integration_round(
        &self,
        i: &Integration,
        mc: &dyn MarketplaceConnector,
        report: &mut PassReport,
    ) -> Result<(), ConnectorError> {
        if !self.engine.claim(i, self.owner).await? {
            return Ok(());
        }
        let mut last = BatchReport::default();
        let mut outcome = Ok(());
        let stock_ready = match self.stock_settled(i, mc).await {
            Ok(ready) => ready,
            Err(e) => {
                self.engine.release(i, self.owner, &last).await?;
                return Err(e);
            }
        };
        for channel in [Channel::Stock, Channel::Price] {
            if channel == Channel::Stock && !stock_ready {
                continue;
            }
            for _ in 0..self.engine.config.batches_per_claim.max(1) {
                let r = match channel {
                    Channel::Stock => self.engine.push_stock_batch(i, mc, None).await,
                    Channel::Price => self.engine.push_price_batch(i, mc).await,
                };
                match r {
                    Ok(b) => {
                        report.requests += usize::from(b.sent > 0);
                        report.pushed += b.pushed;
                        report.failed += b.failed;
                        let done = b.sent == 0 || b.blocked_until.is_some() || b.error.is_some();
                        last = b;
                        if done {
                            break;
                        }
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            if last.blocked_until.is_some() || outcome.is_err() {
                break;
            }
        }
        if last.blocked_until.is_some() {
            report.blocked += 1;
        }
        self.engine.release(i, self.owner, &last).await?;
        outcome
    }

    /// Passes until nothing is due now (tests; a blocked or deferred item is not due now).
    pub async fn drain(&self) -> Result<PassReport, savdo_storage::StorageError> {
        let mut total = PassReport::default();
        loop {
            let r = self.pass().await?;
            total.requests += r.requests;
            total.pushed += r.pushed;
            total.failed += r.failed;
            total.blocked += r.blocked;
            if r.requests == 0 {
                return Ok(total);
            }
        }
    }
}

/// The `marketplace_stock` consumer: `stock.changed` marks the product's items due in every
/// enabled marketplace integration fed by that store; `product.updated` marks its prices due
/// where prices are pushed. Marking twice is harmless (the push reads the value then).
pub struct StockChanges {
    store: Arc<dyn Storage>,
    wake: Option<Arc<Notify>>,
}

impl StockChanges {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        StockChanges { store, wake: None }
    }

    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }
}

fn uuid_at(data: &Value, field: &str) -> Result<Uuid, HandleError> {
    data[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| HandleError::Permanent(format!("event without {field}")))
}

#[async_trait]
impl Consumer for StockChanges {
    fn name(&self) -> &str {
        CONSUMER
    }

    fn accepts(&self, event_type: &str) -> bool {
        matches!(event_type, "stock.changed" | "product.updated")
    }

    async fn handle(&self, event: &CloudEvent, _attempt: u32) -> Result<(), HandleError> {
        self.mark(&[event]).await
    }

    fn batched(&self) -> bool {
        true
    }

    async fn handle_batch(&self, events: &[&CloudEvent]) -> Result<(), HandleError> {
        self.mark(events).await
    }
}

impl StockChanges {
    /// Mark the items of every event's product due: one read of each tenant's integrations and
    /// one write per (channel, integrations) group, however many events.
    async fn mark(&self, events: &[&CloudEvent]) -> Result<(), HandleError> {
        let retry = |e: savdo_storage::StorageError| HandleError::Retry(e.to_string());
        let mut tenants: Vec<Uuid> = events.iter().map(|e| e.tenantid).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut marked = 0;
        for tenant in tenants {
            let integrations = self.store.list_integrations(tenant).await.map_err(retry)?;
            let mut groups: HashMap<(Channel, Vec<Uuid>), BTreeSet<Uuid>> = HashMap::new();
            for event in events.iter().filter(|e| e.tenantid == tenant) {
                let (product, channel, targets) = targets_of(&integrations, event)?;
                if !targets.is_empty() {
                    groups
                        .entry((channel, targets))
                        .or_default()
                        .insert(product);
                }
            }
            for ((channel, targets), products) in groups {
                let products: Vec<Uuid> = products.into_iter().collect();
                marked += self
                    .store
                    .mark_dirty(tenant, &targets, &products, channel)
                    .await
                    .map_err(retry)?;
            }
        }
        if marked > 0
            && let Some(w) = &self.wake
        {
            w.notify_one();
        }
        Ok(())
    }
}

/// The product an event names, the channel it changes and the integrations that push it.
fn targets_of(
    integrations: &[Integration],
    event: &CloudEvent,
) -> Result<(Uuid, Channel, Vec<Uuid>), HandleError> {
    if event.kind == "stock.changed" {
        let store_id = uuid_at(&event.data, "store_id")?;
        let product = uuid_at(&event.data, "product_id")?;
        let targets = integrations
            .iter()
            .filter(|i| is_marketplace(i))
            .filter(|i| {
                MarketplaceSettings::parse(&i.settings)
                    .store_ids
                    .contains(&store_id)
            })
            .map(|i| i.id)
            .collect();
        Ok((product, Channel::Stock, targets))
    } else {
        let product = uuid_at(&event.data, "id")?;
        let targets = integrations
            .iter()
            .filter(|i| is_marketplace(i) && MarketplaceSettings::parse(&i.settings).push_prices)
            .map(|i| i.id)
            .collect();
        Ok((product, Channel::Price, targets))
    }
}

/// The "stock" sync job: every mapped item pushed again, page by page, with progress. Each
/// page is marked due and pushed under the integration's lease, so the job and the pusher
/// never send at the same time; items Ozon's interval holds back go with the pusher's next
/// window.
pub struct StockResync {
    engine: Arc<PushEngine>,
}

impl StockResync {
    pub fn new(engine: Arc<PushEngine>) -> Self {
        StockResync { engine }
    }
}

/// Pause when the integration is busy or blocked, so the job neither spins nor fails.
const RESYNC_WAIT: Duration = Duration::from_millis(250);
const RESYNC_MAX_WAIT: Duration = Duration::from_secs(5);

#[async_trait]
impl SyncHandler for StockResync {
    async fn step(
        &self,
        ctx: &SyncContext,
        cursor: Option<&Value>,
    ) -> Result<Step, ConnectorError> {
        let i = &ctx.integration;
        let conn = connector_for_job(ctx)?;
        let mc = conn
            .as_marketplace()
            .ok_or_else(|| ConnectorError::config(format!("{} is not a marketplace", i.kind)))?;
        let store = &self.engine.store;
        let (after, page) = match cursor {
            None => {
                let total = store
                    .count_mapped(i.tenant_id, i.id)
                    .await
                    .map_err(storage_err)?;
                return Ok(Step {
                    total: Some(total),
                    cursor: Some(json!({"after": null, "page": null})),
                    finished: total == 0,
                    ..Step::default()
                });
            }
            Some(c) => (
                c["after"].as_str().map(str::to_owned),
                c["page"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                }),
            ),
        };
        let batch = u32::try_from(mc.max_stock_batch().max(1)).unwrap_or(u32::MAX);
        // The page marked due but not yet pushed (a wait in between) is pushed, not marked again.
        let page = match page {
            Some(p) => p,
            None => store
                .mark_page_dirty(i.tenant_id, i.id, Channel::Stock, after.as_deref(), batch)
                .await
                .map_err(storage_err)?,
        };
        let Some(last) = page.last().cloned() else {
            return Ok(Step {
                finished: true,
                ..Step::default()
            });
        };
        let owner = ctx.job_id;
        let waiting = |page: &[String], pause: Duration| {
            let page = page.to_vec();
            let after = after.clone();
            async move {
                tokio::time::sleep(pause.min(RESYNC_MAX_WAIT)).await;
                Ok(Step {
                    cursor: Some(json!({"after": after, "page": page})),
                    ..Step::default()
                })
            }
        };
        if !self.engine.claim(i, owner).await? {
            return waiting(&page, RESYNC_WAIT).await;
        }
        let r = self
            .engine
            .push_stock_batch(i, mc, Some(page.clone()))
            .await;
        let report = match &r {
            Ok(b) => b.clone(),
            Err(_) => BatchReport::default(),
        };
        self.engine.release(i, owner, &report).await?;
        let report = r?;
        if let Some(until) = report.blocked_until {
            let pause = (until - self.engine.clock.now())
                .to_std()
                .unwrap_or(RESYNC_WAIT);
            return waiting(&page, pause.max(RESYNC_WAIT)).await;
        }
        let more = page.len() >= batch as usize;
        let mut errors = report.errors;
        if let Some(e) = report.error {
            // The items are retried by the pusher with backoff; the job says it happened.
            errors.push(json!({"code": "push_failed", "message": e, "items": report.failed}));
        }
        Ok(Step {
            processed: i64::try_from(page.len()).unwrap_or(i64::MAX),
            total: None,
            cursor: more.then(|| json!({"after": last, "page": null})),
            errors,
            finished: !more,
        })
    }
}

/// The "prices" sync job: every mapped item's price marked due; the pusher sends them.
pub struct PriceResync {
    store: Arc<dyn Storage>,
}

impl PriceResync {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        PriceResync { store }
    }
}

const PRICE_PAGE: u32 = 500;

#[async_trait]
impl SyncHandler for PriceResync {
    async fn step(
        &self,
        ctx: &SyncContext,
        cursor: Option<&Value>,
    ) -> Result<Step, ConnectorError> {
        let i = &ctx.integration;
        if !MarketplaceSettings::parse(&i.settings).push_prices {
            return Err(ConnectorError::config(
                "prices are not pushed: turn settings.push_prices on",
            ));
        }
        let after = cursor.and_then(|c| c["after"].as_str()).map(str::to_owned);
        let total = match cursor {
            None => Some(
                self.store
                    .count_mapped(i.tenant_id, i.id)
                    .await
                    .map_err(storage_err)?,
            ),
            Some(_) => None,
        };
        let page = self
            .store
            .mark_page_dirty(
                i.tenant_id,
                i.id,
                Channel::Price,
                after.as_deref(),
                PRICE_PAGE,
            )
            .await
            .map_err(storage_err)?;
        let more = page.len() >= PRICE_PAGE as usize;
        Ok(Step {
            processed: i64::try_from(page.len()).unwrap_or(i64::MAX),
            total,
            cursor: page.last().map(|l| json!({ "after": l })),
            errors: Vec::new(),
            finished: !more,
        })
    }
}

/// A pusher on the system clock (what `savdo serve` and `savdo worker` run).
pub fn system_engine(store: Arc<dyn Storage>) -> Arc<PushEngine> {
    Arc::new(PushEngine::new(
        store,
        Arc::new(SystemClock),
        PushConfig::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::urgent_change;

    #[test]
    fn urgent_changes_are_those_near_zero() {
        let low = 5_000;
        assert!(urgent_change(None, 0, low), "never pushed, none in stock");
        assert!(
            !urgent_change(None, 40_000, low),
            "never pushed, plenty in stock"
        );
        assert!(urgent_change(Some(12_000), 0, low), "sold out");
        assert!(urgent_change(Some(12_000), 4_000, low), "nearly sold out");
        assert!(urgent_change(Some(0), 30_000, low), "back in stock");
        assert!(
            urgent_change(Some(3_000), 2_000, low),
            "within the low band"
        );
        assert!(!urgent_change(Some(12_000), 9_000, low), "an ordinary sale");
        assert!(
            !urgent_change(Some(12_000), 80_000, low),
            "an ordinary delivery"
        );
        assert!(!urgent_change(Some(0), 0, low), "unchanged");
    }
}
