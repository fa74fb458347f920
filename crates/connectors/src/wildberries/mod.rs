//! Wildberries (FBS): catalogue from the content API, stock by size (`chrtId`) to one seller
//! warehouse, assembly orders, and confirming them by adding them to a supply.
//!
//! `Authorization: <token>` (raw JWT). The marketplace API (`marketplace-api.wildberries.ru`)
//! allows 300 requests a minute, burst 20, and a 409 costs 10 of them; the content API
//! (`content-api.wildberries.ru`) 100 a minute, burst 5. The hub's limiter covers the first
//! only and cannot be charged extra, so the connector keeps its own mirror of both buckets,
//! shared by every connector of the same integration, charges 409s to it, keeps it at or below
//! WB's `X-Ratelimit-Remaining`, and remembers sizes WB refused so the next push does not pay
//! for them again.
//!
//! One `base_url` setting: the content host is derived from it for WB's own host, and is the
//! same URL otherwise (the sandbox serves both).

pub mod transformers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use savdo_hub::connector::{
    CatalogPage, ItemError, MarketplaceOrder, OrderState, OrderStatusChange, StockPushResult,
    StockUpdate,
};
use savdo_hub::registry::ConnectorContext;
use savdo_hub::{
    Connector, ConnectorError, Health, HttpClient, HttpRequest, HttpResponse, MarketplaceConnector,
    Registry, Secret,
};
use serde::de::DeserializeOwned;

use transformers::{
    CardsCursor, CardsFilter, CardsRequest, CardsResponse, ErrorBody, MAX_AMOUNT, NewSupply,
    OrderStatus, OrdersResponse, StatusRequest, StatusResponse, StockAmount, StockError,
    StocksPush, StocksRead, StocksReadResponse, SupplyCreated, Warehouse,
};

pub const KIND: &str = "wildberries";
/// Most sizes one stocks request takes.
pub const MAX_STOCK_BATCH: usize = 1000;
const CARDS_PAGE: u32 = 100;
/// Most ids one `orders/status` request takes.
const STATUS_BATCH: usize = 1000;
const ORDERS_PAGE: u32 = 1000;
/// What a 409 costs, in requests.
const CONFLICT_COST: f64 = 10.0;
/// How long a size WB called unknown is skipped before being tried again.
const REFUSED_TTL: Duration = Duration::from_secs(10 * 60);
/// How far before `since` cancellations are looked for: WB lists orders by creation time, and
/// an order is cancelled some days after it was created.
const CANCEL_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::days(14);
/// The widest `dateFrom..dateTo` span WB accepts.
const LIST_SPAN: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// Longest the connector's own pacing waits before answering `RateLimited`.
const MAX_PACE_WAIT: Duration = Duration::from_secs(60);
/// Share of WB's refill rate the connector uses: requests arrive with jitter, and at the full
/// rate a slightly early one meets an empty bucket.
const PACE_MARGIN: f64 = 0.9;

// ---------------------------------------------------------------- pacing

/// A token bucket mirroring one of WB's, so a 409's extra cost is paid before the next call
/// instead of as a 429.
#[derive(Debug)]
struct Pace {
    capacity: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl Pace {
    fn new(capacity: u32, per_sec: f64) -> Self {
        let capacity = f64::from(capacity.max(1));
        Pace {
            capacity,
            per_sec: (per_sec * PACE_MARGIN).max(0.001),
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Instant)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens now, after refilling.
    fn refill(&self, s: &mut (f64, Instant)) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + dt * self.per_sec).min(self.capacity);
        s.1 = now;
    }

    async fn acquire(&self) -> Result<(), ConnectorError> {
        let mut waited = Duration::ZERO;
        loop {
            let wait = {
                let mut s = self.lock();
                self.refill(&mut s);
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return Ok(());
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_sec)
            };
            if waited + wait > MAX_PACE_WAIT {
                return Err(ConnectorError::RateLimited {
                    retry_after: Some(wait),
                });
            }
            waited += wait;
            tokio::time::sleep(wait + Duration::from_millis(1)).await;
        }
    }

    /// WB's own count (`X-Ratelimit-Remaining`) caps ours: it also sees our latency and any
    /// other client of the same token.
    fn observe(&self, remaining: f64) {
        let mut s = self.lock();
        self.refill(&mut s);
        s.0 = s.0.min(remaining);
    }

    /// Take tokens after the fact (may go negative: later calls wait it out).
    fn charge(&self, tokens: f64) {
        let mut s = self.lock();
        self.refill(&mut s);
        s.0 -= tokens;
    }
}

/// What outlives one connector instance of an integration (it is rebuilt on settings changes).
#[derive(Debug)]
struct Shared {
    marketplace: Pace,
    content: Pace,
    /// The supply new orders are confirmed into.
    supply: tokio::sync::Mutex<Option<String>>,
    /// Sizes WB answered "not found" for, and when.
    refused: Mutex<HashMap<u64, Instant>>,
}

fn shared_for(integration_id: &str, marketplace: (u32, f64)) -> Arc<Shared> {
    static ALL: OnceLock<Mutex<HashMap<String, Arc<Shared>>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // A changed rate limit starts fresh buckets (and a fresh supply, which is harmless).
    let key = format!("{integration_id}/{}/{}", marketplace.0, marketplace.1);
    all.entry(key)
        .or_insert_with(|| {
            Arc::new(Shared {
                marketplace: Pace::new(marketplace.0, marketplace.1),
                content: Pace::new(5, 100.0 / 60.0),
                supply: tokio::sync::Mutex::new(None),
                refused: Mutex::new(HashMap::new()),
            })
        })
        .clone()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Marketplace,
    Content,
}

// ---------------------------------------------------------------- connector

pub struct Wildberries {
    http: HttpClient,
    base_url: String,
    content_url: String,
    token: Secret,
    warehouse_id: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Wildberries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wildberries")
            .field("base_url", &self.base_url)
            .field("warehouse_id", &self.warehouse_id)
            .finish_non_exhaustive()
    }
}

/// WB serves cards from another host than stocks and orders.
fn content_base(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(mut u) if u.host_str() == Some("marketplace-api.wildberries.ru") => {
            if u.set_host(Some("content-api.wildberries.ru")).is_ok() {
                u.to_string().trim_end_matches('/').to_owned()
            } else {
                base_url.to_owned()
            }
        }
        _ => base_url.to_owned(),
    }
}

fn setting_str<'a>(ctx: &'a ConnectorContext, name: &str) -> Option<&'a str> {
    ctx.settings
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl Wildberries {
    /// From the registry's context: `credentials.token`, `settings.warehouse_id` and
    /// `settings.base_url`; the HTTP client carries the rate limit, retries and breaker.
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let token = ctx.credentials.require_secret("token")?;
        let warehouse_id = match ctx.settings.get("warehouse_id") {
            Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| ConnectorError::config("settings.warehouse_id must be a WB warehouse id"))?;
        let base_url = setting_str(&ctx, "base_url")
            .ok_or_else(|| ConnectorError::config("settings.base_url is missing"))?
            .trim_end_matches('/')
            .to_owned();
        // Mirror the hub's limit (WB's published one when the integration has none).
        let rl = ctx.http.config().rate_limit;
        let marketplace = match rl {
            Some(rl) if rl.requests > 0 && !rl.per.is_zero() => {
                (rl.burst, f64::from(rl.requests) / rl.per.as_secs_f64())
            }
            _ => (20, 5.0),
        };
        let shared = shared_for(&ctx.integration_id, marketplace);
        Ok(Wildberries {
            content_url: content_base(&base_url),
            base_url,
            http: ctx.http,
            token,
            warehouse_id,
            shared,
        })
    }

    fn url(&self, api: Api, path: &str) -> String {
        let base = match api {
            Api::Marketplace => &self.base_url,
            Api::Content => &self.content_url,
        };
        format!("{base}{path}")
    }

    fn pace(&self, api: Api) -> &Pace {
        match api {
            Api::Marketplace => &self.shared.marketplace,
            Api::Content => &self.shared.content,
        }
    }

    /// Paced, authenticated call; any final answer comes back (the caller reads 4xx).
    async fn call(&self, api: Api, req: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        self.pace(api).acquire().await?;
        let resp = self
            .http
            .send(req.secret_header("Authorization", &self.token))
            .await?;
        if resp.status.as_u16() == 409 && api == Api::Marketplace {
            self.shared.marketplace.charge(CONFLICT_COST - 1.0);
        }
        let remaining = resp
            .headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(n) = remaining {
            self.pace(api).observe(f64::from(n));
        }
        Ok(resp)
    }

    /// A call whose only good answer is 2xx with a JSON body.
    async fn call_json<T: DeserializeOwned>(
        &self,
        api: Api,
        req: HttpRequest,
    ) -> Result<T, ConnectorError> {
        let resp = self.call(api, req).await?;
        if !resp.is_success() {
            return Err(refusal(&resp));
        }
        resp.json()
    }

    async fn warehouses(&self) -> Result<Vec<Warehouse>, ConnectorError> {
        let req = HttpRequest::get(self.url(Api::Marketplace, "/api/v3/warehouses"))
            .operation("warehouses.list");
        self.call_json(Api::Marketplace, req).await
    }

    /// WB's stock for these sizes at our warehouse, whole units.
    async fn read_stock(&self, chrt_ids: &[u64]) -> Result<HashMap<u64, i64>, ConnectorError> {
        let mut out = HashMap::new();
        for chunk in chrt_ids.chunks(MAX_STOCK_BATCH) {
            let path = format!("/api/v3/stocks/{}", self.warehouse_id);
            let req = HttpRequest::post(self.url(Api::Marketplace, &path))
                .json(&StocksRead { chrt_ids: chunk })
                .operation("stocks.read");
            let body: StocksReadResponse = self.call_json(Api::Marketplace, req).await?;
            out.extend(body.stocks.into_iter().map(|s| (s.chrt_id, s.amount)));
        }
        Ok(out)
    }

    async fn statuses(&self, ids: &[u64]) -> Result<Vec<OrderStatus>, ConnectorError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(STATUS_BATCH) {
            let req = HttpRequest::post(self.url(Api::Marketplace, "/api/v3/orders/status"))
                .json(&StatusRequest { orders: chunk })
                .operation("orders.status");
            let body: StatusResponse = self.call_json(Api::Marketplace, req).await?;
            out.extend(body.orders);
        }
        Ok(out)
    }

    /// Sizes refused lately: skipped without a call (each 409 costs ten requests).
    fn recently_refused(&self, chrt_id: u64) -> bool {
        let mut r = self
            .shared
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match r.get(&chrt_id) {
            Some(at) if at.elapsed() < REFUSED_TTL => true,
            Some(_) => {
                r.remove(&chrt_id);
                false
            }
            None => false,
        }
    }

    fn remember_refused(&self, chrt_ids: &[u64]) {
        let mut r = self
            .shared
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        r.retain(|_, at| now.saturating_duration_since(*at) < REFUSED_TTL);
        r.extend(chrt_ids.iter().map(|c| (*c, now)));
    }

    /// One stocks request of at most [`MAX_STOCK_BATCH`] sizes. A 409 applies nothing and names
    /// the bad sizes: they are dropped and the rest sent again.
    async fn push_chunk(
        &self,
        mut items: Vec<StockAmount>,
        result: &mut StockPushResult,
    ) -> Result<(), ConnectorError> {
        let path = format!("/api/v3/stocks/{}", self.warehouse_id);
        // Each round drops at least one size, so this ends; a few rounds is the norm.
        while !items.is_empty() {
            let req = HttpRequest::put(self.url(Api::Marketplace, &path))
                .json(&StocksPush { stocks: &items })
                .operation("stocks.push");
            let resp = self.call(Api::Marketplace, req).await?;
            if resp.is_success() {
                result.accepted += items.len();
                return Ok(());
            }
            if resp.status.as_u16() != 409 {
                return Err(refusal(&resp));
            }
            let errors: Vec<StockError> = resp.json().unwrap_or_default();
            let mut bad: HashMap<u64, (String, String)> = HashMap::new();
            let mut not_found = Vec::new();
            for e in &errors {
                for c in e.chrt_ids() {
                    if e.code == "NotFound" {
                        not_found.push(c);
                    }
                    bad.entry(c)
                        .or_insert_with(|| (e.code.clone(), e.message.clone()));
                }
            }
            self.remember_refused(&not_found);
            let before = items.len();
            items.retain(|i| !bad.contains_key(&i.chrt_id));
            if items.len() == before {
                // WB named nothing we sent: every size shares the refusal.
                let (code, message) = errors
                    .first()
                    .map(|e| (e.code.clone(), e.message.clone()))
                    .unwrap_or_else(|| ("Conflict".into(), resp.excerpt()));
                result.rejected.extend(items.drain(..).map(|i| ItemError {
                    external_id: i.chrt_id.to_string(),
                    code: code.clone(),
                    message: message.clone(),
                }));
                return Ok(());
            }
            let mut named: Vec<(u64, (String, String))> = bad.into_iter().collect();
            named.sort_by_key(|(c, _)| *c);
            result
                .rejected
                .extend(named.into_iter().map(|(c, (code, message))| ItemError {
                    external_id: c.to_string(),
                    code,
                    message,
                }));
        }
        Ok(())
    }

    async fn open_supply(&self, current: &mut Option<String>) -> Result<String, ConnectorError> {
        if let Some(id) = current.as_ref() {
            return Ok(id.clone());
        }
        let name = format!("Savdo {}", Utc::now().format("%Y-%m-%d %H:%M"));
        let req = HttpRequest::post(self.url(Api::Marketplace, "/api/v3/supplies"))
            .json(&NewSupply { name: &name })
            .not_idempotent()
            .operation("supplies.create");
        let created: SupplyCreated = self.call_json(Api::Marketplace, req).await?;
        *current = Some(created.id.clone());
        Ok(created.id)
    }
}

/// A 4xx (or unexpected) answer as an error, with WB's own code and message.
fn refusal(resp: &HttpResponse) -> ConnectorError {
    let status = resp.status.as_u16();
    let body: ErrorBody = resp.json().unwrap_or_default();
    let text = body.text().unwrap_or_else(|| resp.excerpt());
    let msg = format!("HTTP {status}: {text}");
    match status {
        401 | 403 => ConnectorError::auth(msg),
        400..=499 => {
            ConnectorError::rejected(body.code().unwrap_or_else(|| status.to_string()), msg)
        }
        500..=599 => ConnectorError::unavailable(msg),
        _ => ConnectorError::protocol(msg),
    }
}

fn parse_order_id(external_id: &str) -> Result<u64, ConnectorError> {
    external_id.trim().parse().map_err(|_| {
        ConnectorError::rejected(
            "InvalidOrderId",
            format!("{external_id:?} is not a Wildberries order id"),
        )
    })
}

#[async_trait]
impl Connector for Wildberries {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Lists the seller's warehouses: proves the token, and that `warehouse_id` is one of them.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        let list = self.warehouses().await?;
        if !list.iter().any(|w| w.id == self.warehouse_id) {
            let known: Vec<String> = list
                .iter()
                .map(|w| format!("{} ({})", w.id, w.name))
                .collect();
            return Err(ConnectorError::config(format!(
                "settings.warehouse_id: warehouse {} is not one of the seller's warehouses [{}]",
                self.warehouse_id,
                known.join(", ")
            )));
        }
        Ok(Health::ok(
            Utc::now(),
            Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        ))
    }

    fn as_marketplace(&self) -> Option<&dyn MarketplaceConnector> {
        Some(self)
    }
}

#[async_trait]
impl MarketplaceConnector for Wildberries {
    fn max_stock_batch(&self) -> usize {
        MAX_STOCK_BATCH
    }

    /// One page of cards (up to 100), one item per size, with WB's stock at our warehouse.
    async fn list_catalog(&self, cursor: Option<&str>) -> Result<CatalogPage, ConnectorError> {
        let mut wire = match cursor.filter(|c| !c.is_empty()) {
            None => CardsCursor {
                limit: None,
                updated_at: None,
                nm_id: None,
            },
            Some(c) => transformers::decode_cursor(c).ok_or_else(|| {
                ConnectorError::rejected("InvalidCursor", "not a cursor this connector gave")
            })?,
        };
        wire.limit = Some(CARDS_PAGE);
        let req = HttpRequest::post(self.url(Api::Content, "/content/v2/get/cards/list"))
            .json(&CardsRequest {
                settings: transformers::CardsSettings {
                    cursor: wire,
                    filter: CardsFilter { with_photo: -1 },
                },
            })
            .operation("cards.list");
        let body: CardsResponse = self.call_json(Api::Content, req).await?;
        let mut items: Vec<_> = body
            .cards
            .iter()
            .flat_map(transformers::card_items)
            .collect();
        let ids: Vec<u64> = items
            .iter()
            .filter_map(|i| i.external_id.parse().ok())
            .collect();
        if !ids.is_empty() {
            let stock = self.read_stock(&ids).await?;
            for item in &mut items {
                if let Some(a) = item
                    .external_id
                    .parse::<u64>()
                    .ok()
                    .and_then(|c| stock.get(&c))
                {
                    item.stock = Some(a.saturating_mul(1000));
                }
            }
        }
        let full = body.cards.len() >= CARDS_PAGE as usize;
        let next = if full {
            Some(
                body.cursor
                    .as_ref()
                    .and_then(transformers::encode_cursor)
                    .ok_or_else(|| {
                        ConnectorError::protocol("a full cards page without a cursor")
                    })?,
            )
        } else {
            None
        };
        Ok(CatalogPage { items, next })
    }

    /// Whole units (rounded down, never below zero) by `chrtId`. Items WB cannot take come back
    /// rejected; the rest land.
    async fn push_stock(&self, batch: &[StockUpdate]) -> Result<StockPushResult, ConnectorError> {
        let mut result = StockPushResult::default();
        // The last update of a size wins; order is kept for the log.
        let mut order: Vec<u64> = Vec::new();
        let mut amounts: HashMap<u64, i64> = HashMap::new();
        for u in batch {
            let Ok(chrt) = u.external_id.trim().parse::<u64>() else {
                result.rejected.push(ItemError {
                    external_id: u.external_id.clone(),
                    code: "InvalidId".into(),
                    message: "a Wildberries chrtId is a number".into(),
                });
                continue;
            };
            let amount = transformers::whole_units(u.available);
            if amount > MAX_AMOUNT {
                result.rejected.push(ItemError {
                    external_id: u.external_id.clone(),
                    code: "InvalidAmount".into(),
                    message: format!("{amount} units: Wildberries takes at most {MAX_AMOUNT}"),
                });
                continue;
            }
            if self.recently_refused(chrt) {
                result.rejected.push(ItemError {
                    external_id: u.external_id.clone(),
                    code: "NotFound".into(),
                    message: "Wildberries refused this chrtId lately; not sent again yet".into(),
                });
                continue;
            }
            if amounts.insert(chrt, amount).is_none() {
                order.push(chrt);
            }
        }
        let items: Vec<StockAmount> = order
            .iter()
            .filter_map(|c| {
                amounts.get(c).map(|a| StockAmount {
                    chrt_id: *c,
                    amount: *a,
                })
            })
            .collect();
        for chunk in items.chunks(MAX_STOCK_BATCH) {
            self.push_chunk(chunk.to_vec(), &mut result).await?;
        }
        Ok(result)
    }

    /// Every assembly order still new (WB answers them all, so `since` is not needed): the same
    /// order comes back until it is confirmed or cancelled.
    async fn fetch_new_orders(
        &self,
        _since: Option<DateTime<Utc>>,
    ) -> Result<Vec<MarketplaceOrder>, ConnectorError> {
        let req = HttpRequest::get(self.url(Api::Marketplace, "/api/v3/orders/new"))
            .operation("orders.new");
        let body: OrdersResponse = self.call_json(Api::Marketplace, req).await?;
        let mut out = Vec::with_capacity(body.orders.len());
        for o in &body.orders {
            match transformers::new_order(o) {
                Ok(m) => out.push(m),
                // One order we cannot book must not hide the others.
                Err(why) => {
                    tracing::warn!(order_id = o.id, reason = %why, "wildberries order skipped")
                }
            }
        }
        Ok(out)
    }

    async fn order_status(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError> {
        let id = parse_order_id(external_id)?;
        self.statuses(&[id])
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.change())
            .ok_or_else(|| ConnectorError::rejected("NotFound", format!("order {id} not found")))
    }

    /// Orders created from two weeks before `since` until now whose status is a cancellation.
    /// WB keeps no time of the change, so `changed_at` is `None` and an order can come back on
    /// later calls: apply them keyed by `external_id`.
    async fn fetch_cancellations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<OrderStatusChange>, ConnectorError> {
        let now = Utc::now();
        let mut from = since.min(now) - CANCEL_LOOKBACK;
        let mut ids = Vec::new();
        while from < now {
            let to = (from + LIST_SPAN).min(now);
            let mut next: i64 = 0;
            loop {
                let req = HttpRequest::get(self.url(Api::Marketplace, "/api/v3/orders"))
                    .query(&[
                        ("limit", ORDERS_PAGE.to_string()),
                        ("next", next.to_string()),
                        ("dateFrom", from.timestamp().to_string()),
                        ("dateTo", to.timestamp().to_string()),
                    ])
                    .operation("orders.list");
                let page: OrdersResponse = self.call_json(Api::Marketplace, req).await?;
                let n = page.orders.len();
                ids.extend(page.orders.iter().map(|o| o.id));
                match page.next {
                    Some(nx) if n >= ORDERS_PAGE as usize && nx > next => next = nx,
                    _ => break,
                }
            }
            from = to;
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .statuses(&ids)
            .await?
            .into_iter()
            .map(|s| s.change())
            .filter(|c| c.state == OrderState::Cancelled)
            .collect())
    }

    /// Adds the order to the open supply (created when there is none or it is gone). Confirming
    /// an order already confirmed answers its status.
    async fn confirm_order(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError> {
        let id = parse_order_id(external_id)?;
        let mut supply = self.shared.supply.lock().await;
        for _ in 0..2 {
            let sid = self.open_supply(&mut supply).await?;
            let path = format!("/api/v3/supplies/{sid}/orders/{id}");
            let req = HttpRequest::new(reqwest::Method::PATCH, self.url(Api::Marketplace, &path))
                .operation("supplies.add_order");
            let resp = self.call(Api::Marketplace, req).await?;
            if resp.is_success() {
                return Ok(OrderStatusChange {
                    external_id: id.to_string(),
                    state: OrderState::Confirmed,
                    raw_status: "confirm/waiting".into(),
                    changed_at: Some(Utc::now()),
                    reason: None,
                });
            }
            let body: ErrorBody = resp.json().unwrap_or_default();
            let text = body.text().unwrap_or_default();
            match resp.status.as_u16() {
                404 if text.to_ascii_lowercase().contains("supply") => {
                    // Closed or deleted on WB's side: start a new one.
                    *supply = None;
                }
                409 => {
                    let now = self.order_status(external_id).await?;
                    return match now.state {
                        OrderState::Confirmed | OrderState::Packing | OrderState::Shipping => {
                            Ok(now)
                        }
                        _ => Err(ConnectorError::rejected(
                            "StatusMismatch",
                            format!("order {id} is {}: it cannot be confirmed", now.raw_status),
                        )),
                    };
                }
                _ => return Err(refusal(&resp)),
            }
        }
        Err(ConnectorError::unavailable(
            "Wildberries dropped the new supply at once",
        ))
    }
}

/// Register the `wildberries` factory (the type itself is one of the hub's built-ins).
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: Arc<dyn Connector> = Arc::new(Wildberries::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "wildberries connector not registered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_host_follows_the_marketplace_host() {
        assert_eq!(
            content_base("https://marketplace-api.wildberries.ru"),
            "https://content-api.wildberries.ru"
        );
        assert_eq!(
            content_base("http://127.0.0.1:9000/wildberries"),
            "http://127.0.0.1:9000/wildberries"
        );
    }
}
