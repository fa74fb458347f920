//! Simulator of KKMServer (one JSON API over many cash register brands) with one simulated
//! fiscal printer behind it.
//!
//! Protocol, under `/kkmserver`: `POST /Execute/sync` (also `/Execute`) with HTTP Basic auth
//! (default user `Admin`, empty password; wrong credentials -> 401) and a JSON command:
//! - `RegisterCheck` `{"NumDevice", "IdCommand", "TypeCheck": 0 sale | 1 return, "CashierName",
//!   "CheckStrings": [{"Register": {"Name", "Quantity", "Price", "Amount", "Tax", ...}}],
//!   "Cash", "ElectronicPayment", "CashProvision"}` -> `{"Command", "IdCommand", "Status": 0,
//!   "Error": "", "CheckNumber", "SessionNumber", "SessionCheckNumber", "FiscalSign",
//!   "TerminalId", "DateTime": "YYYY-MM-DDTHH:MM:SS", "QRCode"}` or `{"Status": 2, "Error"}`.
//! - `OpenShift`, `CloseShift` (alias `ZReport`), `XReport` `{"IdCommand", "CashierName"}`;
//!   reports answer `"Totals": {"Sales", "Returns", "Checks"}`.
//! - `GetRezult` `{"IdCommand"}` -> `{"Status": 0, "Rezult": <the command's answer>}`, or
//!   `{"Status": 3}` when no such command was received.
//! - `GetDataKKT` -> `{"Status": 0, "Info": {"SessionState": 1 closed | 2 open | 3 over 24 h,
//!   "SessionNumber", "SessionOpenedAt", "PaperOver", "TerminalId"}}`; `List`.
//!
//! An `IdCommand` already executed is not executed again: the stored answer is returned.
//! Status: 0 done, 1 running, 2 error, 3 not found, 4 not run.
//!
//! Control, under `/_control/kkmserver`:
//! - `POST seed` with any of `{"user": "Admin", "password": "", "terminal_id": "UZ…",
//!   "paper": false, "fail_after_print": N, "hang_after_print": N, "shift_opened_hours_ago": 25}`
//!   (the after-print faults as in the ATOL simulator: printed and recorded, then a 500 or no
//!   answer at all).
//! - `GET printed` -> `{"count", "documents": [...]}`: every document printed.
//!
//! Offline and slow are the common `down` and `latency_ms` faults.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

use crate::atol::{AfterPrint, DocKind, Printer, Refusal, after_print, sum_json, tiyin};
use crate::common::{Simulator, SystemState, header as header_str};

struct Credentials {
    user: String,
    password: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            user: "Admin".into(),
            password: String::new(),
        }
    }
}

pub struct KkmServer {
    state: SystemState,
    printer: Printer,
    credentials: Mutex<Credentials>,
    /// Answers by IdCommand.
    results: Mutex<HashMap<String, Value>>,
}

impl Default for KkmServer {
    fn default() -> Self {
        Self {
            state: SystemState::default(),
            printer: Printer::new("UZ170703100190"),
            credentials: Mutex::new(Credentials::default()),
            results: Mutex::new(HashMap::new()),
        }
    }
}

fn refusal(r: Refusal) -> &'static str {
    match r {
        Refusal::NoPaper => "Нет бумаги",
        Refusal::ShiftClosed => "Смена закрыта - операция невозможна",
        Refusal::ShiftOpen => "Смена открыта - операция невозможна",
        Refusal::ShiftExpired => "Смена превысила 24 часа",
    }
}

impl KkmServer {
    fn results(&self) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(b64) = header_str(headers, "authorization").and_then(|h| h.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(pair) = String::from_utf8(raw) else {
            return false;
        };
        let (user, password) = pair.split_once(':').unwrap_or((pair.as_str(), ""));
        let c = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        user == c.user && password == c.password
    }

    /// Runs a printing command; returns its answer and the after-print fault.
    fn print(&self, cmd: &Value, name: &str, kind: DocKind) -> (Value, AfterPrint) {
        let id = cmd
            .get("IdCommand")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let total = if matches!(kind, DocKind::Sale | DocKind::Refund) {
            [
                "Cash",
                "ElectronicPayment",
                "CashProvision",
                "AdvancePayment",
                "Credit",
            ]
            .iter()
            .filter_map(|k| tiyin(cmd.get(*k)))
            .sum()
        } else {
            0
        };
        let mut answer = json!({"Command": name, "IdCommand": id});
        let after = match self.printer.print(&id, kind, total) {
            Ok((doc, after)) => {
                answer["Status"] = json!(0);
                answer["Error"] = json!("");
                answer["SessionNumber"] = json!(doc.shift_no);
                answer["TerminalId"] = json!(self.printer.terminal_id());
                answer["DateTime"] = json!(doc.local_time.format("%Y-%m-%dT%H:%M:%S").to_string());
                match kind {
                    DocKind::Sale | DocKind::Refund => {
                        answer["CheckNumber"] = json!(doc.receipt_no);
                        answer["SessionCheckNumber"] = json!(doc.shift_receipts);
                        answer["FiscalSign"] = json!(doc.fiscal_sign);
                        answer["QRCode"] = json!(doc.qr_url);
                    }
                    DocKind::CloseShift | DocKind::XReport => {
                        answer["Totals"] = json!({
                            "Sales": sum_json(doc.shift_sales),
                            "Returns": sum_json(doc.shift_refunds),
                            "Checks": doc.shift_receipts,
                        });
                    }
                    DocKind::OpenShift => {}
                }
                after
            }
            Err(r) => {
                answer["Status"] = json!(2);
                answer["Error"] = json!(refusal(r));
                AfterPrint::Answer
            }
        };
        if !id.is_empty() {
            self.results().insert(id, answer.clone());
        }
        (answer, after)
    }

    fn data_kkt(&self) -> Value {
        let (open, number, opened_at, expired) = self.printer.shift();
        let state = match (open, expired) {
            (false, _) => 1,
            (true, false) => 2,
            (true, true) => 3,
        };
        let local =
            opened_at.with_timezone(&chrono::FixedOffset::east_opt(5 * 3600).unwrap_or_else(
                || chrono::FixedOffset::east_opt(0).expect("UTC is a valid offset"),
            ));
        json!({"Command": "GetDataKKT", "Status": 0, "Error": "", "Info": {
            "SessionState": state,
            "SessionNumber": number,
            "SessionOpenedAt": local.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "PaperOver": !self.printer.paper(),
            "TerminalId": self.printer.terminal_id(),
        }})
    }
}

async fn execute(State(sim): State<Arc<KkmServer>>, headers: HeaderMap, body: Bytes) -> Response {
    if !sim.authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"KkmServer\"")],
            "unauthorized",
        )
            .into_response();
    }
    let Ok(cmd) = serde_json::from_slice::<Value>(&body) else {
        return Json(json!({"Status": 2, "Error": "Ошибка разбора JSON"})).into_response();
    };
    let name = cmd.get("Command").and_then(Value::as_str).unwrap_or("");
    let kind = match name {
        "RegisterCheck" => match cmd.get("TypeCheck").and_then(Value::as_u64).unwrap_or(0) {
            0 => Some(DocKind::Sale),
            1 => Some(DocKind::Refund),
            _ => {
                return Json(json!({"Command": name, "Status": 2,
                    "Error": "Тип чека не поддерживается"}))
                .into_response();
            }
        },
        "OpenShift" => Some(DocKind::OpenShift),
        "CloseShift" | "ZReport" => Some(DocKind::CloseShift),
        "XReport" => Some(DocKind::XReport),
        _ => None,
    };
    if let Some(kind) = kind {
        let id = cmd.get("IdCommand").and_then(Value::as_str).unwrap_or("");
        if !id.is_empty() {
            // Check and reserve under one lock, so a command raced by its own retry runs once.
            let mut results = sim.results();
            if let Some(done) = results.get(id) {
                return Json(done.clone()).into_response();
            }
            results.insert(
                id.to_string(),
                json!({"Command": name, "IdCommand": id, "Status": 1, "Error": ""}),
            );
        }
        let (answer, after) = sim.print(&cmd, name, kind);
        return after_print(after, Json(answer).into_response()).await;
    }
    let answer = match name {
        "GetRezult" => {
            let id = cmd.get("IdCommand").and_then(Value::as_str).unwrap_or("");
            match sim.results().get(id) {
                Some(r) => json!({"Command": "GetRezult", "Status": 0, "Error": "", "Rezult": r}),
                None => json!({"Command": "GetRezult", "Status": 3,
                    "Error": "Команда не найдена"}),
            }
        }
        "GetDataKKT" => sim.data_kkt(),
        "List" => json!({"Command": "List", "Status": 0, "Error": "", "ListUnit": [{
            "NumDevice": 1, "IdDevice": "sandbox", "OnOff": true, "Active": true,
            "TerminalId": sim.printer.terminal_id(), "NameDevice": "Savdo sandbox printer",
        }]}),
        other => json!({"Command": other, "Status": 2, "Error": "Неизвестная команда"}),
    };
    Json(answer).into_response()
}

async fn printed(State(sim): State<Arc<KkmServer>>) -> Json<Value> {
    Json(sim.printer.printed_json())
}

impl Simulator for KkmServer {
    fn name(&self) -> &'static str {
        "kkmserver"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/Execute/sync", post(execute))
            .route("/Execute", post(execute))
            .with_state(self)
    }
    fn reset(&self) {
        self.printer.reset();
        self.results().clear();
        *self.credentials.lock().unwrap_or_else(|e| e.into_inner()) = Credentials::default();
    }
    fn seed(&self, data: Value) -> Result<Value, String> {
        {
            let mut c = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(u) = data.get("user") {
                c.user = u.as_str().ok_or("user must be a string")?.to_string();
            }
            if let Some(p) = data.get("password") {
                c.password = p.as_str().ok_or("password must be a string")?.to_string();
            }
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
