//! KKMServer driver: one JSON API (`POST /Execute/sync`, Basic auth) that reaches Shtrih-M,
//! ATOL and other brands. Every command carries the job's device ref as `IdCommand`;
//! `GetRezult` by that id tells whether a command already ran, so a lost answer is recovered
//! without printing twice.
//!
//! Uzbek fields on `Register` (`MXIK`, `PackageCode`, `MeasureUnit`, `Marking`, `CommissionTin`)
//! and in the answer (`TerminalId`, `FiscalSign`, `DateTime`, `QRCode`, `Totals`) are our
//! reading of the Uzbek builds [assumed]; the envelope and `Status` codes are documented.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::wire::{fiscal_date_time, money, qty, text, tiyin, uint};
use super::{Command, DeviceStatus, DriverError, FiscalDriver, Lookup, Outcome, reasons};
use crate::model::{DeviceAnswer, Operation, ShiftTotals, qr_url};

/// `Status` of a KKMServer answer.
pub mod status {
    pub const OK: i64 = 0;
    pub const RUNNING: i64 = 1;
    pub const ERROR: i64 = 2;
    pub const NOT_FOUND: i64 = 3;
    pub const NOT_RUN: i64 = 4;
}

const POLL_EVERY: Duration = Duration::from_millis(100);

pub struct KkmServer {
    url: String,
    user: String,
    password: String,
    num_device: u32,
    http: reqwest::Client,
    timeout_s: u64,
    poll_for: Duration,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckString {
    register: Register,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Register {
    name: String,
    quantity: Box<RawValue>,
    price: Box<RawValue>,
    amount: Box<RawValue>,
    discount: Box<RawValue>,
    tax: u32,
    #[serde(rename = "EAN13")]
    ean13: String,
    #[serde(rename = "MXIK")]
    mxik: String,
    package_code: String,
    measure_unit: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    marking: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commission_tin: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Original {
    terminal_id: String,
    check_number: u64,
    fiscal_sign: String,
    date_time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KkmCommand {
    command: &'static str,
    num_device: u32,
    id_command: String,
    timeout: u64,
    cashier_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_fiscal_check: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    type_check: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    check_strings: Vec<CheckString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cash: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    electronic_payment: Option<Box<RawValue>>,
    /// "Other" payment (counter-provision in KKMServer's terms).
    #[serde(skip_serializing_if = "Option::is_none")]
    cash_provision: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_check: Option<Original>,
}

fn unreachable(e: reqwest::Error) -> DriverError {
    DriverError::Unreachable(e.to_string())
}

/// Words a KKMServer error text for a cashier. KKMServer reports device errors as Russian text,
/// so we match the stems of the common ones.
fn reason(error: &str) -> String {
    let e = error.to_lowercase();
    if e.contains("бумаг") || e.contains("paper") {
        reasons::NO_PAPER.into()
    } else if e.contains("24") {
        reasons::SHIFT_OVER_24H.into()
    } else if e.contains("смена закрыта") || e.contains("shift is closed") {
        reasons::SHIFT_CLOSED.into()
    } else if e.contains("смена открыта") || e.contains("shift is open") {
        reasons::SHIFT_ALREADY_OPEN.into()
    } else if error.is_empty() {
        "the cash register refused without a reason".into()
    } else {
        format!("the cash register refused: {error}")
    }
}

fn answer(v: &Value) -> Result<DeviceAnswer, DriverError> {
    let terminal_id = text(v.get("TerminalId"))
        .or_else(|| text(v.get("RegNumber")))
        .unwrap_or_default();
    let receipt_no = uint(v.get("CheckNumber")).unwrap_or(0);
    let fiscal_sign = text(v.get("FiscalSign")).unwrap_or_default();
    let date_time = text(v.get("DateTime"))
        .and_then(|s| fiscal_date_time(&s))
        .ok_or_else(|| DriverError::Protocol("DateTime missing".into()))?;
    let qr = match text(v.get("QRCode")) {
        Some(u) if u.starts_with("http") => u,
        _ if receipt_no > 0 => qr_url(&terminal_id, receipt_no, &date_time, &fiscal_sign),
        _ => String::new(),
    };
    let totals = v.get("Totals").map(|t| ShiftTotals {
        sales_total: tiyin(t.get("Sales")).unwrap_or(0),
        refunds_total: tiyin(t.get("Returns")).unwrap_or(0),
        receipts: uint(t.get("Checks"))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    });
    Ok(DeviceAnswer {
        terminal_id,
        receipt_no,
        fiscal_sign,
        date_time,
        qr_url: qr,
        shift_no: uint(v.get("SessionNumber"))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        totals,
    })
}

/// Reads a finished command's answer (its own `Status` 0 or 2).
fn outcome(v: &Value) -> Result<Lookup, DriverError> {
    match v.get("Status").and_then(Value::as_i64) {
        Some(status::OK) => Ok(Lookup::Finished(Outcome::Done(answer(v)?))),
        Some(status::ERROR) => Ok(Lookup::Finished(Outcome::Refused(reason(
            v.get("Error").and_then(Value::as_str).unwrap_or(""),
        )))),
        Some(status::RUNNING) => Ok(Lookup::InProgress),
        Some(status::NOT_FOUND) | Some(status::NOT_RUN) => Ok(Lookup::NotFound),
        other => Err(DriverError::Protocol(format!("Status {other:?}"))),
    }
}

impl KkmServer {
    pub fn new(
        url: &str,
        user: &str,
        password: &str,
        num_device: u32,
        timeout_ms: u64,
    ) -> Result<Self, DriverError> {
        Ok(Self {
            url: format!("{}/Execute/sync", url.trim_end_matches('/')),
            user: user.to_string(),
            password: password.to_string(),
            num_device,
            http: super::http_client(timeout_ms)?,
            timeout_s: (timeout_ms / 1000).max(1),
            poll_for: Duration::from_millis(timeout_ms.max(1000)),
        })
    }

    async fn send<T: Serialize>(&self, body: &T) -> Result<Value, DriverError> {
        let body = serde_json::to_vec(body).map_err(|e| DriverError::Protocol(e.to_string()))?;
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        match resp.status() {
            s if s.is_success() => resp
                .json()
                .await
                .map_err(|e| DriverError::Protocol(e.to_string())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(DriverError::Protocol(
                "KKMServer refused the user or password in the configuration".into(),
            )),
            s => Err(DriverError::Unreachable(format!("HTTP {s}"))),
        }
    }

    fn command(&self, cmd: &Command) -> Result<KkmCommand, DriverError> {
        let name = match cmd.op {
            Operation::Sale | Operation::Refund => "RegisterCheck",
            Operation::OpenShift => "OpenShift",
            Operation::CloseShift => "CloseShift",
            Operation::XReport => "XReport",
        };
        let mut k = KkmCommand {
            command: name,
            num_device: self.num_device,
            id_command: cmd.device_ref.to_string(),
            timeout: self.timeout_s,
            cashier_name: cmd.cashier.clone(),
            is_fiscal_check: None,
            type_check: None,
            check_strings: vec![],
            cash: None,
            electronic_payment: None,
            cash_provision: None,
            original_check: None,
        };
        if let Some(r) = &cmd.receipt {
            k.is_fiscal_check = Some(true);
            k.type_check = Some(if cmd.op == Operation::Refund { 1 } else { 0 });
            k.check_strings = r
                .items
                .iter()
                .map(|i| {
                    Ok(CheckString {
                        register: Register {
                            name: i.name.clone(),
                            quantity: qty(i.qty_milli)?,
                            price: money(i.price)?,
                            amount: money(i.amount().unwrap_or(0))?,
                            discount: money(i.discount)?,
                            tax: i.vat_percent,
                            ean13: String::new(),
                            mxik: i.mxik.clone(),
                            package_code: i.package_code.clone(),
                            measure_unit: i.unit,
                            marking: i.labels.clone(),
                            commission_tin: i.commission_tin.clone(),
                        },
                    })
                })
                .collect::<Result<_, DriverError>>()?;
            k.cash = Some(money(r.payments.cash)?);
            k.electronic_payment = Some(money(r.payments.card)?);
            k.cash_provision = Some(money(r.payments.other)?);
        }
        k.original_check = cmd.original.as_ref().map(|o| Original {
            terminal_id: o.terminal_id.clone(),
            check_number: o.receipt_no,
            fiscal_sign: o.fiscal_sign.clone(),
            date_time: o.date_time.clone(),
        });
        Ok(k)
    }
}

#[async_trait]
impl FiscalDriver for KkmServer {
    fn name(&self) -> &'static str {
        "kkmserver"
    }

    async fn status(&self) -> Result<DeviceStatus, DriverError> {
        let v = self
            .send(&serde_json::json!({"Command": "GetDataKKT", "NumDevice": self.num_device}))
            .await?;
        if v.get("Status").and_then(Value::as_i64) != Some(status::OK) {
            let e = v.get("Error").and_then(Value::as_str).unwrap_or("");
            return Err(DriverError::Unreachable(format!("GetDataKKT: {e}")));
        }
        let info = v.get("Info").unwrap_or(&Value::Null);
        // SessionState: 1 closed, 2 open, 3 open for more than 24 hours.
        let state = uint(info.get("SessionState")).unwrap_or(1);
        Ok(DeviceStatus {
            terminal_id: text(info.get("TerminalId")).or_else(|| text(info.get("RegNumber"))),
            shift_open: state == 2 || state == 3,
            shift_no: uint(info.get("SessionNumber")).and_then(|n| u32::try_from(n).ok()),
            shift_opened_at: text(info.get("SessionOpenedAt")).and_then(|t| fiscal_date_time(&t)),
            paper: !info
                .get("PaperOver")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    async fn execute(&self, cmd: &Command) -> Result<Outcome, DriverError> {
        let v = self.send(&self.command(cmd)?).await?;
        let deadline = Instant::now() + self.poll_for;
        let mut state = outcome(&v)?;
        loop {
            match state {
                Lookup::Finished(o) => return Ok(o),
                Lookup::NotFound => {
                    return Err(DriverError::Protocol("the command was not run".into()));
                }
                Lookup::InProgress if Instant::now() >= deadline => {
                    return Err(DriverError::Unreachable(
                        "the command is still running".into(),
                    ));
                }
                Lookup::InProgress => {
                    tokio::time::sleep(POLL_EVERY).await;
                    state = self.lookup(cmd).await?;
                }
            }
        }
    }

    async fn lookup(&self, cmd: &Command) -> Result<Lookup, DriverError> {
        let v = self
            .send(&serde_json::json!({
                "Command": "GetRezult",
                "IdCommand": cmd.device_ref.to_string(),
            }))
            .await?;
        match v.get("Status").and_then(Value::as_i64) {
            Some(status::NOT_FOUND) | Some(status::NOT_RUN) => Ok(Lookup::NotFound),
            Some(status::RUNNING) => Ok(Lookup::InProgress),
            _ => match v.get("Rezult") {
                Some(r) if r.is_object() => outcome(r),
                _ => Err(DriverError::Protocol("GetRezult without Rezult".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_cashier_words() {
        assert_eq!(reason("Нет бумаги"), reasons::NO_PAPER);
        assert_eq!(reason("Смена превысила 24 часа"), reasons::SHIFT_OVER_24H);
        assert_eq!(
            reason("Смена закрыта - операция невозможна"),
            reasons::SHIFT_CLOSED
        );
        assert!(reason("Ошибка ФН").contains("Ошибка ФН"));
    }

    #[test]
    fn answer_without_qr_builds_the_ofd_link() {
        let v = serde_json::json!({"Status": 0, "CheckNumber": 5, "SessionNumber": 2,
            "FiscalSign": "123456789012", "TerminalId": "UZ1", "DateTime": "2026-01-02T03:04:05"});
        let a = answer(&v).unwrap();
        assert_eq!(
            a.qr_url,
            "https://ofd.soliq.uz/check?t=UZ1&r=5&c=20260102030405&s=123456789012"
        );
        assert_eq!(a.shift_no, 2);
    }
}
