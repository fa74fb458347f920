//! Records as stored and as the API returns them, and the inputs that create them.

use chrono::{DateTime, Utc};
use savdo_domain::Qty;
use savdo_domain::receipt::{PaymentMethod, ReceiptType};
use savdo_domain::tenant::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// Who does something: the token's tenant, its id and role (and store for bound cashiers).
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant_id: Uuid,
    pub token_id: Option<Uuid>,
    pub role: Role,
    pub store_id: Option<Uuid>,
}

impl Actor {
    /// The system itself (CLI, workers).
    pub fn system(tenant_id: Uuid) -> Actor {
        Actor {
            tenant_id,
            token_id: None,
            role: Role::Owner,
            store_id: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub name: String,
    #[schema(value_type = String, example = "cashier")]
    pub role: Role,
    pub store_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub store_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Store {
    pub id: Uuid,
    pub name: String,
    pub address: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct StorePatch {
    pub name: Option<String>,
    pub address: Option<Option<String>>,
    pub active: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Terminal {
    pub id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub open_shift: Option<Shift>,
    /// The till's fiscal device, when receipts are fiscalized by the server.
    pub fiscal: Option<crate::fiscal::TerminalFiscal>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Shift {
    pub id: Uuid,
    pub terminal_id: Uuid,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub barcodes: Vec<String>,
    /// Price per unit in tiyin, VAT included.
    pub price: i64,
    pub vat_percent: u8,
    pub mxik: Option<String>,
    pub package_code: Option<String>,
    /// Fiscal unit code (1 = piece, 5 = kilogram, …).
    pub unit: i32,
    pub marked: bool,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A product's fields as validated by the API (all present: defaults already applied).
#[derive(Debug, Clone, Serialize)]
pub struct ProductFields {
    pub sku: String,
    pub name: String,
    pub barcodes: Vec<String>,
    pub price: i64,
    pub vat_percent: u8,
    pub mxik: Option<String>,
    pub package_code: Option<String>,
    pub unit: i32,
    pub marked: bool,
    pub active: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    pub q: Option<String>,
    pub barcode: Option<String>,
    pub sku: Option<String>,
    pub cursor: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkResult {
    pub created: usize,
    pub updated: usize,
    pub items: Vec<Product>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    pub id: Uuid,
    pub name: String,
    pub phone: Option<String>,
    pub loyalty_card: Option<String>,
    /// Ids of this customer in external systems, by integration type (`{"jowi_club": "…"}`).
    #[schema(value_type = Object)]
    pub external_ids: serde_json::Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct CustomerFields {
    pub name: String,
    pub phone: Option<String>,
    pub loyalty_card: Option<String>,
    pub external_ids: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    pub q: Option<String>,
    pub phone: Option<String>,
    pub card: Option<String>,
    pub cursor: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockLevel {
    pub store_id: Uuid,
    pub product_id: Uuid,
    #[schema(value_type = f64)]
    pub on_hand: Qty,
    #[schema(value_type = f64)]
    pub reserved: Qty,
    #[schema(value_type = f64)]
    pub available: Qty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockDocKind {
    Supply,
    Writeoff,
    Count,
    Transfer,
}

impl StockDocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StockDocKind::Supply => "supply",
            StockDocKind::Writeoff => "writeoff",
            StockDocKind::Count => "count",
            StockDocKind::Transfer => "transfer",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StockDocLine {
    pub product_id: Uuid,
    #[schema(value_type = f64)]
    pub qty: Qty,
    /// Purchase cost per unit in tiyin (supplies), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewStockDoc {
    pub kind: StockDocKind,
    pub store_id: Uuid,
    pub to_store_id: Option<Uuid>,
    pub note: Option<String>,
    pub lines: Vec<StockDocLine>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockDoc {
    pub id: Uuid,
    pub kind: StockDocKind,
    pub store_id: Uuid,
    pub to_store_id: Option<Uuid>,
    pub note: Option<String>,
    pub lines: Vec<StockDocLine>,
    /// Stock after the document, for every store and product it touched.
    pub levels: Vec<StockLevel>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Movement {
    pub id: Uuid,
    pub store_id: Uuid,
    pub product_id: Uuid,
    pub doc_type: String,
    pub doc_id: Uuid,
    #[schema(value_type = f64)]
    pub delta: Qty,
    pub created_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Receipts

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ReceiptLineInput {
    pub product_id: Uuid,
    #[schema(value_type = f64)]
    pub qty: Qty,
    pub price: Option<i64>,
    pub discount: Option<i64>,
    pub marking_codes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PaymentInput {
    #[schema(value_type = String, example = "cash")]
    pub method: PaymentMethod,
    pub amount: i64,
    pub payment_id: Option<Uuid>,
}

/// A receipt as the till sent it, after parsing. Its canonical JSON is what the idempotency
/// hash covers, so a retry with the same content matches whatever the field order was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReceiptInput {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: ReceiptType,
    pub refund_of: Option<Uuid>,
    pub store_id: Uuid,
    pub terminal_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub lines: Vec<ReceiptLineInput>,
    pub payments: Vec<PaymentInput>,
    /// When the sale happened at the till (offline tills send it later).
    pub sold_at: Option<DateTime<Utc>>,
    /// Fiscal data when the till fiscalized the receipt through its own gateway.
    pub fiscal: Option<Value>,
    pub note: Option<String>,
    /// The receipt's loyalty record (customer, applied quote, points), stored with the receipt
    /// in its transaction. Derived by the server, so the idempotency hash leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loyalty: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiptLine {
    pub line_no: u32,
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    #[schema(value_type = f64)]
    pub qty: Qty,
    pub price: i64,
    pub discount: i64,
    pub amount: i64,
    pub vat_percent: u8,
    pub vat_amount: i64,
    pub mxik: Option<String>,
    pub package_code: Option<String>,
    pub unit: i32,
    pub marking_codes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiptPayment {
    #[schema(value_type = String, example = "cash")]
    pub method: PaymentMethod,
    pub amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Receipt {
    pub id: Uuid,
    pub number: i64,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "sale")]
    pub kind: ReceiptType,
    pub refund_of: Option<Uuid>,
    pub store_id: Uuid,
    pub terminal_id: Uuid,
    pub shift_id: Option<Uuid>,
    pub cashier_token_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub lines: Vec<ReceiptLine>,
    pub payments: Vec<ReceiptPayment>,
    pub total: i64,
    pub vat_total: i64,
    pub discount_total: i64,
    pub warnings: Vec<String>,
    /// Filled by the loyalty integration.
    #[schema(value_type = Object)]
    pub loyalty: Option<Value>,
    /// Filled by the fiscal integration (or sent by the till).
    #[schema(value_type = Object)]
    pub fiscal: Option<Value>,
    pub note: Option<String>,
    pub sold_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiptFilter {
    pub store_id: Option<Uuid>,
    pub terminal_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub cursor: Option<Uuid>,
    pub limit: u32,
}

/// The outcome of submitting a receipt.
#[derive(Debug, Clone)]
pub enum ReceiptOutcome {
    Created(Receipt),
    /// The same id came again with the same content: the stored receipt.
    Replayed(Receipt),
}

// ---------------------------------------------------------------------------------------------
// Invoices

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Reserved,
    Shipped,
    Cancelled,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Reserved => "reserved",
            InvoiceStatus::Shipped => "shipped",
            InvoiceStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => Self::Draft,
            "reserved" => Self::Reserved,
            "shipped" => Self::Shipped,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceAction {
    Reserve,
    Ship,
    Cancel,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLine {
    pub product_id: Uuid,
    #[schema(value_type = f64)]
    pub qty: Qty,
    pub price: i64,
    pub amount: i64,
}

#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub store_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub channel: Option<String>,
    pub external_ref: Option<String>,
    pub note: Option<String>,
    /// Lines with the price given or `None` for the product's price.
    pub lines: Vec<(Uuid, Qty, Option<i64>)>,
    /// Reserve stock right away.
    pub reserve: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Invoice {
    pub id: Uuid,
    pub number: i64,
    pub store_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub channel: Option<String>,
    pub external_ref: Option<String>,
    pub status: InvoiceStatus,
    pub lines: Vec<InvoiceLine>,
    pub total: i64,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct InvoiceFilter {
    pub status: Option<InvoiceStatus>,
    pub store_id: Option<Uuid>,
    pub external_ref: Option<String>,
    pub cursor: Option<Uuid>,
    pub limit: u32,
}

// ---------------------------------------------------------------------------------------------
// Audit, idempotency, events

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub token_id: Option<Uuid>,
    pub action: String,
    pub entity: String,
    pub entity_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    pub at: DateTime<Utc>,
}

/// A stored answer to a POST with an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub enum IdemState {
    /// This request now owns the key.
    Started,
    /// A request with this key is still running.
    InProgress,
    /// Finished before: the stored answer, and whether the request matched.
    Done {
        same_request: bool,
        status: u16,
        body: Vec<u8>,
    },
}

/// An event as stored in the outbox (CloudEvents fields are added when it is published).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub seq: i64,
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: Value,
    pub time: DateTime<Utc>,
}
