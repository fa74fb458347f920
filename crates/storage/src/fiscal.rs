//! What fiscal registration needs from storage: a till's fiscal device (which `savdo-fiscal`
//! gateway and which device on it) and the fiscal data of a receipt.
//!
//! A receipt's fiscal state lives in its stored document (`fiscal`), so `GET /receipts/{id}`
//! and the events show it without a join. It is written by [`FiscalStore::set_receipt_fiscal`],
//! which emits `receipt.fiscalized` in the same transaction when the receipt becomes registered.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;
use crate::model::{Actor, Receipt};

/// The fiscal device of a till: a `savdo-fiscal` gateway and a device configured on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TerminalFiscal {
    /// Base URL of the gateway's HTTP API, such as `http://192.168.1.20:8070`.
    pub gateway_url: String,
    /// The device id in the gateway's configuration (`[[devices]] id`).
    pub device_id: String,
}

/// Where a receipt's fiscal registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FiscalStatus {
    /// Not registered yet (the gateway was not reached so far).
    Pending,
    /// Registered on the fiscal device: the data is final.
    Registered,
    /// The gateway journaled it and waits for its device; it is registered later.
    Queued,
    /// The device refused it; `error` says why in a cashier's words.
    Failed,
}

impl FiscalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FiscalStatus::Pending => "pending",
            FiscalStatus::Registered => "registered",
            FiscalStatus::Queued => "queued",
            FiscalStatus::Failed => "failed",
        }
    }
}

/// A receipt's `fiscal` object as the server writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptFiscal {
    pub status: FiscalStatus,
    /// The fiscal module's terminal id (`UZ170703100189`), not the till's id.
    pub terminal_id: Option<String>,
    pub receipt_no: Option<u64>,
    /// 12 digits.
    pub fiscal_sign: Option<String>,
    /// `YYYYMMDDHHMMSS`, Tashkent time.
    pub date_time: Option<String>,
    /// `https://ofd.soliq.uz/check?t=…&r=…&c=…&s=…`
    pub qr_url: Option<String>,
    /// Why it is not registered (yet), for the cashier.
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl ReceiptFiscal {
    /// A state without fiscal data (`pending`, `queued` or `failed`).
    pub fn without_data(status: FiscalStatus, error: Option<String>, at: DateTime<Utc>) -> Self {
        ReceiptFiscal {
            status,
            terminal_id: None,
            receipt_no: None,
            fiscal_sign: None,
            date_time: None,
            qr_url: None,
            error,
            updated_at: at,
        }
    }

    /// Same state and data, whatever the time: nothing worth writing again.
    pub fn same_state(&self, other: &ReceiptFiscal) -> bool {
        let mut a = self.clone();
        a.updated_at = other.updated_at;
        a == *other
    }
}

/// What [`FiscalStore::set_receipt_fiscal`] did.
#[derive(Debug, Clone)]
pub struct FiscalUpdate {
    /// The receipt as stored afterwards.
    pub receipt: Receipt,
    /// Whether the stored fiscal state changed.
    pub changed: bool,
    /// Whether `receipt.fiscalized` was emitted by this call.
    pub fiscalized: bool,
}

#[async_trait]
pub trait FiscalStore: Send + Sync {
    /// Set (`Some`) or remove (`None`) a till's fiscal device. `NotFound("terminal")` when the
    /// till does not exist.
    async fn set_terminal_fiscal(
        &self,
        actor: &Actor,
        terminal_id: Uuid,
        fiscal: Option<&TerminalFiscal>,
    ) -> Result<()>;
    /// The till's fiscal device, if it has one.
    async fn terminal_fiscal(
        &self,
        tenant: Uuid,
        terminal_id: Uuid,
    ) -> Result<Option<TerminalFiscal>>;
    /// Which of these tills have a fiscal device, in one read.
    async fn fiscal_terminals(
        &self,
        tenant: Uuid,
        terminal_ids: &[Uuid],
    ) -> Result<std::collections::HashSet<Uuid>>;
    /// Store a receipt's fiscal state; on the first `registered`, emit `receipt.fiscalized`
    /// (the receipt with its fiscal data) in the same transaction. A receipt already
    /// registered is left alone (a late answer cannot downgrade it).
    /// A receipt left `pending` or `queued` joins the reconciliation list
    /// ([`FiscalStore::fiscal_unsettled`]) in the same transaction; any other state leaves it.
    async fn set_receipt_fiscal(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        fiscal: &ReceiptFiscal,
    ) -> Result<FiscalUpdate>;

    // The reconciliation pass: which receipts are still unsettled, and a claim per receipt so
    // that several processes never check the same receipt at once.

    /// Unsettled receipts of every tenant (a worker's scan, like the job queue) that became
    /// unsettled at or before `older_than` and are due at `now`, the longest overdue first.
    async fn fiscal_unsettled(
        &self,
        now: DateTime<Utc>,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<UnsettledReceipt>>;
    /// Claim one receipt's check until `lease_until`: `false` when it is not due (another
    /// worker took it, or it settled meanwhile).
    async fn claim_fiscal_check(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// The check came to nothing: check again at `next_at`, remembering why.
    async fn fiscal_check_later(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()>;
    /// The receipt needs no more checks (registered, failed, or no fiscal device any more).
    async fn fiscal_check_done(&self, tenant: Uuid, receipt_id: Uuid) -> Result<()>;
}

/// A receipt whose fiscal registration is not settled yet (stored `pending` or `queued`): the
/// reconciliation pass's work item. The list is kept by [`FiscalStore::set_receipt_fiscal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsettledReceipt {
    pub tenant_id: Uuid,
    pub receipt_id: Uuid,
    /// When the receipt first became pending or queued.
    pub since: DateTime<Utc>,
    /// How many reconciliation checks came to nothing so far.
    pub checks: u32,
}
