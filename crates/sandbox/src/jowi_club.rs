//! JOWi Club loyalty simulator: the assumed contract of `protocols/jowi-club.md` with a real
//! points ledger.
//!
//! Wire decisions the protocol file leaves open (all [assumed], mirrored by the connector):
//! - Auth is `api_key` + `sig` (query string for every method, or top-level JSON body fields
//!   for POST), or `Authorization: Bearer <token>` from `POST /oauth/token`.
//! - Failures are `{"status":0,"error":<int>,"message":...}` with the HTTP status equal to the
//!   error code: 400 bad request, 401 auth, 402 not enough points, 404 unknown customer or
//!   transaction, 409 an idempotency key reused with a different body, 422 a request that is
//!   well formed but impossible (points above the receipt, refund above the sale).
//! - The token endpoint speaks RFC 6749: `{"error":"invalid_client"}` and friends.
//! - Money is integer tiyin; points are whole UZS (1 point = 100 tiyin). Item `qty` may carry up
//!   to 3 decimals (weighed goods); a line is `price * qty` rounded half up to the tiyin.
//! - A customer's discount is `discount_percent` of each line, floored per line. Points earned
//!   are `earn_percent` of what is paid in money (after discount and spent points), floored.
//! - Partial refunds return spent points and reverse earned points in proportion to the
//!   refunded share of the net (after-discount) amount, cumulatively and floored, so the refund
//!   that empties the transaction settles the remainder exactly. A refund may take a balance
//!   below zero when the earned points were already spent; the ledger keeps the truth.
//! - `POST /club/v1/transactions/{id}/refund` takes either JOWi's `transaction_id` or our
//!   receipt `id`.
//! - Webhooks are `{id, event, customer_id, balance, time}`; a `customer.updated` one also
//!   carries `customer` as the look-up answers it (name, phone, card, level…), so the merchant
//!   refreshes its record without calling back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, http};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Simulator, SystemState, header};

pub const DEMO_API_KEY: &str = "demo_api_key";
pub const DEMO_API_SECRET: &str = "demo_api_secret";
pub const DEMO_CLIENT_ID: &str = "demo_client";
pub const DEMO_CLIENT_SECRET: &str = "demo_secret";
/// Card of the built-in demo customer (phone 998900000001, code 000001).
pub const DEMO_CARD: &str = "9860000000000001";
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `sig` for an app: the first 10 and the last 5 hex characters of `sha256(key + secret)`.
pub fn sig(api_key: &str, api_secret: &str) -> String {
    let digest = hex::encode(Sha256::digest(format!("{api_key}{api_secret}").as_bytes()));
    format!("{}{}", &digest[..10], &digest[digest.len() - 5..])
}

/// `X-Jowi-Signature` of a webhook body.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    card: Option<String>,
    phone: Option<String>,
    code: Option<String>,
    name: String,
    balance: i64,
    discount_percent: i64,
    earn_percent: i64,
    level: String,
}

impl Customer {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "phone": self.phone, "card": self.card,
            "code": self.code, "level": self.level, "discount_percent": self.discount_percent,
            "earn_percent": self.earn_percent, "balance": self.balance,
        })
    }
}

#[derive(Debug, Clone)]
struct Line {
    item_ref: String,
    qty_milli: i64,
    /// Line amount after the loyalty discount, tiyin.
    net: i64,
    refunded_milli: i64,
    refunded_net: i64,
}

#[derive(Debug, Clone)]
struct Txn {
    id: String,
    transaction_id: String,
    customer_id: String,
    request: Value,
    answer: Value,
    lines: Vec<Line>,
    base: i64,
    spent: i64,
    earned: i64,
    refunded_net: i64,
    spent_returned: i64,
    earned_reversed: i64,
}

struct StoredRefund {
    request: Value,
    answer: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum LoseMode {
    /// Answer 502 with no body.
    #[default]
    #[serde(alias = "502")]
    BadGateway,
    /// Hold the answer far longer than any client waits.
    Hang,
}

struct Inner {
    /// api_key -> api_secret (seeded ones; the demo app is always valid).
    apps: HashMap<String, String>,
    clients: HashMap<String, String>,
    tokens: HashMap<String, Instant>,
    customers: Vec<Customer>,
    txns: HashMap<String, Txn>,
    /// JOWi transaction_id -> our receipt id.
    txn_ids: HashMap<String, String>,
    refunds: HashMap<String, StoredRefund>,
    ledger: Vec<Value>,
    lose_answers: u32,
    lose_mode: LoseMode,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            apps: HashMap::new(),
            clients: HashMap::new(),
            tokens: HashMap::new(),
            customers: vec![demo_customer()],
            txns: HashMap::new(),
            txn_ids: HashMap::new(),
            refunds: HashMap::new(),
            ledger: Vec::new(),
            lose_answers: 0,
            lose_mode: LoseMode::default(),
        }
    }
}

/// Present after every reset, so the integration can be tried without seeding anything.
fn demo_customer() -> Customer {
    Customer {
        id: "cus_demo".into(),
        card: Some(DEMO_CARD.into()),
        phone: Some("998900000001".into()),
        code: Some("000001".into()),
        name: "Demo Customer".into(),
        balance: 5_000,
        discount_percent: 5,
        earn_percent: 3,
        level: "silver".into(),
    }
}

#[derive(Default)]
pub struct JowiClub {
    state: SystemState,
    inner: Mutex<Inner>,
}

impl JowiClub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a handler panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct ApiErr {
    code: u16,
    message: String,
}

fn err(code: u16, message: impl Into<String>) -> ApiErr {
    ApiErr {
        code,
        message: message.into(),
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        (
            status,
            Json(json!({"status": 0, "error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiErr>;

impl Simulator for JowiClub {
    fn name(&self) -> &'static str {
        "jowi-club"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/oauth/token", post(token))
            .route("/club/v1/customers", get(customer_lookup))
            .route("/club/v1/calculate", post(calculate))
            .route("/club/v1/transactions", post(transaction))
            .route("/club/v1/transactions/{id}/refund", post(refund))
            .with_state(self)
    }
    fn reset(&self) {
        *self.lock() = Inner::default();
    }
    /// `{"apps":[{api_key,api_secret}], "clients":[{client_id,client_secret}],
    /// "customers":[{id?,card,phone,code,name,balance,discount_percent,earn_percent,level}],
    /// "lose_answers": N, "lose_mode": "502"|"hang"}`.
    fn seed(&self, data: Value) -> Result<Value, String> {
        let mut inner = self.lock();
        let mut apps = 0;
        for app in arr(&data, "apps")? {
            let key = req_str(app, "api_key")?;
            let secret = req_str(app, "api_secret")?;
            inner.apps.insert(key, secret);
            apps += 1;
        }
        let mut clients = 0;
        for c in arr(&data, "clients")? {
            let id = req_str(c, "client_id")?;
            let secret = req_str(c, "client_secret")?;
            inner.clients.insert(id, secret);
            clients += 1;
        }
        let mut created = Vec::new();
        for c in arr(&data, "customers")? {
            let customer = parse_customer(c)?;
            if let Some(dup) = inner.customers.iter().find(|e| {
                e.id == customer.id
                    || same_opt(&e.card, &customer.card)
                    || same_opt(&e.code, &customer.code)
                    || (customer.phone.is_some() && phone_eq(&e.phone, &customer.phone))
            }) {
                return Err(format!(
                    "customer {} clashes with existing customer {} (id, card, code or phone)",
                    customer.name, dup.id
                ));
            }
            created.push(customer.to_json());
            inner.customers.push(customer);
        }
        if let Some(n) = data.get("lose_answers") {
            inner.lose_answers = n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("lose_answers must be a non-negative integer")?;
        }
        if let Some(m) = data.get("lose_mode") {
            inner.lose_mode = serde_json::from_value(m.clone())
                .map_err(|_| "lose_mode must be \"502\" or \"hang\"".to_string())?;
        }
        Ok(
            json!({"apps": apps, "clients": clients, "customers": created,
                  "lose_answers": inner.lose_answers}),
        )
    }
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/ledger", get(ctl_ledger))
            .route("/customers", get(ctl_customers))
            .route("/lose_answers", post(ctl_lose_answers))
            .route("/expire_tokens", post(ctl_expire_tokens))
            .route("/webhook", post(ctl_webhook))
            .with_state(self)
    }
    fn state(&self) -> &SystemState {
        &self.state
    }
}

// ---------------------------------------------------------------- seeding helpers

fn arr<'a>(data: &'a Value, key: &str) -> Result<&'a [Value], String> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{key} must be an array")),
    }
}

fn req_str(v: &Value, key: &str) -> Result<String, String> {
    opt_str(v, key).ok_or_else(|| format!("{key} is required (a non-empty string)"))
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn percent(v: &Value, key: &str) -> Result<i64, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_i64()
            .filter(|p| (0..=100).contains(p))
            .ok_or_else(|| format!("{key} must be an integer 0..=100")),
    }
}

fn parse_customer(c: &Value) -> Result<Customer, String> {
    let card = opt_str(c, "card");
    let phone = opt_str(c, "phone");
    let code = opt_str(c, "code");
    if card.is_none() && phone.is_none() && code.is_none() {
        return Err("a customer needs a card, a phone or a code".into());
    }
    let balance = match c.get("balance") {
        None | Some(Value::Null) => 0,
        Some(b) => b
            .as_i64()
            .filter(|b| *b >= 0)
            .ok_or("balance must be a non-negative integer (points)")?,
    };
    Ok(Customer {
        id: opt_str(c, "id").unwrap_or_else(|| format!("cus_{}", uuid::Uuid::now_v7().simple())),
        card,
        phone,
        code,
        name: opt_str(c, "name").unwrap_or_default(),
        balance,
        discount_percent: percent(c, "discount_percent")?,
        earn_percent: percent(c, "earn_percent")?,
        level: opt_str(c, "level").unwrap_or_else(|| "basic".into()),
    })
}

fn same_opt(a: &Option<String>, b: &Option<String>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a == b)
}

/// Phones match on their last 9 digits, so `+998 90 123-45-67` finds `998901234567`.
fn phone_eq(a: &Option<String>, b: &Option<String>) -> bool {
    fn tail(p: &str) -> String {
        let digits: String = p.chars().filter(char::is_ascii_digit).collect();
        digits[digits.len().saturating_sub(9)..].to_string()
    }
    match (a, b) {
        (Some(a), Some(b)) => {
            let (a, b) = (tail(a), tail(b));
            !a.is_empty() && a == b
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- auth

fn authorize(
    inner: &mut Inner,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Option<&Value>,
) -> Result<(), ApiErr> {
    if let Some(auth) = header(headers, "authorization") {
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or_else(|| err(401, "Authorization must be a Bearer token"))?
            .trim();
        return match inner.tokens.get(token) {
            Some(exp) if *exp > Instant::now() => Ok(()),
            Some(_) => Err(err(401, "token expired")),
            None => Err(err(401, "unknown token")),
        };
    }
    let field = |k: &str| {
        query.get(k).cloned().or_else(|| {
            body.and_then(|b| b.get(k))
                .and_then(|v| v.as_str().map(str::to_string))
        })
    };
    let (Some(key), Some(given)) = (field("api_key"), field("sig")) else {
        return Err(err(401, "api_key and sig (or a Bearer token) are required"));
    };
    let secret = if key == DEMO_API_KEY {
        DEMO_API_SECRET.to_string()
    } else {
        inner
            .apps
            .get(&key)
            .cloned()
            .ok_or_else(|| err(401, "unknown api_key"))?
    };
    if !given.eq_ignore_ascii_case(&sig(&key, &secret)) {
        return Err(err(401, "wrong sig"));
    }
    Ok(())
}

/// The JSON body, or a 400 in the JOWi envelope.
fn json_body(body: &Bytes) -> Result<Value, ApiErr> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| err(400, format!("body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(err(400, "body must be a JSON object"));
    }
    Ok(v)
}

/// The request as stored for idempotency: auth fields do not belong to it.
fn canonical(body: &Value) -> Value {
    let mut v = body.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("api_key");
        o.remove("sig");
    }
    v
}

async fn token(State(sim): State<Arc<JowiClub>>, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = header(&headers, "content-type").is_some_and(|c| c.contains("json"));
    let fields: HashMap<String, String> = if is_json {
        match serde_json::from_slice::<Map<String, Value>>(&body) {
            Ok(m) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            Err(_) => return oauth_err(400, "invalid_request", "body is not a JSON object"),
        }
    } else {
        match serde_urlencoded::from_bytes(&body) {
            Ok(m) => m,
            Err(_) => return oauth_err(400, "invalid_request", "body is not a form"),
        }
    };
    match fields.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_err(400, "unsupported_grant_type", "only client_credentials");
        }
        None => return oauth_err(400, "invalid_request", "grant_type is required"),
    }
    // client_secret_basic or client_secret_post, as RFC 6749 allows.
    let basic = header(&headers, "authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => match (fields.get("client_id"), fields.get("client_secret")) {
            (Some(i), Some(s)) => (i.clone(), s.clone()),
            _ => return oauth_err(401, "invalid_client", "client credentials are required"),
        },
    };
    let mut inner = sim.lock();
    let known = if id == DEMO_CLIENT_ID {
        secret == DEMO_CLIENT_SECRET
    } else {
        inner.clients.get(&id).is_some_and(|s| *s == secret)
    };
    if !known {
        return oauth_err(401, "invalid_client", "unknown client or wrong secret");
    }
    let token = format!(
        "jct_{}{}",
        uuid::Uuid::now_v7().simple(),
        hex::encode(rand::random::<[u8; 8]>())
    );
    inner
        .tokens
        .insert(token.clone(), Instant::now() + TOKEN_TTL);
    Json(json!({"access_token": token, "token_type": "Bearer",
                "expires_in": TOKEN_TTL.as_secs()}))
    .into_response()
}

fn oauth_err(status: u16, error: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

// ---------------------------------------------------------------- club API

async fn customer_lookup(
    State(sim): State<Arc<JowiClub>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let mut inner = sim.lock();
    authorize(&mut inner, &headers, &q, None)?;
    let nonempty = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let found = match (nonempty("card"), nonempty("phone"), nonempty("code")) {
        (Some(card), None, None) => inner
            .customers
            .iter()
            .find(|c| c.card.as_deref() == Some(card.as_str())),
        (None, Some(phone), None) => {
            let phone = Some(phone);
            inner.customers.iter().find(|c| phone_eq(&c.phone, &phone))
        }
        (None, None, Some(code)) => inner
            .customers
            .iter()
            .find(|c| c.code.as_deref() == Some(code.as_str())),
        _ => return Err(err(400, "exactly one of card, phone or code is required")),
    };
    let c = found.ok_or_else(|| err(404, "customer not found"))?;
    Ok(Json(json!({"status": 1, "customer": c.to_json()})))
}

/// Quantity in thousandths from a JSON number or string with at most 3 decimals.
fn qty_milli(v: &Value) -> Option<i64> {
    let s = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 3
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = format!("{frac:0<3}").parse().ok()?;
    int.checked_mul(1000)?.checked_add(frac)
}

struct PricedLine {
    item_ref: String,
    qty_milli: i64,
    amount: i64,
    discount: i64,
}

fn price_items(items: Option<&Value>, discount_percent: i64) -> Result<Vec<PricedLine>, ApiErr> {
    let items = match items {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err(400, "items must be an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let item_ref =
            opt_str(it, "ref").ok_or_else(|| err(400, format!("items[{i}].ref is required")))?;
        if out.iter().any(|l: &PricedLine| l.item_ref == item_ref) {
            return Err(err(400, format!("items[{i}].ref {item_ref} is repeated")));
        }
        let q = it
            .get("qty")
            .and_then(qty_milli)
            .filter(|q| *q > 0)
            .ok_or_else(|| {
                err(
                    400,
                    format!("items[{i}].qty must be > 0, at most 3 decimals"),
                )
            })?;
        let price = it
            .get("price")
            .and_then(Value::as_i64)
            .filter(|p| *p >= 0)
            .ok_or_else(|| err(400, format!("items[{i}].price must be integer tiyin >= 0")))?;
        let amount = (i128::from(price) * i128::from(q) + 500) / 1000;
        let amount = i64::try_from(amount).map_err(|_| err(400, "amount too large"))?;
        let discount = amount * discount_percent / 100;
        out.push(PricedLine {
            item_ref,
            qty_milli: q,
            amount,
            discount,
        });
    }
    Ok(out)
}

fn int_field(body: &Value, key: &str) -> Result<i64, ApiErr> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| err(400, format!("{key} must be a non-negative integer"))),
    }
}

fn customer_idx(inner: &Inner, body: &Value) -> Result<usize, ApiErr> {
    let id = opt_str(body, "customer_id").ok_or_else(|| err(400, "customer_id is required"))?;
    inner
        .customers
        .iter()
        .position(|c| c.id == id)
        .ok_or_else(|| err(404, "customer not found"))
}

async fn calculate(
    State(sim): State<Arc<JowiClub>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let body = json_body(&body)?;
    let mut inner = sim.lock();
    authorize(&mut inner, &headers, &q, Some(&body))?;
    let c = inner.customers[customer_idx(&inner, &body)?].clone();
    let lines = price_items(body.get("items"), c.discount_percent)?;
    if lines.is_empty() {
        return Err(err(400, "items are required"));
    }
    let want = int_field(&body, "spend_points")?;
    let discount_total: i64 = lines.iter().map(|l| l.discount).sum();
    let net: i64 = lines.iter().map(|l| l.amount - l.discount).sum();
    let spend_max = c.balance.max(0).min(net / 100);
    let spend = want.min(spend_max);
    let earn = (net - spend * 100) * c.earn_percent / 10_000;
    let items: Vec<Value> = lines
        .iter()
        .map(|l| json!({"ref": l.item_ref, "amount": l.amount, "discount": l.discount}))
        .collect();
    Ok(Json(json!({
        "status": 1,
        "customer_id": c.id,
        "items": items,
        "discount_total": discount_total,
        "total": net,
        "points_spend_max": spend_max,
        "points_to_spend": spend,
        "points_to_earn": earn,
        "balance": c.balance,
        "balance_after": c.balance - spend + earn,
    })))
}

/// Counts down the `lose_answers` fault; the effect has already happened.
fn take_lost(inner: &mut Inner) -> Option<LoseMode> {
    if inner.lose_answers > 0 {
        inner.lose_answers -= 1;
        Some(inner.lose_mode)
    } else {
        None
    }
}

async fn deliver(answer: Value, lost: Option<LoseMode>) -> Response {
    match lost {
        None => Json(answer).into_response(),
        Some(LoseMode::BadGateway) => StatusCode::BAD_GATEWAY.into_response(),
        Some(LoseMode::Hang) => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

async fn transaction(
    State(sim): State<Arc<JowiClub>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let (answer, lost) = {
        let mut inner = sim.lock();
        match apply_transaction(&mut inner, &headers, &q, &body) {
            Ok(a) => {
                let lost = take_lost(&mut inner);
                (a, lost)
            }
            Err(e) => return e.into_response(),
        }
    };
    deliver(answer, lost).await
}

fn apply_transaction(
    inner: &mut Inner,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Value, ApiErr> {
    let body = json_body(body)?;
    authorize(inner, headers, q, Some(&body))?;
    let id = opt_str(&body, "id").ok_or_else(|| err(400, "id (the receipt id) is required"))?;
    let request = canonical(&body);
    if let Some(t) = inner.txns.get(&id) {
        return if t.request == request {
            Ok(t.answer.clone())
        } else {
            Err(err(
                409,
                format!("transaction {id} exists with a different body"),
            ))
        };
    }
    let ci = customer_idx(inner, &body)?;
    let c = inner.customers[ci].clone();
    let priced = price_items(body.get("items"), c.discount_percent)?;
    let base = if priced.is_empty() {
        match body.get("total") {
            Some(v) => v
                .as_i64()
                .filter(|t| *t >= 0)
                .ok_or_else(|| err(400, "total must be integer tiyin >= 0"))?,
            None => return Err(err(400, "items or total is required")),
        }
    } else {
        priced.iter().map(|l| l.amount - l.discount).sum()
    };
    let spent = int_field(&body, "spend_points")?;
    if spent > c.balance {
        return Err(err(
            402,
            format!("not enough points: balance {}, asked {spent}", c.balance),
        ));
    }
    if spent * 100 > base {
        return Err(err(
            422,
            format!("{spent} points exceed the receipt of {base} tiyin"),
        ));
    }
    let earned = (base - spent * 100) * c.earn_percent / 10_000;
    let balance = c.balance - spent + earned;
    inner.customers[ci].balance = balance;
    let transaction_id = format!("jtx_{}", uuid::Uuid::now_v7().simple());
    let answer = json!({"status": 1, "transaction_id": transaction_id, "earned": earned,
                        "spent": spent, "balance": balance});
    inner.ledger.push(json!({
        "seq": inner.ledger.len() + 1, "kind": "sale", "id": id,
        "transaction_id": transaction_id, "refund_id": null, "customer_id": c.id,
        "spent": spent, "earned": earned, "delta": earned - spent, "balance_after": balance,
        "at": chrono::Utc::now(),
    }));
    inner.txn_ids.insert(transaction_id.clone(), id.clone());
    inner.txns.insert(
        id.clone(),
        Txn {
            id,
            transaction_id,
            customer_id: c.id,
            request,
            answer: answer.clone(),
            lines: priced
                .into_iter()
                .map(|l| Line {
                    item_ref: l.item_ref,
                    qty_milli: l.qty_milli,
                    net: l.amount - l.discount,
                    refunded_milli: 0,
                    refunded_net: 0,
                })
                .collect(),
            base,
            spent,
            earned,
            refunded_net: 0,
            spent_returned: 0,
            earned_reversed: 0,
        },
    );
    Ok(answer)
}

async fn refund(
    State(sim): State<Arc<JowiClub>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let (answer, lost) = {
        let mut inner = sim.lock();
        match apply_refund(&mut inner, &headers, &id, &q, &body) {
            Ok(a) => {
                let lost = take_lost(&mut inner);
                (a, lost)
            }
            Err(e) => return e.into_response(),
        }
    };
    deliver(answer, lost).await
}

fn apply_refund(
    inner: &mut Inner,
    headers: &HeaderMap,
    path_id: &str,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Value, ApiErr> {
    let body = json_body(body)?;
    authorize(inner, headers, q, Some(&body))?;
    let refund_id = opt_str(&body, "refund_id").ok_or_else(|| err(400, "refund_id is required"))?;
    let our_id = inner
        .txn_ids
        .get(path_id)
        .cloned()
        .or_else(|| {
            inner
                .txns
                .contains_key(path_id)
                .then(|| path_id.to_string())
        })
        .ok_or_else(|| err(404, format!("transaction {path_id} not found")))?;
    let mut request = canonical(&body);
    if let Some(o) = request.as_object_mut() {
        // The same refund_id against another transaction is a different request.
        o.insert("transaction".into(), Value::String(our_id.clone()));
    }
    if let Some(r) = inner.refunds.get(&refund_id) {
        return if r.request == request {
            Ok(r.answer.clone())
        } else {
            Err(err(
                409,
                format!("refund {refund_id} exists with a different body"),
            ))
        };
    }
    let Some(t) = inner.txns.get(&our_id) else {
        return Err(err(404, format!("transaction {path_id} not found")));
    };
    let mut t = t.clone();
    let refund_net = match body.get("items") {
        None | Some(Value::Null) => {
            if t.refunded_net >= t.base && t.lines.iter().all(|l| l.refunded_milli >= l.qty_milli) {
                return Err(err(422, "the transaction is already fully refunded"));
            }
            for l in &mut t.lines {
                l.refunded_milli = l.qty_milli;
                l.refunded_net = l.net;
            }
            t.base - t.refunded_net
        }
        Some(Value::Array(items)) => {
            if t.lines.is_empty() {
                return Err(err(422, "the transaction had no items: refund it whole"));
            }
            if items.is_empty() {
                return Err(err(
                    400,
                    "items must not be empty (omit it for a full refund)",
                ));
            }
            let mut sum = 0;
            for (i, it) in items.iter().enumerate() {
                let r = opt_str(it, "ref")
                    .ok_or_else(|| err(400, format!("items[{i}].ref is required")))?;
                let q = it
                    .get("qty")
                    .and_then(qty_milli)
                    .filter(|q| *q > 0)
                    .ok_or_else(|| {
                        err(
                            400,
                            format!("items[{i}].qty must be > 0, at most 3 decimals"),
                        )
                    })?;
                let line = t
                    .lines
                    .iter_mut()
                    .find(|l| l.item_ref == r)
                    .ok_or_else(|| err(422, format!("item {r} was not in the transaction")))?;
                if line.refunded_milli + q > line.qty_milli {
                    return Err(err(422, format!("cannot refund more of {r} than was sold")));
                }
                line.refunded_milli += q;
                // The refund that empties a line takes its remainder, so rounding never leaks.
                let new_total = if line.refunded_milli == line.qty_milli {
                    line.net
                } else {
                    i64::try_from(
                        i128::from(line.net) * i128::from(line.refunded_milli)
                            / i128::from(line.qty_milli),
                    )
                    .unwrap_or(line.net)
                };
                sum += new_total - line.refunded_net;
                line.refunded_net = new_total;
            }
            sum
        }
        Some(_) => return Err(err(400, "items must be an array")),
    };
    t.refunded_net += refund_net;
    let share = |total: i64| -> i64 {
        if t.base == 0 || t.refunded_net >= t.base {
            total
        } else {
            i64::try_from(i128::from(total) * i128::from(t.refunded_net) / i128::from(t.base))
                .unwrap_or(total)
        }
    };
    let spent_returned = share(t.spent) - t.spent_returned;
    let earned_reversed = share(t.earned) - t.earned_reversed;
    t.spent_returned += spent_returned;
    t.earned_reversed += earned_reversed;
    let ci = inner
        .customers
        .iter()
        .position(|c| c.id == t.customer_id)
        .ok_or_else(|| err(404, "customer not found"))?;
    let balance = inner.customers[ci].balance + spent_returned - earned_reversed;
    inner.customers[ci].balance = balance;
    let answer = json!({"status": 1, "refund_id": refund_id, "transaction_id": t.transaction_id,
                        "earned_reversed": earned_reversed, "spent_returned": spent_returned,
                        "balance": balance});
    inner.ledger.push(json!({
        "seq": inner.ledger.len() + 1, "kind": "refund", "id": t.id,
        "transaction_id": t.transaction_id, "refund_id": refund_id, "customer_id": t.customer_id,
        "spent": -spent_returned, "earned": -earned_reversed,
        "delta": spent_returned - earned_reversed, "balance_after": balance,
        "at": chrono::Utc::now(),
    }));
    inner.refunds.insert(
        refund_id,
        StoredRefund {
            request,
            answer: answer.clone(),
        },
    );
    inner.txns.insert(our_id, t);
    Ok(answer)
}

// ---------------------------------------------------------------- control

async fn ctl_ledger(State(sim): State<Arc<JowiClub>>) -> Json<Value> {
    let inner = sim.lock();
    Json(json!({"count": inner.ledger.len(), "entries": inner.ledger}))
}

async fn ctl_customers(State(sim): State<Arc<JowiClub>>) -> Json<Value> {
    let inner = sim.lock();
    let list: Vec<Value> = inner.customers.iter().map(Customer::to_json).collect();
    Json(json!({"count": list.len(), "customers": list}))
}

#[derive(Deserialize)]
struct LoseReq {
    count: u32,
    #[serde(default)]
    mode: LoseMode,
}

async fn ctl_lose_answers(State(sim): State<Arc<JowiClub>>, body: Bytes) -> Response {
    match serde_json::from_slice::<LoseReq>(&body) {
        Ok(r) => {
            let mut inner = sim.lock();
            inner.lose_answers = r.count;
            inner.lose_mode = r.mode;
            Json(json!({"lose_answers": r.count})).into_response()
        }
        Err(e) => ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

async fn ctl_expire_tokens(State(sim): State<Arc<JowiClub>>) -> Json<Value> {
    let mut inner = sim.lock();
    let past = Instant::now();
    let n = inner.tokens.len();
    for exp in inner.tokens.values_mut() {
        *exp = past;
    }
    Json(json!({"expired": n}))
}

fn ctl_err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

#[derive(Deserialize)]
struct WebhookReq {
    url: String,
    secret: String,
    #[serde(default = "default_event")]
    event: String,
    customer_id: String,
    /// Reuse an id to test that the merchant drops duplicates.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    bad_signature: bool,
    /// The customer changed their name in the app first (any event; `customer.updated` is
    /// the one that carries it).
    #[serde(default)]
    name: Option<String>,
    /// When the change happened (RFC 3339): an earlier time than the last webhook's simulates a
    /// delivery that arrives late, after a newer one. Default: now.
    #[serde(default)]
    time: Option<String>,
    /// The customer changed their phone in the app first.
    #[serde(default)]
    phone: Option<String>,
}

fn default_event() -> String {
    "balance.changed".into()
}

async fn ctl_webhook(State(sim): State<Arc<JowiClub>>, body: Bytes) -> Response {
    let req: WebhookReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    if !matches!(
        req.event.as_str(),
        "balance.changed" | "points.accrued" | "customer.updated"
    ) {
        return ctl_err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "event must be balance.changed, points.accrued or customer.updated",
        );
    }
    let customer = {
        let mut inner = sim.lock();
        match inner.customers.iter_mut().find(|c| c.id == req.customer_id) {
            Some(c) => {
                if let Some(name) = req.name.filter(|n| !n.trim().is_empty()) {
                    c.name = name;
                }
                if let Some(phone) = req.phone.filter(|p| !p.trim().is_empty()) {
                    c.phone = Some(phone);
                }
                c.clone()
            }
            None => return ctl_err(StatusCode::NOT_FOUND, "unknown customer_id"),
        }
    };
    let id = req
        .id
        .unwrap_or_else(|| format!("evt_{}", uuid::Uuid::now_v7().simple()));
    let mut payload = json!({"id": id, "event": req.event, "customer_id": req.customer_id,
                             "balance": customer.balance,
                             "time": req.time.unwrap_or_else(|| chrono::Utc::now().to_rfc3339())});
    // [assumed] A profile change carries the customer as a look-up answers it.
    if req.event == "customer.updated" {
        payload["customer"] = customer.to_json();
    }
    let raw = payload.to_string();
    let mut signature = webhook_signature(&req.secret, raw.as_bytes());
    if req.bad_signature {
        signature = webhook_signature("not-the-secret", raw.as_bytes());
    }
    let client = match crate::payme::outbound_client(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return ctl_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let sent = client
        .post(&req.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("X-Jowi-Signature", &signature)
        .body(raw.clone())
        .send()
        .await;
    match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            let answer = r.text().await.unwrap_or_default();
            Json(
                json!({"delivered": (200..300).contains(&status), "status": status,
                        "answer": answer, "id": id, "body": raw, "signature": signature}),
            )
            .into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"delivered": false, "error": e.to_string(), "id": id, "body": raw})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_matches_vector() {
        assert_eq!(sig(DEMO_API_KEY, DEMO_API_SECRET), "49e70d45d823302");
    }

    #[test]
    fn qty_parsing_is_exact() {
        assert_eq!(qty_milli(&json!(1)), Some(1000));
        assert_eq!(qty_milli(&json!(1.25)), Some(1250));
        assert_eq!(qty_milli(&json!("0.005")), Some(5));
        assert_eq!(qty_milli(&json!(1.2345)), None);
        assert_eq!(qty_milli(&json!(-1)), None);
        assert_eq!(qty_milli(&json!("abc")), None);
    }

    #[test]
    fn phones_match_on_last_nine_digits() {
        let a = Some("+998 (90) 123-45-67".to_string());
        assert!(phone_eq(&a, &Some("998901234567".into())));
        assert!(phone_eq(&a, &Some("901234567".into())));
        assert!(!phone_eq(&a, &Some("901234568".into())));
        assert!(!phone_eq(&Some("".into()), &Some("".into())));
    }

    #[test]
    fn line_discount_is_integer_per_line() {
        let items =
            json!([{"ref": "a", "qty": 3, "price": 3333}, {"ref": "b", "qty": 0.5, "price": 1001}]);
        let lines = price_items(Some(&items), 7).unwrap();
        assert_eq!(lines[0].amount, 9999);
        assert_eq!(lines[0].discount, 699); // 699.93 floored
        assert_eq!(lines[1].amount, 501); // 500.5 rounded half up
        assert_eq!(lines[1].discount, 35);
    }
}
