//! Simulator of the ATOL web server (JSON tasks) in front of a simulated fiscal printer.
//!
//! Protocol, under `/atol`:
//! - `POST /api/v2/requests` `{"uuid", "request": [{"type": "sell" | "sellReturn" | "openShift" |
//!   "closeShift" | "reportX", "operator": {"name"}, "items": [...], "payments": [...],
//!   "total"}]}` -> 201 `{"uuid"}`; a uuid already posted -> 409 and is not executed again.
//! - `GET /api/v2/requests/{uuid}` -> `{"results": [{"status": "inProgress" | "ready" | "error",
//!   "errorCode", "errorDescription", "result": {"fiscalParams": {"terminalId",
//!   "fiscalReceiptNumber", "fiscalDocumentSign", "fiscalDocumentDateTime", "shiftNumber",
//!   "fnsUrl", "total"}, "counters": {"sellSum", "sellReturnSum", "receipts"}}}]}`; unknown -> 404.
//! - `POST /api/v2/operations/queryDeviceInfo` -> `{"deviceInfo": {"modelName", "serial",
//!   "terminalId", "paperPresent"}}`; `POST /api/v2/operations/queryShiftStatus` ->
//!   `{"shiftStatus": {"state": "closed" | "opened" | "expired", "number", "openedAt"}}`.
//!
//! Error codes [assumed, as the gateway reads them]: 44 no paper, 67 shift closed, 68 shift
//! already open, 69 shift over 24 hours.
//!
//! Control, under `/_control/atol`:
//! - `POST seed` with any of `{"terminal_id": "UZ…", "paper": false, "fail_after_print": N,
//!   "hang_after_print": N, "print_ms": 200, "shift_opened_hours_ago": 25}`.
//!   `fail_after_print`: the next N documents are printed and recorded, then the HTTP answer is a
//!   500 (the client cannot know it printed). `hang_after_print`: the same, but the answer never
//!   comes (the client times out, or is killed while waiting). `print_ms`: tasks run in the
//!   background and stay `inProgress` this long. `shift_opened_hours_ago`: opens a shift that
//!   started that many hours ago.
//! - `GET printed` -> `{"count", "documents": [{"uuid", "kind", "receipt_no", "shift_no",
//!   "total", "fiscal_sign", "date_time", "qr_url", "at"}]}`: every document printed, which tests
//!   count to prove nothing printed twice.
//!
//! Offline and slow devices are the common `down` and `latency_ms` faults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Simulator, SystemState};

/// How long a "hung" answer is held: far beyond any client timeout.
const HANG: Duration = Duration::from_secs(600);

fn tashkent() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"))
}

/// Tiyin from a JSON decimal of sum (`123.45` or `"123.45"`), exactly.
pub(crate) fn tiyin(v: Option<&Value>) -> Option<i64> {
    let text = match v? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let (neg, digits) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let v =
        int.parse::<i64>().ok()?.checked_mul(100)? + format!("{frac:0<2}").parse::<i64>().ok()?;
    Some(if neg { -v } else { v })
}

/// Tiyin as a JSON number of sum (the device's own wire format).
pub(crate) fn sum_json(tiyin: i64) -> Value {
    let abs = tiyin.unsigned_abs();
    let sign = if tiyin < 0 { "-" } else { "" };
    serde_json::from_str(&format!("{sign}{}.{:02}", abs / 100, abs % 100)).unwrap_or(Value::Null)
}

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    Sale,
    Refund,
    OpenShift,
    CloseShift,
    XReport,
}

/// Why the printer refused a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoPaper,
    ShiftClosed,
    ShiftOpen,
    ShiftExpired,
}

/// What the printer does after printing, per the injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPrint {
    Answer,
    Fail,
    Hang,
}

/// A document the printer printed.
#[derive(Debug, Clone, Serialize)]
pub struct Printed {
    pub uuid: String,
    pub kind: DocKind,
    pub receipt_no: u64,
    pub shift_no: u32,
    pub total: i64,
    pub fiscal_sign: String,
    /// YYYYMMDDHHMMSS, Tashkent time.
    pub date_time: String,
    pub qr_url: String,
    /// Shift counters after this document (X and Z reports show them).
    #[serde(skip)]
    pub shift_sales: i64,
    #[serde(skip)]
    pub shift_refunds: i64,
    #[serde(skip)]
    pub shift_receipts: u32,
    #[serde(skip)]
    pub local_time: DateTime<FixedOffset>,
    pub at: DateTime<Utc>,
}

struct PrinterState {
    terminal_id: String,
    paper: bool,
    fail_after_print: u32,
    hang_after_print: u32,
    shift_open: bool,
    shift_no: u32,
    shift_opened_at: DateTime<Utc>,
    receipt_no: u64,
    sales: i64,
    refunds: i64,
    receipts: u32,
    printed: Vec<Printed>,
}

impl PrinterState {
    fn new(terminal_id: &str) -> Self {
        Self {
            terminal_id: terminal_id.into(),
            paper: true,
            fail_after_print: 0,
            hang_after_print: 0,
            shift_open: false,
            shift_no: 0,
            shift_opened_at: Utc::now(),
            receipt_no: 0,
            sales: 0,
            refunds: 0,
            receipts: 0,
            printed: Vec::new(),
        }
    }
}

/// A simulated fiscal printer with paper, a shift, counters and the faults a real one has.
/// Shared by the ATOL and KKMServer simulators.
pub struct Printer {
    default_terminal: &'static str,
    inner: Mutex<PrinterState>,
}

impl Printer {
    pub fn new(default_terminal: &'static str) -> Self {
        Self {
            default_terminal,
            inner: Mutex::new(PrinterState::new(default_terminal)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PrinterState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reset(&self) {
        *self.lock() = PrinterState::new(self.default_terminal);
    }

    pub fn terminal_id(&self) -> String {
        self.lock().terminal_id.clone()
    }

    pub fn paper(&self) -> bool {
        self.lock().paper
    }

    /// `(open, number, opened_at, expired)`.
    pub fn shift(&self) -> (bool, u32, DateTime<Utc>, bool) {
        let s = self.lock();
        let expired = s.shift_open && Utc::now() - s.shift_opened_at >= chrono::Duration::hours(24);
        (s.shift_open, s.shift_no, s.shift_opened_at, expired)
    }

    pub fn printed(&self) -> Vec<Printed> {
        self.lock().printed.clone()
    }

    /// Applies the common seed keys; returns the printer's state.
    pub fn seed(&self, data: &Value) -> Result<Value, String> {
        let mut s = self.lock();
        if let Some(t) = data.get("terminal_id") {
            s.terminal_id = t
                .as_str()
                .ok_or("terminal_id must be a string")?
                .to_string();
        }
        if let Some(p) = data.get("paper") {
            s.paper = p.as_bool().ok_or("paper must be true or false")?;
        }
        let count = |key: &str| -> Result<Option<u32>, String> {
            match data.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| format!("{key} must be a count")),
            }
        };
        if let Some(n) = count("fail_after_print")? {
            s.fail_after_print = n;
        }
        if let Some(n) = count("hang_after_print")? {
            s.hang_after_print = n;
        }
        if let Some(h) = count("shift_opened_hours_ago")? {
            if !s.shift_open {
                s.shift_no += 1;
                s.sales = 0;
                s.refunds = 0;
                s.receipts = 0;
            }
            s.shift_open = true;
            s.shift_opened_at = Utc::now() - chrono::Duration::hours(i64::from(h));
        }
        Ok(json!({
            "terminal_id": s.terminal_id,
            "paper": s.paper,
            "fail_after_print": s.fail_after_print,
            "hang_after_print": s.hang_after_print,
            "shift_open": s.shift_open,
            "shift_no": s.shift_no,
        }))
    }

    /// Prints one document, or refuses it as a real printer would.
    pub fn print(
        &self,
        uuid: &str,
        kind: DocKind,
        total: i64,
    ) -> Result<(Printed, AfterPrint), Refusal> {
        let mut s = self.lock();
        let now = Utc::now();
        if !s.paper {
            return Err(Refusal::NoPaper);
        }
        match kind {
            DocKind::OpenShift => {
                if s.shift_open {
                    return Err(Refusal::ShiftOpen);
                }
                s.shift_open = true;
                s.shift_no += 1;
                s.shift_opened_at = now;
                s.sales = 0;
                s.refunds = 0;
                s.receipts = 0;
            }
            DocKind::CloseShift | DocKind::XReport => {
                if !s.shift_open {
                    return Err(Refusal::ShiftClosed);
                }
                if kind == DocKind::CloseShift {
                    s.shift_open = false;
                }
            }
            DocKind::Sale | DocKind::Refund => {
                if !s.shift_open {
                    return Err(Refusal::ShiftClosed);
                }
                if now - s.shift_opened_at >= chrono::Duration::hours(24) {
                    return Err(Refusal::ShiftExpired);
                }
                s.receipt_no += 1;
                s.receipts += 1;
                if kind == DocKind::Sale {
                    s.sales += total;
                } else {
                    s.refunds += total;
                }
            }
        }
        let local = now.with_timezone(&tashkent());
        let date_time = local.format("%Y%m%d%H%M%S").to_string();
        let is_receipt = matches!(kind, DocKind::Sale | DocKind::Refund);
        let (receipt_no, fiscal_sign, qr_url) = if is_receipt {
            let mut h = Sha256::new();
            h.update(format!("{}|{}|{date_time}|{total}", s.terminal_id, s.receipt_no).as_bytes());
            let d = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            let sign = format!("{:012}", u64::from_be_bytes(first) % 1_000_000_000_000);
            let qr = format!(
                "https://ofd.soliq.uz/check?t={}&r={}&c={date_time}&s={sign}",
                s.terminal_id, s.receipt_no
            );
            (s.receipt_no, sign, qr)
        } else {
            (0, String::new(), String::new())
        };
        let doc = Printed {
            uuid: uuid.to_string(),
            kind,
            receipt_no,
            shift_no: s.shift_no,
            total: if is_receipt { total } else { 0 },
            fiscal_sign,
            date_time,
            qr_url,
            shift_sales: s.sales,
            shift_refunds: s.refunds,
            shift_receipts: s.receipts,
            local_time: local,
            at: now,
        };
        s.printed.push(doc.clone());
        let after = if s.hang_after_print > 0 {
            s.hang_after_print -= 1;
            AfterPrint::Hang
        } else if s.fail_after_print > 0 {
            s.fail_after_print -= 1;
            AfterPrint::Fail
        } else {
            AfterPrint::Answer
        };
        Ok((doc, after))
    }

    /// Control route listing printed documents.
    pub fn printed_json(&self) -> Value {
        let docs = self.printed();
        json!({"count": docs.len(), "documents": docs})
    }
}

/// The HTTP answer after printing, per the injected after-print fault.
pub(crate) async fn after_print(after: AfterPrint, ok: Response) -> Response {
    match after {
        AfterPrint::Answer => ok,
        AfterPrint::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection to the printer lost after printing",
        )
            .into_response(),
        AfterPrint::Hang => {
            tokio::time::sleep(HANG).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

#[derive(Debug, Clone)]
enum TaskStatus {
    InProgress,
    Ready(Value),
    Error(i64, &'static str),
}

pub struct Atol {
    state: SystemState,
    printer: Printer,
    tasks: Mutex<HashMap<String, TaskStatus>>,
    print_ms: Mutex<u64>,
}

impl Default for Atol {
    fn default() -> Self {
        Self {
            state: SystemState::default(),
            printer: Printer::new("UZ170703100189"),
            tasks: Mutex::new(HashMap::new()),
            print_ms: Mutex::new(0),
        }
    }
}

fn refusal(r: Refusal) -> (i64, &'static str) {
    match r {
        Refusal::NoPaper => (44, "Нет бумаги"),
        Refusal::ShiftClosed => (67, "Смена закрыта - операция невозможна"),
        Refusal::ShiftOpen => (68, "Смена открыта - операция невозможна"),
        Refusal::ShiftExpired => (69, "Смена превысила 24 часа"),
    }
}

fn bad_request(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": 400, "description": msg}})),
    )
        .into_response()
}

impl Atol {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskStatus>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a task on the printer and records its result under its uuid.
    fn run(&self, uuid: &str, task: &Value) -> AfterPrint {
        let kind = match task.get("type").and_then(Value::as_str) {
            Some("sell") => DocKind::Sale,
            Some("sellReturn") => DocKind::Refund,
            Some("openShift") => DocKind::OpenShift,
            Some("closeShift") => DocKind::CloseShift,
            Some("reportX") => DocKind::XReport,
            _ => {
                self.tasks()
                    .insert(uuid.into(), TaskStatus::Error(1, "Неизвестный тип задания"));
                return AfterPrint::Answer;
            }
        };
        let total = tiyin(task.get("total")).unwrap_or_else(|| {
            task.get("payments")
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(|p| tiyin(p.get("sum"))).sum())
                .unwrap_or(0)
        });
        let terminal = self.printer.terminal_id();
        let (status, after) = match self.printer.print(uuid, kind, total) {
            Ok((doc, after)) => {
                let mut result = json!({"fiscalParams": {
                    "terminalId": terminal,
                    "fiscalDocumentDateTime": doc.local_time.to_rfc3339(),
                    "shiftNumber": doc.shift_no,
                }});
                if matches!(kind, DocKind::Sale | DocKind::Refund) {
                    result["fiscalParams"]["fiscalReceiptNumber"] = json!(doc.receipt_no);
                    result["fiscalParams"]["fiscalDocumentSign"] = json!(doc.fiscal_sign);
                    result["fiscalParams"]["fnsUrl"] = json!(doc.qr_url);
                    result["fiscalParams"]["total"] = sum_json(doc.total);
                } else if kind != DocKind::OpenShift {
                    result["counters"] = json!({
                        "sellSum": sum_json(doc.shift_sales),
                        "sellReturnSum": sum_json(doc.shift_refunds),
                        "receipts": doc.shift_receipts,
                    });
                }
                (TaskStatus::Ready(result), after)
            }
            Err(r) => {
                let (code, desc) = refusal(r);
                (TaskStatus::Error(code, desc), AfterPrint::Answer)
            }
        };
        self.tasks().insert(uuid.into(), status);
        after
    }
}

async fn post_request(State(sim): State<Arc<Atol>>, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body is not JSON");
    };
    let Some(uuid) = v
        .get("uuid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return bad_request("uuid is required");
    };
    let Some(task) = v.get("request").and_then(|r| r.get(0)).cloned() else {
        return bad_request("request must hold one task");
    };
    {
        let mut tasks = sim.tasks();
        if tasks.contains_key(uuid) {
            return (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": 409, "description": "uuid already exists"}})),
            )
                .into_response();
        }
        tasks.insert(uuid.to_string(), TaskStatus::InProgress);
    }
    let ok = (StatusCode::CREATED, Json(json!({"uuid": uuid}))).into_response();
    let print_ms = *sim.print_ms.lock().unwrap_or_else(|e| e.into_inner());
    if print_ms > 0 {
        let uuid = uuid.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(print_ms)).await;
            // The answer was already given; after-print faults do not apply.
            let _ = sim.run(&uuid, &task);
        });
        return ok;
    }
    let after = sim.run(uuid, &task);
    after_print(after, ok).await
}

async fn get_request(State(sim): State<Arc<Atol>>, Path(uuid): Path<String>) -> Response {
    let Some(status) = sim.tasks().get(&uuid).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": 404, "description": "task not found"}})),
        )
            .into_response();
    };
    let result = match status {
        TaskStatus::InProgress => json!({"status": "inProgress", "errorCode": 0}),
        TaskStatus::Ready(r) => json!({"status": "ready", "errorCode": 0, "result": r}),
        TaskStatus::Error(code, desc) => {
            json!({"status": "error", "errorCode": code, "errorDescription": desc})
        }
    };
    Json(json!({"results": [result]})).into_response()
}

async fn device_info(State(sim): State<Arc<Atol>>) -> Json<Value> {
    Json(json!({"deviceInfo": {
        "modelName": "ATOL (Savdo sandbox)",
        "serial": "00106700000001",
        "terminalId": sim.printer.terminal_id(),
        "paperPresent": sim.printer.paper(),
    }}))
}

async fn shift_status(State(sim): State<Arc<Atol>>) -> Json<Value> {
    let (open, number, opened_at, expired) = sim.printer.shift();
    let state = match (open, expired) {
        (false, _) => "closed",
        (true, false) => "opened",
        (true, true) => "expired",
    };
    Json(json!({"shiftStatus": {
        "state": state,
        "number": number,
        "openedAt": opened_at.with_timezone(&tashkent()).to_rfc3339(),
    }}))
}

async fn printed(State(sim): State<Arc<Atol>>) -> Json<Value> {
    Json(sim.printer.printed_json())
}

impl Simulator for Atol {
    fn name(&self) -> &'static str {
        "atol"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/api/v2/requests", post(post_request))
            .route("/api/v2/requests/{uuid}", get(get_request))
            .route(
                "/api/v2/operations/queryDeviceInfo",
                post(device_info).get(device_info),
            )
            .route(
                "/api/v2/operations/queryShiftStatus",
                post(shift_status).get(shift_status),
            )
            .with_state(self)
    }
    fn reset(&self) {
        self.printer.reset();
        self.tasks().clear();
        *self.print_ms.lock().unwrap_or_else(|e| e.into_inner()) = 0;
    }
    fn seed(&self, data: Value) -> Result<Value, String> {
        if let Some(ms) = data.get("print_ms") {
            *self.print_ms.lock().unwrap_or_else(|e| e.into_inner()) =
                ms.as_u64().ok_or("print_ms must be milliseconds")?;
        }
        self.printer.seed(&data)
    }
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/printed", get(printed))
            .with_state(self)
    }
    fn state(&self) -> &SystemState {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_keeps_shift_rules_and_counts() {
        let p = Printer::new("UZ1");
        assert_eq!(
            p.print("a", DocKind::Sale, 100).unwrap_err(),
            Refusal::ShiftClosed
        );
        p.print("b", DocKind::OpenShift, 0).unwrap();
        let (doc, after) = p.print("c", DocKind::Sale, 1500).unwrap();
        assert_eq!(
            (doc.receipt_no, doc.shift_no, after),
            (1, 1, AfterPrint::Answer)
        );
        assert_eq!(doc.fiscal_sign.len(), 12);
        p.seed(&json!({"paper": false})).unwrap();
        assert_eq!(
            p.print("d", DocKind::Sale, 100).unwrap_err(),
            Refusal::NoPaper
        );
        p.seed(&json!({"paper": true, "fail_after_print": 1}))
            .unwrap();
        let (_, after) = p.print("e", DocKind::Sale, 100).unwrap();
        assert_eq!(after, AfterPrint::Fail);
        let (z, _) = p.print("f", DocKind::CloseShift, 0).unwrap();
        assert_eq!((z.shift_sales, z.shift_receipts), (1600, 2));
        assert_eq!(p.printed().len(), 4);
    }

    #[test]
    fn expired_shift_refuses_sales() {
        let p = Printer::new("UZ1");
        p.seed(&json!({"shift_opened_hours_ago": 25})).unwrap();
        assert_eq!(
            p.print("a", DocKind::Sale, 100).unwrap_err(),
            Refusal::ShiftExpired
        );
        assert!(p.print("z", DocKind::CloseShift, 0).is_ok());
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(tiyin(Some(&json!(123.45))), Some(12_345));
        assert_eq!(tiyin(Some(&json!("0.5"))), Some(50));
        assert_eq!(tiyin(Some(&json!(7))), Some(700));
        assert_eq!(tiyin(Some(&sum_json(12_345))), Some(12_345));
    }
}
