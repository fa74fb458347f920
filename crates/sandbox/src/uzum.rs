//! Uzum Market Seller OpenAPI simulator, under `/uzum/api/seller-openapi/…`.
//!
//! Auth: `Authorization: <token>` (a `Bearer ` prefix is accepted too). Every answer is the
//! envelope `{payload, errors: [{code, message}], timestamp}`. Rate: Uzum publishes none;
//! clients see 429 above about one request a second per token, so each token has a token
//! bucket of `burst` (default 3) refilled at `per_second` (default 1). A 429 carries
//! `Retry-After` (seconds) [assumed].
//!
//! Stock updates are atomic: one unknown SKU refuses the whole request (400 with an error per
//! unknown item) [assumed]; a connector that drops bad items and retries is right either way.
//!
//! Control (under `/_control/uzum`): `seed`, `orders`, `orders/{id}/cancel`,
//! `orders/{id}/status`, `stock`, `stats`, `limits`, `clock`; see [`Uzum::control`].

#![allow(
    clippy::result_large_err,
    reason = "helpers return the provider's ready error response, passed straight back once"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Simulator, SystemState, header};
use crate::marketplace_common::{
    Clock, MarketplaceSim, Stats, TokenBucket, c_clear_stats, c_clock, c_stats, ceil_secs,
    control_error, count_requests, lock, merge_json, parse_control, query_pairs, rfc3339,
};

pub const DEFAULT_TOKEN: &str = "demo-uzum-token";
pub const DEFAULT_SHOP_ID: u64 = 1;
const MAX_ORDER_PAGE: usize = 50;
const MAX_PRODUCT_PAGE: usize = 100;
const STATUSES: &[&str] = &[
    "CREATED",
    "PACKING",
    "PENDING_DELIVERY",
    "DELIVERING",
    "ACCEPTED_AT_DP",
    "DELIVERED_TO_CUSTOMER_DELIVERY_POINT",
    "DELIVERED",
    "COMPLETED",
    "CANCELED",
    "PENDING_CANCELLATION",
    "RETURNED",
];

/// Limits, changeable through `seed {"limits": …}` or `POST /_control/uzum/limits`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UzumLimits {
    /// Requests a token may send at once.
    pub burst: u32,
    /// Sustained requests per second per token.
    pub per_second: f64,
}

impl Default for UzumLimits {
    fn default() -> Self {
        Self {
            burst: 3,
            per_second: 1.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Sku {
    sku_id: u64,
    product_id: u64,
    shop_id: u64,
    barcode: String,
    product_title: String,
    sku_title: String,
    price: i64,
    amount: i64,
}

#[derive(Debug, Clone)]
struct OrderItem {
    id: u64,
    sku_id: u64,
    product_id: u64,
    barcode: String,
    product_title: String,
    sku_title: String,
    amount: i64,
    price: i64,
}

#[derive(Debug, Clone)]
struct Order {
    id: u64,
    shop_id: u64,
    status: String,
    date_created: chrono::DateTime<chrono::Utc>,
    date_status_changed: chrono::DateTime<chrono::Utc>,
    items: Vec<OrderItem>,
    cancel_reason: Option<String>,
    cancel_comment: Option<String>,
    /// Stock was taken when the order appeared; a cancel gives it back.
    reserved: bool,
}

struct Data {
    tokens: BTreeMap<String, BTreeSet<u64>>,
    shops: BTreeMap<u64, String>,
    skus: BTreeMap<u64, Sku>,
    orders: BTreeMap<u64, Order>,
    next_id: u64,
    limits: UzumLimits,
    buckets: HashMap<String, TokenBucket>,
}

impl Default for Data {
    fn default() -> Self {
        let mut d = Data {
            tokens: BTreeMap::from([(
                DEFAULT_TOKEN.to_string(),
                BTreeSet::from([DEFAULT_SHOP_ID]),
            )]),
            shops: BTreeMap::from([(DEFAULT_SHOP_ID, "Demo do'kon".to_string())]),
            skus: BTreeMap::new(),
            orders: BTreeMap::new(),
            next_id: 1000,
            limits: UzumLimits::default(),
            buckets: HashMap::new(),
        };
        let demo = [
            (101, 11, "4780000000017", "Choy Ahmad 100 g", 25_000, 10),
            (102, 12, "4780000000024", "Non, obi non", 4_000, 30),
            (103, 13, "4780000000031", "Suv Hydrolife 1.5 l", 5_500, 24),
        ];
        for (sku_id, product_id, barcode, title, price, amount) in demo {
            d.skus.insert(
                sku_id,
                Sku {
                    sku_id,
                    product_id,
                    shop_id: DEFAULT_SHOP_ID,
                    barcode: barcode.into(),
                    product_title: title.into(),
                    sku_title: title.into(),
                    price,
                    amount,
                },
            );
        }
        d
    }
}

impl Data {
    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }

    fn sku_by(&self, sku_id: Option<u64>, barcode: Option<&str>) -> Option<&Sku> {
        match (sku_id, barcode) {
            (Some(id), _) => self.skus.get(&id),
            (None, Some(b)) => self.skus.values().find(|s| s.barcode == b),
            (None, None) => None,
        }
    }

    fn create_order(
        &mut self,
        new: NewOrder,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Value, String> {
        let shop_id = new.shop_id.unwrap_or(DEFAULT_SHOP_ID);
        let status = new.status.unwrap_or_else(|| "CREATED".into());
        if !STATUSES.contains(&status.as_str()) {
            return Err(format!("unknown status {status}"));
        }
        if new.items.is_empty() {
            return Err("an order needs items".into());
        }
        let id = match new.id {
            Some(id) if self.orders.contains_key(&id) => return Err(format!("order {id} exists")),
            Some(id) => {
                self.next_id = self.next_id.max(id);
                id
            }
            None => self.next_id(),
        };
        let mut items = Vec::new();
        for it in &new.items {
            if it.amount <= 0 || it.amount > 1_000_000 {
                return Err("item amount must be from 1 to 1000000".into());
            }
            let sku = self
                .sku_by(it.sku_id, it.barcode.as_deref())
                .ok_or_else(|| format!("unknown sku {:?} / barcode {:?}", it.sku_id, it.barcode))?
                .clone();
            items.push(OrderItem {
                id: 0,
                sku_id: sku.sku_id,
                product_id: sku.product_id,
                barcode: sku.barcode,
                product_title: sku.product_title,
                sku_title: sku.sku_title,
                amount: it.amount,
                price: it.price.unwrap_or(sku.price),
            });
        }
        if new.reserve {
            // A buyer cannot order more than the marketplace shows in stock.
            let mut need: BTreeMap<u64, i64> = BTreeMap::new();
            for it in &items {
                *need.entry(it.sku_id).or_default() += it.amount;
            }
            for (sku, n) in need {
                let have = self.skus.get(&sku).map_or(0, |s| s.amount);
                if have < n {
                    return Err(format!("sku {sku}: {have} in stock, {n} ordered"));
                }
            }
        }
        for it in &mut items {
            it.id = self.next_id();
            if new.reserve
                && let Some(s) = self.skus.get_mut(&it.sku_id)
            {
                s.amount = s.amount.saturating_sub(it.amount);
            }
        }
        let order = Order {
            id,
            shop_id,
            status,
            date_created: now,
            date_status_changed: now,
            items,
            cancel_reason: None,
            cancel_comment: None,
            reserved: new.reserve,
        };
        let v = order_json(&order);
        self.orders.insert(id, order);
        Ok(v)
    }

    fn cancel(
        &mut self,
        id: u64,
        reason: Option<String>,
        comment: Option<String>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        if let Some(o) = self.orders.get_mut(&id) {
            o.status = "CANCELED".into();
            o.date_status_changed = now;
            o.cancel_reason = reason;
            o.cancel_comment = comment;
            if std::mem::take(&mut o.reserved) {
                for it in &o.items {
                    if let Some(s) = self.skus.get_mut(&it.sku_id) {
                        s.amount = s.amount.saturating_add(it.amount);
                    }
                }
            }
        }
    }
}

fn order_json(o: &Order) -> Value {
    let items: Vec<Value> = o
        .items
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "productId": i.product_id,
                "skuId": i.sku_id,
                "skuTitle": i.sku_title,
                "productTitle": i.product_title,
                "barcode": i.barcode,
                "amount": i.amount,
                "quantity": i.amount,
                "price": i.price,
                "sellerPrice": i.price,
            })
        })
        .collect();
    json!({
        "id": o.id,
        "status": o.status,
        "shopId": o.shop_id,
        "dateCreated": o.date_created.timestamp_millis(),
        "dateStatusChanged": o.date_status_changed.timestamp_millis(),
        "price": o.items.iter().fold(0i64, |t, i| t.saturating_add(i.price.saturating_mul(i.amount))),
        "orderItems": items,
        "cancelReason": o.cancel_reason,
        "comment": o.cancel_comment,
    })
}

/// `POST /_control/uzum/orders` and `seed.orders[]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    id: Option<u64>,
    shop_id: Option<u64>,
    status: Option<String>,
    items: Vec<NewOrderItem>,
    /// Take the ordered amount off the marketplace stock (as Uzum does for FBS).
    #[serde(default)]
    reserve: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrderItem {
    sku_id: Option<u64>,
    barcode: Option<String>,
    #[serde(default = "one")]
    amount: i64,
    price: Option<i64>,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    /// Forget the catalogue and orders first (tokens and shops stay).
    #[serde(default)]
    clear: bool,
    #[serde(default)]
    tokens: Vec<SeedToken>,
    #[serde(default)]
    shops: Vec<SeedShop>,
    #[serde(default)]
    products: Vec<SeedSku>,
    #[serde(default)]
    orders: Vec<NewOrder>,
    limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedToken {
    token: String,
    #[serde(default = "default_shops")]
    shops: Vec<u64>,
}

fn default_shops() -> Vec<u64> {
    vec![DEFAULT_SHOP_ID]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedShop {
    id: u64,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedSku {
    sku_id: Option<u64>,
    product_id: Option<u64>,
    shop_id: Option<u64>,
    barcode: String,
    title: Option<String>,
    sku_title: Option<String>,
    #[serde(default)]
    price: i64,
    #[serde(default)]
    amount: i64,
}

#[derive(Default)]
pub struct Uzum {
    state: SystemState,
    data: Mutex<Data>,
    stats: Arc<Stats>,
    clock: Clock,
}

type Env = Result<(String, BTreeSet<u64>), Response>;

impl Uzum {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.utc_now()
    }

    fn ok(&self, payload: Value) -> Response {
        Json(json!({"payload": payload, "errors": [], "timestamp": rfc3339(self.now())}))
            .into_response()
    }

    fn err(&self, status: StatusCode, code: &str, message: impl Into<String>) -> Response {
        let errors = json!([{"code": code, "message": message.into()}]);
        self.errs(status, errors)
    }

    fn errs(&self, status: StatusCode, errors: Value) -> Response {
        let body = json!({"payload": null, "errors": errors, "timestamp": rfc3339(self.now())});
        (status, Json(body)).into_response()
    }

    /// Authenticate, then charge the token's bucket.
    fn admit(&self, headers: &HeaderMap) -> Env {
        let raw = header(headers, "authorization")
            .map(str::trim)
            .unwrap_or("");
        let token = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .unwrap_or(raw)
            .trim();
        let mut d = lock(&self.data);
        let Some(shops) = d.tokens.get(token).cloned() else {
            drop(d);
            return Err(self.err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                if token.is_empty() {
                    "Authorization header is missing"
                } else {
                    "Invalid token"
                },
            ));
        };
        let now = self.clock.now();
        let limits = d.limits.clone();
        let bucket = d
            .buckets
            .entry(token.to_string())
            .or_insert_with(|| TokenBucket::new(limits.burst as f64, limits.per_second, now));
        if let Err(l) = bucket.try_take(now, 1.0) {
            drop(d);
            let mut r = self.err(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-requests",
                "Too many requests, slow down",
            );
            if let Ok(v) = ceil_secs(l.retry_after).to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
            return Err(r);
        }
        Ok((token.to_string(), shops))
    }

    fn shop_arg(&self, raw: &str, shops: &BTreeSet<u64>) -> Result<u64, Response> {
        let id: u64 = raw.parse().map_err(|_| {
            self.err(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("shopId {raw} is not a number"),
            )
        })?;
        if shops.contains(&id) {
            Ok(id)
        } else {
            Err(self.err(
                StatusCode::FORBIDDEN,
                "access-denied",
                format!("No access to shop {id}"),
            ))
        }
    }

    /// An order of the token's shops, else `seller-order-01`.
    fn order_arg(&self, raw: &str, shops: &BTreeSet<u64>, d: &Data) -> Result<u64, Response> {
        let not_found = || {
            self.err(
                StatusCode::NOT_FOUND,
                "seller-order-01",
                format!("Order {raw} not found"),
            )
        };
        let id: u64 = raw.parse().map_err(|_| not_found())?;
        match d.orders.get(&id) {
            Some(o) if shops.contains(&o.shop_id) => Ok(id),
            _ => Err(not_found()),
        }
    }
}

fn bad_json(e: impl std::fmt::Display) -> String {
    format!("Malformed request body: {e}")
}

async fn shops(State(sim): State<Arc<Uzum>>, headers: HeaderMap) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let d = lock(&sim.data);
    let list: Vec<Value> = shops
        .iter()
        .map(|id| json!({"id": id, "name": d.shops.get(id).cloned().unwrap_or_else(|| format!("Shop {id}"))}))
        .collect();
    drop(d);
    sim.ok(json!(list))
}

async fn products(
    State(sim): State<Arc<Uzum>>,
    headers: HeaderMap,
    Path(shop): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let shop_id = match sim.shop_arg(&shop, &shops) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (page, size) = match page_args(&query_pairs(q.as_deref()), 20, MAX_PRODUCT_PAGE) {
        Ok(p) => p,
        Err(m) => return sim.err(StatusCode::BAD_REQUEST, "bad-request", m),
    };
    let d = lock(&sim.data);
    let mut by_product: BTreeMap<u64, Vec<&Sku>> = BTreeMap::new();
    for s in d.skus.values().filter(|s| s.shop_id == shop_id) {
        by_product.entry(s.product_id).or_default().push(s);
    }
    let total = by_product.len();
    let list: Vec<Value> = by_product
        .values()
        .skip(page.saturating_mul(size))
        .take(size)
        .map(|skus| {
            let sku_list: Vec<Value> = skus
                .iter()
                .map(|s| {
                    json!({
                        "skuId": s.sku_id,
                        "skuTitle": s.sku_title,
                        "skuFullTitle": format!("{} {}", s.product_title, s.sku_title),
                        "barcode": s.barcode,
                        "price": s.price,
                        "quantity": s.amount,
                        "quantityFbs": s.amount,
                        "quantityActive": s.amount,
                    })
                })
                .collect();
            json!({
                "productId": skus[0].product_id,
                "title": skus[0].product_title,
                "skuList": sku_list,
            })
        })
        .collect();
    drop(d);
    sim.ok(json!({"productList": list, "totalProductsAmount": total}))
}

/// `page` (0-based) and `size` from a query.
fn page_args(
    q: &[(String, String)],
    default_size: usize,
    max: usize,
) -> Result<(usize, usize), String> {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let page = match get("page") {
        Some(v) => v.parse().map_err(|_| format!("page {v} is not a number"))?,
        None => 0,
    };
    let size = match get("size") {
        Some(v) => v.parse().map_err(|_| format!("size {v} is not a number"))?,
        None => default_size,
    };
    if size == 0 || size > max {
        return Err(format!("size must be between 1 and {max}"));
    }
    Ok((page, size))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceData {
    #[serde(default)]
    sku_for_product_list: Vec<SkuPrice>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SkuPrice {
    sku_id: u64,
    sell_price: Option<i64>,
    full_price: Option<i64>,
}

async fn send_price(
    State(sim): State<Arc<Uzum>>,
    headers: HeaderMap,
    Path(shop): Path<String>,
    body: Bytes,
) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let shop_id = match sim.shop_arg(&shop, &shops) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let req: PriceData = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return sim.err(StatusCode::BAD_REQUEST, "bad-request", bad_json(e)),
    };
    if req.sku_for_product_list.is_empty() {
        return sim.err(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "skuForProductList is empty",
        );
    }
    let mut d = lock(&sim.data);
    let mut errors = Vec::new();
    for p in &req.sku_for_product_list {
        let price = p.sell_price.or(p.full_price);
        match (d.skus.get(&p.sku_id), price) {
            (Some(s), Some(price)) if s.shop_id == shop_id && price > 0 => {}
            (Some(s), _) if s.shop_id == shop_id => errors.push(json!({
                "code": "bad-request", "message": format!("sku {}: sellPrice must be positive", p.sku_id)})),
            _ => errors.push(json!({
                "code": "sku-not-found", "message": format!("sku {} not found in shop {shop_id}", p.sku_id)})),
        }
    }
    if !errors.is_empty() {
        drop(d);
        return sim.errs(StatusCode::BAD_REQUEST, json!(errors));
    }
    for p in &req.sku_for_product_list {
        if let (Some(s), Some(price)) = (d.skus.get_mut(&p.sku_id), p.sell_price.or(p.full_price)) {
            s.price = price;
        }
    }
    drop(d);
    sim.ok(json!({"updated": req.sku_for_product_list.len()}))
}

async fn get_stocks(State(sim): State<Arc<Uzum>>, headers: HeaderMap) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let d = lock(&sim.data);
    let list: Vec<Value> = d
        .skus
        .values()
        .filter(|s| shops.contains(&s.shop_id))
        .map(|s| {
            json!({
                "skuId": s.sku_id,
                "skuTitle": s.sku_title,
                "productTitle": s.product_title,
                "barcode": s.barcode,
                "amount": s.amount,
                "fbsAllowed": true,
                "dbsAllowed": false,
            })
        })
        .collect();
    drop(d);
    sim.ok(json!({"skuAmountList": list}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StockUpdate {
    sku_amount_list: Option<Vec<StockItem>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StockItem {
    sku_id: Option<u64>,
    barcode: Option<String>,
    amount: Option<i64>,
}

async fn post_stocks(State(sim): State<Arc<Uzum>>, headers: HeaderMap, body: Bytes) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let items = match serde_json::from_slice::<StockUpdate>(&body) {
        Ok(StockUpdate {
            sku_amount_list: Some(l),
        }) if !l.is_empty() => l,
        Ok(_) => {
            return sim.err(
                StatusCode::BAD_REQUEST,
                "bad-request",
                "skuAmountList is empty",
            );
        }
        Err(e) => return sim.err(StatusCode::BAD_REQUEST, "bad-request", bad_json(e)),
    };
    let mut d = lock(&sim.data);
    let mut errors = Vec::new();
    let mut updates = Vec::new();
    for it in &items {
        let found = d
            .sku_by(it.sku_id, it.barcode.as_deref())
            .filter(|s| shops.contains(&s.shop_id))
            .map(|s| s.sku_id);
        match (found, it.amount) {
            (Some(id), Some(a)) if a >= 0 => updates.push((id, a)),
            (Some(id), _) => errors.push(json!({"code": "bad-request",
                "message": format!("sku {id}: amount must be a non-negative number")})),
            (None, _) => errors.push(json!({"code": "sku-not-found",
                "message": format!("sku not found: skuId {:?}, barcode {:?}", it.sku_id, it.barcode)})),
        }
    }
    if !errors.is_empty() {
        drop(d);
        sim.stats
            .stock_rejected("request-refused", items.len() as u64);
        return sim.errs(StatusCode::BAD_REQUEST, json!(errors));
    }
    let mut list = Vec::new();
    for (id, amount) in &updates {
        if let Some(s) = d.skus.get_mut(id) {
            s.amount = *amount;
            list.push(json!({"skuId": s.sku_id, "barcode": s.barcode, "amount": s.amount}));
        }
    }
    drop(d);
    sim.stats.stock_accepted(updates.len() as u64);
    sim.ok(json!({"updatedRecords": updates.len(), "skuAmountList": list}))
}

async fn list_orders(
    State(sim): State<Arc<Uzum>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let q = query_pairs(q.as_deref());
    let (page, size) = match page_args(&q, 20, MAX_ORDER_PAGE) {
        Ok(p) => p,
        Err(m) => return sim.err(StatusCode::BAD_REQUEST, "bad-request", m),
    };
    let Some(status) = q
        .iter()
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.clone())
    else {
        return sim.err(StatusCode::BAD_REQUEST, "bad-request", "status is required");
    };
    if !STATUSES.contains(&status.as_str()) {
        return sim.err(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("unknown status {status}"),
        );
    }
    let mut wanted = BTreeSet::new();
    for (_, v) in q.iter().filter(|(k, _)| k == "shopIds") {
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match sim.shop_arg(part, &shops) {
                Ok(id) => {
                    wanted.insert(id);
                }
                Err(r) => return r,
            }
        }
    }
    if wanted.is_empty() {
        wanted = shops;
    }
    let d = lock(&sim.data);
    let matching: Vec<&Order> = d
        .orders
        .values()
        .filter(|o| o.status == status && wanted.contains(&o.shop_id))
        .collect();
    let total = matching.len();
    let orders: Vec<Value> = matching
        .into_iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .map(order_json)
        .collect();
    drop(d);
    sim.ok(json!({"orders": orders, "totalAmount": total}))
}

async fn get_order(
    State(sim): State<Arc<Uzum>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let d = lock(&sim.data);
    let v = sim
        .order_arg(&id, &shops, &d)
        .map(|id| d.orders.get(&id).map(order_json).unwrap_or(Value::Null));
    drop(d);
    match v {
        Ok(v) => sim.ok(v),
        Err(r) => r,
    }
}

async fn confirm(
    State(sim): State<Arc<Uzum>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = sim.now();
    let mut d = lock(&sim.data);
    let id = match sim.order_arg(&id, &shops, &d) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(o) = d.orders.get_mut(&id) else {
        return sim.err(StatusCode::NOT_FOUND, "seller-order-01", "Order not found");
    };
    if o.status != "CREATED" {
        let msg = format!("Order {id} is {}, only CREATED can be confirmed", o.status);
        drop(d);
        return sim.err(StatusCode::BAD_REQUEST, "seller-order-02", msg);
    }
    o.status = "PACKING".into();
    o.date_status_changed = now;
    let v = order_json(o);
    drop(d);
    sim.ok(v)
}

#[derive(Deserialize)]
struct CancelBody {
    reason: Option<String>,
    comment: Option<String>,
}

async fn cancel(
    State(sim): State<Arc<Uzum>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (_, shops) = match sim.admit(&headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let req: CancelBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return sim.err(StatusCode::BAD_REQUEST, "bad-request", bad_json(e)),
    };
    let Some(reason) = req.reason.filter(|r| !r.trim().is_empty()) else {
        return sim.err(StatusCode::BAD_REQUEST, "bad-request", "reason is required");
    };
    let now = sim.now();
    let mut d = lock(&sim.data);
    let id = match sim.order_arg(&id, &shops, &d) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let status = d
        .orders
        .get(&id)
        .map(|o| o.status.clone())
        .unwrap_or_default();
    if status != "CREATED" && status != "PACKING" {
        drop(d);
        return sim.err(
            StatusCode::BAD_REQUEST,
            "seller-order-02",
            format!("Order {id} is {status}, it can no longer be cancelled"),
        );
    }
    d.cancel(id, Some(reason), req.comment, now);
    let v = d.orders.get(&id).map(order_json).unwrap_or(Value::Null);
    drop(d);
    sim.ok(v)
}

// ---- control ----

async fn c_create_order(State(sim): State<Arc<Uzum>>, body: Bytes) -> Response {
    let new: NewOrder = match parse_control(&body) {
        Ok(n) => n,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let now = sim.now();
    match lock(&sim.data).create_order(new, now) {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn c_orders(State(sim): State<Arc<Uzum>>) -> Response {
    let d = lock(&sim.data);
    let orders: Vec<Value> = d.orders.values().map(order_json).collect();
    Json(json!({"orders": orders})).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ControlCancel {
    reason: Option<String>,
}

/// The buyer or the marketplace cancels (any status before delivery).
async fn c_cancel(State(sim): State<Arc<Uzum>>, Path(id): Path<u64>, body: Bytes) -> Response {
    let req: ControlCancel = match parse_control(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let now = sim.now();
    let mut d = lock(&sim.data);
    let Some(status) = d.orders.get(&id).map(|o| o.status.clone()) else {
        return control_error(StatusCode::NOT_FOUND, format!("order {id} not found"));
    };
    if ["DELIVERED", "COMPLETED", "CANCELED", "RETURNED"].contains(&status.as_str()) {
        return control_error(StatusCode::CONFLICT, format!("order {id} is {status}"));
    }
    let reason = req.reason.unwrap_or_else(|| "CUSTOMER_CANCELLED".into());
    d.cancel(id, Some(reason), None, now);
    Json(d.orders.get(&id).map(order_json).unwrap_or(Value::Null)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlStatus {
    status: String,
}

async fn c_status(State(sim): State<Arc<Uzum>>, Path(id): Path<u64>, body: Bytes) -> Response {
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
    let now = sim.now();
    let mut d = lock(&sim.data);
    match d.orders.get_mut(&id) {
        Some(o) => {
            o.status = req.status;
            o.date_status_changed = now;
            Json(order_json(o)).into_response()
        }
        None => control_error(StatusCode::NOT_FOUND, format!("order {id} not found")),
    }
}

async fn c_stock(State(sim): State<Arc<Uzum>>) -> Response {
    let d = lock(&sim.data);
    let items: Vec<Value> = d
        .skus
        .values()
        .map(|s| {
            json!({"sku_id": s.sku_id, "product_id": s.product_id, "shop_id": s.shop_id,
                        "barcode": s.barcode, "amount": s.amount, "price": s.price})
        })
        .collect();
    let by_barcode: BTreeMap<&str, i64> = d
        .skus
        .values()
        .map(|s| (s.barcode.as_str(), s.amount))
        .collect();
    Json(json!({"items": items, "by_barcode": by_barcode})).into_response()
}

async fn c_limits(State(sim): State<Arc<Uzum>>) -> Response {
    Json(json!({"limits": lock(&sim.data).limits})).into_response()
}

async fn c_set_limits(State(sim): State<Arc<Uzum>>, body: Bytes) -> Response {
    let patch: Value = match parse_control(&body) {
        Ok(v) => v,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let mut d = lock(&sim.data);
    match merge_json(&d.limits, &patch) {
        Ok(l) => {
            d.limits = l;
            d.buckets.clear();
            Json(json!({"limits": d.limits})).into_response()
        }
        Err(e) => control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

impl MarketplaceSim for Uzum {
    fn stats(&self) -> &Stats {
        &self.stats
    }
    fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Simulator for Uzum {
    fn name(&self) -> &'static str {
        "uzum"
    }

    fn router(self: Arc<Self>) -> Router {
        let stats = self.stats.clone();
        let api = Router::new()
            .route("/v1/shops", get(shops))
            .route("/v1/product/shop/{shop_id}", get(products))
            .route("/v1/product/{shop_id}/sendPriceData", post(send_price))
            .route("/v2/fbs/sku/stocks", get(get_stocks).post(post_stocks))
            .route("/v2/fbs/orders", get(list_orders))
            .route("/v1/fbs/order/{id}", get(get_order))
            .route("/v1/fbs/order/{id}/confirm", post(confirm))
            .route("/v1/fbs/order/{id}/cancel", post(cancel))
            .route_layer(middleware::from_fn_with_state(stats, count_requests))
            .with_state(self);
        Router::new().nest("/api/seller-openapi", api)
    }

    /// Control routes under `/_control/uzum`:
    /// - `POST orders {id?, shop_id?, status?, reserve?, items:[{sku_id|barcode, amount, price?}]}`
    ///   -> 201 the order as the API shows it;
    /// - `GET orders`; `POST orders/{id}/cancel {reason?}` (buyer/marketplace cancels);
    ///   `POST orders/{id}/status {status}`;
    /// - `GET stock` -> `{items:[{sku_id, product_id, shop_id, barcode, amount, price}],
    ///   by_barcode:{barcode: amount}}`;
    /// - `GET stats` (`DELETE stats` zeroes them); `GET|POST limits {burst, per_second}`;
    /// - `POST clock {advance_ms?, advance_secs?, freeze?}` moves the limiter clock forward.
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/orders", post(c_create_order).get(c_orders))
            .route("/orders/{id}/cancel", post(c_cancel))
            .route("/orders/{id}/status", post(c_status))
            .route("/stock", get(c_stock))
            .route("/stats", get(c_stats::<Uzum>).delete(c_clear_stats::<Uzum>))
            .route("/limits", get(c_limits).post(c_set_limits))
            .route("/clock", post(c_clock::<Uzum>))
            .with_state(self)
    }

    fn reset(&self) {
        *lock(&self.data) = Data::default();
        self.stats.clear();
        self.clock.reset();
    }

    /// `{clear?, tokens?:[{token, shops?}], shops?:[{id, name?}],
    /// products?:[{barcode, sku_id?, product_id?, shop_id?, title?, sku_title?, price?, amount?}],
    /// orders?:[NewOrder], limits?:{burst?, per_second?}}`; products upsert by `sku_id`
    /// (then by barcode), ids are assigned when absent.
    fn seed(&self, data: Value) -> Result<Value, String> {
        let seed: Seed = serde_json::from_value(data).map_err(|e| e.to_string())?;
        let now = self.now();
        let mut d = lock(&self.data);
        let limits = match &seed.limits {
            Some(p) => merge_json(&d.limits, p)?,
            None => d.limits.clone(),
        };
        if seed.clear {
            d.skus.clear();
            d.orders.clear();
        }
        d.limits = limits;
        d.buckets.clear();
        for s in seed.shops {
            let name = s.name.unwrap_or_else(|| format!("Shop {}", s.id));
            d.shops.insert(s.id, name);
        }
        for t in seed.tokens {
            for s in &t.shops {
                d.shops.entry(*s).or_insert_with(|| format!("Shop {s}"));
            }
            d.tokens.insert(t.token, t.shops.into_iter().collect());
        }
        for p in seed.products {
            let existing = p.sku_id.or_else(|| {
                d.skus
                    .values()
                    .find(|s| s.barcode == p.barcode)
                    .map(|s| s.sku_id)
            });
            let sku_id = match existing {
                Some(id) => id,
                None => d.next_id(),
            };
            d.next_id = d.next_id.max(sku_id);
            let product_id = p.product_id.unwrap_or(sku_id);
            let title = p.title.unwrap_or_else(|| format!("Product {product_id}"));
            if p.amount < 0 {
                return Err(format!("sku {sku_id}: amount must not be negative"));
            }
            d.skus.insert(
                sku_id,
                Sku {
                    sku_id,
                    product_id,
                    shop_id: p.shop_id.unwrap_or(DEFAULT_SHOP_ID),
                    barcode: p.barcode,
                    sku_title: p.sku_title.unwrap_or_else(|| title.clone()),
                    product_title: title,
                    price: p.price,
                    amount: p.amount,
                },
            );
        }
        let mut orders = Vec::new();
        for o in seed.orders {
            orders.push(d.create_order(o, now)?);
        }
        Ok(json!({
            "skus": d.skus.len(),
            "orders": d.orders.len(),
            "tokens": d.tokens.len(),
            "limits": d.limits,
            "created_orders": orders,
        }))
    }

    fn state(&self) -> &SystemState {
        &self.state
    }
}
