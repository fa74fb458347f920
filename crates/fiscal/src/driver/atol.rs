//! ATOL web server driver (JSON tasks, port 16732 by default): `POST /api/v2/requests` with the
//! job's device ref as the task uuid, then `GET /api/v2/requests/{uuid}` until the task is
//! `ready` or `error`. The web server never runs a uuid twice, so re-posting and polling by uuid
//! are both safe after a lost answer.
//!
//! Uzbek fields (`ikpu`, `packageCode`, `measurementUnit`, `markingCodes`, `originalReceipt`,
//! `fiscalParams.terminalId`) and the error codes below follow the Uzbek firmware as we
//! understand it [assumed]; the task envelope and statuses are ATOL's documented ones.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::wire::{fiscal_date_time, money, qty, text, tiyin, uint};
use super::{Command, DeviceStatus, DriverError, FiscalDriver, Lookup, Outcome, reasons};
use crate::model::{DeviceAnswer, Operation, Receipt, ShiftTotals, qr_url};

/// ATOL error codes the gateway words for a cashier [assumed].
pub mod codes {
    pub const NO_PAPER: i64 = 44;
    pub const SHIFT_CLOSED: i64 = 67;
    pub const SHIFT_OPEN: i64 = 68;
    pub const SHIFT_EXPIRED: i64 = 69;
}

const POLL_EVERY: Duration = Duration::from_millis(100);

pub struct Atol {
    base: String,
    http: reqwest::Client,
    /// How long `execute` polls a task before leaving it to the worker's lookups.
    poll_for: Duration,
}

#[derive(Serialize)]
struct TaskEnvelope {
    uuid: String,
    request: Vec<Task>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Task {
    #[serde(rename = "type")]
    kind: &'static str,
    operator: Operator,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    items: Vec<Position>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    payments: Vec<Payment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_receipt: Option<Original>,
}

#[derive(Serialize)]
struct Operator {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Position {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    price: Box<RawValue>,
    quantity: Box<RawValue>,
    amount: Box<RawValue>,
    info_discount_amount: Box<RawValue>,
    tax: Tax,
    ikpu: String,
    package_code: String,
    measurement_unit: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    marking_codes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_info: Option<AgentInfo>,
}

#[derive(Serialize)]
struct Tax {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentInfo {
    supplier_inn: String,
}

#[derive(Serialize)]
struct Payment {
    #[serde(rename = "type")]
    kind: &'static str,
    sum: Box<RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Original {
    terminal_id: String,
    receipt_number: u64,
    fiscal_sign: String,
    date_time: String,
}

fn unreachable(e: reqwest::Error) -> DriverError {
    DriverError::Unreachable(e.to_string())
}

fn positions(r: &Receipt) -> Result<Vec<Position>, DriverError> {
    r.items
        .iter()
        .map(|i| {
            Ok(Position {
                kind: "position",
                name: i.name.clone(),
                price: money(i.price)?,
                quantity: qty(i.qty_milli)?,
                amount: money(i.amount().unwrap_or(0))?,
                info_discount_amount: money(i.discount)?,
                tax: Tax {
                    kind: format!("vat{}", i.vat_percent),
                },
                ikpu: i.mxik.clone(),
                package_code: i.package_code.clone(),
                measurement_unit: i.unit,
                marking_codes: i.labels.clone(),
                agent_info: i
                    .commission_tin
                    .clone()
                    .map(|supplier_inn| AgentInfo { supplier_inn }),
            })
        })
        .collect()
}

fn payments(r: &Receipt) -> Result<Vec<Payment>, DriverError> {
    let p = &r.payments;
    [
        ("cash", p.cash),
        ("electronically", p.card),
        ("other", p.other),
    ]
    .into_iter()
    .filter(|(_, sum)| *sum != 0)
    .map(|(kind, sum)| {
        Ok(Payment {
            kind,
            sum: money(sum)?,
        })
    })
    .collect()
}

fn task(cmd: &Command) -> Result<Task, DriverError> {
    let kind = match cmd.op {
        Operation::Sale => "sell",
        Operation::Refund => "sellReturn",
        Operation::OpenShift => "openShift",
        Operation::CloseShift => "closeShift",
        Operation::XReport => "reportX",
    };
    let mut t = Task {
        kind,
        operator: Operator {
            name: cmd.cashier.clone(),
        },
        items: vec![],
        payments: vec![],
        total: None,
        original_receipt: None,
    };
    if let Some(r) = &cmd.receipt {
        t.items = positions(r)?;
        t.payments = payments(r)?;
        t.total = Some(money(r.total)?);
    }
    t.original_receipt = cmd.original.as_ref().map(|o| Original {
        terminal_id: o.terminal_id.clone(),
        receipt_number: o.receipt_no,
        fiscal_sign: o.fiscal_sign.clone(),
        date_time: o.date_time.clone(),
    });
    Ok(t)
}

/// Words a device error for a cashier; unknown codes keep the device's own description.
fn reason(code: i64, description: &str) -> String {
    match code {
        codes::NO_PAPER => reasons::NO_PAPER.into(),
        codes::SHIFT_EXPIRED => reasons::SHIFT_OVER_24H.into(),
        codes::SHIFT_CLOSED => reasons::SHIFT_CLOSED.into(),
        codes::SHIFT_OPEN => reasons::SHIFT_ALREADY_OPEN.into(),
        _ if description.is_empty() => format!("the cash register refused (error {code})"),
        _ => format!("the cash register refused: {description} (error {code})"),
    }
}

fn answer(result: &Value) -> Result<DeviceAnswer, DriverError> {
    let fp = result.get("fiscalParams").unwrap_or(&Value::Null);
    let terminal_id = text(fp.get("terminalId")).unwrap_or_default();
    let receipt_no = uint(fp.get("fiscalReceiptNumber")).unwrap_or(0);
    let fiscal_sign = text(fp.get("fiscalDocumentSign")).unwrap_or_default();
    let date_time = text(fp.get("fiscalDocumentDateTime"))
        .and_then(|s| fiscal_date_time(&s))
        .ok_or_else(|| {
            DriverError::Protocol("fiscalParams.fiscalDocumentDateTime missing".into())
        })?;
    let shift_no = uint(fp.get("shiftNumber"))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let qr = match text(fp.get("fnsUrl")) {
        Some(u) if !u.is_empty() => u,
        _ if receipt_no > 0 => qr_url(&terminal_id, receipt_no, &date_time, &fiscal_sign),
        _ => String::new(),
    };
    let totals = result.get("counters").map(|c| ShiftTotals {
        sales_total: tiyin(c.get("sellSum")).unwrap_or(0),
        refunds_total: tiyin(c.get("sellReturnSum")).unwrap_or(0),
        receipts: uint(c.get("receipts"))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
    });
    Ok(DeviceAnswer {
        terminal_id,
        receipt_no,
        fiscal_sign,
        date_time,
        qr_url: qr,
        shift_no,
        totals,
    })
}

impl Atol {
    pub fn new(url: &str, timeout_ms: u64) -> Result<Self, DriverError> {
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http: super::http_client(timeout_ms)?,
            poll_for: Duration::from_millis(timeout_ms.max(1000)),
        })
    }

    async fn operation(&self, name: &str) -> Result<Value, DriverError> {
        let resp = self
            .http
            .post(format!("{}/api/v2/operations/{name}", self.base))
            .json(&serde_json::json!({}))
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(DriverError::Unreachable(format!(
                "{name}: HTTP {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| DriverError::Protocol(e.to_string()))
    }
}

#[async_trait]
impl FiscalDriver for Atol {
    fn name(&self) -> &'static str {
        "atol"
    }

    async fn status(&self) -> Result<DeviceStatus, DriverError> {
        let info = self.operation("queryDeviceInfo").await?;
        let shift = self.operation("queryShiftStatus").await?;
        let d = info.get("deviceInfo").unwrap_or(&Value::Null);
        let s = shift.get("shiftStatus").unwrap_or(&Value::Null);
        let state = s.get("state").and_then(Value::as_str).unwrap_or("closed");
        Ok(DeviceStatus {
            terminal_id: text(d.get("terminalId")),
            shift_open: state != "closed",
            shift_no: uint(s.get("number")).and_then(|n| u32::try_from(n).ok()),
            shift_opened_at: text(s.get("openedAt")).and_then(|t| fiscal_date_time(&t)),
            paper: d
                .get("paperPresent")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }

    async fn execute(&self, cmd: &Command) -> Result<Outcome, DriverError> {
        let body = serde_json::to_vec(&TaskEnvelope {
            uuid: cmd.device_ref.to_string(),
            request: vec![task(cmd)?],
        })
        .map_err(|e| DriverError::Protocol(e.to_string()))?;
        let resp = self
            .http
            .post(format!("{}/api/v2/requests", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        match resp.status() {
            // 409: the uuid is known, so the task exists; its result is what we want.
            s if s.is_success() || s == StatusCode::CONFLICT => {}
            s if s.is_client_error() => {
                let text = resp.text().await.unwrap_or_default();
                return Ok(Outcome::Refused(format!(
                    "the cash register did not accept the task (HTTP {s}): {text}"
                )));
            }
            s => return Err(DriverError::Unreachable(format!("HTTP {s}"))),
        }
        let deadline = Instant::now() + self.poll_for;
        loop {
            match self.lookup(cmd).await? {
                Lookup::Finished(o) => return Ok(o),
                Lookup::NotFound => {
                    return Err(DriverError::Protocol("accepted task is unknown".into()));
                }
                Lookup::InProgress if Instant::now() >= deadline => {
                    return Err(DriverError::Unreachable("the task is still running".into()));
                }
                Lookup::InProgress => tokio::time::sleep(POLL_EVERY).await,
            }
        }
    }

    async fn lookup(&self, cmd: &Command) -> Result<Lookup, DriverError> {
        let resp = self
            .http
            .get(format!("{}/api/v2/requests/{}", self.base, cmd.device_ref))
            .send()
            .await
            .map_err(unreachable)?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(Lookup::NotFound),
            s if !s.is_success() => return Err(DriverError::Unreachable(format!("HTTP {s}"))),
            _ => {}
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| DriverError::Protocol(e.to_string()))?;
        let Some(r) = v.get("results").and_then(|r| r.get(0)) else {
            return Ok(Lookup::InProgress);
        };
        match r.get("status").and_then(Value::as_str).unwrap_or("") {
            "ready" => Ok(Lookup::Finished(Outcome::Done(answer(
                r.get("result").unwrap_or(&Value::Null),
            )?))),
            "error" => {
                let code = r.get("errorCode").and_then(Value::as_i64).unwrap_or(0);
                let desc = r
                    .get("errorDescription")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Ok(Lookup::Finished(Outcome::Refused(reason(code, desc))))
            }
            "wait" | "inProgress" => Ok(Lookup::InProgress),
            other => Err(DriverError::Protocol(format!("task status {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Item, Payments};

    #[test]
    fn sale_task_carries_exact_decimals_and_uzbek_fields() {
        let cmd = Command {
            device_ref: uuid::Uuid::nil(),
            op: Operation::Sale,
            cashier: "Aziz".into(),
            receipt: Some(Receipt {
                id: "x".into(),
                device_id: "d".into(),
                cashier: "Aziz".into(),
                items: vec![Item {
                    name: "Olma".into(),
                    mxik: "10202001001000000".into(),
                    package_code: "1508583".into(),
                    unit: 5,
                    qty_milli: 1500,
                    price: 1_000_010,
                    discount: 15,
                    vat_percent: 12,
                    vat_amount: 160_714,
                    labels: vec![],
                    commission_tin: Some("123456789".into()),
                }],
                payments: Payments {
                    cash: 1_000_000,
                    card: 500_000,
                    other: 0,
                },
                total: 1_500_000,
                sale_id: None,
            }),
            original: None,
        };
        let json = serde_json::to_string(&task(&cmd).unwrap()).unwrap();
        assert!(json.contains(r#""type":"sell""#), "{json}");
        assert!(json.contains(r#""price":10000.10"#), "{json}");
        assert!(json.contains(r#""quantity":1.500"#), "{json}");
        assert!(json.contains(r#""amount":15000.00"#), "{json}");
        assert!(json.contains(r#""tax":{"type":"vat12"}"#), "{json}");
        assert!(json.contains(r#""ikpu":"10202001001000000""#), "{json}");
        assert!(json.contains(r#""supplierInn":"123456789""#), "{json}");
        assert!(
            json.contains(r#"{"type":"electronically","sum":5000.00}"#),
            "{json}"
        );
        assert!(!json.contains(r#""other""#), "{json}");
    }

    #[test]
    fn error_codes_become_cashier_words() {
        assert_eq!(reason(codes::NO_PAPER, "Нет бумаги"), reasons::NO_PAPER);
        assert_eq!(reason(codes::SHIFT_EXPIRED, ""), reasons::SHIFT_OVER_24H);
        assert!(reason(999, "Что-то").contains("Что-то"));
    }
}
