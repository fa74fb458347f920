//! Click simulator (`protocols/click.md`).
//!
//! SHOP API: Click calls the merchant, so `POST /_control/click/pay` plays Prepare and Complete
//! (form-encoded, md5 `sign_string`) against the merchant's URLs and checks the answers.
//! Merchant API: the merchant calls Click under `/click/v2/merchant/...` with the `Auth` header.
//!
//! Merchant API decisions the protocol file leaves open ([assumed]):
//! - Business errors are HTTP 200 with `{error_code < 0, error_note}`; an auth failure is HTTP 401
//!   with error_code -16; a body that is not JSON is HTTP 400 with -8.
//! - error codes: -8 bad request, -16 auth failed (wrong digest, unknown user, timestamp more
//!   than 300 s away), -5 service not found or not the caller's, -6 invoice/payment not found,
//!   -2 bad amount, -9 payment not completed (cannot reverse or fiscalise), -4 already reversed.
//! - `payment_status`: 0 prepared, 2 paid, -1 failed/cancelled, -2 reversed.
//!   `invoice_status`: 0 pending, 1 paid, -99 deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use md5::{Digest as _, Md5};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::common::{Simulator, SystemState, header};

/// Allowed clock difference for the Merchant API `Auth` timestamp.
const AUTH_WINDOW_SECS: i64 = 300;

/// The fields `sign_string` covers, as the raw strings sent (a Prepare has no prepare id).
pub struct SignFields<'a> {
    pub click_trans_id: &'a str,
    pub service_id: &'a str,
    pub secret_key: &'a str,
    pub merchant_trans_id: &'a str,
    pub merchant_prepare_id: Option<&'a str>,
    pub amount: &'a str,
    pub action: &'a str,
    pub sign_time: &'a str,
}

impl SignFields<'_> {
    /// `md5(click_trans_id + service_id + secret + merchant_trans_id [+ merchant_prepare_id]
    /// + amount + action + sign_time)`, lowercase hex.
    pub fn sign(&self) -> String {
        let mut s = format!(
            "{}{}{}{}",
            self.click_trans_id, self.service_id, self.secret_key, self.merchant_trans_id
        );
        if let Some(p) = self.merchant_prepare_id {
            s.push_str(p);
        }
        s.push_str(self.amount);
        s.push_str(self.action);
        s.push_str(self.sign_time);
        hex::encode(Md5::digest(s.as_bytes()))
    }
}

/// The digest in the Merchant API `Auth` header: `sha1(timestamp + secret_key)`.
pub fn merchant_digest(timestamp: &str, secret: &str) -> String {
    hex::encode(Sha1::digest(format!("{timestamp}{secret}").as_bytes()))
}

/// `"1500.50"` -> 150050 tiyin; at most 2 decimals, no sign.
pub fn parse_amount(s: &str) -> Option<i64> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    int.checked_mul(100)?.checked_add(frac)
}

fn format_amount(tiyin: i64) -> String {
    format!("{}.{:02}", tiyin / 100, tiyin % 100)
}

#[derive(Debug, Clone)]
struct Service {
    service_id: String,
    merchant_id: String,
    secret_key: String,
    merchant_user_id: String,
    prepare_url: String,
    complete_url: String,
}

#[derive(Debug, Clone)]
struct Payment {
    click_trans_id: i64,
    click_paydoc_id: i64,
    service_id: String,
    merchant_trans_id: String,
    amount: i64,
    status: i64,
    merchant_prepare_id: Option<String>,
    merchant_confirm_id: Option<String>,
    created: chrono::DateTime<chrono::Utc>,
    ofd: Option<Value>,
}

impl Payment {
    fn to_json(&self) -> Value {
        json!({
            "click_trans_id": self.click_trans_id, "click_paydoc_id": self.click_paydoc_id,
            "payment_id": self.click_paydoc_id,
            "service_id": self.service_id, "merchant_trans_id": self.merchant_trans_id,
            "amount": self.amount, "payment_status": self.status,
            "merchant_prepare_id": self.merchant_prepare_id,
            "merchant_confirm_id": self.merchant_confirm_id, "created": self.created,
            "ofd": self.ofd,
        })
    }
}

#[derive(Debug, Clone)]
struct Invoice {
    invoice_id: i64,
    service_id: String,
    amount: i64,
    phone_number: String,
    merchant_trans_id: String,
    status: i64,
}

struct Inner {
    services: HashMap<String, Service>,
    payments: Vec<Payment>,
    invoices: Vec<Invoice>,
    next_trans: i64,
    next_invoice: i64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            services: HashMap::new(),
            payments: Vec::new(),
            invoices: Vec::new(),
            // Click ids are large int64s; start high so they never look like our own ids.
            next_trans: 2_274_583,
            next_invoice: 1_001,
        }
    }
}

#[derive(Default)]
pub struct Click {
    state: SystemState,
    inner: Mutex<Inner>,
}

impl Click {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Simulator for Click {
    fn name(&self) -> &'static str {
        "click"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/services/pay", get(pay_page))
            .route("/v2/merchant/invoice/create", post(invoice_create))
            .route(
                "/v2/merchant/invoice/status/{service_id}/{invoice_id}",
                get(invoice_status),
            )
            .route(
                "/v2/merchant/payment/status/{service_id}/{payment_id}",
                get(payment_status),
            )
            .route(
                "/v2/merchant/payment/status_by_mti/{service_id}/{merchant_trans_id}/{date}",
                get(payment_status_by_mti),
            )
            .route(
                "/v2/merchant/payment/reversal/{service_id}/{payment_id}",
                delete(payment_reversal),
            )
            .route(
                "/v2/merchant/payment/ofd_data/submit_items",
                post(submit_items),
            )
            .with_state(self)
    }
    fn reset(&self) {
        *self.lock() = Inner::default();
    }
    /// `{"services": [{service_id, merchant_id, secret_key, merchant_user_id, prepare_url,
    /// complete_url}]}` (ids may be numbers or strings).
    fn seed(&self, data: Value) -> Result<Value, String> {
        let list = match data.get("services") {
            None | Some(Value::Null) => return Ok(json!({"services": []})),
            Some(Value::Array(a)) => a,
            Some(_) => return Err("services must be an array".into()),
        };
        let mut parsed = Vec::new();
        for s in list {
            let get = |k: &str| -> Result<String, String> {
                match s.get(k) {
                    Some(Value::String(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                    Some(Value::Number(n)) => Ok(n.to_string()),
                    _ => Err(format!("services[].{k} is required")),
                }
            };
            let prepare_url = get("prepare_url")?;
            let complete_url = get("complete_url").unwrap_or_else(|_| prepare_url.clone());
            parsed.push(Service {
                service_id: get("service_id")?,
                merchant_id: get("merchant_id")?,
                secret_key: get("secret_key")?,
                merchant_user_id: get("merchant_user_id")?,
                prepare_url,
                complete_url,
            });
        }
        let mut inner = self.lock();
        let ids: Vec<String> = parsed.iter().map(|s| s.service_id.clone()).collect();
        for s in parsed {
            inner.services.insert(s.service_id.clone(), s);
        }
        Ok(json!({"services": ids}))
    }
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/pay", post(ctl_pay))
            .route("/payments", get(ctl_payments))
            .route("/invoices", get(ctl_invoices))
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

/// A parsed pay link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayLink {
    pub service_id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub transaction_param: String,
    pub return_url: Option<String>,
}

/// Parse `https://my.click.uz/services/pay?service_id=..&merchant_id=..&amount=N.NN&...`
/// (any host: the sandbox's own `/click/services/pay` link works too).
pub fn parse_pay_link(url: &str) -> Result<PayLink, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or(url);
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(query).map_err(|_| "the pay link query is malformed")?;
    let get = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{k} is missing from the pay link"))
    };
    let service_id = get("service_id")?;
    let merchant_id = get("merchant_id")?;
    if !service_id.bytes().all(|b| b.is_ascii_digit())
        || !merchant_id.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("service_id and merchant_id must be numbers".into());
    }
    let raw = get("amount")?;
    let amount = parse_amount(&raw)
        .filter(|a| *a > 0)
        .ok_or_else(|| format!("amount {raw} must be soum with at most 2 decimals"))?;
    Ok(PayLink {
        service_id,
        merchant_id,
        amount,
        transaction_param: get("transaction_param")?,
        return_url: q.get("return_url").cloned(),
    })
}

async fn pay_page(State(sim): State<Arc<Click>>, uri: axum::http::Uri) -> Response {
    match parse_pay_link(uri.query().unwrap_or("")) {
        Ok(l) => {
            let known = sim
                .lock()
                .services
                .get(&l.service_id)
                .is_some_and(|s| s.merchant_id == l.merchant_id);
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Click (sandbox)\
                 </title></head><body><h1>Click payment (sandbox)</h1><p>Pay <b>{} UZS</b> \
                 to service <code>{}</code> of merchant <code>{}</code>{}, order \
                 <code>{}</code>.</p><p>No money moves here: the payment is driven with \
                 <code>POST /_control/click/pay</code>.</p></body></html>",
                format_amount(l.amount),
                escape(&l.service_id),
                escape(&l.merchant_id),
                if known {
                    ""
                } else {
                    " (not seeded in the sandbox)"
                },
                escape(&l.transaction_param),
            ))
            .into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Html(format!(
                "<!doctype html><html><body><h1>Invalid Click pay link</h1><p>{}</p></body>\
                 </html>",
                escape(&e)
            )),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------- SHOP API driver

#[derive(Deserialize)]
struct PayReq {
    #[serde(default)]
    pay_url: Option<String>,
    /// Pay an invoice made through `invoice/create` instead of a link.
    #[serde(default)]
    invoice_id: Option<i64>,
    #[serde(default = "default_scenario")]
    scenario: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

fn default_scenario() -> String {
    "pay".into()
}

struct Exchange {
    request: Vec<(String, String)>,
    http_status: Option<u16>,
    answer: Value,
    problem: Option<String>,
}

impl Exchange {
    fn error(&self) -> Option<i64> {
        match self.answer.get("error") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
    }
    fn field(&self, k: &str) -> Option<String> {
        match self.answer.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

async fn post_form(client: &reqwest::Client, url: &str, form: Vec<(String, String)>) -> Exchange {
    match client.post(url).form(&form).send().await {
        Err(e) => Exchange {
            request: form,
            http_status: None,
            answer: Value::Null,
            problem: Some(format!("no answer: {e}")),
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => Exchange {
                    request: form,
                    http_status: Some(status),
                    problem: (status != 200).then(|| format!("HTTP {status}")),
                    answer: v,
                },
                Err(_) => Exchange {
                    request: form,
                    http_status: Some(status),
                    answer: Value::String(text),
                    problem: Some("the answer is not JSON".into()),
                },
            }
        }
    }
}

struct Transcript(Vec<Value>, bool);

impl Transcript {
    fn push(&mut self, step: &str, x: &Exchange, expect: &str, ok: bool) -> bool {
        let ok = ok && x.problem.is_none();
        self.1 &= ok;
        let request: serde_json::Map<String, Value> = x
            .request
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.0.push(
            json!({"step": step, "request": request, "http_status": x.http_status,
                           "answer": x.answer, "expect": expect, "ok": ok,
                           "problem": x.problem}),
        );
        ok
    }
}

/// What one Prepare or Complete sends.
struct Shot<'a> {
    svc: &'a Service,
    click_trans_id: i64,
    click_paydoc_id: i64,
    merchant_trans_id: &'a str,
    amount: &'a str,
    prepare_id: Option<&'a str>,
    error: i64,
    error_note: &'a str,
    bad_sign: bool,
}

fn shop_form(s: &Shot<'_>) -> Vec<(String, String)> {
    let sign_time = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600).expect("UTC+5 is valid"))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let action = if s.prepare_id.is_some() { "1" } else { "0" };
    let ctid = s.click_trans_id.to_string();
    let secret = if s.bad_sign {
        "not-the-secret"
    } else {
        &s.svc.secret_key
    };
    let sign = SignFields {
        click_trans_id: &ctid,
        service_id: &s.svc.service_id,
        secret_key: secret,
        merchant_trans_id: s.merchant_trans_id,
        merchant_prepare_id: s.prepare_id,
        amount: s.amount,
        action,
        sign_time: &sign_time,
    }
    .sign();
    let mut form = vec![
        ("click_trans_id".to_string(), ctid),
        ("service_id".into(), s.svc.service_id.clone()),
        ("click_paydoc_id".into(), s.click_paydoc_id.to_string()),
        ("merchant_trans_id".into(), s.merchant_trans_id.to_string()),
        ("amount".into(), s.amount.to_string()),
        ("action".into(), action.into()),
        ("error".into(), s.error.to_string()),
        ("error_note".into(), s.error_note.to_string()),
        ("sign_time".into(), sign_time),
        ("sign_string".into(), sign),
    ];
    if let Some(p) = s.prepare_id {
        form.insert(4, ("merchant_prepare_id".into(), p.to_string()));
    }
    form
}

fn echoes(x: &Exchange, ctid: i64, mti: &str) -> bool {
    x.field("click_trans_id") == Some(ctid.to_string())
        && x.field("merchant_trans_id").as_deref() == Some(mti)
}

async fn ctl_pay(State(sim): State<Arc<Click>>, body: Bytes) -> Response {
    let req: PayReq = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let (link, invoice) = match (&req.pay_url, req.invoice_id) {
        (Some(url), None) => match parse_pay_link(url) {
            Ok(l) => (l, None),
            Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e),
        },
        (None, Some(id)) => {
            let inner = sim.lock();
            let Some(inv) = inner.invoices.iter().find(|i| i.invoice_id == id) else {
                return ctl_err(StatusCode::NOT_FOUND, format!("invoice {id} not found"));
            };
            if inv.status != 0 {
                return ctl_err(StatusCode::CONFLICT, "the invoice is not pending");
            }
            let merchant_id = inner
                .services
                .get(&inv.service_id)
                .map(|s| s.merchant_id.clone())
                .unwrap_or_default();
            let link = PayLink {
                service_id: inv.service_id.clone(),
                merchant_id,
                amount: inv.amount,
                transaction_param: inv.merchant_trans_id.clone(),
                return_url: None,
            };
            (link, Some(id))
        }
        _ => {
            return ctl_err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "give exactly one of pay_url and invoice_id",
            );
        }
    };
    let svc = match sim.lock().services.get(&link.service_id) {
        Some(s) if s.merchant_id == link.merchant_id => s.clone(),
        Some(_) => {
            return ctl_err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "merchant_id does not own service_id",
            );
        }
        None => {
            return ctl_err(
                StatusCode::NOT_FOUND,
                format!("service {} is not seeded", link.service_id),
            );
        }
    };
    if !matches!(
        req.scenario.as_str(),
        "pay" | "bad_sign" | "fail_debit" | "wrong_amount" | "repeat_complete"
    ) {
        return ctl_err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "scenario must be pay, bad_sign, fail_debit, wrong_amount or repeat_complete",
        );
    }
    let client = match crate::payme::outbound_client(Duration::from_millis(
        req.timeout_ms.unwrap_or(10_000),
    )) {
        Ok(c) => c,
        Err(e) => return ctl_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let (ctid, paydoc) = {
        let mut inner = sim.lock();
        inner.next_trans += 1;
        let ctid = inner.next_trans;
        let paydoc = ctid + 1_000_000;
        inner.payments.push(Payment {
            click_trans_id: ctid,
            click_paydoc_id: paydoc,
            service_id: svc.service_id.clone(),
            merchant_trans_id: link.transaction_param.clone(),
            amount: link.amount,
            status: 0,
            merchant_prepare_id: None,
            merchant_confirm_id: None,
            created: chrono::Utc::now(),
            ofd: None,
        });
        (ctid, paydoc)
    };
    let mti = link.transaction_param.as_str();
    let amount = format_amount(link.amount);
    let wrong_amount = format_amount(link.amount + 100);
    let scenario = req.scenario.as_str();
    let mut t = Transcript(Vec::new(), true);
    let mut final_status = -1;

    let prep_amount = if scenario == "wrong_amount" {
        wrong_amount.as_str()
    } else {
        amount.as_str()
    };
    let prepare = post_form(
        &client,
        &svc.prepare_url,
        shop_form(&Shot {
            svc: &svc,
            click_trans_id: ctid,
            click_paydoc_id: paydoc,
            merchant_trans_id: mti,
            amount: prep_amount,
            prepare_id: None,
            error: 0,
            error_note: "Success",
            bad_sign: scenario == "bad_sign",
        }),
    )
    .await;
    let prepare_id = prepare.field("merchant_prepare_id");
    match scenario {
        "bad_sign" => {
            t.push(
                "prepare with a wrong sign",
                &prepare,
                "error -1",
                prepare.error() == Some(-1),
            );
        }
        "wrong_amount" => {
            t.push(
                "prepare with amount + 1.00",
                &prepare,
                "error -2",
                prepare.error() == Some(-2),
            );
        }
        _ => {
            let ok =
                prepare.error() == Some(0) && prepare_id.is_some() && echoes(&prepare, ctid, mti);
            if t.push(
                "prepare",
                &prepare,
                "error 0, merchant_prepare_id, ids echoed",
                ok,
            ) {
                let (error, note) = if scenario == "fail_debit" {
                    (-5017, "Insufficient funds")
                } else {
                    (0, "Success")
                };
                let complete_form = shop_form(&Shot {
                    svc: &svc,
                    click_trans_id: ctid,
                    click_paydoc_id: paydoc,
                    merchant_trans_id: mti,
                    amount: &amount,
                    prepare_id: prepare_id.as_deref(),
                    error,
                    error_note: note,
                    bad_sign: false,
                });
                let complete = post_form(&client, &svc.complete_url, complete_form).await;
                if scenario == "fail_debit" {
                    t.push(
                        "complete after a failed debit",
                        &complete,
                        "error -9",
                        complete.error() == Some(-9),
                    );
                } else {
                    let ok = complete.error() == Some(0)
                        && complete.field("merchant_confirm_id").is_some()
                        && echoes(&complete, ctid, mti);
                    if t.push("complete", &complete, "error 0, merchant_confirm_id", ok) {
                        final_status = 2;
                        let mut inner = sim.lock();
                        if let Some(p) =
                            inner.payments.iter_mut().find(|p| p.click_trans_id == ctid)
                        {
                            p.merchant_prepare_id = prepare_id.clone();
                            p.merchant_confirm_id = complete.field("merchant_confirm_id");
                        }
                    }
                    if scenario == "repeat_complete" {
                        let again_form = shop_form(&Shot {
                            svc: &svc,
                            click_trans_id: ctid,
                            click_paydoc_id: paydoc,
                            merchant_trans_id: mti,
                            amount: &amount,
                            prepare_id: prepare_id.as_deref(),
                            error: 0,
                            error_note: "Success",
                            bad_sign: false,
                        });
                        let again = post_form(&client, &svc.complete_url, again_form).await;
                        t.push(
                            "complete again",
                            &again,
                            "error -4 (already paid)",
                            again.error() == Some(-4),
                        );
                    }
                }
            }
        }
    }
    {
        let mut inner = sim.lock();
        if let Some(p) = inner.payments.iter_mut().find(|p| p.click_trans_id == ctid) {
            p.status = final_status;
        }
        if final_status == 2
            && let Some(id) = invoice
            && let Some(inv) = inner.invoices.iter_mut().find(|i| i.invoice_id == id)
        {
            inv.status = 1;
        }
    }
    Json(json!({
        "ok": t.1, "scenario": scenario, "service_id": svc.service_id,
        "merchant_trans_id": mti, "amount": link.amount, "click_trans_id": ctid,
        "click_paydoc_id": paydoc, "payment_id": paydoc, "payment_status": final_status,
        "return_url": link.return_url, "transcript": t.0,
    }))
    .into_response()
}

async fn ctl_payments(State(sim): State<Arc<Click>>) -> Json<Value> {
    let inner = sim.lock();
    let list: Vec<Value> = inner.payments.iter().map(Payment::to_json).collect();
    Json(json!({"count": list.len(), "payments": list}))
}

async fn ctl_invoices(State(sim): State<Arc<Click>>) -> Json<Value> {
    let inner = sim.lock();
    let list: Vec<Value> = inner
        .invoices
        .iter()
        .map(|i| {
            json!({"invoice_id": i.invoice_id, "service_id": i.service_id, "amount": i.amount,
                   "phone_number": i.phone_number, "merchant_trans_id": i.merchant_trans_id,
                   "invoice_status": i.status})
        })
        .collect();
    Json(json!({"count": list.len(), "invoices": list}))
}

// ---------------------------------------------------------------- Merchant API

struct MErr {
    http: StatusCode,
    code: i64,
    note: String,
}

fn merr(code: i64, note: impl Into<String>) -> MErr {
    let http = match code {
        -16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::OK,
    };
    MErr {
        http,
        code,
        note: note.into(),
    }
}

impl IntoResponse for MErr {
    fn into_response(self) -> Response {
        (
            self.http,
            Json(json!({"error_code": self.code, "error_note": self.note})),
        )
            .into_response()
    }
}

type MResult = Result<Json<Value>, MErr>;

/// Check the `Auth` header against the service the request is about.
fn auth(inner: &Inner, headers: &HeaderMap, service_id: &str) -> Result<Service, MErr> {
    let value = header(headers, "auth").ok_or_else(|| merr(-16, "Auth header is missing"))?;
    let mut parts = value.trim().splitn(3, ':');
    let (Some(user), Some(digest), Some(ts)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(merr(-16, "Auth must be merchant_user_id:digest:timestamp"));
    };
    let ts_num: i64 = ts
        .parse()
        .ok()
        .filter(|_| ts.len() == 10)
        .ok_or_else(|| merr(-16, "the Auth timestamp must be 10-digit Unix seconds"))?;
    if (chrono::Utc::now().timestamp() - ts_num).abs() > AUTH_WINDOW_SECS {
        return Err(merr(-16, "the Auth timestamp is too far from now"));
    }
    let svc = inner
        .services
        .get(service_id)
        .ok_or_else(|| merr(-5, format!("service {service_id} not found")))?;
    if svc.merchant_user_id != user {
        // Do not tell a stranger whether the service exists.
        return Err(merr(-16, "unknown merchant_user_id for this service"));
    }
    if !digest.eq_ignore_ascii_case(&merchant_digest(ts, &svc.secret_key)) {
        return Err(merr(-16, "wrong digest"));
    }
    Ok(svc.clone())
}

fn json_obj(body: &Bytes) -> Result<Value, MErr> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(MErr {
            http: StatusCode::BAD_REQUEST,
            code: -8,
            note: "the body must be a JSON object".into(),
        }),
    }
}

fn id_str(v: &Value, k: &str) -> Option<String> {
    match v.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

async fn invoice_create(State(sim): State<Arc<Click>>, headers: HeaderMap, body: Bytes) -> MResult {
    let body = json_obj(&body)?;
    let service_id =
        id_str(&body, "service_id").ok_or_else(|| merr(-8, "service_id is required"))?;
    let mut inner = sim.lock();
    auth(&inner, &headers, &service_id)?;
    // Click takes the amount in soum, as a number that may carry 2 decimals.
    let amount = id_str(&body, "amount")
        .and_then(|a| parse_amount(&a))
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            merr(
                -2,
                "amount must be a positive sum in soum, at most 2 decimals",
            )
        })?;
    let phone = id_str(&body, "phone_number")
        .filter(|p| {
            let d: String = p.chars().filter(char::is_ascii_digit).collect();
            d.len() == 12 && d.starts_with("998")
        })
        .ok_or_else(|| merr(-8, "phone_number must be 998XXXXXXXXX"))?;
    let mti = id_str(&body, "merchant_trans_id")
        .ok_or_else(|| merr(-8, "merchant_trans_id is required"))?;
    inner.next_invoice += 1;
    let invoice_id = inner.next_invoice;
    inner.invoices.push(Invoice {
        invoice_id,
        service_id,
        amount,
        phone_number: phone,
        merchant_trans_id: mti,
        status: 0,
    });
    Ok(Json(
        json!({"error_code": 0, "error_note": "Success", "invoice_id": invoice_id}),
    ))
}

fn status_note(status: i64) -> &'static str {
    match status {
        0 => "pending",
        1 => "paid",
        -99 => "deleted",
        _ => "unknown",
    }
}

async fn invoice_status(
    State(sim): State<Arc<Click>>,
    headers: HeaderMap,
    Path((service_id, invoice_id)): Path<(String, String)>,
) -> MResult {
    let inner = sim.lock();
    auth(&inner, &headers, &service_id)?;
    let inv = invoice_id
        .parse::<i64>()
        .ok()
        .and_then(|id| {
            inner
                .invoices
                .iter()
                .find(|i| i.invoice_id == id && i.service_id == service_id)
        })
        .ok_or_else(|| merr(-6, "invoice not found"))?;
    Ok(Json(json!({"error_code": 0, "error_note": "Success",
                   "invoice_status": inv.status, "invoice_status_note": status_note(inv.status)})))
}

fn find_payment(inner: &Inner, service_id: &str, payment_id: &str) -> Option<usize> {
    let id: i64 = payment_id.parse().ok()?;
    inner.payments.iter().position(|p| {
        p.service_id == service_id && (p.click_paydoc_id == id || p.click_trans_id == id)
    })
}

async fn payment_status(
    State(sim): State<Arc<Click>>,
    headers: HeaderMap,
    Path((service_id, payment_id)): Path<(String, String)>,
) -> MResult {
    let inner = sim.lock();
    auth(&inner, &headers, &service_id)?;
    let i = find_payment(&inner, &service_id, &payment_id)
        .ok_or_else(|| merr(-6, "payment not found"))?;
    let p = &inner.payments[i];
    Ok(Json(
        json!({"error_code": 0, "error_note": "Success", "payment_id": p.click_paydoc_id,
                   "payment_status": p.status}),
    ))
}

async fn payment_status_by_mti(
    State(sim): State<Arc<Click>>,
    headers: HeaderMap,
    Path((service_id, mti, _date)): Path<(String, String, String)>,
) -> MResult {
    let inner = sim.lock();
    auth(&inner, &headers, &service_id)?;
    // The newest attempt is the one that counts.
    let p = inner
        .payments
        .iter()
        .rev()
        .find(|p| p.service_id == service_id && p.merchant_trans_id == mti)
        .ok_or_else(|| merr(-6, "payment not found"))?;
    Ok(Json(
        json!({"error_code": 0, "error_note": "Success", "payment_id": p.click_paydoc_id,
                   "merchant_trans_id": p.merchant_trans_id, "payment_status": p.status}),
    ))
}

async fn payment_reversal(
    State(sim): State<Arc<Click>>,
    headers: HeaderMap,
    Path((service_id, payment_id)): Path<(String, String)>,
) -> MResult {
    let mut inner = sim.lock();
    auth(&inner, &headers, &service_id)?;
    let i = find_payment(&inner, &service_id, &payment_id)
        .ok_or_else(|| merr(-6, "payment not found"))?;
    let p = &mut inner.payments[i];
    match p.status {
        2 => {
            p.status = -2;
            Ok(Json(json!({"error_code": 0, "error_note": "Success",
                           "payment_id": p.click_paydoc_id})))
        }
        -2 => Err(merr(-4, "the payment is already reversed")),
        _ => Err(merr(-9, "the payment was not completed")),
    }
}

async fn submit_items(State(sim): State<Arc<Click>>, headers: HeaderMap, body: Bytes) -> MResult {
    let body = json_obj(&body)?;
    let service_id =
        id_str(&body, "service_id").ok_or_else(|| merr(-8, "service_id is required"))?;
    let payment_id =
        id_str(&body, "payment_id").ok_or_else(|| merr(-8, "payment_id is required"))?;
    let mut inner = sim.lock();
    auth(&inner, &headers, &service_id)?;
    let i = find_payment(&inner, &service_id, &payment_id)
        .ok_or_else(|| merr(-6, "payment not found"))?;
    if inner.payments[i].status != 2 {
        return Err(merr(-9, "the payment was not completed"));
    }
    let items = body
        .get("items")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| merr(-8, "items must be a non-empty array"))?;
    let mut total = 0i64;
    for (n, it) in items.iter().enumerate() {
        let name = it.get("Name").and_then(Value::as_str).unwrap_or("");
        if name.trim().is_empty() {
            return Err(merr(-8, format!("items[{n}].Name is required")));
        }
        let spic = it.get("SPIC").and_then(Value::as_str).unwrap_or("");
        if spic.len() != 17 || !spic.bytes().all(|b| b.is_ascii_digit()) {
            return Err(merr(
                -8,
                format!("items[{n}].SPIC must be a 17-digit MXIK code"),
            ));
        }
        for k in ["GoodPrice", "Price", "Amount", "VAT"] {
            if it.get(k).and_then(Value::as_i64).is_none_or(|x| x < 0) {
                return Err(merr(-8, format!("items[{n}].{k} must be an integer >= 0")));
            }
        }
        if let Some(labels) = it.get("Labels")
            && !labels.as_array().is_some_and(|a| {
                a.iter()
                    .all(|l| l.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 21))
            })
        {
            return Err(merr(
                -8,
                format!("items[{n}].Labels must be codes of at most 21 chars"),
            ));
        }
        total = total.saturating_add(it["Price"].as_i64().unwrap_or(0));
    }
    let received = |k: &str| body.get(k).and_then(Value::as_i64).unwrap_or(0);
    let (ecash, cash, card) = (
        received("received_ecash"),
        received("received_cash"),
        received("received_card"),
    );
    let paid = inner.payments[i].amount;
    if ecash != paid {
        return Err(merr(
            -2,
            format!("received_ecash {ecash} must equal the payment amount {paid} tiyin"),
        ));
    }
    if ecash + cash + card != total {
        return Err(merr(
            -2,
            format!(
                "received sums {} do not match the items' Price total {total}",
                ecash + cash + card
            ),
        ));
    }
    inner.payments[i].ofd = Some(body.clone());
    Ok(Json(json!({"error_code": 0, "error_note": "Success"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_sign_vector() {
        let s = SignFields {
            click_trans_id: "2274583",
            service_id: "12345",
            secret_key: "SeCrEtKeY",
            merchant_trans_id: "order-42",
            merchant_prepare_id: None,
            amount: "15000.00",
            action: "0",
            sign_time: "2026-11-28 10:15:00",
        }
        .sign();
        assert_eq!(s, "cf89a93554356fecce56a8f0b5e616a3");
    }

    #[test]
    fn complete_sign_vector() {
        let s = SignFields {
            click_trans_id: "2274583",
            service_id: "12345",
            secret_key: "SeCrEtKeY",
            merchant_trans_id: "order-42",
            merchant_prepare_id: Some("1001"),
            amount: "15000.00",
            action: "1",
            sign_time: "2026-11-28 10:15:07",
        }
        .sign();
        assert_eq!(s, "803d3a6e67a42eb6c1ced02dec97b1c9");
    }

    #[test]
    fn merchant_digest_vector() {
        assert_eq!(
            merchant_digest("1700000000", "SeCrEtKeY"),
            "f46c148ea42cdb3c3640aa3417ddb96f37964b73"
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("15000.00"), Some(1_500_000));
        assert_eq!(parse_amount("1000"), Some(100_000));
        assert_eq!(parse_amount("0.5"), Some(50));
        assert_eq!(parse_amount("1.234"), None);
        assert_eq!(parse_amount("-1"), None);
        assert_eq!(format_amount(150_050), "1500.50");
    }

    #[test]
    fn pay_link() {
        let l = parse_pay_link(
            "https://my.click.uz/services/pay?service_id=12345&merchant_id=678&amount=1500.50\
             &transaction_param=pay-1&return_url=https%3A%2F%2Fshop.uz%2Fok",
        )
        .unwrap();
        assert_eq!(l.amount, 150_050);
        assert_eq!(l.transaction_param, "pay-1");
        assert_eq!(l.return_url.as_deref(), Some("https://shop.uz/ok"));
        assert!(
            parse_pay_link("https://my.click.uz/services/pay?service_id=1&merchant_id=2").is_err()
        );
        assert!(
            parse_pay_link(
                "https://my.click.uz/services/pay?service_id=1&merchant_id=2&amount=1,5&transaction_param=x"
            )
            .is_err()
        );
    }
}
