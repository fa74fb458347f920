//! Capability traits every concrete connector implements, and the plain types they exchange.
//!
//! Money is integer tiyin (1 UZS = 100 tiyin), quantities are thousandths of a unit (weighed
//! goods), loyalty points are whole points. Wire formats stay inside each connector module.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a call to an outside service did not give an answer we can use. Messages never carry
/// credentials (they come from status lines and redacted bodies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Could not reach the provider, or it answered 5xx.
    #[error("provider unavailable: {message}")]
    Unavailable { message: String },
    #[error("provider did not answer within {} ms", after.as_millis())]
    Timeout { after: Duration },
    /// 429 or a local rate limit that would wait too long.
    #[error("rate limited{}", fmt_after(*retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// Failed at once without calling: the provider failed too often lately.
    #[error("circuit open{}", fmt_after(*retry_after))]
    CircuitOpen { retry_after: Option<Duration> },
    /// Credentials refused (401/403 or the provider's own auth error).
    #[error("credentials refused: {message}")]
    Auth { message: String },
    /// The provider understood and said no (not found, wrong state, invalid item…).
    #[error("rejected by provider ({code}): {message}")]
    Rejected { code: String, message: String },
    /// The answer did not have the shape the protocol promises.
    #[error("unexpected answer: {message}")]
    Protocol { message: String },
    /// Settings or credentials cannot work (missing field, bad URL): fix the integration.
    #[error("integration misconfigured: {message}")]
    Config { message: String },
}

fn fmt_after(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {} ms", d.as_millis()),
        None => String::new(),
    }
}

impl ConnectorError {
    /// Worth trying again later, unchanged. `RateLimited` and `CircuitOpen` are, after their
    /// [`retry_after`](Self::retry_after); the HTTP client itself never retries `CircuitOpen`.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectorError::Unavailable { .. }
                | ConnectorError::Timeout { .. }
                | ConnectorError::RateLimited { .. }
                | ConnectorError::CircuitOpen { .. }
        )
    }

    /// The earliest moment a retry makes sense, when the provider or the breaker said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::RateLimited { retry_after }
            | ConnectorError::CircuitOpen { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A short stable name for logs, metrics and the integration's health.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectorError::Unavailable { .. } => "unavailable",
            ConnectorError::Timeout { .. } => "timeout",
            ConnectorError::RateLimited { .. } => "rate_limited",
            ConnectorError::CircuitOpen { .. } => "circuit_open",
            ConnectorError::Auth { .. } => "auth",
            ConnectorError::Rejected { .. } => "rejected",
            ConnectorError::Protocol { .. } => "protocol",
            ConnectorError::Config { .. } => "config",
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ConnectorError::Unavailable {
            message: message.into(),
        }
    }
    pub fn auth(message: impl Into<String>) -> Self {
        ConnectorError::Auth {
            message: message.into(),
        }
    }
    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError::Rejected {
            code: code.into(),
            message: message.into(),
        }
    }
    pub fn protocol(message: impl Into<String>) -> Self {
        ConnectorError::Protocol {
            message: message.into(),
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        ConnectorError::Config {
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// Answers, but something is off (slow, partial permissions, sandbox/test mode).
    Degraded,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub checked_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Health {
    pub fn ok(checked_at: DateTime<Utc>, latency_ms: Option<u64>) -> Self {
        Health {
            status: HealthStatus::Ok,
            checked_at,
            latency_ms,
            message: None,
        }
    }
}

/// What every connector can do. The capability accessors let a caller holding a
/// `dyn Connector` (as the registry builds them) reach the capability it needs; a connector
/// overrides the ones it implements, e.g. `fn as_loyalty(&self) -> Option<&dyn LoyaltyProvider>
/// { Some(self) }`.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The integration type, e.g. `"jowi_club"`.
    fn kind(&self) -> &'static str;
    /// A cheap authenticated call that proves the credentials and the endpoint work.
    async fn test_connection(&self) -> Result<Health, ConnectorError>;

    fn as_loyalty(&self) -> Option<&dyn LoyaltyProvider> {
        None
    }
    fn as_payments(&self) -> Option<&dyn PaymentProvider> {
        None
    }
    fn as_marketplace(&self) -> Option<&dyn MarketplaceConnector> {
        None
    }
    fn as_marking(&self) -> Option<&dyn MarkingService> {
        None
    }
}

// ---------------------------------------------------------------- loyalty

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum CustomerLookup {
    Card(String),
    Phone(String),
    /// A personal code or the QR shown in the customer's app.
    Code(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyCustomer {
    /// The provider's customer id.
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub card: Option<String>,
    pub level: Option<String>,
    /// Personal discount in basis points (7.5 % = 750).
    pub discount_bp: Option<u32>,
    pub balance_points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyLine {
    /// Our line reference (stable within the receipt: the line id or product id).
    pub line_ref: String,
    pub name: String,
    /// Thousandths of a unit.
    pub quantity: i64,
    /// Unit price, tiyin.
    pub price: i64,
    /// Line total before loyalty discount, tiyin.
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub customer_id: String,
    /// Our store id; the connector maps it to the provider's store reference.
    pub store_id: String,
    pub lines: Vec<LoyaltyLine>,
    /// Points the customer wants to spend (0 = only earn).
    pub spend_points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineDiscount {
    pub line_ref: String,
    /// Tiyin.
    pub discount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyQuote {
    pub lines: Vec<LineDiscount>,
    /// Tiyin, all lines.
    pub discount_total: i64,
    pub points_spend_max: i64,
    pub points_to_spend: i64,
    pub points_to_earn: i64,
    pub balance_points: i64,
    pub balance_after: i64,
    /// What one point is worth, tiyin (100 unless the program says otherwise).
    pub point_value: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSale {
    /// Our receipt id: the provider's idempotency key, so a retry never accrues twice.
    pub receipt_id: Uuid,
    pub customer_id: String,
    pub store_id: String,
    /// Paid total, tiyin.
    pub total: i64,
    pub spend_points: i64,
    pub lines: Vec<LoyaltyLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyCommit {
    pub transaction_id: String,
    pub earned_points: i64,
    pub spent_points: i64,
    pub balance_points: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyRefund {
    /// The sale being refunded.
    pub receipt_id: Uuid,
    /// Our refund receipt id: the idempotency key of the refund.
    pub refund_id: Uuid,
    /// `None` refunds the whole sale.
    pub lines: Option<Vec<LoyaltyLine>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoyaltyRefundResult {
    pub earned_reversed: i64,
    pub spent_returned: i64,
    pub balance_points: i64,
}

#[async_trait]
pub trait LoyaltyProvider: Connector {
    /// `Ok(None)` when the provider knows no such customer.
    async fn find_customer(
        &self,
        by: &CustomerLookup,
    ) -> Result<Option<LoyaltyCustomer>, ConnectorError>;
    async fn quote(&self, req: &QuoteRequest) -> Result<LoyaltyQuote, ConnectorError>;
    /// Idempotent by `receipt_id`: the same id again returns the first answer.
    async fn commit_sale(&self, req: &CommitSale) -> Result<LoyaltyCommit, ConnectorError>;
    /// Idempotent by `refund_id`.
    async fn refund(&self, req: &LoyaltyRefund) -> Result<LoyaltyRefundResult, ConnectorError>;
}

// ---------------------------------------------------------------- payments

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// Our payment id: what the provider sends back to us (Payme `account.order_id`, Click
    /// `merchant_trans_id`).
    pub payment_id: Uuid,
    /// Tiyin.
    pub amount: i64,
    pub description: Option<String>,
    pub return_url: Option<String>,
    /// `ru`, `uz` or `en`.
    pub lang: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// Where the buyer pays; the QR shown at the till encodes it (or `qr_payload`).
    pub url: String,
    pub qr_payload: String,
    /// The provider's id for the payment or invoice, when creating it gave one.
    pub provider_ref: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRef {
    pub payment_id: Uuid,
    pub provider_ref: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    Pending,
    Paid,
    Cancelled,
    Refunded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentStatus {
    pub state: PaymentState,
    pub provider_ref: Option<String>,
    /// Tiyin, when the provider reports it.
    pub amount: Option<i64>,
    pub paid_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The provider's own status code or word, for the log.
    pub provider_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelPayment {
    pub payment: PaymentRef,
    /// Tiyin; `None` cancels or refunds the whole payment.
    pub amount: Option<i64>,
    pub reason: Option<String>,
}

#[async_trait]
pub trait PaymentProvider: Connector {
    async fn checkout(&self, req: &CheckoutRequest) -> Result<Checkout, ConnectorError>;
    async fn status(&self, payment: &PaymentRef) -> Result<PaymentStatus, ConnectorError>;
    /// Cancel an unpaid payment or refund a paid one. Idempotent: cancelling a cancelled
    /// payment answers its status.
    async fn cancel(&self, req: &CancelPayment) -> Result<PaymentStatus, ConnectorError>;
}

// ---------------------------------------------------------------- marketplaces

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketplaceItem {
    /// The id stock is pushed by: Uzum skuId, Wildberries chrtId, Ozon offer_id.
    pub external_id: String,
    /// The marketplace's product card id, when distinct (Ozon product_id, WB nmId).
    pub product_id: Option<String>,
    pub title: String,
    pub barcodes: Vec<String>,
    /// Tiyin.
    pub price: Option<i64>,
    /// Thousandths, as the marketplace last reported.
    pub stock: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogPage {
    pub items: Vec<MarketplaceItem>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockUpdate {
    pub external_id: String,
    pub barcode: Option<String>,
    /// Thousandths; connectors round down to whole units and never send below zero.
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceUpdate {
    pub external_id: String,
    pub barcode: Option<String>,
    /// Tiyin.
    pub price: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub external_id: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPushResult {
    pub accepted: usize,
    pub rejected: Vec<ItemError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    New,
    Confirmed,
    Packing,
    Shipping,
    Delivered,
    Cancelled,
    Returned,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketplaceOrderLine {
    pub external_id: String,
    pub barcode: Option<String>,
    pub title: Option<String>,
    /// Thousandths.
    pub quantity: i64,
    /// Unit price, tiyin.
    pub price: i64,
    /// Marking codes must be supplied for this line (WB `requiredMeta`).
    pub marking_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketplaceOrder {
    /// The marketplace's order (posting, assembly task) id: unique per integration.
    pub external_id: String,
    pub created_at: Option<DateTime<Utc>>,
    pub state: OrderState,
    /// The marketplace's own status word.
    pub raw_status: String,
    pub lines: Vec<MarketplaceOrderLine>,
    /// Tiyin.
    pub total: i64,
    pub ship_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusChange {
    pub external_id: String,
    pub state: OrderState,
    pub raw_status: String,
    pub changed_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[async_trait]
pub trait MarketplaceConnector: Connector {
    /// Most stock updates one `push_stock` call accepts (WB 1000, Ozon 100).
    fn max_stock_batch(&self) -> usize {
        100
    }
    /// The shortest time between two pushes of the same item (Ozon: 2 minutes); changes in
    /// between are coalesced into the next push.
    fn stock_item_interval(&self) -> Option<Duration> {
        None
    }
    /// Whether [`push_prices`](Self::push_prices) does anything on this marketplace.
    fn supports_prices(&self) -> bool {
        false
    }
    /// Our prices to the marketplace; per-item refusals come back in the result.
    async fn push_prices(&self, batch: &[PriceUpdate]) -> Result<StockPushResult, ConnectorError> {
        let _ = batch;
        Err(ConnectorError::rejected(
            "unsupported",
            format!("{} does not take prices through its API", self.kind()),
        ))
    }
    async fn list_catalog(&self, cursor: Option<&str>) -> Result<CatalogPage, ConnectorError>;
    /// At most [`max_stock_batch`](Self::max_stock_batch) items; per-item refusals come back in
    /// the result, not as an error.
    async fn push_stock(&self, batch: &[StockUpdate]) -> Result<StockPushResult, ConnectorError>;
    /// Orders waiting for the seller. Import them keyed by `external_id`: the same order can
    /// come back on the next call.
    async fn fetch_new_orders(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<MarketplaceOrder>, ConnectorError>;
    async fn order_status(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError>;
    /// Orders cancelled (by the buyer or the marketplace) since the given time.
    async fn fetch_cancellations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<OrderStatusChange>, ConnectorError>;
    async fn confirm_order(&self, external_id: &str) -> Result<OrderStatusChange, ConnectorError>;
}

// ---------------------------------------------------------------- marking

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeVerdict {
    /// Known, genuine, in circulation: may be sold.
    Sellable,
    NotFound,
    /// Malformed or the verification code does not match.
    Invalid,
    AlreadySold,
    Blocked,
    Expired,
    /// Known but not in a sellable state (not introduced, written off, withdrawn).
    NotSellable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCheck {
    /// The code as sent.
    pub code: String,
    /// GTIN + serial, as the operator reports it.
    pub cis: Option<String>,
    pub gtin: Option<String>,
    pub verdict: CodeVerdict,
    /// The operator's status word (EMITTED, INTRODUCED, RETIRED…).
    pub status: Option<String>,
    pub expires_on: Option<NaiveDate>,
    pub error_code: Option<String>,
    pub message: Option<String>,
}

#[async_trait]
pub trait MarkingService: Connector {
    /// One verdict per code, in the order given.
    async fn check_codes(&self, codes: &[String]) -> Result<Vec<CodeCheck>, ConnectorError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        assert!(ConnectorError::unavailable("503").is_retryable());
        assert!(
            ConnectorError::Timeout {
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        let rl = ConnectorError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(rl.is_retryable());
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(2)));
        assert!(!ConnectorError::auth("401").is_retryable());
        assert!(!ConnectorError::rejected("404", "no").is_retryable());
        assert!(!ConnectorError::protocol("bad json").is_retryable());
        assert!(!ConnectorError::config("no url").is_retryable());
    }
}
