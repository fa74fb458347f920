//! The tenant's registry of marking codes (Asl Belgisi): which unit was sold by which receipt
//! and which came back. A code is keyed by its label (GTIN + serial, the unit's identity), so
//! two tills selling the same unit at once cannot both succeed: the second insert meets the
//! first one's key.
//!
//! The receipt itself is recorded by [`MarkingStore::submit_receipt_checked`], which is
//! [`crate::Storage::submit_receipt`] plus what the online check (made before the transaction,
//! never under the write lock) found.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::Result;
use crate::model::{Actor, ReceiptInput, ReceiptOutcome};

/// What the online check said before the receipt was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnlineCheck {
    /// No marking integration is configured (or the receipt has no codes): nothing to re-check.
    #[default]
    NotConfigured,
    /// The service answered and every code was sellable.
    Passed,
    /// The service was unreachable and the tenant's policy allowed the sale: the codes are
    /// re-checked later (`marking.check_failed` when that fails).
    Pending,
}

impl OnlineCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            OnlineCheck::NotConfigured => "none",
            OnlineCheck::Passed => "ok",
            OnlineCheck::Pending => "pending",
        }
    }
}

/// The outcome of the online check, handed to the receipt's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkingPrecheck {
    pub online: OnlineCheck,
    /// Human-readable warnings put on the receipt (`warnings[]`).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeState {
    Sold,
    Returned,
}

/// One code in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkedCode {
    /// GTIN + serial.
    pub label: String,
    pub gtin: String,
    /// The normalised scan as it was sold (what the online check takes).
    pub code: String,
    pub product_id: Uuid,
    pub state: CodeState,
    pub sale_receipt_id: Uuid,
    pub refund_receipt_id: Option<Uuid>,
    /// `none`, `ok`, `pending` (sold while the check service was unreachable) or `failed`.
    pub online_check: String,
    pub updated_at: DateTime<Utc>,
}

/// The re-check of one code sold while the service was unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecheckResult {
    pub label: String,
    /// `None` when the code turned out sellable; else why not.
    pub failure: Option<RecheckFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecheckFailure {
    /// The verdict word (`not_found`, `blocked`, `expired`, `already_sold`…).
    pub verdict: String,
    /// The operator's status word, when it gave one.
    pub status: Option<String>,
    pub reason: String,
}

#[async_trait]
pub trait MarkingStore: Send + Sync {
    /// [`crate::Storage::submit_receipt`] with the result of the online check. Marking codes are
    /// validated, normalised and registered (sold or returned) in the receipt's transaction.
    async fn submit_receipt_checked(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &MarkingPrecheck,
    ) -> Result<ReceiptOutcome>;

    /// Would [`MarkingStore::submit_receipt_checked`] accept this receipt now? Its checks and
    /// writes run in a transaction that is rolled back: the same refusals (stock going below
    /// zero where that is forbidden included), nothing stored, no number taken. `Ok` too for a
    /// retry of a receipt already stored with the same content. For work that must not happen
    /// for a refused receipt and cannot be undone in the receipt's transaction (points spent
    /// with a loyalty provider); the state may still change before the receipt is submitted.
    async fn check_receipt(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &MarkingPrecheck,
    ) -> Result<()>;

    /// The registry's entry of each label, in order (`None`: never sold here).
    async fn marked_codes(
        &self,
        tenant: Uuid,
        labels: &[String],
    ) -> Result<Vec<Option<MarkedCode>>>;

    /// The live product (if any) whose barcode is this GTIN-14, and whether it is marked.
    async fn product_by_gtin(&self, tenant: Uuid, gtin: &str) -> Result<Option<(Uuid, bool)>>;

    /// Codes of a receipt still waiting for their online re-check.
    async fn pending_marking_checks(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
    ) -> Result<Vec<MarkedCode>>;

    /// Record the re-check; failures raise one `marking.check_failed` event for the receipt,
    /// in the same transaction. Codes no longer pending are left alone (a repeated call is
    /// harmless).
    async fn finish_marking_recheck(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        results: &[RecheckResult],
    ) -> Result<()>;

    // The periodic re-check pass, for codes whose consumer gave up: which receipts still have
    // codes waiting, and a claim per receipt so that several processes never check it at once.

    /// Receipts of every tenant (a worker's scan, like the job queue) with codes still waiting
    /// for their re-check since `older_than` or before, whose check is due at `now`; the
    /// longest waiting first.
    async fn marking_rechecks_due(
        &self,
        now: DateTime<Utc>,
        older_than: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<PendingRecheck>>;
    /// Claim one receipt's re-check until `lease_until`: `false` while another worker holds it
    /// or it is backing off.
    async fn claim_marking_recheck(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<bool>;
    /// The re-check could not be made: try again at `next_at`, remembering why.
    async fn marking_recheck_later(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<()>;
    /// Forget the receipt's claim (its codes were re-checked, or nothing is left to check).
    async fn marking_recheck_done(&self, tenant: Uuid, receipt_id: Uuid) -> Result<()>;
}

/// A receipt with codes still waiting for their online re-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecheck {
    pub tenant_id: Uuid,
    pub receipt_id: Uuid,
    /// Re-checks of the periodic pass that could not be made so far.
    pub checks: u32,
}
