//! Ozon (Seller API): catalogue, FBS stock of one warehouse, and FBS postings as orders.
//!
//! - Auth: headers `Client-Id` and `Api-Key` (the key is a secret: masked in the exchange log).
//! - Catalogue: `POST /v3/product/list` pages by `last_id` (our cursor), and each page's
//!   details (barcodes, price, stock) come from `POST /v3/product/info/list`.
//! - Stock: `POST /v2/products/stocks` with at most 100 items a request, 80 requests a minute
//!   (the hub's limiter for this type), and the same offer and warehouse at most once per two
//!   minutes: a too-early item is refused inside a 200 answer (`TOO_MANY_REQUESTS`) and comes
//!   back as a per-item rejection, for the caller to coalesce into a later push.
//! - Orders: FBS postings. `POST /v3/posting/fbs/list` (status `awaiting_packaging` = new,
//!   `cancelled`), `/v3/posting/fbs/get`; confirming packs the whole posting into one package
//!   with `/v4/posting/fbs/ship` (-> `awaiting_deliver`).
//! - Errors: `{code, message}` with gRPC codes; 401/403 are credentials, 5xx and 429 are left
//!   to the HTTP client's retries.

mod transformers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use savdo_hub::connector::{
    CatalogPage, ItemError, MarketplaceOrder, OrderState, OrderStatusChange, StockPushResult,
    StockUpdate,
};
use savdo_hub::registry::ConnectorContext;
use savdo_hub::{
    Connector, ConnectorError, Health, HttpClient, HttpRequest, HttpResponse, MarketplaceConnector,
    Registry, Secret,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use transformers::{
    ErrorBody, PostingFilter, PostingGetRequest, PostingGetResponse, PostingListRequest,
    PostingListResponse, ProductFilter, ProductInfoRequest, ProductInfoResponse,
    ProductListRequest, ProductListResponse, ShipRequest, StockItem, StocksRequest, StocksResponse,
    WarehouseListResponse,
};
pub use transformers::{order_state, parse_tiyin, whole_units};

pub const KIND: &str = "ozon";
/// Items one `/v2/products/stocks` request takes.
pub const MAX_STOCK_BATCH: usize = 100;
/// The same offer and warehouse at most this often.
pub const STOCK_ITEM_INTERVAL: Duration = Duration::from_secs(120);
/// Catalogue page size (Ozon allows up to 1000; info/list takes as many ids).
const CATALOG_PAGE: u32 = 100;
/// Postings a list request returns at most.
const POSTING_PAGE: u32 = 1000;
/// Stop paging after this many postings: a runaway `has_next` must not loop forever.
const MAX_POSTINGS: u64 = 100_000;
/// How far back new orders are looked for when the caller has no `since`.
const NEW_ORDERS_LOOKBACK: chrono::Duration = chrono::Duration::days(30);
/// Ozon filters postings by when they entered processing, not when they were cancelled: a
/// posting cancelled after `since` may have started long before it.
const CANCELLED_LOOKBACK: chrono::Duration = chrono::Duration::days(30);
/// The list filter's `to`, ahead of our clock so a provider clock running ahead loses nothing.
const LIST_AHEAD: chrono::Duration = chrono::Duration::days(1);

pub struct Ozon {
    http: HttpClient,
    base_url: String,
    client_id: String,
    api_key: Secret,
    warehouse_id: u64,
}

impl std::fmt::Debug for Ozon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ozon")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("warehouse_id", &self.warehouse_id)
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Ozon {
    /// From the registry's context: credentials `client_id`, `api_key`; settings
    /// `warehouse_id` (a number, as text or JSON) and `base_url`.
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let client_id = ctx.credentials.require_str("client_id")?.trim().to_owned();
        if client_id.is_empty() {
            return Err(ConnectorError::config("credentials.client_id is empty"));
        }
        let api_key = ctx.credentials.require_secret("api_key")?;
        let warehouse_id = match ctx.settings.get("warehouse_id") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ConnectorError::config("settings.warehouse_id must be an Ozon warehouse id (a number)")
        })?;
        let base_url = ctx
            .settings
            .get("base_url")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConnectorError::config("settings.base_url is missing"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Ozon {
            http: ctx.http,
            base_url,
            client_id,
            api_key,
            warehouse_id,
        })
    }

    pub fn warehouse_id(&self) -> u64 {
        self.warehouse_id
    }

    /// POST `body` to `path` with the credentials; a 2xx answer as `T`, anything else as the
    /// error it means.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        operation: &str,
    ) -> Result<T, ConnectorError> {
        let req = HttpRequest::post(format!("{}{path}", self.base_url))
            .header("Client-Id", &self.client_id)
            .secret_header("Api-Key", &self.api_key)
            .json(body)
            .operation(operation);
        let resp = self.http.send(req).await?;
        if !resp.is_success() {
            return Err(error_of(&resp));
        }
        resp.json()
    }

    async fn get_posting(
        &self,
        posting_number: &str,
    ) -> Result<transformers::Posting, ConnectorError> {
        let a: PostingGetResponse = self
            .call(
                "/v3/posting/fbs/get",
                &PostingGetRequest { posting_number },
                "postings.get",
            )
            .await?;
        Ok(a.result)
    }

    /// Every posting of our warehouse in `status` that entered processing within the range.
    async fn list_postings(
        &self,
        status: &str,
        since: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<transformers::Posting>, ConnectorError> {
        let mut out = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let req = PostingListRequest {
                dir: "ASC",
                filter: PostingFilter {
                    since: rfc3339(since),
                    to: rfc3339(to),
                    status,
                    warehouse_id: vec![self.warehouse_id],
                },
                limit: POSTING_PAGE,
                offset,
            };
            let a: PostingListResponse = self
                .call("/v3/posting/fbs/list", &req, "postings.list")
                .await?;
            let got = a.result.postings.len() as u64;
            out.extend(a.result.postings);
            offset += got;
            if !a.result.has_next || got == 0 {
                return Ok(out);
            }
            if offset >= MAX_POSTINGS {
                return Err(ConnectorError::protocol(format!(
                    "more than {MAX_POSTINGS} {status} postings: narrow the time range"
                )));
            }
        }
    }

    /// One request of at most [`MAX_STOCK_BATCH`] distinct offers.
    async fn push_chunk(&self, chunk: &[(&str, i64)]) -> Result<StockPushResult, ConnectorError> {
        let req = StocksRequest {
            stocks: chunk
                .iter()
                .map(|(offer_id, stock)| StockItem {
                    offer_id,
                    stock: *stock,
                    warehouse_id: self.warehouse_id,
                })
                .collect(),
        };
        let a: StocksResponse = self
            .call("/v2/products/stocks", &req, "stocks.push")
            .await?;
        if a.result.len() != chunk.len() {
            return Err(ConnectorError::protocol(format!(
                "sent {} stock items, got {} results",
                chunk.len(),
                a.result.len()
            )));
        }
        let mut out = StockPushResult::default();
        for ((offer_id, _), r) in chunk.iter().zip(a.result) {
            if r.updated && r.errors.is_empty() {
                out.accepted += 1;
                continue;
            }
            let first = r.errors.into_iter().next();
            out.rejected.push(ItemError {
                external_id: if r.offer_id.is_empty() {
                    (*offer_id).to_owned()
                } else {
                    r.offer_id
                },
                code: first
                    .as_ref()
                    .map(|e| e.code.clone())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "NOT_UPDATED".into()),
                message: first
                    .map(|e| e.message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "Ozon did not update the stock".into()),
            });
        }
        Ok(out)
    }
}

/// A non-2xx answer that the HTTP client passed back (429 and 5xx never get here unless
/// retries ran out, which the client reports itself).
fn error_of(resp: &HttpResponse) -> ConnectorError {
    let status = resp.status.as_u16();
    let body = resp.json::<ErrorBody>().ok();
    let msg = match &body {
        Some(b) if !b.message.is_empty() => format!("HTTP {status}: {}", b.message),
        _ => format!("HTTP {status}: {}", resp.excerpt()),
    };
    match status {
        401 | 403 => ConnectorError::auth(msg),
        429 => ConnectorError::RateLimited {
            retry_after: savdo_hub::http::retry_after(&resp.headers, Utc::now()),
        },
        500..=599 => ConnectorError::unavailable(msg),
        _ => match body {
            Some(b) => ConnectorError::rejected(b.code(), msg),
            None => ConnectorError::rejected(status.to_string(), msg),
        },
    }
}

#[async_trait]
impl Connector for Ozon {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Lists the seller's warehouses: proves the credentials, and that `warehouse_id` is one
    /// of them.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        let a: WarehouseListResponse = self
            .call(
                "/v1/warehouse/list",
                &serde_json::json!({}),
                "warehouses.list",
            )
            .await?;
        if !a.result.iter().any(|w| w.warehouse_id == self.warehouse_id) {
            let known: Vec<String> = a
                .result
                .iter()
                .map(|w| format!("{} ({})", w.warehouse_id, w.name))
                .collect();
            return Err(ConnectorError::config(format!(
                "warehouse_id {} is not one of this seller's Ozon warehouses: {}",
                self.warehouse_id,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
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
impl MarketplaceConnector for Ozon {
    fn max_stock_batch(&self) -> usize {
        MAX_STOCK_BATCH
    }

    fn stock_item_interval(&self) -> Option<Duration> {
        Some(STOCK_ITEM_INTERVAL)
    }

    /// One page of offers after `cursor` (Ozon's `last_id`), with barcodes, price and stock.
    async fn list_catalog(&self, cursor: Option<&str>) -> Result<CatalogPage, ConnectorError> {
        let list: ProductListResponse = self
            .call(
                "/v3/product/list",
                &ProductListRequest {
                    filter: ProductFilter { visibility: "ALL" },
                    last_id: cursor.unwrap_or(""),
                    limit: CATALOG_PAGE,
                },
                "products.list",
            )
            .await?;
        let ids: Vec<u64> = list.result.items.iter().map(|p| p.product_id).collect();
        let next = (ids.len() >= CATALOG_PAGE as usize && !list.result.last_id.is_empty())
            .then_some(list.result.last_id);
        if ids.is_empty() {
            return Ok(CatalogPage {
                items: Vec::new(),
                next: None,
            });
        }
        let info: ProductInfoResponse = self
            .call(
                "/v3/product/info/list",
                &ProductInfoRequest {
                    product_id: ids.iter().map(u64::to_string).collect(),
                },
                "products.info",
            )
            .await?;
        // Keep the list's order; a product the info call no longer knows is left out.
        let mut by_id: HashMap<u64, transformers::ProductInfo> =
            info.items.into_iter().map(|p| (p.id, p)).collect();
        let items = ids
            .iter()
            .filter_map(|id| by_id.remove(id))
            .map(transformers::ProductInfo::into_item)
            .collect();
        Ok(CatalogPage { items, next })
    }

    /// Whole units (rounded down, never below zero) for our warehouse, in requests of at most
    /// 100 offers; the same offer twice in `batch` is sent once, with its last value. If a
    /// later request fails after an earlier one was applied, the unsent offers come back as
    /// rejections with the failure's code, so the caller retries only them.
    async fn push_stock(&self, batch: &[StockUpdate]) -> Result<StockPushResult, ConnectorError> {
        let mut order: Vec<&str> = Vec::new();
        let mut last: HashMap<&str, i64> = HashMap::new();
        for u in batch {
            if last
                .insert(u.external_id.as_str(), whole_units(u.available))
                .is_none()
            {
                order.push(&u.external_id);
            }
        }
        let items: Vec<(&str, i64)> = order
            .into_iter()
            .map(|id| (id, last.get(id).copied().unwrap_or(0)))
            .collect();
        let mut out = StockPushResult::default();
        for (n, chunk) in items.chunks(MAX_STOCK_BATCH).enumerate() {
            match self.push_chunk(chunk).await {
                Ok(r) => {
                    out.accepted += r.accepted;
                    out.rejected.extend(r.rejected);
                }
                Err(e) if n == 0 => return Err(e),
                Err(e) => {
                    let rest = &items[n * MAX_STOCK_BATCH..];
                    out.rejected.extend(rest.iter().map(|(id, _)| ItemError {
                        external_id: (*id).to_owned(),
                        code: e.code().to_owned(),
                        message: e.to_string(),
                    }));
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Postings awaiting packaging (Ozon's "new") of our warehouse that entered processing
    /// since `since` (30 days back when `None`). The same posting comes back on every call
    /// until it is confirmed or cancelled.
    async fn fetch_new_orders(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<MarketplaceOrder>, ConnectorError> {
        let now = Utc::now();
        let since = since.unwrap_or(now - NEW_ORDERS_LOOKBACK);
        self.list_postings("awaiting_packaging", since, now + LIST_AHEAD)
            .await?
            .into_iter()
            .map(|p| p.into_order().map_err(ConnectorError::protocol))
            .collect()
    }

    async fn order_status(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError> {
        Ok(self.get_posting(external_id).await?.status_change())
    }

    /// Cancelled postings of our warehouse. Ozon does not filter by cancellation time, so this
    /// looks 30 days further back than `since` and may repeat earlier cancellations: the
    /// caller applies them by posting number.
    async fn fetch_cancellations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<OrderStatusChange>, ConnectorError> {
        let now = Utc::now();
        Ok(self
            .list_postings("cancelled", since - CANCELLED_LOOKBACK, now + LIST_AHEAD)
            .await?
            .iter()
            .map(transformers::Posting::status_change)
            .collect())
    }

    /// Packs the whole posting into one package (`/v4/posting/fbs/ship`), which moves it to
    /// `awaiting_deliver`. A posting already past packaging answers its current status, so a
    /// retry (or a lost answer) changes nothing.
    async fn confirm_order(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError> {
        let posting = self.get_posting(external_id).await?;
        match order_state(&posting.status) {
            OrderState::New if posting.status == "awaiting_packaging" => {}
            OrderState::Cancelled => {
                return Err(ConnectorError::rejected(
                    "POSTING_CANCELLED",
                    format!("posting {external_id} is cancelled"),
                ));
            }
            OrderState::New => {
                return Err(ConnectorError::rejected(
                    "POSTING_NOT_READY",
                    format!(
                        "posting {external_id} is {}, not awaiting packaging",
                        posting.status
                    ),
                ));
            }
            _ => return Ok(posting.status_change()),
        }
        let req = ShipRequest {
            posting_number: external_id,
            packages: vec![posting.single_package()],
        };
        let shipped: Result<serde_json::Value, _> = self
            .call("/v4/posting/fbs/ship", &req, "postings.ship")
            .await;
        match shipped {
            Ok(_) => Ok(OrderStatusChange {
                external_id: external_id.to_owned(),
                state: OrderState::Confirmed,
                raw_status: "awaiting_deliver".into(),
                changed_at: Some(Utc::now()),
                reason: None,
            }),
            // Shipped meanwhile (our earlier attempt whose answer was lost): its status now.
            Err(ConnectorError::Rejected { code, message }) => {
                let now = self.get_posting(external_id).await?;
                match order_state(&now.status) {
                    OrderState::Confirmed
                    | OrderState::Packing
                    | OrderState::Shipping
                    | OrderState::Delivered => Ok(now.status_change()),
                    _ => Err(ConnectorError::Rejected { code, message }),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Register the `ozon` factory (the type itself is one of the hub's built-ins).
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: Arc<dyn Connector> = Arc::new(Ozon::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "ozon connector not registered");
    }
}
