//! Payme (Paycom) Merchant API simulator: Payme calls the merchant, so this module is mostly a
//! driver. The control API decodes a checkout link, then plays Payme's JSON-RPC calls against
//! the merchant's endpoint and checks every answer against `protocols/payme.md`.
//!
//! Control routes (under `/_control/payme`):
//! - `POST /pay {checkout_url, scenario, timeout_ms?}` — scenarios `pay`, `cancel_after_create`,
//!   `cancel_after_perform`, `timeout`, `retry`, `wrong_amount`, `bad_auth`; answers
//!   `{ok, scenario, merchant_id, account, amount, transaction_id, transcript:[...]}`.
//! - `POST /call {merchant_id, method, params, auth?: "wrong"|"none"}` — one RPC.
//! - `POST /statement {merchant_id, from, to}` — GetStatement, plus which transactions this
//!   sandbox created in the range but the merchant did not list.
//! - `GET /transactions` — what the sandbox created and the last state the merchant reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{Simulator, SystemState};

/// Payme's timeout: a transaction older than this cannot be created or performed.
pub const TIMEOUT_MS: i64 = 43_200_000;

/// An HTTP client for calls the sandbox makes to merchants (Payme, Click, JOWi webhooks).
/// reqwest is built without a bundled TLS provider, so install ring once before building.
pub(crate) fn outbound_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// A decoded checkout link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub merchant_id: String,
    /// `ac.*` fields without the prefix.
    pub account: Vec<(String, String)>,
    pub amount: i64,
    pub lang: Option<String>,
    pub callback: Option<String>,
    pub callback_timeout_ms: Option<i64>,
}

/// Parse `https://checkout.paycom.uz/<base64>` (or the test host, or the bare base64).
pub fn parse_checkout(url: &str) -> Result<Checkout, String> {
    let url = url.trim();
    let b64 = if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        let (host, path) = rest.split_once('/').ok_or("the link has no path")?;
        let path = path.strip_prefix("payme/").unwrap_or(path);
        if !matches!(host, "checkout.paycom.uz" | "test.paycom.uz")
            && !host.starts_with("127.0.0.1")
            && !host.starts_with("localhost")
        {
            return Err(format!("{host} is not a Payme checkout host"));
        }
        path
    } else {
        url
    };
    decode_checkout_path(b64)
}

/// Decode the base64 part of a checkout link and validate its fields.
pub fn decode_checkout_path(b64: &str) -> Result<Checkout, String> {
    let b64 = b64.trim_end_matches('/');
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
        .map_err(|_| "the checkout path is not base64".to_string())?;
    let text = String::from_utf8(raw).map_err(|_| "the checkout string is not UTF-8")?;
    let mut merchant_id = None;
    let mut amount = None;
    let mut account = Vec::new();
    let (mut lang, mut callback, mut ct) = (None, None, None);
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not key=value"))?;
        match k {
            "m" => merchant_id = Some(v.to_string()),
            "a" => {
                amount = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|a| *a > 0)
                        .ok_or_else(|| format!("a={v} is not a positive amount in tiyin"))?,
                )
            }
            "l" if matches!(v, "ru" | "uz" | "en") => lang = Some(v.to_string()),
            "l" => return Err(format!("l={v} must be ru, uz or en")),
            "c" => callback = Some(v.to_string()),
            "ct" => {
                ct = Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("ct={v} is not milliseconds"))?,
                )
            }
            "cr" => {}
            _ => match k.strip_prefix("ac.") {
                Some(field) if !field.is_empty() => account.push((field.into(), v.into())),
                _ => return Err(format!("unknown checkout parameter `{k}`")),
            },
        }
    }
    let merchant_id = merchant_id
        .filter(|m| !m.is_empty())
        .ok_or("m (merchant id) is missing")?;
    let amount = amount.ok_or("a (amount in tiyin) is missing")?;
    if account.is_empty() {
        return Err("no ac.* account field (e.g. ac.order_id)".into());
    }
    Ok(Checkout {
        merchant_id,
        account,
        amount,
        lang,
        callback,
        callback_timeout_ms: ct,
    })
}

/// The base64 path of a checkout link (what Savdo puts after the host).
pub fn encode_checkout(merchant_id: &str, order_id: &str, amount: i64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("m={merchant_id};ac.order_id={order_id};a={amount}"))
}

#[derive(Debug, Clone)]
struct Merchant {
    key: String,
    endpoint: String,
}

#[derive(Default)]
struct Inner {
    merchants: HashMap<String, Merchant>,
    /// Transactions the sandbox created, in order; each is a JSON object.
    transactions: Vec<Value>,
}

#[derive(Default)]
pub struct Payme {
    state: SystemState,
    inner: Mutex<Inner>,
    rpc_id: AtomicI64,
}

impl Payme {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn merchant(&self, id: &str) -> Result<Merchant, Box<Response>> {
        self.lock().merchants.get(id).cloned().ok_or_else(|| {
            Box::new(ctl_err(
                StatusCode::NOT_FOUND,
                format!("merchant {id} is not seeded (POST /_control/payme/seed)"),
            ))
        })
    }

    /// Remember what the merchant said about a transaction we sent.
    fn note(&self, merchant_id: &str, method: &str, params: &Value, answer: &Value) {
        let Some(id) = params.get("id").and_then(Value::as_str) else {
            return;
        };
        let mut inner = self.lock();
        let pos = inner.transactions.iter().position(|t| t["id"] == id);
        let idx = match (pos, method) {
            (Some(i), _) => i,
            (None, "CreateTransaction") => {
                inner.transactions.push(json!({
                    "id": id, "merchant_id": merchant_id, "time": params["time"],
                    "amount": params["amount"], "account": params["account"],
                    "state": null, "create_time": 0, "perform_time": 0, "cancel_time": 0,
                    "reason": null, "transaction": null, "last_error": null,
                }));
                inner.transactions.len() - 1
            }
            _ => return,
        };
        let t = &mut inner.transactions[idx];
        if let Some(r) = answer.get("result").and_then(Value::as_object) {
            for k in [
                "state",
                "create_time",
                "perform_time",
                "cancel_time",
                "transaction",
                "reason",
            ] {
                if let Some(v) = r.get(k) {
                    t[k] = v.clone();
                }
            }
            t["last_error"] = Value::Null;
        } else if let Some(e) = answer.get("error") {
            t["last_error"] = e.get("code").cloned().unwrap_or(Value::Null);
        }
    }
}

impl Simulator for Payme {
    fn name(&self) -> &'static str {
        "payme"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/{*checkout}", get(checkout_page))
            .with_state(self)
    }
    fn reset(&self) {
        *self.lock() = Inner::default();
    }
    /// `{"merchants": [{"merchant_id", "key", "endpoint"}]}`.
    fn seed(&self, data: Value) -> Result<Value, String> {
        let list = match data.get("merchants") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err("merchants must be an array".into()),
        };
        let mut parsed = Vec::new();
        for m in &list {
            let get = |k: &str| {
                m.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| format!("merchants[].{k} is required"))
            };
            let endpoint = get("endpoint")?;
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                return Err(format!("endpoint {endpoint} must be an http(s) URL"));
            }
            parsed.push((
                get("merchant_id")?,
                Merchant {
                    key: get("key")?,
                    endpoint,
                },
            ));
        }
        let mut inner = self.lock();
        let ids: Vec<String> = parsed.iter().map(|(id, _)| id.clone()).collect();
        inner.merchants.extend(parsed);
        Ok(json!({"merchants": ids}))
    }
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/pay", post(ctl_pay))
            .route("/call", post(ctl_call))
            .route("/statement", post(ctl_statement))
            .route("/transactions", get(ctl_transactions))
            .with_state(self)
    }
    fn state(&self) -> &SystemState {
        &self.state
    }
}

fn ctl_err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn soum(tiyin: i64) -> String {
    format!("{}.{:02}", tiyin / 100, (tiyin % 100).abs())
}

async fn checkout_page(State(sim): State<Arc<Payme>>, Path(b64): Path<String>) -> Response {
    match decode_checkout_path(&b64) {
        Ok(c) => {
            let known = sim.lock().merchants.contains_key(&c.merchant_id);
            let account: String = c
                .account
                .iter()
                .map(|(k, v)| format!("<li>{}: {}</li>", escape(k), escape(v)))
                .collect();
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Payme checkout \
                 (sandbox)</title></head><body><h1>Payme checkout (sandbox)</h1>\
                 <p>Pay <b>{} UZS</b> ({} tiyin) to merchant <code>{}</code>{}.</p>\
                 <ul>{account}</ul><p>No money moves here: the payment is driven with \
                 <code>POST /_control/payme/pay</code>.</p></body></html>",
                soum(c.amount),
                c.amount,
                escape(&c.merchant_id),
                if known {
                    ""
                } else {
                    " (not seeded in the sandbox)"
                },
            ))
            .into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(format!(
                "<!doctype html><html><body><h1>Invalid Payme checkout link</h1><p>{}</p>\
                 </body></html>",
                escape(&e)
            )),
        )
            .into_response(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Right,
    Wrong,
    None,
}

/// One JSON-RPC exchange as the transcript shows it.
struct Rpc {
    request: Value,
    http_status: Option<u16>,
    answer: Value,
    error: Option<String>,
}

impl Rpc {
    fn result(&self) -> Option<&Value> {
        self.answer.get("result")
    }
    fn error_code(&self) -> Option<i64> {
        self.answer
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
    }
}

async fn rpc(
    sim: &Payme,
    client: &reqwest::Client,
    merchant_id: &str,
    m: &Merchant,
    method: &str,
    params: Value,
    auth: Auth,
) -> Rpc {
    let id = sim.rpc_id.fetch_add(1, Ordering::Relaxed) + 1;
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let mut builder = client.post(&m.endpoint).json(&request);
    let basic = |key: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("Paycom:{key}"))
        )
    };
    match auth {
        Auth::Right => builder = builder.header("Authorization", basic(&m.key)),
        Auth::Wrong => builder = builder.header("Authorization", basic("wrong-key")),
        Auth::None => {}
    }
    let out = match builder.send().await {
        Err(e) => Rpc {
            request,
            http_status: None,
            answer: Value::Null,
            error: Some(format!("no answer: {e}")),
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => {
                    let mut error = None;
                    if status != 200 {
                        error = Some(format!("HTTP {status}: Payme expects 200 even for errors"));
                    } else if v.get("id") != Some(&json!(id)) {
                        error = Some("the answer's id is not the request's id".into());
                    } else if v.get("result").is_some() == v.get("error").is_some() {
                        error = Some("the answer needs exactly one of result and error".into());
                    }
                    Rpc {
                        request,
                        http_status: Some(status),
                        answer: v,
                        error,
                    }
                }
                Err(_) => Rpc {
                    request,
                    http_status: Some(status),
                    answer: Value::String(text),
                    error: Some("the answer is not JSON".into()),
                },
            }
        }
    };
    sim.note(merchant_id, method, &params_of(&out.request), &out.answer);
    out
}

fn params_of(req: &Value) -> Value {
    req.get("params").cloned().unwrap_or(Value::Null)
}

/// A Payme transaction id: 24 hex chars shaped like a Mongo ObjectId (time + random).
fn payme_id() -> String {
    let secs = chrono::Utc::now().timestamp() as u32;
    format!("{:08x}{}", secs, hex::encode(rand::random::<[u8; 8]>()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Collects the exchanges of a scenario and whether each met the protocol.
struct Transcript(Vec<Value>, bool);

impl Transcript {
    fn push(&mut self, step: &str, r: &Rpc, expect: &str, ok: bool) -> bool {
        let ok = ok && r.error.is_none();
        self.1 &= ok;
        self.0.push(json!({
            "step": step, "method": r.request["method"], "request": r.request,
            "http_status": r.http_status, "answer": r.answer, "expect": expect, "ok": ok,
            "problem": r.error,
        }));
        ok
    }
}

fn state_is(r: &Rpc, state: i64) -> bool {
    r.result()
        .and_then(|v| v.get("state"))
        .and_then(Value::as_i64)
        == Some(state)
}

fn time_positive(r: &Rpc, field: &str) -> bool {
    r.result()
        .and_then(|v| v.get(field))
        .and_then(Value::as_i64)
        .is_some_and(|t| t > 0)
}

fn has_transaction(r: &Rpc) -> bool {
    r.result()
        .and_then(|v| v.get("transaction"))
        .is_some_and(|t| t.is_string() || t.is_number())
}

#[derive(Deserialize)]
struct PayReq {
    checkout_url: String,
    #[serde(default = "default_scenario")]
    scenario: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn default_scenario() -> String {
    "pay".into()
}

async fn ctl_pay(State(sim): State<Arc<Payme>>, body: Bytes) -> Response {
    let req: PayReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let checkout = match parse_checkout(&req.checkout_url) {
        Ok(c) => c,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let m = match sim.merchant(&checkout.merchant_id) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let client = match outbound_client(Duration::from_millis(req.timeout_ms.unwrap_or(10_000))) {
        Ok(c) => c,
        Err(e) => return ctl_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let account: serde_json::Map<String, Value> = checkout
        .account
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let account = Value::Object(account);
    let amount = checkout.amount;
    let mid = checkout.merchant_id.as_str();
    let id = payme_id();
    let mut t = Transcript(Vec::new(), true);
    let call = |method: &'static str, params: Value, auth: Auth| {
        let (sim, client, m) = (&sim, &client, &m);
        async move { rpc(sim, client, mid, m, method, params, auth).await }
    };
    let check_params = json!({"amount": amount, "account": account});
    let create_params =
        |time: i64| json!({"id": id, "time": time, "amount": amount, "account": account});

    match req.scenario.as_str() {
        "pay" | "cancel_after_create" | "cancel_after_perform" | "retry" => {
            let repeat = req.scenario == "retry";
            let r = call("CheckPerformTransaction", check_params.clone(), Auth::Right).await;
            let allowed = r
                .result()
                .and_then(|v| v.get("allow"))
                .and_then(Value::as_bool)
                == Some(true);
            if !t.push("check", &r, "result.allow = true", allowed) {
                return finish(&req.scenario, &checkout, &id, t);
            }
            if repeat {
                let again =
                    call("CheckPerformTransaction", check_params.clone(), Auth::Right).await;
                let same = again.result() == r.result();
                t.push(
                    "check again",
                    &again,
                    "the same result as the first check",
                    same,
                );
            }
            let create = call("CreateTransaction", create_params(now_ms()), Auth::Right).await;
            let ok = state_is(&create, 1)
                && has_transaction(&create)
                && time_positive(&create, "create_time");
            if !t.push("create", &create, "state 1, transaction, create_time", ok) {
                return finish(&req.scenario, &checkout, &id, t);
            }
            if repeat {
                let again =
                    call("CreateTransaction", params_of(&create.request), Auth::Right).await;
                let same = again.result() == create.result();
                t.push(
                    "create again",
                    &again,
                    "the same result as the first create",
                    same,
                );
            }
            if req.scenario == "cancel_after_create" {
                let c = call(
                    "CancelTransaction",
                    json!({"id": id, "reason": 3}),
                    Auth::Right,
                )
                .await;
                let ok = state_is(&c, -1) && time_positive(&c, "cancel_time");
                t.push("cancel", &c, "state -1, cancel_time", ok);
                let chk = call("CheckTransaction", json!({"id": id}), Auth::Right).await;
                let reason = chk
                    .result()
                    .and_then(|v| v.get("reason"))
                    .and_then(Value::as_i64);
                t.push(
                    "check transaction",
                    &chk,
                    "state -1, reason 3",
                    state_is(&chk, -1) && reason == Some(3),
                );
                return finish(&req.scenario, &checkout, &id, t);
            }
            let perform = call("PerformTransaction", json!({"id": id}), Auth::Right).await;
            let ok = state_is(&perform, 2) && time_positive(&perform, "perform_time");
            if !t.push("perform", &perform, "state 2, perform_time", ok) {
                return finish(&req.scenario, &checkout, &id, t);
            }
            if repeat {
                let again = call("PerformTransaction", json!({"id": id}), Auth::Right).await;
                let same = again.result() == perform.result();
                t.push(
                    "perform again",
                    &again,
                    "the same result as the first perform",
                    same,
                );
            }
            if req.scenario == "cancel_after_perform" {
                let c = call(
                    "CancelTransaction",
                    json!({"id": id, "reason": 5}),
                    Auth::Right,
                )
                .await;
                // A merchant may refuse to cancel a fulfilled order: -31007 is also correct.
                let ok = (state_is(&c, -2) && time_positive(&c, "cancel_time"))
                    || c.error_code() == Some(-31007);
                t.push(
                    "cancel",
                    &c,
                    "state -2 with cancel_time, or error -31007",
                    ok,
                );
                if repeat || ok {
                    let chk = call("CheckTransaction", json!({"id": id}), Auth::Right).await;
                    let expect = if c.error_code() == Some(-31007) {
                        2
                    } else {
                        -2
                    };
                    t.push(
                        "check transaction",
                        &chk,
                        "the state the cancel left",
                        state_is(&chk, expect),
                    );
                }
                return finish(&req.scenario, &checkout, &id, t);
            }
            let chk = call("CheckTransaction", json!({"id": id}), Auth::Right).await;
            let ok = state_is(&chk, 2) && time_positive(&chk, "perform_time");
            t.push("check transaction", &chk, "state 2 with perform_time", ok);
            if repeat {
                let again = call("CheckTransaction", json!({"id": id}), Auth::Right).await;
                t.push(
                    "check again",
                    &again,
                    "the same answer",
                    again.result() == chk.result(),
                );
            }
        }
        "timeout" => {
            let r = call("CheckPerformTransaction", check_params.clone(), Auth::Right).await;
            t.push("check", &r, "any valid answer", true);
            let old = now_ms() - 13 * 3600 * 1000;
            let create = call("CreateTransaction", create_params(old), Auth::Right).await;
            t.push(
                "create 13 h ago",
                &create,
                "error -31008",
                create.error_code() == Some(-31008),
            );
            let chk = call("CheckTransaction", json!({"id": id}), Auth::Right).await;
            let reason = chk
                .result()
                .and_then(|v| v.get("reason"))
                .and_then(Value::as_i64);
            let ok = chk.error_code() == Some(-31003) || (state_is(&chk, -1) && reason == Some(4));
            t.push(
                "check transaction",
                &chk,
                "error -31003, or state -1 with reason 4",
                ok,
            );
        }
        "wrong_amount" => {
            let wrong = json!({"amount": amount + 100, "account": account});
            let r = call("CheckPerformTransaction", wrong, Auth::Right).await;
            t.push(
                "check with amount + 100",
                &r,
                "error -31001",
                r.error_code() == Some(-31001),
            );
            let params =
                json!({"id": id, "time": now_ms(), "amount": amount + 100, "account": account});
            let c = call("CreateTransaction", params, Auth::Right).await;
            t.push(
                "create with amount + 100",
                &c,
                "error -31001",
                c.error_code() == Some(-31001),
            );
        }
        "bad_auth" => {
            let r = call("CheckPerformTransaction", check_params.clone(), Auth::Wrong).await;
            t.push(
                "check with a wrong key",
                &r,
                "error -32504",
                r.error_code() == Some(-32504),
            );
            let r = call("CheckPerformTransaction", check_params.clone(), Auth::None).await;
            t.push(
                "check without auth",
                &r,
                "error -32504",
                r.error_code() == Some(-32504),
            );
        }
        other => {
            return ctl_err(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "unknown scenario {other}: pay, cancel_after_create, cancel_after_perform, \
                     timeout, retry, wrong_amount or bad_auth"
                ),
            );
        }
    }
    finish(&req.scenario, &checkout, &id, t)
}

fn finish(scenario: &str, c: &Checkout, id: &str, t: Transcript) -> Response {
    let account: serde_json::Map<String, Value> = c
        .account
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Json(json!({
        "ok": t.1, "scenario": scenario, "merchant_id": c.merchant_id, "account": account,
        "amount": c.amount, "transaction_id": id, "transcript": t.0,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct CallReq {
    merchant_id: String,
    method: String,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    auth: Option<String>,
}

async fn ctl_call(State(sim): State<Arc<Payme>>, body: Bytes) -> Response {
    let req: CallReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let auth = match req.auth.as_deref() {
        None | Some("right") => Auth::Right,
        Some("wrong") => Auth::Wrong,
        Some("none") => Auth::None,
        Some(o) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, format!("auth {o}?")),
    };
    let m = match sim.merchant(&req.merchant_id) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let client = match outbound_client(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return ctl_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let r = rpc(
        &sim,
        &client,
        &req.merchant_id,
        &m,
        &req.method,
        req.params.clone(),
        auth,
    )
    .await;
    // The merchant accepted a new key: Payme uses it from now on.
    if req.method == "ChangePassword"
        && auth == Auth::Right
        && r.result().and_then(|v| v.get("success")) == Some(&json!(true))
        && let Some(p) = req.params.get("password").and_then(Value::as_str)
        && let Some(mm) = sim.lock().merchants.get_mut(&req.merchant_id)
    {
        mm.key = p.to_string();
    }
    Json(
        json!({"request": r.request, "http_status": r.http_status, "answer": r.answer,
                "problem": r.error}),
    )
    .into_response()
}

#[derive(Deserialize)]
struct StatementReq {
    merchant_id: String,
    from: i64,
    to: i64,
}

async fn ctl_statement(State(sim): State<Arc<Payme>>, body: Bytes) -> Response {
    let req: StatementReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let m = match sim.merchant(&req.merchant_id) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let client = match outbound_client(Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return ctl_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let params = json!({"from": req.from, "to": req.to});
    let r = rpc(
        &sim,
        &client,
        &req.merchant_id,
        &m,
        "GetStatement",
        params,
        Auth::Right,
    )
    .await;
    let listed: Vec<String> = r
        .result()
        .and_then(|v| v.get("transactions"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // Only transactions the merchant acknowledged (it answered with a create_time) count.
    let missing: Vec<String> = sim
        .lock()
        .transactions
        .iter()
        .filter(|t| t["merchant_id"] == req.merchant_id.as_str())
        .filter(|t| t["create_time"].as_i64().is_some_and(|c| c > 0))
        .filter(|t| {
            t["time"]
                .as_i64()
                .is_some_and(|tm| tm >= req.from && tm <= req.to)
        })
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .filter(|id| !listed.contains(id))
        .collect();
    let ok = r.error.is_none() && r.result().is_some() && missing.is_empty();
    Json(
        json!({"ok": ok, "request": r.request, "http_status": r.http_status,
                "answer": r.answer, "problem": r.error, "missing": missing}),
    )
    .into_response()
}

async fn ctl_transactions(State(sim): State<Arc<Payme>>) -> Json<Value> {
    let inner = sim.lock();
    Json(json!({"count": inner.transactions.len(), "transactions": inner.transactions}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_vector() {
        let b64 = encode_checkout("587f72c72cac0d162c722ae2", "197", 500);
        assert_eq!(
            b64,
            "bT01ODdmNzJjNzJjYWMwZDE2MmM3MjJhZTI7YWMub3JkZXJfaWQ9MTk3O2E9NTAw"
        );
        let c = parse_checkout(&format!("https://checkout.paycom.uz/{b64}")).unwrap();
        assert_eq!(c.merchant_id, "587f72c72cac0d162c722ae2");
        assert_eq!(c.account, vec![("order_id".to_string(), "197".to_string())]);
        assert_eq!(c.amount, 500);
        assert!(parse_checkout(&format!("https://test.paycom.uz/{b64}")).is_ok());
    }

    #[test]
    fn checkout_rejects_bad_strings() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(decode_checkout_path(&enc("m=abc;ac.order_id=1")).is_err());
        assert!(decode_checkout_path(&enc("m=abc;ac.order_id=1;a=-5")).is_err());
        assert!(decode_checkout_path(&enc("m=abc;ac.order_id=1;a=5.5")).is_err());
        assert!(decode_checkout_path(&enc("m=abc;a=5")).is_err());
        assert!(decode_checkout_path(&enc("m=abc;ac.order_id=1;a=5;l=de")).is_err());
        assert!(decode_checkout_path(&enc("m=abc;ac.order_id=1;a=5;zz=1")).is_err());
        assert!(decode_checkout_path("!!!").is_err());
        assert!(parse_checkout("https://evil.example/bT0x").is_err());
        let ok = decode_checkout_path(&enc("m=abc;ac.order_id=1;a=5;l=uz;c=https://x/y;ct=500"))
            .unwrap();
        assert_eq!(ok.lang.as_deref(), Some("uz"));
        assert_eq!(ok.callback_timeout_ms, Some(500));
    }

    #[test]
    fn payme_ids_are_24_hex() {
        let id = payme_id();
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
