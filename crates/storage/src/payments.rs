//! Payments by QR (Payme, Click): our payment and the provider's transactions against it.
//!
//! Payme's transactions are kept with every timestamp Payme reported or we answered, so every
//! answer (CheckTransaction, GetStatement, a repeated Create/Perform/Cancel) is reproducible
//! after a restart. A status change of a payment emits `payment.completed`,
//! `payment.cancelled` or `payment.refunded` in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::Result;

/// `pending` -> `paid` -> (`refunded`), or `cancelled` / `expired`.
pub const STATUSES: &[&str] = &["pending", "paid", "cancelled", "expired", "refunded"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub provider: String,
    pub integration_id: Uuid,
    /// Tiyin.
    pub amount: i64,
    pub store_id: Uuid,
    pub terminal_id: Uuid,
    pub receipt_id: Option<Uuid>,
    pub description: String,
    pub status: String,
    pub checkout_url: String,
    pub expires_at: DateTime<Utc>,
    pub used_by_receipt: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One Payme transaction (times are Payme's 13-digit milliseconds; 0 = not yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymeTx {
    pub payme_id: String,
    pub payment_id: Uuid,
    /// Payme's `time` (when Payme created it).
    pub time: i64,
    pub amount: i64,
    pub create_time: i64,
    pub perform_time: i64,
    pub cancel_time: i64,
    /// 1, 2, -1, -2.
    pub state: i32,
    pub reason: Option<i32>,
    /// Our number for it (`transaction` in the answers); assigned on insert.
    pub seq: i64,
}

/// One Click payment attempt (Prepare, then Complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickTx {
    pub click_trans_id: i64,
    pub payment_id: Uuid,
    pub click_paydoc_id: i64,
    /// The raw amount string Click sent.
    pub amount: String,
    /// Assigned on insert.
    pub merchant_prepare_id: i64,
    pub merchant_confirm_id: Option<i64>,
    /// `prepared`, `confirmed`, `cancelled`.
    pub status: String,
}

#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Store a new payment and emit `payment.created`.
    async fn create_payment(&self, p: &Payment) -> Result<()>;
    async fn get_payment(&self, tenant: Uuid, id: Uuid) -> Result<Option<Payment>>;
    /// Move a payment to `to` if its status is one of `from`; emits the event of the new status.
    /// `None` when it was not in one of `from` (or does not exist).
    async fn set_payment_status(
        &self,
        tenant: Uuid,
        id: Uuid,
        from: &[&str],
        to: &str,
    ) -> Result<Option<Payment>>;

    async fn payme_tx(&self, integration: Uuid, payme_id: &str) -> Result<Option<PaymeTx>>;
    /// Every Payme transaction of a payment, oldest first.
    async fn payme_txs_of_payment(&self, payment: Uuid) -> Result<Vec<PaymeTx>>;
    /// Insert (seq 0: a number is assigned) or update a transaction, and in the same database
    /// transaction move its payment to `payment_status` (from any of `from`), emitting its event.
    async fn save_payme_tx(
        &self,
        tenant: Uuid,
        integration: Uuid,
        t: &PaymeTx,
        payment_status: Option<(&[&str], &str)>,
    ) -> Result<PaymeTx>;
    /// Transactions created in `[from, to]` (ms), ascending by create_time.
    async fn payme_statement(&self, integration: Uuid, from: i64, to: i64) -> Result<Vec<PaymeTx>>;

    async fn click_tx(&self, integration: Uuid, click_trans_id: i64) -> Result<Option<ClickTx>>;
    /// Every Click attempt on a payment, oldest first.
    async fn click_txs_of_payment(&self, payment: Uuid) -> Result<Vec<ClickTx>>;
    /// Insert (merchant_prepare_id 0: assigned) or update; same payment rule as Payme's.
    async fn save_click_tx(
        &self,
        tenant: Uuid,
        integration: Uuid,
        t: &ClickTx,
        payment_status: Option<(&[&str], &str)>,
    ) -> Result<ClickTx>;
    /// A new number from the tenant's counter `name` (Click's merchant_confirm_id).
    async fn next_payment_number(&self, tenant: Uuid, name: &str) -> Result<i64>;
}
