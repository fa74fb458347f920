//! Uzum Market Seller OpenAPI (FBS): catalogue, stock, prices and orders of one shop.
//!
//! - Auth: `Authorization: <token>` (the raw token). Every answer is the envelope
//!   `{payload, errors: [{code, message}], timestamp}`.
//! - `GET /v1/shops`; `GET /v1/product/shop/{shopId}?page&size` (page is 0-based, size <= 100);
//!   `POST /v1/product/{shopId}/sendPriceData`; `POST /v2/fbs/sku/stocks`;
//!   `GET /v2/fbs/orders?shopIds&status&page&size` (size <= 50); `GET /v1/fbs/order/{id}`;
//!   `POST /v1/fbs/order/{id}/confirm`.
//! - Rate: unpublished, about one request a second per token: the integration type's HTTP
//!   limit paces us, and a 429 is retried after its `Retry-After` by the hub's client.
//! - A stock or price request with one bad item is refused whole (errors name the items):
//!   we lay each error at the item it names, drop those and send the rest once more.

mod transformers;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use savdo_hub::connector::{
    CatalogPage, ItemError, MarketplaceOrder, OrderStatusChange, PriceUpdate, StockPushResult,
    StockUpdate,
};
use savdo_hub::registry::ConnectorContext;
use savdo_hub::{
    Connector, ConnectorError, Health, HealthStatus, HttpClient, HttpRequest, HttpResponse,
    MarketplaceConnector, Registry, Secret,
};
use serde::de::DeserializeOwned;

use transformers::{
    Envelope, ErrorsOnly, OrderPage, PriceItem, PriceRequest, ProductPage, Shop, StockItem,
    StockRequest, WireError, mentions, tiyin_to_sum, whole_units,
};

pub use transformers::{order_state, sum_to_tiyin};

pub const KIND: &str = "uzum";
/// Products a catalogue page asks for (Uzum's maximum).
pub const PRODUCT_PAGE: usize = 100;
/// Orders a page asks for (Uzum's maximum).
pub const ORDER_PAGE: usize = 50;
/// Items one stock or price request carries. Uzum publishes no cap; at about one request a
/// second, big batches are what keeps a full resync short. [assumed]
pub const MAX_BATCH: usize = 500;
/// A bound on paging, so a provider that never says "last page" cannot keep us forever.
const MAX_PAGES: usize = 10_000;

pub struct Uzum {
    http: HttpClient,
    base_url: String,
    token: Secret,
    shop_id: u64,
}

impl std::fmt::Debug for Uzum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uzum")
            .field("base_url", &self.base_url)
            .field("shop_id", &self.shop_id)
            .finish_non_exhaustive()
    }
}

/// Uzum's order error codes as ours.
fn order_code(code: &str) -> &str {
    match code {
        "seller-order-01" => "not_found",
        "seller-order-02" => "wrong_status",
        other => other,
    }
}

fn join_errors(errors: &[WireError]) -> String {
    errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.code.as_deref().unwrap_or("error"),
                e.message.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Uzum {
    /// From the registry's context: `credentials.token`, `settings.shop_id` and `base_url`.
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let token = ctx.credentials.require_secret("token")?;
        if token.expose().trim().is_empty() {
            return Err(ConnectorError::config("credentials.token is empty"));
        }
        let shop_id = match ctx.settings.get("shop_id") {
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| ConnectorError::config("settings.shop_id must be Uzum's numeric shop id"))?;
        let base_url = ctx
            .settings
            .get("base_url")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConnectorError::config("settings.base_url is missing"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(Uzum {
            http: ctx.http,
            base_url,
            token,
            shop_id,
        })
    }

    pub fn shop_id(&self) -> u64 {
        self.shop_id
    }

    fn get(&self, path: &str) -> HttpRequest {
        HttpRequest::get(format!("{}{path}", self.base_url))
            .secret_header("Authorization", &self.token)
    }

    fn post(&self, path: &str) -> HttpRequest {
        HttpRequest::post(format!("{}{path}", self.base_url))
            .secret_header("Authorization", &self.token)
    }

    async fn call<T: DeserializeOwned>(&self, req: HttpRequest) -> Result<T, ConnectorError> {
        let resp = self.http.send(req).await?;
        Self::answer(&resp)
    }

    /// The envelope's payload, or the error the answer means.
    fn answer<T: DeserializeOwned>(resp: &HttpResponse) -> Result<T, ConnectorError> {
        let status = resp.status.as_u16();
        if resp.is_success() {
            let env: Envelope<T> = resp.json()?;
            if let Some(first) = env.errors.first() {
                let code = first.code.clone().unwrap_or_else(|| "error".into());
                return Err(ConnectorError::rejected(
                    order_code(&code),
                    join_errors(&env.errors),
                ));
            }
            return env
                .payload
                .ok_or_else(|| ConnectorError::protocol(format!("HTTP {status}: no payload")));
        }
        let errors = resp.json::<ErrorsOnly>().unwrap_or_default().errors;
        let msg = if errors.is_empty() {
            format!("HTTP {status}: {}", resp.excerpt())
        } else {
            format!("HTTP {status}: {}", join_errors(&errors))
        };
        Err(match status {
            401 | 403 => ConnectorError::auth(msg),
            429 => ConnectorError::RateLimited {
                retry_after: savdo_hub::http::retry_after(&resp.headers, Utc::now()),
            },
            500..=599 => ConnectorError::unavailable(msg),
            _ => match errors.first().and_then(|e| e.code.as_deref()) {
                Some(code) => ConnectorError::rejected(order_code(code), msg),
                None => ConnectorError::rejected(status.to_string(), msg),
            },
        })
    }

    async fn shops(&self) -> Result<Vec<Shop>, ConnectorError> {
        self.call(self.get("/v1/shops").operation("shops.list"))
            .await
    }

    async fn orders_by_status(
        &self,
        status: &str,
    ) -> Result<Vec<transformers::Order>, ConnectorError> {
        let shop = self.shop_id.to_string();
        let size = ORDER_PAGE.to_string();
        let mut all = Vec::new();
        for page in 0..MAX_PAGES {
            let p = page.to_string();
            let got: OrderPage = self
                .call(
                    self.get("/v2/fbs/orders")
                        .query(&[
                            ("shopIds", shop.as_str()),
                            ("status", status),
                            ("page", p.as_str()),
                            ("size", size.as_str()),
                        ])
                        .operation("orders.list"),
                )
                .await?;
            let n = got.orders.len();
            all.extend(got.orders);
            let more = match got.total_amount {
                Some(total) => (all.len() as u64) < total && n > 0,
                None => n == ORDER_PAGE,
            };
            if !more {
                break;
            }
        }
        Ok(all)
    }

    /// Send stock items; when Uzum refuses the request for named items, those are rejected
    /// and the rest sent once more.
    async fn send_stock(
        &self,
        items: Vec<(String, StockItem)>,
        result: &mut StockPushResult,
    ) -> Result<(), ConnectorError> {
        let request = |list: &[StockItem]| {
            self.post("/v2/fbs/sku/stocks")
                .json(&StockRequest {
                    sku_amount_list: list,
                })
                .operation("stocks.update")
        };
        self.send_refusable(items, request, result, |(id, it)| {
            vec![id.clone(), it.barcode.clone().unwrap_or_default()]
        })
        .await
    }

    async fn send_prices(
        &self,
        items: Vec<(String, PriceItem)>,
        result: &mut StockPushResult,
    ) -> Result<(), ConnectorError> {
        let path = format!("/v1/product/{}/sendPriceData", self.shop_id);
        let request = |list: &[PriceItem]| {
            self.post(&path)
                .json(&PriceRequest {
                    sku_for_product_list: list,
                })
                .operation("prices.update")
        };
        self.send_refusable(items, request, result, |(id, _)| vec![id.clone()])
            .await
    }

    /// Send items with `request`; items a refusal names (matched by `keys`) are rejected and
    /// the rest sent once more.
    async fn send_refusable<T: Clone>(
        &self,
        mut items: Vec<(String, T)>,
        request: impl Fn(&[T]) -> HttpRequest,
        result: &mut StockPushResult,
        keys: impl Fn(&(String, T)) -> Vec<String>,
    ) -> Result<(), ConnectorError> {
        for _ in 0..2 {
            if items.is_empty() {
                return Ok(());
            }
            let list: Vec<T> = items.iter().map(|(_, i)| i.clone()).collect();
            let resp = self.http.send(request(&list)).await?;
            match Self::answer::<serde_json::Value>(&resp) {
                Ok(_) => {
                    result.accepted += items.len();
                    return Ok(());
                }
                Err(ConnectorError::Rejected { .. }) if resp.status.as_u16() == 400 => {
                    let errors = resp.json::<ErrorsOnly>().unwrap_or_default().errors;
                    items = split_refused(items, &errors, result, &keys);
                }
                Err(e) => return Err(e),
            }
        }
        // Refused twice: nothing more we can pin on single items.
        reject_all(
            items.into_iter().map(|(id, _)| id),
            "refused",
            "refused again",
            result,
        );
        Ok(())
    }
}

/// Items an error names are rejected with it; the rest come back to be sent again. When no
/// error names any item, every item is rejected with the first error.
fn split_refused<T>(
    items: Vec<(String, T)>,
    errors: &[WireError],
    result: &mut StockPushResult,
    keys: impl Fn(&(String, T)) -> Vec<String>,
) -> Vec<(String, T)> {
    let mut named = 0;
    let mut kept = Vec::new();
    for item in items {
        let ks = keys(&item);
        let hit = errors.iter().find(|e| {
            let m = e.message.as_deref().unwrap_or("");
            ks.iter().any(|k| mentions(m, k))
        });
        match hit {
            Some(e) => {
                named += 1;
                result.rejected.push(ItemError {
                    external_id: item.0.clone(),
                    code: e.code.clone().unwrap_or_else(|| "rejected".into()),
                    message: e.message.clone().unwrap_or_default(),
                });
            }
            None => kept.push(item),
        }
    }
    if named == 0 {
        let first = errors.first().cloned().unwrap_or_default();
        reject_all(
            kept.into_iter().map(|(id, _)| id),
            first.code.as_deref().unwrap_or("rejected"),
            first.message.as_deref().unwrap_or("request refused"),
            result,
        );
        return Vec::new();
    }
    kept
}

fn reject_all(
    ids: impl Iterator<Item = String>,
    code: &str,
    message: &str,
    result: &mut StockPushResult,
) {
    for external_id in ids {
        result.rejected.push(ItemError {
            external_id,
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }
}

fn local_reject(result: &mut StockPushResult, external_id: &str, code: &str, message: String) {
    result.rejected.push(ItemError {
        external_id: external_id.to_owned(),
        code: code.to_owned(),
        message,
    });
}

fn numeric_id(external_id: &str) -> Option<u64> {
    external_id.trim().parse().ok()
}

/// The catalogue cursor: the next 0-based page.
fn parse_cursor(cursor: Option<&str>) -> Result<usize, ConnectorError> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .strip_prefix("page:")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| ConnectorError::rejected("bad_cursor", format!("unknown cursor {c:?}"))),
    }
}

#[async_trait]
impl Connector for Uzum {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Lists the token's shops: proves the token, and that it reaches the configured shop.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        let shops = self.shops().await?;
        let want = self.shop_id.to_string();
        if !shops.iter().any(|s| s.id == want) {
            let ids: Vec<&str> = shops.iter().map(|s| s.id.as_str()).collect();
            return Err(ConnectorError::config(format!(
                "shop_id {want} is not among the token's shops ({})",
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            )));
        }
        let name = shops
            .iter()
            .find(|s| s.id == want)
            .and_then(|s| s.name.clone());
        Ok(Health {
            status: HealthStatus::Ok,
            checked_at: Utc::now(),
            latency_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            message: name.map(|n| format!("shop {want}: {n}")),
        })
    }

    fn as_marketplace(&self) -> Option<&dyn MarketplaceConnector> {
        Some(self)
    }
}

#[async_trait]
impl MarketplaceConnector for Uzum {
    fn max_stock_batch(&self) -> usize {
        MAX_BATCH
    }

    fn supports_prices(&self) -> bool {
        true
    }

    /// Prices go out as whole sum (`sellPrice` = `fullPrice`): a price with a fraction of a sum,
    /// or not above zero, is rejected here rather than rounded.
    async fn push_prices(&self, batch: &[PriceUpdate]) -> Result<StockPushResult, ConnectorError> {
        let mut result = StockPushResult::default();
        let mut items = Vec::new();
        for u in batch {
            let Some(id) = numeric_id(&u.external_id) else {
                local_reject(
                    &mut result,
                    &u.external_id,
                    "bad_external_id",
                    format!("{:?} is not an Uzum skuId", u.external_id),
                );
                continue;
            };
            match tiyin_to_sum(u.price) {
                Some(sum) if sum > 0 => items.push((
                    u.external_id.clone(),
                    PriceItem {
                        sku_id: id,
                        full_price: sum,
                        sell_price: sum,
                    },
                )),
                _ => local_reject(
                    &mut result,
                    &u.external_id,
                    "bad_price",
                    format!("{} tiyin is not a positive whole number of sum", u.price),
                ),
            }
        }
        for chunk in items.chunks(MAX_BATCH) {
            self.send_prices(chunk.to_vec(), &mut result).await?;
        }
        Ok(result)
    }

    async fn list_catalog(&self, cursor: Option<&str>) -> Result<CatalogPage, ConnectorError> {
        let page = parse_cursor(cursor)?;
        let p = page.to_string();
        let size = PRODUCT_PAGE.to_string();
        let got: ProductPage = self
            .call(
                self.get(&format!("/v1/product/shop/{}", self.shop_id))
                    .query(&[("size", size.as_str()), ("page", p.as_str())])
                    .operation("products.list"),
            )
            .await?;
        let n = got.product_list.len();
        let mut items = Vec::new();
        for mut product in got.product_list {
            let skus = std::mem::take(&mut product.sku_list);
            for sku in skus {
                items.push(sku.into_item(&product)?);
            }
        }
        let seen = (page as u64)
            .saturating_add(1)
            .saturating_mul(PRODUCT_PAGE as u64);
        let more = match got.total_products_amount {
            Some(total) => seen < total && n > 0,
            None => n == PRODUCT_PAGE,
        };
        Ok(CatalogPage {
            items,
            next: more.then(|| format!("page:{}", page.saturating_add(1))),
        })
    }

    /// Whole units, rounded down and never below zero, by skuId (and barcode when known).
    async fn push_stock(&self, batch: &[StockUpdate]) -> Result<StockPushResult, ConnectorError> {
        let mut result = StockPushResult::default();
        let mut items = Vec::new();
        for u in batch {
            match numeric_id(&u.external_id) {
                Some(id) => items.push((
                    u.external_id.clone(),
                    StockItem {
                        sku_id: id,
                        barcode: u.barcode.clone().filter(|b| !b.is_empty()),
                        amount: whole_units(u.available),
                    },
                )),
                None => local_reject(
                    &mut result,
                    &u.external_id,
                    "bad_external_id",
                    format!("{:?} is not an Uzum skuId", u.external_id),
                ),
            }
        }
        for chunk in items.chunks(MAX_BATCH) {
            self.send_stock(chunk.to_vec(), &mut result).await?;
        }
        Ok(result)
    }

    /// Every order still `CREATED` (waiting for the seller), whatever `since`: an old order
    /// that still waits is still new, and importing is keyed by the order id.
    async fn fetch_new_orders(
        &self,
        _since: Option<DateTime<Utc>>,
    ) -> Result<Vec<MarketplaceOrder>, ConnectorError> {
        self.orders_by_status("CREATED")
            .await?
            .into_iter()
            .map(transformers::Order::into_order)
            .collect()
    }

    async fn order_status(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError> {
        let id = numeric_id(external_id).ok_or_else(|| {
            ConnectorError::rejected(
                "not_found",
                format!("{external_id:?} is not an Uzum order id"),
            )
        })?;
        let order: transformers::Order = self
            .call(
                self.get(&format!("/v1/fbs/order/{id}"))
                    .operation("orders.get"),
            )
            .await?;
        Ok(order.status_change())
    }

    /// Uzum lists orders by status only: the cancelled ones are filtered by when their status
    /// last changed.
    async fn fetch_cancellations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<OrderStatusChange>, ConnectorError> {
        Ok(self
            .orders_by_status("CANCELED")
            .await?
            .iter()
            .filter(|o| o.changed_at().is_none_or(|t| t >= since))
            .map(transformers::Order::status_change)
            .collect())
    }

    /// `CREATED` -> `PACKING`. Not retried once sent: a second confirm answers "wrong status".
    async fn confirm_order(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError> {
        let id = numeric_id(external_id).ok_or_else(|| {
            ConnectorError::rejected(
                "not_found",
                format!("{external_id:?} is not an Uzum order id"),
            )
        })?;
        let order: transformers::Order = self
            .call(
                self.post(&format!("/v1/fbs/order/{id}/confirm"))
                    .not_idempotent()
                    .operation("orders.confirm"),
            )
            .await?;
        Ok(order.status_change())
    }
}

/// Register the `uzum` factory (the type itself is one of the hub's built-ins).
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: Arc<dyn Connector> = Arc::new(Uzum::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "uzum connector not registered");
    }
}
