//! Wildberries seller API simulator, under `/wildberries`. Paths mirror the hosts'
//! (`marketplace-api.wildberries.ru` for stocks, orders and supplies;
//! `content-api.wildberries.ru` for cards), both served under the one prefix.
//!
//! Auth: `Authorization: <token>` (`Bearer ` accepted). Limits per token, as WB publishes for
//! inventory and FBS orders: 300 requests a minute, 200 ms apart on average, burst 20 — a token
//! bucket of 20 refilled at 5/s; a 409 costs 10 requests. The content API has its own bucket
//! (100 a minute, burst 5). Every limited answer carries `X-Ratelimit-Remaining` and
//! `X-Ratelimit-Limit`; a 429 adds `X-Ratelimit-Retry` and `X-Ratelimit-Reset` (seconds).
//!
//! Stocks: `PUT /api/v3/stocks/{warehouseId}` answers 204; fields it does not know are ignored,
//! so an item whose `chrtId` or `amount` is misspelt changes nothing and still gets 204 (the
//! `stats` counter `stock.items_ignored` is the only trace). An unknown `chrtId` or an amount
//! outside 0..=100000 makes the whole request 409 with `[{code, data, message}]`, nothing
//! applied [assumed: atomic]. `POST` on the same path with `{"chrtIds": […]}` reads stocks.
//!
//! Orders: `GET /api/v3/orders/new`; `GET /api/v3/orders?limit&next&dateFrom&dateTo` (all,
//! without statuses); `POST /api/v3/orders/status {"orders": [ids]}` -> supplierStatus
//! (new/confirm/complete/cancel) and wbStatus (waiting/sorted/sold/canceled/
//! canceled_by_client/…), which is how a connector sees cancellations; confirm by adding the
//! order to a supply (`POST /api/v3/supplies`, `PATCH /api/v3/supplies/{id}/orders/{orderId}`);
//! `PATCH /api/v3/orders/{orderId}/cancel`.

#![allow(
    clippy::result_large_err,
    reason = "helpers return the provider's ready error response, passed straight back once"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{Simulator, SystemState, header};
use crate::marketplace_common::{
    Clock, Limited, MarketplaceSim, Stats, TokenBucket, c_clear_stats, c_clock, c_stats, ceil_secs,
    control_error, count_requests, lock, merge_json, parse_control, query_pairs, rfc3339,
};

pub const DEFAULT_TOKEN: &str = "demo-wb-token";
pub const DEFAULT_WAREHOUSE_ID: u64 = 1;
/// ISO 4217 numeric code of the Uzbek sum.
const UZS: u32 = 860;
const MAX_AMOUNT: i64 = 100_000;
const SUPPLIER_STATUSES: &[&str] = &["new", "confirm", "complete", "cancel"];
const WB_STATUSES: &[&str] = &[
    "waiting",
    "sorted",
    "sold",
    "canceled",
    "canceled_by_client",
    "declined_by_client",
    "defect",
    "ready_for_pickup",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WbLimits {
    pub marketplace_burst: u32,
    pub marketplace_per_second: f64,
    pub content_burst: u32,
    pub content_per_second: f64,
    /// Requests a 409 answer costs.
    pub conflict_cost: u32,
    pub max_stock_items: usize,
}

impl Default for WbLimits {
    fn default() -> Self {
        Self {
            marketplace_burst: 20,
            marketplace_per_second: 5.0,
            content_burst: 5,
            content_per_second: 100.0 / 60.0,
            conflict_cost: 10,
            max_stock_items: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Marketplace,
    Content,
}

#[derive(Debug, Clone)]
struct Item {
    chrt_id: u64,
    nm_id: u64,
    vendor_code: String,
    title: String,
    tech_size: String,
    barcodes: Vec<String>,
    price: i64,
    required_meta: Vec<String>,
}

#[derive(Debug, Clone)]
struct Order {
    id: u64,
    rid: String,
    order_uid: String,
    chrt_id: u64,
    nm_id: u64,
    article: String,
    skus: Vec<String>,
    price: i64,
    currency_code: u32,
    warehouse_id: u64,
    created_at: chrono::DateTime<chrono::Utc>,
    supplier_status: String,
    wb_status: String,
    supply_id: Option<String>,
    required_meta: Vec<String>,
    reserved: bool,
}

struct Data {
    tokens: BTreeSet<String>,
    warehouses: BTreeMap<u64, String>,
    items: BTreeMap<u64, Item>,
    stock: BTreeMap<(u64, u64), i64>,
    orders: BTreeMap<u64, Order>,
    supplies: BTreeMap<String, String>,
    next_id: u64,
    currency_code: u32,
    limits: WbLimits,
    buckets: HashMap<(String, Group), TokenBucket>,
}

impl Default for Data {
    fn default() -> Self {
        let mut d = Data {
            tokens: BTreeSet::from([DEFAULT_TOKEN.to_string()]),
            warehouses: BTreeMap::from([(DEFAULT_WAREHOUSE_ID, "Toshkent FBS".to_string())]),
            items: BTreeMap::new(),
            stock: BTreeMap::new(),
            orders: BTreeMap::new(),
            supplies: BTreeMap::new(),
            next_id: 100_000,
            currency_code: UZS,
            limits: WbLimits::default(),
            buckets: HashMap::new(),
        };
        let demo = [
            (
                201,
                2001,
                "CHOY-100",
                "Choy Ahmad 100 g",
                "4780000000017",
                25_000,
                10,
            ),
            (
                202,
                2002,
                "NON-OBI",
                "Non, obi non",
                "4780000000024",
                4_000,
                30,
            ),
            (
                203,
                2003,
                "SUV-1.5",
                "Suv Hydrolife 1.5 l",
                "4780000000031",
                5_500,
                24,
            ),
        ];
        for (chrt_id, nm_id, vendor, title, barcode, price, amount) in demo {
            d.items.insert(
                chrt_id,
                Item {
                    chrt_id,
                    nm_id,
                    vendor_code: vendor.into(),
                    title: title.into(),
                    tech_size: "0".into(),
                    barcodes: vec![barcode.into()],
                    price,
                    required_meta: vec![],
                },
            );
            d.stock.insert((DEFAULT_WAREHOUSE_ID, chrt_id), amount);
        }
        d
    }
}

impl Data {
    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }

    fn create_order(
        &mut self,
        new: NewOrder,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Value, String> {
        let item = match (new.chrt_id, new.barcode.as_deref()) {
            (Some(c), _) => self.items.get(&c),
            (None, Some(b)) => self
                .items
                .values()
                .find(|i| i.barcodes.iter().any(|x| x == b)),
            (None, None) => return Err("an order needs chrt_id or barcode".into()),
        }
        .ok_or("unknown chrt_id / barcode")?
        .clone();
        let warehouse_id = new.warehouse_id.unwrap_or(DEFAULT_WAREHOUSE_ID);
        if !self.warehouses.contains_key(&warehouse_id) {
            return Err(format!("unknown warehouse {warehouse_id}"));
        }
        let have = self
            .stock
            .get(&(warehouse_id, item.chrt_id))
            .copied()
            .unwrap_or(0);
        if new.reserve && have < 1 {
            // A buyer cannot order what the marketplace shows as out of stock.
            return Err(format!("chrt {} is out of stock", item.chrt_id));
        }
        let id = match new.id {
            Some(id) if self.orders.contains_key(&id) => return Err(format!("order {id} exists")),
            Some(id) => {
                self.next_id = self.next_id.max(id);
                id
            }
            None => self.next_id(),
        };
        if new.reserve {
            *self.stock.entry((warehouse_id, item.chrt_id)).or_default() -= 1;
        }
        let order = Order {
            id,
            rid: format!("{}.{}.0.7", id.wrapping_mul(7) % 1_000_000_007, id),
            order_uid: format!(
                "{}_{}",
                id.wrapping_mul(13) % 1_000_000_007,
                now.timestamp()
            ),
            chrt_id: item.chrt_id,
            nm_id: item.nm_id,
            article: item.vendor_code.clone(),
            skus: item.barcodes.clone(),
            // WB sends prices in minor units (hundredths).
            price: new.price.unwrap_or(item.price).saturating_mul(100),
            currency_code: self.currency_code,
            warehouse_id,
            created_at: new.created_at.unwrap_or(now),
            supplier_status: "new".into(),
            wb_status: "waiting".into(),
            supply_id: None,
            required_meta: new.required_meta.unwrap_or(item.required_meta),
            reserved: new.reserve,
        };
        let v = order_status_json(&order);
        self.orders.insert(id, order);
        Ok(v)
    }

    /// Moves an order out of "waiting", returning a reserved unit to stock.
    fn cancel(&mut self, id: u64, wb_status: &str, supplier_status: Option<&str>) {
        if let Some(o) = self.orders.get_mut(&id) {
            o.wb_status = wb_status.into();
            if let Some(s) = supplier_status {
                o.supplier_status = s.into();
            }
            if std::mem::take(&mut o.reserved) {
                *self.stock.entry((o.warehouse_id, o.chrt_id)).or_default() += 1;
            }
        }
    }
}

fn order_json(o: &Order) -> Value {
    json!({
        "id": o.id,
        "rid": o.rid,
        "orderUid": o.order_uid,
        "article": o.article,
        "colorCode": "",
        "chrtId": o.chrt_id,
        "nmId": o.nm_id,
        "skus": o.skus,
        "price": o.price,
        "convertedPrice": o.price,
        "currencyCode": o.currency_code,
        "convertedCurrencyCode": o.currency_code,
        "createdAt": rfc3339(o.created_at),
        "warehouseId": o.warehouse_id,
        "officeId": null,
        "offices": [],
        "deliveryType": "fbs",
        "supplyId": o.supply_id,
        "cargoType": 1,
        "isZeroOrder": false,
        "requiredMeta": o.required_meta,
        "optionalMeta": [],
        "comment": "",
    })
}

/// The API shape plus statuses (control answers only; the API reports statuses separately).
fn order_status_json(o: &Order) -> Value {
    let mut v = order_json(o);
    if let Some(m) = v.as_object_mut() {
        m.insert("supplierStatus".into(), json!(o.supplier_status));
        m.insert("wbStatus".into(), json!(o.wb_status));
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    id: Option<u64>,
    chrt_id: Option<u64>,
    barcode: Option<String>,
    warehouse_id: Option<u64>,
    /// In major units (sum); the API shows it ×100.
    price: Option<i64>,
    required_meta: Option<Vec<String>>,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Take one unit off the marketplace stock, as WB does when a buyer orders.
    #[serde(default)]
    reserve: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default)]
    clear: bool,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    warehouses: Vec<SeedWarehouse>,
    #[serde(default)]
    products: Vec<SeedItem>,
    #[serde(default)]
    orders: Vec<NewOrder>,
    currency_code: Option<u32>,
    limits: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedWarehouse {
    id: u64,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedItem {
    chrt_id: Option<u64>,
    nm_id: Option<u64>,
    vendor_code: Option<String>,
    title: Option<String>,
    size: Option<String>,
    barcode: Option<String>,
    #[serde(default)]
    barcodes: Vec<String>,
    #[serde(default)]
    price: i64,
    amount: Option<i64>,
    warehouse_id: Option<u64>,
    #[serde(default)]
    required_meta: Vec<String>,
}

#[derive(Default)]
pub struct Wildberries {
    state: SystemState,
    data: Mutex<Data>,
    stats: Arc<Stats>,
    clock: Clock,
}

fn set_header(r: &mut Response, name: &'static str, value: u64) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        r.headers_mut().insert(name, v);
    }
}

/// The API gateway's error body (401, 429).
fn gateway_error(status: StatusCode, title: &str, detail: &str, origin: &str) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "title": title,
        "detail": detail,
        "code": id,
        "requestId": uuid::Uuid::new_v4().simple().to_string(),
        "origin": origin,
        "status": status.as_u16(),
        "statusText": status.canonical_reason().unwrap_or(""),
        "timestamp": rfc3339(chrono::Utc::now()),
    });
    (status, Json(body)).into_response()
}

fn too_many(l: Limited, capacity: u64) -> Response {
    let mut r = gateway_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests",
        "Limited by global limiter",
        "api-gateway",
    );
    set_header(&mut r, "x-ratelimit-remaining", 0);
    set_header(&mut r, "x-ratelimit-limit", capacity);
    set_header(&mut r, "x-ratelimit-retry", ceil_secs(l.retry_after));
    set_header(&mut r, "x-ratelimit-reset", ceil_secs(l.reset_after));
    r
}

/// Marketplace API 4xx body.
fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

fn incorrect(message: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, "IncorrectRequest", message)
}

/// Content API 4xx body.
fn content_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body =
        json!({"data": null, "error": true, "errorText": message.into(), "additionalErrors": null});
    (status, Json(body)).into_response()
}

impl Wildberries {
    /// Authenticate, charge the token's bucket for `group`, run `f` under the data lock, then
    /// charge a 409's extra cost and stamp the rate-limit headers.
    fn handle(
        &self,
        headers: &HeaderMap,
        group: Group,
        f: impl FnOnce(&mut Data, chrono::DateTime<chrono::Utc>) -> Response,
    ) -> Response {
        let raw = header(headers, "authorization")
            .map(str::trim)
            .unwrap_or("");
        let token = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .unwrap_or(raw)
            .trim()
            .to_string();
        let mut d = lock(&self.data);
        if token.is_empty() || !d.tokens.contains(&token) {
            let detail = if token.is_empty() {
                "empty Authorization header"
            } else {
                "token problem; token is malformed or unknown"
            };
            return gateway_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                detail,
                "s2s-api-auth-marketplace",
            );
        }
        let now = self.clock.now();
        let (cap, rate) = match group {
            Group::Marketplace => (d.limits.marketplace_burst, d.limits.marketplace_per_second),
            Group::Content => (d.limits.content_burst, d.limits.content_per_second),
        };
        let conflict_cost = d.limits.conflict_cost;
        let key = (token, group);
        let bucket = d
            .buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(cap as f64, rate, now));
        if let Err(l) = bucket.try_take(now, 1.0) {
            return too_many(l, bucket.capacity());
        }
        let mut resp = f(&mut d, self.clock.utc_now());
        if let Some(bucket) = d.buckets.get_mut(&key) {
            if resp.status() == StatusCode::CONFLICT {
                bucket.charge(now, conflict_cost.saturating_sub(1) as f64);
            }
            set_header(&mut resp, "x-ratelimit-remaining", bucket.remaining());
            set_header(&mut resp, "x-ratelimit-limit", bucket.capacity());
        }
        resp
    }
}

fn parse_warehouse(raw: &str, d: &Data) -> Result<u64, Response> {
    let id: u64 = raw
        .parse()
        .map_err(|_| incorrect(format!("warehouseId {raw} is not a number")))?;
    if d.warehouses.contains_key(&id) {
        Ok(id)
    } else {
        Err(api_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Warehouse not found",
        ))
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| incorrect(format!("Invalid request body: {e}")))
}

async fn put_stocks(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    Path(wh): Path<String>,
    body: Bytes,
) -> Response {
    let stats = sim.stats.clone();
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let wh = match parse_warehouse(&wh, d) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let body = match parse_body(&body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(items) = body.get("stocks").and_then(Value::as_array) else {
            return incorrect("stocks: an array is required");
        };
        if items.is_empty() || items.len() > d.limits.max_stock_items {
            return incorrect(format!(
                "stocks: from 1 to {} items a request",
                d.limits.max_stock_items
            ));
        }
        let mut apply = Vec::new();
        let mut ignored = 0u64;
        let mut not_found = Vec::new();
        let mut bad_amount = Vec::new();
        for it in items {
            let Some(obj) = it.as_object() else {
                return incorrect("stocks: every item must be an object");
            };
            let chrt = match obj.get("chrtId") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(c) => Some(c),
                    None => return incorrect("chrtId must be an integer"),
                },
            };
            let amount = match obj.get("amount") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_i64() {
                    Some(a) => Some(a),
                    None => return incorrect("amount must be an integer"),
                },
            };
            let (Some(chrt), Some(amount)) = (chrt, amount) else {
                ignored += 1;
                continue;
            };
            if !d.items.contains_key(&chrt) {
                not_found.push(json!({"chrtId": chrt, "amount": amount}));
            } else if !(0..=MAX_AMOUNT).contains(&amount) {
                bad_amount.push(json!({"chrtId": chrt, "amount": amount}));
            } else {
                apply.push((chrt, amount));
            }
        }
        if !not_found.is_empty() || !bad_amount.is_empty() {
            let mut errors = Vec::new();
            stats.stock_rejected("NotFound", not_found.len() as u64);
            stats.stock_rejected("InvalidAmount", bad_amount.len() as u64);
            stats.stock_rejected("RequestRefused", apply.len() as u64);
            if !not_found.is_empty() {
                errors.push(json!({"code": "NotFound", "data": not_found,
                    "message": "Товар не найден: unknown chrtId"}));
            }
            if !bad_amount.is_empty() {
                errors.push(json!({"code": "InvalidAmount", "data": bad_amount,
                    "message": format!("amount must be from 0 to {MAX_AMOUNT}")}));
            }
            return (StatusCode::CONFLICT, Json(json!(errors))).into_response();
        }
        for (chrt, amount) in &apply {
            d.stock.insert((wh, *chrt), *amount);
        }
        stats.stock_accepted(apply.len() as u64);
        stats.stock_ignored(ignored);
        StatusCode::NO_CONTENT.into_response()
    })
}

/// Reads (`POST`) and zeroes (`DELETE`) stocks for `{"chrtIds": […]}`.
fn chrt_ids(body: &[u8], max: usize) -> Result<Vec<u64>, Response> {
    let body = parse_body(body)?;
    let ids: Vec<u64> = body
        .get("chrtIds")
        .and_then(Value::as_array)
        .ok_or_else(|| incorrect("chrtIds: an array is required"))?
        .iter()
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| incorrect("chrtIds must be integers"))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() || ids.len() > max {
        return Err(incorrect(format!(
            "chrtIds: from 1 to {max} items a request"
        )));
    }
    Ok(ids)
}

async fn read_stocks(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    Path(wh): Path<String>,
    body: Bytes,
) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let wh = match parse_warehouse(&wh, d) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let ids = match chrt_ids(&body, d.limits.max_stock_items) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let stocks: Vec<Value> = ids
            .iter()
            .filter(|c| d.items.contains_key(c))
            .map(|c| json!({"chrtId": c, "amount": d.stock.get(&(wh, *c)).copied().unwrap_or(0)}))
            .collect();
        Json(json!({"stocks": stocks})).into_response()
    })
}

async fn delete_stocks(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    Path(wh): Path<String>,
    body: Bytes,
) -> Response {
    let stats = sim.stats.clone();
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let wh = match parse_warehouse(&wh, d) {
            Ok(w) => w,
            Err(r) => return r,
        };
        let ids = match chrt_ids(&body, d.limits.max_stock_items) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let unknown: Vec<Value> = ids
            .iter()
            .filter(|c| !d.items.contains_key(c))
            .map(|c| json!({"chrtId": c}))
            .collect();
        if !unknown.is_empty() {
            stats.stock_rejected("NotFound", unknown.len() as u64);
            let errors =
                json!([{"code": "NotFound", "data": unknown, "message": "unknown chrtId"}]);
            return (StatusCode::CONFLICT, Json(errors)).into_response();
        }
        for c in &ids {
            d.stock.insert((wh, *c), 0);
        }
        stats.stock_accepted(ids.len() as u64);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn warehouses(State(sim): State<Arc<Wildberries>>, headers: HeaderMap) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let list: Vec<Value> = d
            .warehouses
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name, "officeId": id, "cargoType": 1, "deliveryType": 1}))
            .collect();
        Json(json!(list)).into_response()
    })
}

async fn cards_list(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.handle(&headers, Group::Content, |d, now| {
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return content_error(StatusCode::BAD_REQUEST, "Invalid request body");
        };
        let settings = body.get("settings").cloned().unwrap_or(Value::Null);
        let cursor = settings.get("cursor").cloned().unwrap_or(Value::Null);
        let limit = cursor.get("limit").and_then(Value::as_u64).unwrap_or(100);
        if limit == 0 || limit > 100 {
            return content_error(StatusCode::BAD_REQUEST, "cursor.limit must be from 1 to 100");
        }
        let after = cursor.get("nmID").and_then(Value::as_u64).unwrap_or(0);
        let search = settings
            .pointer("/filter/textSearch")
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty());
        let mut cards: BTreeMap<u64, Vec<&Item>> = BTreeMap::new();
        for it in d.items.values().filter(|i| i.nm_id > after) {
            cards.entry(it.nm_id).or_default().push(it);
        }
        let updated = rfc3339(now);
        let list: Vec<Value> = cards
            .iter()
            .filter(|(nm, sizes)| match &search {
                None => true,
                Some(s) => {
                    nm.to_string() == *s
                        || sizes.iter().any(|i| i.vendor_code == *s || i.barcodes.iter().any(|b| b == s))
                }
            })
            .take(limit as usize)
            .map(|(nm, sizes)| {
                let first = sizes[0];
                let sizes: Vec<Value> = sizes
                    .iter()
                    .map(|i| json!({"chrtID": i.chrt_id, "techSize": i.tech_size, "wbSize": "", "skus": i.barcodes}))
                    .collect();
                json!({
                    "nmID": nm,
                    "imtID": nm,
                    "subjectID": 0,
                    "subjectName": "",
                    "vendorCode": first.vendor_code,
                    "brand": "",
                    "title": first.title,
                    "sizes": sizes,
                    "createdAt": updated,
                    "updatedAt": updated,
                })
            })
            .collect();
        let last = list.last().and_then(|c| c.get("nmID")).cloned();
        Json(json!({
            "cards": list,
            "cursor": {"updatedAt": last.as_ref().map(|_| updated.clone()), "nmID": last, "total": list.len()},
        }))
        .into_response()
    })
}

async fn new_orders(State(sim): State<Arc<Wildberries>>, headers: HeaderMap) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let orders: Vec<Value> = d
            .orders
            .values()
            .filter(|o| o.supplier_status == "new" && o.wb_status == "waiting")
            .map(order_json)
            .collect();
        Json(json!({"orders": orders})).into_response()
    })
}

async fn list_orders(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let q = query_pairs(q.as_deref());
        let num = |k: &str| -> Result<Option<i64>, Response> {
            match q.iter().find(|(n, _)| n == k) {
                None => Ok(None),
                Some((_, v)) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| incorrect(format!("{k} must be an integer"))),
            }
        };
        let (limit, next, from, to) =
            match (num("limit"), num("next"), num("dateFrom"), num("dateTo")) {
                (Ok(l), Ok(n), Ok(f), Ok(t)) => (l, n.unwrap_or(0), f, t),
                (Err(r), ..) | (_, Err(r), ..) | (_, _, Err(r), _) | (.., Err(r)) => return r,
            };
        let limit = match limit {
            Some(l @ 1..=1000) => l as usize,
            _ => return incorrect("limit is required, from 1 to 1000"),
        };
        let orders: Vec<&Order> = d
            .orders
            .values()
            .filter(|o| o.id as i64 > next)
            .filter(|o| from.is_none_or(|f| o.created_at.timestamp() >= f))
            .filter(|o| to.is_none_or(|t| o.created_at.timestamp() <= t))
            .take(limit)
            .collect();
        let next = orders.last().map(|o| o.id).unwrap_or(next.max(0) as u64);
        let orders: Vec<Value> = orders.into_iter().map(order_json).collect();
        Json(json!({"next": next, "orders": orders})).into_response()
    })
}

async fn orders_status(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let body = match parse_body(&body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(ids) = body.get("orders").and_then(Value::as_array) else {
            return incorrect("orders: an array of ids is required");
        };
        if ids.is_empty() || ids.len() > 1000 {
            return incorrect("orders: from 1 to 1000 ids a request");
        }
        let list: Vec<Value> = ids
            .iter()
            .filter_map(Value::as_u64)
            .filter_map(|id| d.orders.get(&id))
            .map(|o| json!({"id": o.id, "supplierStatus": o.supplier_status, "wbStatus": o.wb_status}))
            .collect();
        Json(json!({"orders": list})).into_response()
    })
}

fn find_order(raw: &str, d: &Data) -> Result<u64, Response> {
    raw.parse::<u64>()
        .ok()
        .filter(|id| d.orders.contains_key(id))
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "NotFound", "Order not found"))
}

async fn seller_cancel(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let id = match find_order(&id, d) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let Some(o) = d.orders.get(&id) else {
            return api_error(StatusCode::NOT_FOUND, "NotFound", "Order not found");
        };
        if !matches!(o.supplier_status.as_str(), "new" | "confirm") || o.wb_status != "waiting" {
            return api_error(
                StatusCode::CONFLICT,
                "StatusMismatch",
                format!(
                    "order {id} is {}/{}, it cannot be cancelled",
                    o.supplier_status, o.wb_status
                ),
            );
        }
        d.cancel(id, "declined_by_client", Some("cancel"));
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn create_supply(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        let body = match parse_body(&body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(name) = body
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return incorrect("name is required");
        };
        let id = format!("WB-GI-{}", d.next_id());
        d.supplies.insert(id.clone(), name.to_string());
        (StatusCode::CREATED, Json(json!({"id": id}))).into_response()
    })
}

async fn add_to_supply(
    State(sim): State<Arc<Wildberries>>,
    headers: HeaderMap,
    Path((supply, order)): Path<(String, String)>,
) -> Response {
    sim.handle(&headers, Group::Marketplace, |d, _| {
        if !d.supplies.contains_key(&supply) {
            return api_error(StatusCode::NOT_FOUND, "NotFound", "Supply not found");
        }
        let id = match find_order(&order, d) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let Some(o) = d.orders.get_mut(&id) else {
            return api_error(StatusCode::NOT_FOUND, "NotFound", "Order not found");
        };
        if o.supplier_status != "new" || o.wb_status != "waiting" {
            return api_error(
                StatusCode::CONFLICT,
                "StatusMismatch",
                format!(
                    "order {id} is {}/{}, only new orders go to a supply",
                    o.supplier_status, o.wb_status
                ),
            );
        }
        o.supplier_status = "confirm".into();
        o.supply_id = Some(supply);
        StatusCode::NO_CONTENT.into_response()
    })
}

// ---- control ----

async fn c_create_order(State(sim): State<Arc<Wildberries>>, body: Bytes) -> Response {
    let new: NewOrder = match parse_control(&body) {
        Ok(n) => n,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let now = sim.clock.utc_now();
    match lock(&sim.data).create_order(new, now) {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn c_orders(State(sim): State<Arc<Wildberries>>) -> Response {
    let orders: Vec<Value> = lock(&sim.data)
        .orders
        .values()
        .map(order_status_json)
        .collect();
    Json(json!({"orders": orders})).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ControlCancel {
    /// `canceled_by_client` (default) or `canceled` (by WB).
    wb_status: Option<String>,
}

async fn c_cancel(
    State(sim): State<Arc<Wildberries>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Response {
    let req: ControlCancel = match parse_control(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let status = req.wb_status.unwrap_or_else(|| "canceled_by_client".into());
    if !["canceled", "canceled_by_client", "declined_by_client"].contains(&status.as_str()) {
        return control_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{status} is not a cancel status"),
        );
    }
    let mut d = lock(&sim.data);
    match d.orders.get(&id) {
        None => return control_error(StatusCode::NOT_FOUND, format!("order {id} not found")),
        Some(o) if o.wb_status != "waiting" && o.wb_status != "sorted" => {
            return control_error(
                StatusCode::CONFLICT,
                format!("order {id} is {}", o.wb_status),
            );
        }
        Some(_) => {}
    }
    d.cancel(id, &status, None);
    Json(
        d.orders
            .get(&id)
            .map(order_status_json)
            .unwrap_or(Value::Null),
    )
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlStatus {
    supplier_status: Option<String>,
    wb_status: Option<String>,
}

async fn c_status(
    State(sim): State<Arc<Wildberries>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Response {
    let req: ControlStatus = match parse_control(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    if req
        .supplier_status
        .as_deref()
        .is_some_and(|s| !SUPPLIER_STATUSES.contains(&s))
        || req
            .wb_status
            .as_deref()
            .is_some_and(|s| !WB_STATUSES.contains(&s))
    {
        return control_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown status");
    }
    let mut d = lock(&sim.data);
    match d.orders.get_mut(&id) {
        Some(o) => {
            if let Some(s) = req.supplier_status {
                o.supplier_status = s;
            }
            if let Some(s) = req.wb_status {
                o.wb_status = s;
            }
            Json(order_status_json(o)).into_response()
        }
        None => control_error(StatusCode::NOT_FOUND, format!("order {id} not found")),
    }
}

#[derive(Deserialize)]
struct StockQuery {
    warehouse_id: Option<u64>,
}

async fn c_stock(State(sim): State<Arc<Wildberries>>, Query(q): Query<StockQuery>) -> Response {
    let wh = q.warehouse_id.unwrap_or(DEFAULT_WAREHOUSE_ID);
    let d = lock(&sim.data);
    let mut items = Vec::new();
    let mut by_barcode = BTreeMap::new();
    let mut by_chrt_id = BTreeMap::new();
    for it in d.items.values() {
        let amount = d.stock.get(&(wh, it.chrt_id)).copied().unwrap_or(0);
        items.push(
            json!({"chrt_id": it.chrt_id, "nm_id": it.nm_id, "vendor_code": it.vendor_code,
                          "barcodes": it.barcodes, "amount": amount}),
        );
        for b in &it.barcodes {
            by_barcode.insert(b.clone(), amount);
        }
        by_chrt_id.insert(it.chrt_id.to_string(), amount);
    }
    Json(json!({"warehouse_id": wh, "items": items, "by_barcode": by_barcode, "by_chrt_id": by_chrt_id}))
        .into_response()
}

async fn c_limits(State(sim): State<Arc<Wildberries>>) -> Response {
    Json(json!({"limits": lock(&sim.data).limits})).into_response()
}

async fn c_set_limits(State(sim): State<Arc<Wildberries>>, body: Bytes) -> Response {
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

impl MarketplaceSim for Wildberries {
    fn stats(&self) -> &Stats {
        &self.stats
    }
    fn clock(&self) -> &Clock {
        &self.clock
    }
}

impl Simulator for Wildberries {
    fn name(&self) -> &'static str {
        "wildberries"
    }

    fn router(self: Arc<Self>) -> Router {
        let stats = self.stats.clone();
        Router::new()
            .route(
                "/api/v3/stocks/{warehouse_id}",
                axum::routing::put(put_stocks)
                    .post(read_stocks)
                    .delete(delete_stocks),
            )
            .route("/api/v3/warehouses", get(warehouses))
            .route("/api/v3/orders/new", get(new_orders))
            .route("/api/v3/orders", get(list_orders))
            .route("/api/v3/orders/status", post(orders_status))
            .route("/api/v3/orders/{order_id}/cancel", patch(seller_cancel))
            .route("/api/v3/supplies", post(create_supply))
            .route(
                "/api/v3/supplies/{supply_id}/orders/{order_id}",
                patch(add_to_supply),
            )
            .route("/content/v2/get/cards/list", post(cards_list))
            .route_layer(middleware::from_fn_with_state(stats, count_requests))
            .with_state(self)
    }

    /// Control routes under `/_control/wildberries`:
    /// - `POST orders {id?, chrt_id|barcode, warehouse_id?, price?, required_meta?, created_at?,
    ///   reserve?}` -> 201 the order with `supplierStatus`/`wbStatus`;
    /// - `GET orders`; `POST orders/{id}/cancel {wb_status?}` (buyer or WB cancels);
    ///   `POST orders/{id}/status {supplier_status?, wb_status?}`;
    /// - `GET stock?warehouse_id=1` -> `{warehouse_id, items:[{chrt_id, nm_id, vendor_code,
    ///   barcodes, amount}], by_barcode:{…}, by_chrt_id:{…}}`;
    /// - `GET stats` (`DELETE stats`); `GET|POST limits`; `POST clock {advance_ms?, advance_secs?, freeze?}`.
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/orders", post(c_create_order).get(c_orders))
            .route("/orders/{id}/cancel", post(c_cancel))
            .route("/orders/{id}/status", post(c_status))
            .route("/stock", get(c_stock))
            .route(
                "/stats",
                get(c_stats::<Wildberries>).delete(c_clear_stats::<Wildberries>),
            )
            .route("/limits", get(c_limits).post(c_set_limits))
            .route("/clock", post(c_clock::<Wildberries>))
            .with_state(self)
    }

    fn reset(&self) {
        *lock(&self.data) = Data::default();
        self.stats.clear();
        self.clock.reset();
    }

    /// `{clear?, tokens?:[..], warehouses?:[{id, name?}], products?:[{chrt_id?, nm_id?,
    /// vendor_code?, title?, size?, barcode?|barcodes?, price?, amount?, warehouse_id?,
    /// required_meta?}], orders?:[NewOrder], currency_code?, limits?:{…}}`; products upsert by
    /// `chrt_id`, ids are assigned when absent.
    fn seed(&self, data: Value) -> Result<Value, String> {
        let seed: Seed = serde_json::from_value(data).map_err(|e| e.to_string())?;
        let now = self.clock.utc_now();
        let mut d = lock(&self.data);
        let limits = match &seed.limits {
            Some(p) => merge_json(&d.limits, p)?,
            None => d.limits.clone(),
        };
        if seed.clear {
            d.items.clear();
            d.stock.clear();
            d.orders.clear();
        }
        d.limits = limits;
        d.buckets.clear();
        if let Some(c) = seed.currency_code {
            d.currency_code = c;
        }
        d.tokens.extend(seed.tokens);
        for w in seed.warehouses {
            d.warehouses.insert(
                w.id,
                w.name.unwrap_or_else(|| format!("Warehouse {}", w.id)),
            );
        }
        for p in seed.products {
            let chrt_id = match p.chrt_id {
                Some(c) => c,
                None => d.next_id(),
            };
            d.next_id = d.next_id.max(chrt_id);
            let nm_id = p.nm_id.unwrap_or(chrt_id);
            let mut barcodes = p.barcodes;
            barcodes.extend(p.barcode);
            if let Some(a) = p.amount {
                if !(0..=MAX_AMOUNT).contains(&a) {
                    return Err(format!(
                        "chrt {chrt_id}: amount must be from 0 to {MAX_AMOUNT}"
                    ));
                }
                let wh = p.warehouse_id.unwrap_or(DEFAULT_WAREHOUSE_ID);
                d.warehouses
                    .entry(wh)
                    .or_insert_with(|| format!("Warehouse {wh}"));
                d.stock.insert((wh, chrt_id), a);
            }
            d.items.insert(
                chrt_id,
                Item {
                    chrt_id,
                    nm_id,
                    vendor_code: p.vendor_code.unwrap_or_else(|| format!("ART-{nm_id}")),
                    title: p.title.unwrap_or_else(|| format!("Product {nm_id}")),
                    tech_size: p.size.unwrap_or_else(|| "0".into()),
                    barcodes,
                    price: p.price,
                    required_meta: p.required_meta,
                },
            );
        }
        let mut orders = Vec::new();
        for o in seed.orders {
            orders.push(d.create_order(o, now)?);
        }
        Ok(json!({
            "items": d.items.len(),
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
