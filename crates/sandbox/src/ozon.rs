//! Ozon Seller API simulator, under `/ozon` (paths as on `api-seller.ozon.ru`).
//!
//! Auth: headers `Client-Id` and `Api-Key`. Errors are `{code, message, details}` with gRPC
//! codes (3 invalid argument, 5 not found, 7 permission denied, 8 exhausted, 16
//! unauthenticated). Bodies are decoded like protobuf JSON: an unknown field refuses the
//! request (400) [assumed], a missing number reads as 0.
//!
//! `POST /v2/products/stocks`: up to 100 items a request (more -> 400), 80 requests a minute per
//! Client-Id (a sliding 60 s window; beyond it 429 code 8), and each item and warehouse at most
//! once per 2 minutes: a too-early item is rejected inside a 200 answer (`updated: false`,
//! `errors: [{code: "TOO_MANY_REQUESTS"}]`) while the rest of the request is applied (the same
//! item twice in one request: the second is rejected). Other per-item codes [assumed]:
//! `PRODUCT_NOT_FOUND`, `WAREHOUSE_NOT_FOUND`, `INVALID_STOCK`. All
//! methods share a per-Client-Id limit of 50 requests a second [assumed].
//!
//! Postings: `POST /v3/posting/fbs/list` (status `awaiting_packaging` = new, `cancelled`),
//! `/v3/posting/fbs/get`, `/v4/posting/fbs/ship` (-> `awaiting_deliver`), `/v2/posting/fbs/cancel`.
//! Catalogue: `/v3/product/list`, `/v3/product/info/list` (barcodes), `/v4/product/info/stocks`,
//! `/v1/warehouse/list`.

#![allow(
    clippy::result_large_err,
    reason = "helpers return the provider's ready error response, passed straight back once"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Simulator, SystemState, header};
use crate::marketplace_common::{
    Clock, MarketplaceSim, SlidingWindow, Stats, c_clear_stats, c_clock, c_stats, control_error,
    count_requests, lock, merge_json, parse_control, rfc3339,
};

pub const DEFAULT_CLIENT_ID: &str = "demo-client";
pub const DEFAULT_API_KEY: &str = "demo-ozon-key";
pub const DEFAULT_WAREHOUSE_ID: u64 = 1;
/// Control-made postings cap quantities so stock arithmetic stays in range.
const MAX_QTY: i64 = 1_000_000;
const STATUSES: &[&str] = &[
    "awaiting_registration",
    "acceptance_in_progress",
    "awaiting_approve",
    "awaiting_packaging",
    "awaiting_deliver",
    "arbitration",
    "client_arbitration",
    "delivering",
    "driver_pickup",
    "delivered",
    "cancelled",
    "not_accepted",
    "sent_by_seller",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OzonLimits {
    /// `/v2/products/stocks` requests per window per Client-Id.
    pub stocks_per_window: u32,
    pub stocks_window_ms: u64,
    /// The same item and warehouse at most once per this interval.
    pub item_interval_ms: u64,
    pub max_stock_items: usize,
    /// All methods, per second per Client-Id.
    pub requests_per_second: u32,
}

impl Default for OzonLimits {
    fn default() -> Self {
        Self {
            stocks_per_window: 80,
            stocks_window_ms: 60_000,
            item_interval_ms: 120_000,
            max_stock_items: 100,
            requests_per_second: 50,
        }
    }
}

#[derive(Debug, Clone)]
struct Product {
    product_id: u64,
    offer_id: String,
    sku: u64,
    name: String,
    barcodes: Vec<String>,
    price: String,
}

#[derive(Debug, Clone)]
struct PostingProduct {
    product_id: u64,
    offer_id: String,
    sku: u64,
    name: String,
    quantity: i64,
    price: String,
}

#[derive(Debug, Clone)]
struct Posting {
    posting_number: String,
    order_id: u64,
    status: String,
    warehouse_id: u64,
    in_process_at: chrono::DateTime<chrono::Utc>,
    products: Vec<PostingProduct>,
    /// (reason id, reason, initiator)
    cancellation: Option<(u64, String, String)>,
    reserved: bool,
}

struct Data {
    credentials: BTreeMap<String, String>,
    warehouses: BTreeMap<u64, String>,
    products: BTreeMap<u64, Product>,
    stock: BTreeMap<(u64, u64), i64>,
    last_update: HashMap<(u64, u64), Instant>,
    postings: BTreeMap<String, Posting>,
    next_id: u64,
    currency: String,
    limits: OzonLimits,
    stock_windows: HashMap<String, SlidingWindow>,
    global_windows: HashMap<String, SlidingWindow>,
}

impl Default for Data {
    fn default() -> Self {
        let mut d = Data {
            credentials: BTreeMap::from([(
                DEFAULT_CLIENT_ID.to_string(),
                DEFAULT_API_KEY.to_string(),
            )]),
            warehouses: BTreeMap::from([(DEFAULT_WAREHOUSE_ID, "Toshkent FBS".to_string())]),
            products: BTreeMap::new(),
            stock: BTreeMap::new(),
            last_update: HashMap::new(),
            postings: BTreeMap::new(),
            next_id: 10_000_000,
            currency: "UZS".into(),
            limits: OzonLimits::default(),
            stock_windows: HashMap::new(),
            global_windows: HashMap::new(),
        };
        let demo = [
            (
                301,
                "CHOY-100",
                3001,
                "Choy Ahmad 100 g",
                "4780000000017",
                "25000",
                10,
            ),
            (
                302,
                "NON-OBI",
                3002,
                "Non, obi non",
                "4780000000024",
                "4000",
                30,
            ),
            (
                303,
                "SUV-1.5",
                3003,
                "Suv Hydrolife 1.5 l",
                "4780000000031",
                "5500",
                24,
            ),
        ];
        for (product_id, offer, sku, name, barcode, price, stock) in demo {
            d.products.insert(
                product_id,
                Product {
                    product_id,
                    offer_id: offer.into(),
                    sku,
                    name: name.into(),
                    barcodes: vec![barcode.into()],
                    price: price.into(),
                },
            );
            d.stock.insert((DEFAULT_WAREHOUSE_ID, product_id), stock);
        }
        d
    }
}

impl Data {
    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }

    fn find(&self, product_id: Option<u64>, offer_id: Option<&str>) -> Option<&Product> {
        match (
            product_id.filter(|p| *p != 0),
            offer_id.filter(|o| !o.is_empty()),
        ) {
            (Some(p), Some(o)) => self.products.get(&p).filter(|x| x.offer_id == o),
            (Some(p), None) => self.products.get(&p),
            (None, Some(o)) => self.products.values().find(|x| x.offer_id == o),
            (None, None) => None,
        }
    }

    fn create_posting(
        &mut self,
        new: NewPosting,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Value, String> {
        let status = new.status.unwrap_or_else(|| "awaiting_packaging".into());
        if !STATUSES.contains(&status.as_str()) {
            return Err(format!("unknown status {status}"));
        }
        let warehouse_id = new.warehouse_id.unwrap_or(DEFAULT_WAREHOUSE_ID);
        if !self.warehouses.contains_key(&warehouse_id) {
            return Err(format!("unknown warehouse {warehouse_id}"));
        }
        if new.items.is_empty() {
            return Err("a posting needs items".into());
        }
        let mut products = Vec::new();
        for it in &new.items {
            if it.quantity <= 0 || it.quantity > MAX_QTY {
                return Err(format!("quantity must be from 1 to {MAX_QTY}"));
            }
            let p = self
                .find(it.product_id, it.offer_id.as_deref())
                .ok_or_else(|| {
                    format!(
                        "unknown product {:?} / offer {:?}",
                        it.product_id, it.offer_id
                    )
                })?;
            products.push(PostingProduct {
                product_id: p.product_id,
                offer_id: p.offer_id.clone(),
                sku: p.sku,
                name: p.name.clone(),
                quantity: it.quantity,
                price: it
                    .price
                    .clone()
                    .map(price_string)
                    .unwrap_or_else(|| p.price.clone()),
            });
        }
        if new.reserve {
            // A buyer cannot order more than the marketplace shows in stock.
            let mut need: BTreeMap<u64, i64> = BTreeMap::new();
            for p in &products {
                *need.entry(p.product_id).or_default() += p.quantity;
            }
            for (pid, n) in need {
                let have = self.stock.get(&(warehouse_id, pid)).copied().unwrap_or(0);
                if have < n {
                    return Err(format!("product {pid}: {have} in stock, {n} ordered"));
                }
            }
        }
        let order_id = self.next_id();
        let posting_number = match new.posting_number {
            Some(n) if self.postings.contains_key(&n) => return Err(format!("posting {n} exists")),
            Some(n) => n,
            None => format!("{order_id}-0001-1"),
        };
        if new.reserve {
            for p in &products {
                let s = self.stock.entry((warehouse_id, p.product_id)).or_default();
                *s = s.saturating_sub(p.quantity);
            }
        }
        let posting = Posting {
            posting_number: posting_number.clone(),
            order_id,
            status,
            warehouse_id,
            in_process_at: new.in_process_at.unwrap_or(now),
            products,
            cancellation: None,
            reserved: new.reserve,
        };
        let v = posting_json(&posting, self);
        self.postings.insert(posting_number, posting);
        Ok(v)
    }

    fn cancel(&mut self, number: &str, reason_id: u64, reason: String, initiator: &str) {
        if let Some(p) = self.postings.get_mut(number) {
            p.status = "cancelled".into();
            p.cancellation = Some((reason_id, reason, initiator.into()));
            if std::mem::take(&mut p.reserved) {
                for it in &p.products {
                    let s = self
                        .stock
                        .entry((p.warehouse_id, it.product_id))
                        .or_default();
                    *s = s.saturating_add(it.quantity);
                }
            }
        }
    }
}

/// Ozon sends money as decimal strings ("1390.000000").
fn price_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn posting_json(p: &Posting, d: &Data) -> Value {
    let products: Vec<Value> = p
        .products
        .iter()
        .map(|i| {
            json!({
                "price": i.price,
                "offer_id": i.offer_id,
                "name": i.name,
                "sku": i.sku,
                "quantity": i.quantity,
                "mandatory_mark": [],
                "currency_code": d.currency,
            })
        })
        .collect();
    let cancellation = match &p.cancellation {
        Some((id, reason, initiator)) => json!({
            "cancel_reason_id": id,
            "cancel_reason": reason,
            "cancellation_type": if initiator == "Продавец" { "seller" } else { "client" },
            "cancelled_after_ship": false,
            "affect_cancellation_rating": initiator == "Продавец",
            "cancellation_initiator": initiator,
        }),
        None => json!({
            "cancel_reason_id": 0, "cancel_reason": "", "cancellation_type": "",
            "cancelled_after_ship": false, "affect_cancellation_rating": false,
            "cancellation_initiator": "",
        }),
    };
    let warehouse = d
        .warehouses
        .get(&p.warehouse_id)
        .cloned()
        .unwrap_or_default();
    json!({
        "posting_number": p.posting_number,
        "order_id": p.order_id,
        "order_number": p.posting_number.rsplit_once('-').map(|(o, _)| o).unwrap_or(&p.posting_number),
        "status": p.status,
        "substatus": format!("posting_{}", p.status),
        "delivery_method": {
            "id": p.warehouse_id, "name": "Ozon Logistika", "warehouse_id": p.warehouse_id,
            "warehouse": warehouse, "tpl_provider_id": 24, "tpl_provider": "Ozon Logistika",
        },
        "tracking_number": "",
        "tpl_integration_type": "ozon",
        "in_process_at": rfc3339(p.in_process_at),
        "shipment_date": rfc3339(p.in_process_at + chrono::Duration::days(1)),
        "delivering_date": null,
        "cancellation": cancellation,
        "customer": null,
        "products": products,
        "addressee": null,
        "barcodes": null,
        "analytics_data": null,
        "financial_data": null,
        "is_express": false,
        "requirements": {
            "products_requiring_gtd": [], "products_requiring_country": [],
            "products_requiring_mandatory_mark": [], "products_requiring_rnpt": [],
        },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPosting {
    posting_number: Option<String>,
    warehouse_id: Option<u64>,
    status: Option<String>,
    in_process_at: Option<chrono::DateTime<chrono::Utc>>,
    items: Vec<NewPostingItem>,
    /// Take the quantities off the marketplace stock.
    #[serde(default)]
    reserve: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPostingItem {
    product_id: Option<u64>,
    offer_id: Option<String>,
    #[serde(default = "one")]
    quantity: i64,
    price: Option<Value>,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default)]
    clear: bool,
    #[serde(default)]
    credentials: Vec<SeedCredential>,
    #[serde(default)]
    warehouses: Vec<SeedWarehouse>,
    #[serde(default)]
    products: Vec<SeedProduct>,
    #[serde(default)]
    orders: Vec<NewPosting>,
    currency: Option<String>,
    limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedCredential {
    client_id: String,
    api_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedWarehouse {
    id: u64,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedProduct {
    product_id: Option<u64>,
    offer_id: String,
    sku: Option<u64>,
    name: Option<String>,
    barcode: Option<String>,
    #[serde(default)]
    barcodes: Vec<String>,
    price: Option<Value>,
    stock: Option<i64>,
    warehouse_id: Option<u64>,
}

#[derive(Default)]
pub struct Ozon {
    state: SystemState,
    data: Mutex<Data>,
    stats: Arc<Stats>,
    clock: Clock,
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into(), "details": []})),
    )
        .into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, 3, message)
}

/// Decode like protobuf JSON: unknown fields refused, absent fields default.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| invalid(format!("proto: syntax error: {e}")))
}

/// int64 fields arrive as numbers or strings in protobuf JSON.
fn de_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer")),
        Value::String(s) if s.is_empty() => Ok(0),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("expected an integer")),
    }
}

fn de_u64s<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "de_u64")] u64);
    let v: Option<Vec<W>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|w| w.0).collect())
}

impl Ozon {
    /// Authenticate, apply the per-second limit (and the stocks window when `stocks`), then run
    /// `f` under the data lock.
    fn handle(
        &self,
        headers: &HeaderMap,
        stocks: bool,
        f: impl FnOnce(&mut Data, Instant, chrono::DateTime<chrono::Utc>) -> Response,
    ) -> Response {
        let client = header(headers, "client-id").map(str::trim).unwrap_or("");
        let key = header(headers, "api-key").map(str::trim).unwrap_or("");
        if client.is_empty() || key.is_empty() {
            return error(
                StatusCode::UNAUTHORIZED,
                16,
                "Client-Id and Api-Key headers are required",
            );
        }
        let mut d = lock(&self.data);
        if d.credentials.get(client).map(String::as_str) != Some(key) {
            return error(
                StatusCode::FORBIDDEN,
                7,
                "Invalid Api-Key, please contact support",
            );
        }
        let now = self.clock.now();
        let limits = d.limits.clone();
        let global = d
            .global_windows
            .entry(client.to_string())
            .or_insert_with(|| {
                SlidingWindow::new(limits.requests_per_second, Duration::from_secs(1))
            });
        if global.try_hit(now).is_err() {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                8,
                "You have reached request rate limit per second",
            );
        }
        if stocks {
            let window = d
                .stock_windows
                .entry(client.to_string())
                .or_insert_with(|| {
                    SlidingWindow::new(
                        limits.stocks_per_window,
                        Duration::from_millis(limits.stocks_window_ms),
                    )
                });
            if window.try_hit(now).is_err() {
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    8,
                    "You have reached request rate limit per minute",
                );
            }
        }
        f(&mut d, now, self.clock.utc_now())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StocksRequest {
    #[serde(default)]
    stocks: Vec<StockItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockItem {
    #[serde(default)]
    offer_id: String,
    #[serde(default, deserialize_with = "de_u64")]
    product_id: u64,
    #[serde(default)]
    stock: i64,
    #[serde(default, deserialize_with = "de_u64")]
    warehouse_id: u64,
}

async fn set_stocks(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    let stats = sim.stats.clone();
    sim.handle(&headers, true, |d, now, _| {
        let req: StocksRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let max = d.limits.max_stock_items;
        if req.stocks.is_empty() || req.stocks.len() > max {
            return invalid(format!(
                "invalid StocksRequest.Stocks: value must contain between 1 and {max} items, inclusive"
            ));
        }
        let interval = Duration::from_millis(d.limits.item_interval_ms);
        let mut result = Vec::with_capacity(req.stocks.len());
        let mut updated = 0u64;
        for it in &req.stocks {
            let found = d.find(Some(it.product_id), Some(&it.offer_id)).map(|p| (p.product_id, p.offer_id.clone()));
            let err = match &found {
                None => Some(("PRODUCT_NOT_FOUND", "Product not found".to_string())),
                Some(_) if !d.warehouses.contains_key(&it.warehouse_id) => {
                    Some(("WAREHOUSE_NOT_FOUND", format!("Warehouse {} not found", it.warehouse_id)))
                }
                Some(_) if it.stock < 0 => Some(("INVALID_STOCK", "stock must not be negative".to_string())),
                Some((pid, _)) => match d.last_update.get(&(it.warehouse_id, *pid)) {
                    Some(at) if now.saturating_duration_since(*at) < interval => Some((
                        "TOO_MANY_REQUESTS",
                        format!(
                            "Too many requests: an item's stock on a warehouse can change once per {} s",
                            interval.as_secs()
                        ),
                    )),
                    _ => None,
                },
            };
            let (pid, offer) = found.unwrap_or((it.product_id, it.offer_id.clone()));
            let errors = match err {
                Some((code, message)) => {
                    stats.stock_rejected(code, 1);
                    vec![json!({"code": code, "message": message})]
                }
                None => {
                    d.stock.insert((it.warehouse_id, pid), it.stock);
                    d.last_update.insert((it.warehouse_id, pid), now);
                    updated += 1;
                    vec![]
                }
            };
            result.push(json!({
                "warehouse_id": it.warehouse_id,
                "product_id": pid,
                "offer_id": offer,
                "updated": errors.is_empty(),
                "errors": errors,
            }));
        }
        stats.stock_accepted(updated);
        Json(json!({"result": result})).into_response()
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ProductFilter {
    offer_id: Vec<String>,
    #[serde(deserialize_with = "de_u64s")]
    product_id: Vec<u64>,
    #[serde(rename = "visibility")]
    _visibility: Option<String>,
}

impl ProductFilter {
    fn matches(&self, p: &Product) -> bool {
        (self.offer_id.is_empty() || self.offer_id.contains(&p.offer_id))
            && (self.product_id.is_empty() || self.product_id.contains(&p.product_id))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRequest {
    #[serde(default)]
    filter: ProductFilter,
    #[serde(default)]
    last_id: String,
    #[serde(default)]
    cursor: String,
    #[serde(default, deserialize_with = "de_u64")]
    limit: u64,
}

/// Products after `last_id`, `limit` of them (1..=1000), and the cursor for the next page.
fn page<'a>(d: &'a Data, req: &ListRequest) -> Result<(Vec<&'a Product>, usize, String), Response> {
    if req.limit == 0 || req.limit > 1000 {
        return Err(invalid("limit must be from 1 to 1000"));
    }
    let cursor = if req.last_id.is_empty() {
        &req.cursor
    } else {
        &req.last_id
    };
    let after: u64 = if cursor.is_empty() {
        0
    } else {
        cursor.parse().map_err(|_| invalid("invalid last_id"))?
    };
    let all: Vec<&Product> = d
        .products
        .values()
        .filter(|p| req.filter.matches(p))
        .collect();
    let total = all.len();
    let items: Vec<&Product> = all
        .into_iter()
        .filter(|p| p.product_id > after)
        .take(req.limit as usize)
        .collect();
    let last = items
        .last()
        .map(|p| p.product_id.to_string())
        .unwrap_or_default();
    Ok((items, total, last))
}

async fn product_list(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: ListRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let (items, total, last) = match page(d, &req) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let items: Vec<Value> = items
            .iter()
            .map(|p| {
                let has = d.stock.iter().any(|((_, pid), s)| *pid == p.product_id && *s > 0);
                json!({"product_id": p.product_id, "offer_id": p.offer_id, "has_fbo_stocks": false,
                       "has_fbs_stocks": has, "archived": false, "is_discounted": false, "quants": []})
            })
            .collect();
        Json(json!({"result": {"items": items, "total": total, "last_id": last}})).into_response()
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct InfoRequest {
    offer_id: Vec<String>,
    #[serde(deserialize_with = "de_u64s")]
    product_id: Vec<u64>,
    #[serde(deserialize_with = "de_u64s")]
    sku: Vec<u64>,
}

async fn product_info(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: InfoRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let n = req.offer_id.len() + req.product_id.len() + req.sku.len();
        if n == 0 || n > 1000 {
            return invalid("give from 1 to 1000 offer_id, product_id or sku values");
        }
        let items: Vec<Value> = d
            .products
            .values()
            .filter(|p| {
                req.offer_id.contains(&p.offer_id) || req.product_id.contains(&p.product_id) || req.sku.contains(&p.sku)
            })
            .map(|p| {
                let present: i64 = d.stock.iter().filter(|((_, pid), _)| *pid == p.product_id).map(|(_, s)| *s).sum();
                json!({
                    "id": p.product_id,
                    "offer_id": p.offer_id,
                    "name": p.name,
                    "barcodes": p.barcodes,
                    "currency_code": d.currency,
                    "price": p.price,
                    "sources": [{"sku": p.sku, "source": "sds", "shipment_type": "SHIPMENT_TYPE_GENERAL"}],
                    "stocks": {"has_stock": present > 0,
                               "stocks": [{"present": present, "reserved": 0, "sku": p.sku, "source": "fbs"}]},
                    "is_archived": false,
                })
            })
            .collect();
        Json(json!({"items": items})).into_response()
    })
}

async fn product_stocks(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: ListRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let (items, total, last) = match page(d, &req) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let items: Vec<Value> = items
            .iter()
            .map(|p| {
                let per_wh: Vec<(u64, i64)> = d
                    .stock
                    .iter()
                    .filter(|((_, pid), _)| *pid == p.product_id)
                    .map(|((wh, _), s)| (*wh, *s))
                    .collect();
                let present: i64 = per_wh.iter().map(|(_, s)| s).sum();
                let whs: Vec<u64> = per_wh.iter().map(|(w, _)| *w).collect();
                json!({"product_id": p.product_id, "offer_id": p.offer_id, "stocks": [
                    {"type": "fbs", "present": present, "reserved": 0, "sku": p.sku,
                     "shipment_type": "SHIPMENT_TYPE_GENERAL", "warehouse_ids": whs}]})
            })
            .collect();
        Json(json!({"cursor": last, "total": total, "items": items})).into_response()
    })
}

async fn warehouse_list(State(sim): State<Arc<Ozon>>, headers: HeaderMap) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let list: Vec<Value> = d
            .warehouses
            .iter()
            .map(|(id, name)| json!({"warehouse_id": id, "name": name, "is_rfbs": false, "status": "created"}))
            .collect();
        Json(json!({"result": list})).into_response()
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct PostingFilter {
    since: String,
    to: String,
    status: String,
    #[serde(deserialize_with = "de_u64s")]
    warehouse_id: Vec<u64>,
    #[serde(rename = "delivery_method_id")]
    _delivery_method_id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostingListRequest {
    #[serde(default)]
    dir: String,
    #[serde(default)]
    filter: PostingFilter,
    #[serde(default, deserialize_with = "de_u64")]
    limit: u64,
    #[serde(default, deserialize_with = "de_u64")]
    offset: u64,
    #[serde(default, rename = "with")]
    _with: Option<Value>,
}

fn parse_time(field: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, Response> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            invalid(format!(
                "invalid filter.{field}: an RFC 3339 time is required"
            ))
        })
}

async fn posting_list(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: PostingListRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let (since, to) = match (
            parse_time("since", &req.filter.since),
            parse_time("to", &req.filter.to),
        ) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        if req.limit == 0 || req.limit > 1000 {
            return invalid(
                "invalid GetFbsPostingListRequest.Limit: value must be inside range [1, 1000]",
            );
        }
        let desc = match req.dir.to_ascii_uppercase().as_str() {
            "" | "ASC" => false,
            "DESC" => true,
            _ => return invalid("dir must be ASC or DESC"),
        };
        if !req.filter.status.is_empty() && !STATUSES.contains(&req.filter.status.as_str()) {
            return invalid(format!("unknown status {}", req.filter.status));
        }
        let mut all: Vec<&Posting> = d
            .postings
            .values()
            .filter(|p| p.in_process_at >= since && p.in_process_at <= to)
            .filter(|p| req.filter.status.is_empty() || p.status == req.filter.status)
            .filter(|p| {
                req.filter.warehouse_id.is_empty()
                    || req.filter.warehouse_id.contains(&p.warehouse_id)
            })
            .collect();
        all.sort_by_key(|p| (p.in_process_at, p.order_id));
        if desc {
            all.reverse();
        }
        let offset = req.offset as usize;
        let has_next = all.len() > offset.saturating_add(req.limit as usize);
        let postings: Vec<Value> = all
            .into_iter()
            .skip(offset)
            .take(req.limit as usize)
            .map(|p| posting_json(p, d))
            .collect();
        Json(json!({"result": {"postings": postings, "has_next": has_next}})).into_response()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostingGet {
    #[serde(default)]
    posting_number: String,
    #[serde(default, rename = "with")]
    _with: Option<Value>,
}

fn posting_not_found() -> Response {
    error(StatusCode::NOT_FOUND, 5, "Posting not found")
}

async fn posting_get(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: PostingGet = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        match d.postings.get(&req.posting_number) {
            Some(p) => Json(json!({"result": posting_json(p, d)})).into_response(),
            None => posting_not_found(),
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipRequest {
    #[serde(default)]
    posting_number: String,
    #[serde(default)]
    packages: Vec<Package>,
    #[serde(default, rename = "with")]
    _with: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Package {
    #[serde(default)]
    products: Vec<PackageProduct>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageProduct {
    /// Ozon calls the SKU `product_id` here.
    #[serde(default, deserialize_with = "de_u64")]
    product_id: u64,
    #[serde(default)]
    quantity: i64,
    #[serde(default, rename = "exemplar_info")]
    _exemplar_info: Option<Value>,
}

async fn posting_ship(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: ShipRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let Some(p) = d.postings.get_mut(&req.posting_number) else {
            return posting_not_found();
        };
        if p.status != "awaiting_packaging" {
            return invalid(format!("POSTING_ALREADY_SHIPPED: posting is {}", p.status));
        }
        let mut packed: BTreeMap<u64, i64> = BTreeMap::new();
        for pr in req.packages.iter().flat_map(|pk| &pk.products) {
            *packed.entry(pr.product_id).or_default() += pr.quantity;
        }
        let mut ordered: BTreeMap<u64, i64> = BTreeMap::new();
        for i in &p.products {
            *ordered.entry(i.sku).or_default() += i.quantity;
        }
        if packed != ordered {
            return invalid(
                "INVALID_PACKAGES: packages must hold exactly the posting's products (by sku)",
            );
        }
        p.status = "awaiting_deliver".into();
        Json(json!({"additional_data": [], "result": [req.posting_number]})).into_response()
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    posting_number: String,
    #[serde(default, deserialize_with = "de_u64")]
    cancel_reason_id: u64,
    #[serde(default)]
    cancel_reason_message: String,
}

async fn posting_cancel(State(sim): State<Arc<Ozon>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.handle(&headers, false, |d, _, _| {
        let req: CancelRequest = match decode(&body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if req.cancel_reason_id == 0 {
            return invalid("cancel_reason_id is required");
        }
        let Some(p) = d.postings.get(&req.posting_number) else {
            return posting_not_found();
        };
        if !matches!(
            p.status.as_str(),
            "awaiting_packaging" | "awaiting_deliver" | "awaiting_approve"
        ) {
            return invalid(format!(
                "POSTING_CANNOT_BE_CANCELLED: posting is {}",
                p.status
            ));
        }
        let reason = if req.cancel_reason_message.is_empty() {
            "Cancelled by the seller".to_string()
        } else {
            req.cancel_reason_message
        };
        d.cancel(
            &req.posting_number,
            req.cancel_reason_id,
            reason,
            "Продавец",
        );
        Json(json!({"result": true})).into_response()
    })
}

// ---- control ----

async fn c_create_order(State(sim): State<Arc<Ozon>>, body: Bytes) -> Response {
    let new: NewPosting = match parse_control(&body) {
        Ok(n) => n,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let now = sim.clock.utc_now();
    match lock(&sim.data).create_posting(new, now) {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn c_orders(State(sim): State<Arc<Ozon>>) -> Response {
    let d = lock(&sim.data);
    let list: Vec<Value> = d.postings.values().map(|p| posting_json(p, &d)).collect();
    Json(json!({"postings": list})).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ControlCancel {
    reason: Option<String>,
    /// "Клиент" (default) or "Ozon".
    initiator: Option<String>,
}

async fn c_cancel(
    State(sim): State<Arc<Ozon>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let req: ControlCancel = match parse_control(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let mut d = lock(&sim.data);
    match d.postings.get(&number) {
        None => return control_error(StatusCode::NOT_FOUND, format!("posting {number} not found")),
        Some(p) if matches!(p.status.as_str(), "delivered" | "cancelled") => {
            return control_error(
                StatusCode::CONFLICT,
                format!("posting {number} is {}", p.status),
            );
        }
        Some(_) => {}
    }
    let initiator = req.initiator.unwrap_or_else(|| "Клиент".into());
    let reason = req
        .reason
        .unwrap_or_else(|| "Покупатель отменил заказ".into());
    d.cancel(&number, 402, reason, &initiator);
    Json(
        d.postings
            .get(&number)
            .map(|p| posting_json(p, &d))
            .unwrap_or(Value::Null),
    )
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlStatus {
    status: String,
}

async fn c_status(
    State(sim): State<Arc<Ozon>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let req: ControlStatus = match parse_control(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    if !STATUSES.contains(&req.status.as_str()) {
        return control_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown status {}", req.status),
        );
    }
    let mut d = lock(&sim.data);
    match d.postings.get_mut(&number) {
        Some(p) => p.status = req.status,
        None => return control_error(StatusCode::NOT_FOUND, format!("posting {number} not found")),
    }
    Json(
        d.postings
            .get(&number)
            .map(|p| posting_json(p, &d))
            .unwrap_or(Value::Null),
    )
    .into_response()
}

#[derive(Deserialize)]
struct StockQuery {
    warehouse_id: Option<u64>,
}

async fn c_stock(State(sim): State<Arc<Ozon>>, Query(q): Query<StockQuery>) -> Response {
    let wh = q.warehouse_id.unwrap_or(DEFAULT_WAREHOUSE_ID);
    let d = lock(&sim.data);
    let mut items = Vec::new();
    let mut by_offer_id = BTreeMap::new();
    let mut by_barcode = BTreeMap::new();
    for p in d.products.values() {
        let stock = d.stock.get(&(wh, p.product_id)).copied().unwrap_or(0);
        items.push(
            json!({"product_id": p.product_id, "offer_id": p.offer_id, "sku": p.sku,
                          "barcodes": p.barcodes, "stock": stock}),
        );
        by_offer_id.insert(p.offer_id.clone(), stock);
        for b in &p.barcodes {
            by_barcode.insert(b.clone(), stock);
        }
    }
    Json(json!({"warehouse_id": wh, "items": items, "by_offer_id": by_offer_id, "by_barcode": by_barcode}))
        .into_response()
}

async fn c_limits(State(sim): State<Arc<Ozon>>) -> Response {
    Json(json!({"limits": lock(&sim.data).limits})).into_response()
}

async fn c_set_limits(State(sim): State<Arc<Ozon>>, body: Bytes) -> Response {
    let patch: Value = match parse_control(&body) {
        Ok(v) => v,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let mut d = lock(&sim.data);
    match merge_json(&d.limits, &patch) {
        Ok(l) => {
            d.limits = l;
            d.stock_windows.clear();
            d.global_windows.clear();
            Json(json!({"limits": d.limits})).into_response()
        }
        Err(e) => control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

impl MarketplaceSim for Ozon {
    fn stats(&self) -> &Stats {
        &self.stats
    }
    fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Simulator for Ozon {
    fn name(&self) -> &'static str {
        "ozon"
    }

    fn router(self: Arc<Self>) -> Router {
        let stats = self.stats.clone();
        Router::new()
            .route("/v2/products/stocks", post(set_stocks))
            .route("/v3/product/list", post(product_list))
            .route("/v3/product/info/list", post(product_info))
            .route("/v4/product/info/stocks", post(product_stocks))
            .route("/v1/warehouse/list", post(warehouse_list))
            .route("/v3/posting/fbs/list", post(posting_list))
            .route("/v3/posting/fbs/get", post(posting_get))
            .route("/v4/posting/fbs/ship", post(posting_ship))
            .route("/v2/posting/fbs/cancel", post(posting_cancel))
            .route_layer(middleware::from_fn_with_state(stats, count_requests))
            .with_state(self)
    }

    /// Control routes under `/_control/ozon`:
    /// - `POST orders {posting_number?, warehouse_id?, status?, in_process_at?, reserve?,
    ///   items:[{offer_id|product_id, quantity, price?}]}` -> 201 the posting as the API shows it;
    /// - `GET orders`; `POST orders/{posting_number}/cancel {reason?, initiator?}` (buyer or
    ///   Ozon cancels); `POST orders/{posting_number}/status {status}`;
    /// - `GET stock?warehouse_id=1` -> `{warehouse_id, items:[{product_id, offer_id, sku,
    ///   barcodes, stock}], by_offer_id:{…}, by_barcode:{…}}`;
    /// - `GET stats` (`DELETE stats`); `GET|POST limits`; `POST clock {advance_ms?, advance_secs?, freeze?}`.
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/orders", post(c_create_order).get(c_orders))
            .route("/orders/{posting_number}/cancel", post(c_cancel))
            .route("/orders/{posting_number}/status", post(c_status))
            .route("/stock", get(c_stock))
            .route("/stats", get(c_stats::<Ozon>).delete(c_clear_stats::<Ozon>))
            .route("/limits", get(c_limits).post(c_set_limits))
            .route("/clock", post(c_clock::<Ozon>))
            .with_state(self)
    }

    fn reset(&self) {
        *lock(&self.data) = Data::default();
        self.stats.clear();
        self.clock.reset();
    }

    /// `{clear?, credentials?:[{client_id, api_key}], warehouses?:[{id, name?}],
    /// products?:[{offer_id, product_id?, sku?, name?, barcode?|barcodes?, price?, stock?,
    /// warehouse_id?}], orders?:[NewPosting], currency?, limits?:{…}}`; products upsert by
    /// `product_id` (then by offer_id), ids are assigned when absent.
    fn seed(&self, data: Value) -> Result<Value, String> {
        let seed: Seed = serde_json::from_value(data).map_err(|e| e.to_string())?;
        let now = self.clock.utc_now();
        let mut d = lock(&self.data);
        let limits = match &seed.limits {
            Some(p) => merge_json(&d.limits, p)?,
            None => d.limits.clone(),
        };
        if seed.clear {
            d.products.clear();
            d.stock.clear();
            d.last_update.clear();
            d.postings.clear();
        }
        d.limits = limits;
        d.stock_windows.clear();
        d.global_windows.clear();
        if let Some(c) = seed.currency {
            d.currency = c;
        }
        for c in seed.credentials {
            d.credentials.insert(c.client_id, c.api_key);
        }
        for w in seed.warehouses {
            d.warehouses.insert(
                w.id,
                w.name.unwrap_or_else(|| format!("Warehouse {}", w.id)),
            );
        }
        for p in seed.products {
            if p.offer_id.is_empty() {
                return Err("offer_id must not be empty".into());
            }
            let existing = p.product_id.or_else(|| {
                d.products
                    .values()
                    .find(|x| x.offer_id == p.offer_id)
                    .map(|x| x.product_id)
            });
            let product_id = match existing {
                Some(id) => id,
                None => d.next_id(),
            };
            d.next_id = d.next_id.max(product_id);
            let sku = match p.sku {
                Some(s) => s,
                None => product_id.wrapping_add(1_000_000_000),
            };
            let mut barcodes = p.barcodes;
            barcodes.extend(p.barcode);
            if let Some(s) = p.stock {
                if s < 0 {
                    return Err(format!("{}: stock must not be negative", p.offer_id));
                }
                let wh = p.warehouse_id.unwrap_or(DEFAULT_WAREHOUSE_ID);
                d.warehouses
                    .entry(wh)
                    .or_insert_with(|| format!("Warehouse {wh}"));
                d.stock.insert((wh, product_id), s);
            }
            d.products.insert(
                product_id,
                Product {
                    product_id,
                    name: p.name.unwrap_or_else(|| p.offer_id.clone()),
                    offer_id: p.offer_id,
                    sku,
                    barcodes,
                    price: p.price.map(price_string).unwrap_or_else(|| "0".into()),
                },
            );
        }
        let mut orders = Vec::new();
        for o in seed.orders {
            orders.push(d.create_posting(o, now)?);
        }
        Ok(json!({
            "products": d.products.len(),
            "postings": d.postings.len(),
            "limits": d.limits,
            "created_orders": orders,
        }))
    }

    fn state(&self) -> &SystemState {
        &self.state
    }
}
