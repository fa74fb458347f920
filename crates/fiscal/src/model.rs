//! The gateway's request and answer types, shared by the HTTP and gRPC faces and the journal.

use serde::{Deserialize, Serialize};

/// One position of a receipt. Money in tiyin, quantity in thousandths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub name: String,
    pub mxik: String,
    pub package_code: String,
    pub unit: u32,
    pub qty_milli: i64,
    /// Unit price, VAT included.
    pub price: i64,
    #[serde(default)]
    pub discount: i64,
    pub vat_percent: u32,
    pub vat_amount: i64,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commission_tin: Option<String>,
}

impl Item {
    /// What the buyer pays for the line: gross minus discount (None on overflow).
    pub fn amount(&self) -> Option<i64> {
        crate::amounts::line_gross(self.price, self.qty_milli)?.checked_sub(self.discount)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Payments {
    pub cash: i64,
    pub card: i64,
    pub other: i64,
}

impl Payments {
    pub fn sum(&self) -> Option<i64> {
        self.cash.checked_add(self.card)?.checked_add(self.other)
    }
}

/// A sale or a refund as the caller sends it. `id` is the idempotency key (a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub device_id: String,
    pub cashier: String,
    pub items: Vec<Item>,
    #[serde(default)]
    pub payments: Payments,
    pub total: i64,
    /// Refunds only: the id of the sale being refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale_id: Option<String>,
}

/// Body of the shift operations; every field may be omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShiftRequest {
    /// Idempotency key (UUID); the gateway makes one when absent.
    pub id: Option<String>,
    pub cashier: Option<String>,
}

/// What the gateway does on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Sale,
    Refund,
    OpenShift,
    CloseShift,
    XReport,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Sale => "sale",
            Operation::Refund => "refund",
            Operation::OpenShift => "open_shift",
            Operation::CloseShift => "close_shift",
            Operation::XReport => "x_report",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sale" => Operation::Sale,
            "refund" => Operation::Refund,
            "open_shift" => Operation::OpenShift,
            "close_shift" => Operation::CloseShift,
            "x_report" => Operation::XReport,
            _ => return None,
        })
    }

    pub fn is_receipt(self) -> bool {
        matches!(self, Operation::Sale | Operation::Refund)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The device registered it; fiscal data is final.
    Registered,
    /// Journaled and waiting for the device; it will be registered in order, never lost.
    Queued,
    /// The device refused it; `reason` says why. A repeat with the same id tries again.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Registered => "registered",
            Status::Queued => "queued",
            Status::Failed => "failed",
        }
    }
}

/// Shift totals a device reports with X and Z reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShiftTotals {
    pub sales_total: i64,
    pub refunds_total: i64,
    pub receipts: u32,
}

/// What a device answered for a completed operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceAnswer {
    pub terminal_id: String,
    pub receipt_no: u64,
    pub fiscal_sign: String,
    /// YYYYMMDDHHMMSS, Tashkent time.
    pub date_time: String,
    pub qr_url: String,
    pub shift_no: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<ShiftTotals>,
}

/// The answer to a sale or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptResult {
    pub id: String,
    pub device_id: String,
    pub kind: Operation,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_no: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fiscal_sign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift_no: Option<u32>,
    pub total: i64,
}

/// The answer to a shift operation (open, close = Z report, X report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationResult {
    pub id: String,
    pub device_id: String,
    pub operation: Operation,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift_no: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<ShiftTotals>,
}

/// A device's state as `GET /v1/devices/{id}` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    pub driver: String,
    pub online: bool,
    pub queued: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
    pub shift_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift_no: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift_opened_at: Option<String>,
    pub paper: bool,
}

/// The ofd.soliq.uz check link printed as the receipt's QR code.
pub fn qr_url(terminal_id: &str, receipt_no: u64, date_time: &str, fiscal_sign: &str) -> String {
    format!(
        "https://ofd.soliq.uz/check?t={terminal_id}&r={receipt_no}&c={date_time}&s={fiscal_sign}"
    )
}
