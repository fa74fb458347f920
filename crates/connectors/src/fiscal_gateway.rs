//! Client of the `savdo-fiscal` gateway and the consumer that fiscalizes receipts.
//!
//! A till with a fiscal device (`PUT /api/v1/terminals/{id}/fiscal`) names a gateway and a device
//! on it. The [`FiscalConsumer`] (consumer `fiscal`) takes every `receipt.created` and
//! `receipt.refunded` of such a till, registers it through the gateway with the receipt id as
//! the gateway's idempotency id, and stores the outcome on the receipt (`fiscal`), emitting
//! `receipt.fiscalized` once it is registered. Because the gateway answers a repeated id with its
//! stored result, every retry (ours, or a redelivered event) is safe: one registration per
//! receipt.
//!
//! Policy:
//! - `registered`: stored, `receipt.fiscalized` emitted, done.
//! - `queued` (the gateway journaled it and waits for its device): stored as `queued`, retried
//!   without end (backoff from 2 s, capped at [`MAX_BACKOFF`]) until the gateway answers
//!   `registered`, however long the device is away.
//! - gateway unreachable (connection refused, timeout, 5xx): stored as `pending` with the error,
//!   retried the same way, however long the outage.
//! - `failed` (the device refused it: no open shift, out of paper, shift over 24 hours): stored
//!   as `failed` with the device's reason, visible to the cashier, and retried with backoff —
//!   these refusals clear once someone acts (opens the shift, loads paper), and the gateway
//!   tries a failed id again on a repeat. Once it has been refused for [`REFUSAL_WINDOW`] (two
//!   hours) the event is dead-lettered and the receipt stays `failed` with its reason.
//! - the gateway refuses the request itself (422 rule violation such as a product without MXIK,
//!   409 id reused): stored as `failed` with the gateway's message, not retried (the receipt
//!   cannot change). A refund whose sale the gateway does not know yet (the sale is still
//!   pending here) is retried instead.
//! - receipts of tills without a fiscal device, and receipts the till fiscalized itself (it sent
//!   `fiscal` with a `fiscal_sign`, or with status `registered` or `queued` on its own gateway),
//!   are left alone.
//!
//! Should an event still be lost (dead-lettered before this policy, or never delivered), the
//! reconciliation pass ([`crate::fiscal_reconcile`]) asks the gateway about every receipt left
//! `pending` or `queued` for a while, and stores the answer through [`FiscalConsumer::register`]
//! and [`FiscalConsumer::store_answer`], the same way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use savdo_bus::{Consumer, HandleError, RetryPolicy};
use savdo_domain::clock::{Clock, SystemClock};
use savdo_domain::event::CloudEvent;
use savdo_domain::marking::MarkingCode;
use savdo_domain::receipt::{PaymentMethod, ReceiptType};
use savdo_storage::fiscal::{FiscalStatus, ReceiptFiscal, TerminalFiscal};
use savdo_storage::{Receipt, Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The gateway's wire format (HTTP JSON, see the savdo-fiscal README)

/// One receipt position as the gateway takes it. Money in tiyin, quantity in thousandths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayItem {
    pub name: String,
    pub mxik: String,
    pub package_code: String,
    pub unit: u32,
    pub qty_milli: i64,
    pub price: i64,
    pub discount: i64,
    pub vat_percent: u32,
    pub vat_amount: i64,
    /// Marking labels (GTIN + serial) of marked goods.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPayments {
    pub cash: i64,
    /// Electronic payments: bank cards and the Payme / Click wallets.
    pub card: i64,
    pub other: i64,
}

/// A sale or refund for `POST /v1/receipts/sale|refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReceipt {
    /// Our receipt id: the gateway's idempotency key.
    pub id: String,
    pub device_id: String,
    pub cashier: String,
    pub items: Vec<GatewayItem>,
    pub payments: GatewayPayments,
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sale_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayStatus {
    Registered,
    Queued,
    Failed,
}

/// The gateway's answer to a sale or refund (`ReceiptResult`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GatewayReceiptResult {
    pub id: String,
    pub status: GatewayStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub terminal_id: Option<String>,
    #[serde(default)]
    pub receipt_no: Option<u64>,
    #[serde(default)]
    pub fiscal_sign: Option<String>,
    #[serde(default)]
    pub date_time: Option<String>,
    #[serde(default)]
    pub qr_url: Option<String>,
}

/// The gateway's answer to a shift operation (`OperationResult`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GatewayOperationResult {
    pub id: String,
    pub status: GatewayStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub shift_no: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct Problem {
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    errors: Vec<ProblemField>,
}

#[derive(Debug, Deserialize)]
struct ProblemField {
    #[serde(default)]
    field: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Not reached, no answer in time, or a server error: try again later.
    #[error("fiscal gateway unreachable: {0}")]
    Unreachable(String),
    /// The gateway answered and refused the request (4xx).
    #[error("fiscal gateway refused the request: {message}")]
    Refused {
        status: u16,
        message: String,
        /// The fields its problem named (`items[0].mxik`, `sale_id`).
        fields: Vec<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// The client

/// Which shift operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftOp {
    Open,
    Close,
}

impl ShiftOp {
    fn path(self) -> &'static str {
        match self {
            ShiftOp::Open => "open",
            ShiftOp::Close => "close",
        }
    }
}

/// HTTP client of `savdo-fiscal` gateways (any URL: each till names its own).
#[derive(Clone)]
pub struct FiscalClient {
    http: reqwest::Client,
    /// Bound on a receipt registration; the gateway itself answers `queued` after its
    /// `answer_wait_ms` (10 s by default), so this is longer.
    pub receipt_timeout: Duration,
    /// Bound on a shift operation made while a cashier waits for the API's answer.
    pub shift_timeout: Duration,
}

impl std::fmt::Debug for FiscalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiscalClient")
            .field("receipt_timeout", &self.receipt_timeout)
            .field("shift_timeout", &self.shift_timeout)
            .finish()
    }
}

impl Default for FiscalClient {
    fn default() -> Self {
        Self::new()
    }
}

impl FiscalClient {
    pub fn new() -> Self {
        // reqwest is built without a default TLS provider; install ring (harmless if done).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("savdo/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        FiscalClient {
            http,
            receipt_timeout: Duration::from_secs(30),
            shift_timeout: Duration::from_secs(8),
        }
    }

    fn url(base: &str, segments: &[&str]) -> Result<reqwest::Url, GatewayError> {
        let mut url =
            reqwest::Url::parse(base.trim_end_matches('/')).map_err(|e| GatewayError::Refused {
                status: 0,
                message: format!("invalid gateway URL {base}: {e}"),
                fields: vec![],
            })?;
        {
            let mut p = url.path_segments_mut().map_err(|_| GatewayError::Refused {
                status: 0,
                message: format!("invalid gateway URL {base}"),
                fields: vec![],
            })?;
            p.pop_if_empty();
            p.extend(segments);
        }
        Ok(url)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, GatewayError> {
        let resp = rb
            .send()
            .await
            .map_err(|e| GatewayError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| GatewayError::Unreachable(error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                GatewayError::Unreachable(format!("unexpected answer ({status}): {e}"))
            });
        }
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(GatewayError::Unreachable(format!("HTTP {status}")));
        }
        let p: Problem = serde_json::from_slice(&body).unwrap_or_default();
        let mut message = p
            .detail
            .or(p.title)
            .unwrap_or_else(|| format!("HTTP {status}"));
        if !p.errors.is_empty() {
            let list: Vec<String> = p
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            message = format!("{message} ({})", list.join("; "));
        }
        Err(GatewayError::Refused {
            status: status.as_u16(),
            message,
            fields: p.errors.into_iter().map(|e| e.field).collect(),
        })
    }

    /// `POST /v1/receipts/sale|refund`: registers the receipt, or answers the stored result of
    /// an earlier call with the same id.
    pub async fn register(
        &self,
        gateway_url: &str,
        receipt: &GatewayReceipt,
    ) -> Result<GatewayReceiptResult, GatewayError> {
        let kind = if receipt.sale_id.is_some() {
            "refund"
        } else {
            "sale"
        };
        let url = Self::url(gateway_url, &["v1", "receipts", kind])?;
        self.call(
            self.http
                .post(url)
                .timeout(self.receipt_timeout)
                .json(receipt),
        )
        .await
    }

    /// `GET /v1/receipts/{id}`.
    pub async fn receipt(
        &self,
        gateway_url: &str,
        id: Uuid,
    ) -> Result<GatewayReceiptResult, GatewayError> {
        let url = Self::url(gateway_url, &["v1", "receipts", &id.to_string()])?;
        self.call(self.http.get(url).timeout(self.receipt_timeout))
            .await
    }

    /// `POST /v1/devices/{id}/shift/open|close`.
    pub async fn shift(
        &self,
        device: &TerminalFiscal,
        op: ShiftOp,
        id: Uuid,
        cashier: &str,
    ) -> Result<GatewayOperationResult, GatewayError> {
        let url = Self::url(
            &device.gateway_url,
            &["v1", "devices", &device.device_id, "shift", op.path()],
        )?;
        self.call(
            self.http
                .post(url)
                .timeout(self.shift_timeout)
                .json(&serde_json::json!({"id": id.to_string(), "cashier": cashier})),
        )
        .await
    }

    /// Open or close the fiscal shift on a till's device after Savdo's own shift changed.
    /// Never fails: whatever went wrong comes back as a warning for the cashier (`None` when
    /// the device did it).
    pub async fn shift_warning(
        &self,
        device: &TerminalFiscal,
        op: ShiftOp,
        id: Uuid,
        cashier: &str,
    ) -> Option<String> {
        let what = match op {
            ShiftOp::Open => "open",
            ShiftOp::Close => "close",
        };
        match self.shift(device, op, id, cashier).await {
            Ok(r) => match r.status {
                GatewayStatus::Registered => None,
                GatewayStatus::Queued => Some(format!(
                    "the fiscal device has not answered yet; the gateway will {what} the fiscal shift when it is back"
                )),
                GatewayStatus::Failed => Some(format!(
                    "the fiscal device did not {what} its shift: {}",
                    r.reason.as_deref().unwrap_or("refused")
                )),
            },
            Err(e) => {
                tracing::warn!(device = %device.device_id, error = %e, "fiscal shift {what} failed");
                Some(format!(
                    "the fiscal shift was not {what}ed: {e}; {what} it on the fiscal device"
                ))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Mapping our receipt to the gateway's

/// The label a fiscal receipt carries for a marking code: GTIN + serial when the code parses,
/// the code as scanned otherwise.
pub fn marking_label(code: &str) -> String {
    MarkingCode::parse(code)
        .map(|c| c.label())
        .unwrap_or_else(|_| code.to_string())
}

/// Our receipt as the gateway's request for `device_id`.
pub fn to_gateway(receipt: &Receipt, device_id: &str, cashier: &str) -> GatewayReceipt {
    let items = receipt
        .lines
        .iter()
        .map(|l| GatewayItem {
            name: l.name.clone(),
            mxik: l.mxik.clone().unwrap_or_default(),
            package_code: l.package_code.clone().unwrap_or_default(),
            unit: u32::try_from(l.unit).unwrap_or(0),
            qty_milli: l.qty.milli(),
            price: l.price,
            discount: l.discount,
            vat_percent: u32::from(l.vat_percent),
            vat_amount: l.vat_amount,
            labels: l.marking_codes.iter().map(|c| marking_label(c)).collect(),
        })
        .collect();
    let mut payments = GatewayPayments::default();
    for p in &receipt.payments {
        match p.method {
            PaymentMethod::Cash => payments.cash += p.amount,
            PaymentMethod::Card | PaymentMethod::Payme | PaymentMethod::Click => {
                payments.card += p.amount
            }
            PaymentMethod::LoyaltyPoints | PaymentMethod::Other => payments.other += p.amount,
        }
    }
    GatewayReceipt {
        id: receipt.id.to_string(),
        device_id: device_id.to_string(),
        cashier: cashier.to_string(),
        items,
        payments,
        total: receipt.total,
        sale_id: match receipt.kind {
            ReceiptType::Refund => receipt.refund_of.map(|s| s.to_string()),
            ReceiptType::Sale => None,
        },
    }
}

/// Whether the till sent the receipt already fiscalized through its own gateway: a `fiscal`
/// object with a fiscal sign, or with status `registered` or `queued` there.
pub fn fiscalized_by_till(fiscal: Option<&Value>) -> bool {
    let Some(f) = fiscal else {
        return false;
    };
    let sign = f
        .get("fiscal_sign")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty());
    let status = f.get("status").and_then(Value::as_str);
    sign || matches!(status, Some("registered" | "queued"))
}

/// The name printed as the cashier: the token's name, or "Savdo" for the system.
pub async fn cashier_name(store: &dyn Storage, tenant: Uuid, token: Option<Uuid>) -> String {
    if let Some(t) = token
        && let Ok(tokens) = store.list_tokens(tenant).await
        && let Some(found) = tokens.into_iter().find(|x| x.id == t)
    {
        return found.name;
    }
    "Savdo".to_string()
}

// ---------------------------------------------------------------------------------------------
// The consumer

/// Registers receipts on their till's fiscal device (consumer name `fiscal`).
pub struct FiscalConsumer {
    store: Arc<dyn Storage>,
    client: FiscalClient,
    clock: Arc<dyn Clock>,
}

impl FiscalConsumer {
    pub const NAME: &'static str = "fiscal";

    pub fn new(store: Arc<dyn Storage>) -> Self {
        Self::with(store, FiscalClient::new(), Arc::new(SystemClock))
    }

    pub fn with(store: Arc<dyn Storage>, client: FiscalClient, clock: Arc<dyn Clock>) -> Self {
        FiscalConsumer {
            store,
            client,
            clock,
        }
    }

    /// Send `receipt` to its till's gateway and store what came of it. The consumer and the
    /// reconciliation pass both register through here.
    pub async fn register(
        &self,
        tenant: Uuid,
        receipt: &Receipt,
        device: &TerminalFiscal,
    ) -> Result<Registration, StorageError> {
        let cashier = cashier_name(self.store.as_ref(), tenant, receipt.cashier_token_id).await;
        let request = to_gateway(receipt, &device.device_id, &cashier);
        let answer = self.client.register(&device.gateway_url, &request).await;
        self.store_answer(tenant, receipt.id, answer).await
    }

    /// Store the gateway's answer about a receipt (to a registration or a look-up) on the
    /// receipt; `registered` emits `receipt.fiscalized`, once.
    pub async fn store_answer(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        answer: Result<GatewayReceiptResult, GatewayError>,
    ) -> Result<Registration, StorageError> {
        let now = self.clock.now();
        let (fiscal, outcome) = match answer {
            Ok(r) => match r.status {
                GatewayStatus::Registered => (
                    ReceiptFiscal {
                        status: FiscalStatus::Registered,
                        terminal_id: r.terminal_id,
                        receipt_no: r.receipt_no,
                        fiscal_sign: r.fiscal_sign,
                        date_time: r.date_time,
                        qr_url: r.qr_url,
                        error: None,
                        updated_at: now,
                    },
                    Registration::Registered,
                ),
                GatewayStatus::Queued => (
                    ReceiptFiscal::without_data(
                        FiscalStatus::Queued,
                        Some("waiting for the fiscal device".into()),
                        now,
                    ),
                    Registration::Queued,
                ),
                GatewayStatus::Failed => {
                    let reason = r
                        .reason
                        .unwrap_or_else(|| "the fiscal device refused the receipt".into());
                    (
                        ReceiptFiscal::without_data(
                            FiscalStatus::Failed,
                            Some(reason.clone()),
                            now,
                        ),
                        Registration::DeviceRefused(reason),
                    )
                }
            },
            Err(GatewayError::Unreachable(msg)) => (
                ReceiptFiscal::without_data(
                    FiscalStatus::Pending,
                    Some(format!("fiscal gateway unreachable: {msg}")),
                    now,
                ),
                Registration::Unreachable(msg),
            ),
            Err(GatewayError::Refused {
                status,
                message,
                fields,
            }) => {
                // The sale of a refund may still be on its way to the gateway; an unknown
                // device may yet be configured. Anything else in the receipt cannot change.
                let may_pass = status == 404 || fields.iter().any(|f| f == "sale_id");
                (
                    ReceiptFiscal::without_data(FiscalStatus::Failed, Some(message.clone()), now),
                    Registration::Refused { message, may_pass },
                )
            }
        };
        self.store
            .set_receipt_fiscal(tenant, receipt_id, &fiscal)
            .await?;
        Ok(outcome)
    }

    pub fn client(&self) -> &FiscalClient {
        &self.client
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// What one registration came to; the receipt's fiscal state is stored already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered (now or before): `receipt.fiscalized` was emitted once.
    Registered,
    /// Journaled by the gateway, waiting for its device.
    Queued,
    /// The gateway was not reached (stored `pending`).
    Unreachable(String),
    /// The device refused it (no open shift, out of paper): stored `failed` with the reason.
    DeviceRefused(String),
    /// The gateway refused the request (stored `failed`); `may_pass` when it may pass later
    /// (a refund's sale not there yet, a device not configured yet).
    Refused { message: String, may_pass: bool },
}

/// The receipt's fiscal state as we store it, when it is ours.
pub fn stored_fiscal(receipt: &Receipt) -> Option<ReceiptFiscal> {
    receipt
        .fiscal
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// First backoff of a queued or unreachable receipt; the backoff grows to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Retries of a queued or unreachable receipt are at most this far apart, so a receipt is
/// registered here within about this long of its gateway's (or device's) return.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a receipt the device (or the gateway, for a reason that may pass) keeps refusing is
/// retried, from its first refusal, before it is dead-lettered and stays `failed` with the
/// reason. Counted in time, not attempts, so a long outage before does not shorten it.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(2 * 3600);

fn storage_error(e: StorageError) -> HandleError {
    HandleError::Retry(format!("storage: {e}"))
}

#[async_trait]
impl Consumer for FiscalConsumer {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn accepts(&self, event_type: &str) -> bool {
        matches!(event_type, "receipt.created" | "receipt.refunded")
    }

    /// Queued and unreachable receipts must land: retried without end (capped backoff).
    /// Refusals give up after [`REFUSAL_WINDOW`] themselves; rule violations are dead-lettered.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        Some(RetryPolicy::until_done(FIRST_BACKOFF, MAX_BACKOFF))
    }

    /// A receipt the till fiscalized itself, or made on a terminal without a fiscal device,
    /// needs nothing from us: decided before the inbox, so such receipts cost no write.
    async fn wants(&self, event: &CloudEvent) -> bool {
        self.wanted(&[event]).await.first().copied().unwrap_or(true)
    }

    /// One read of the tills' devices per tenant for all the events.
    async fn wanted(&self, events: &[&CloudEvent]) -> Vec<bool> {
        let terminal = |e: &CloudEvent| {
            let fiscal = &e.data["fiscal"];
            if fiscalized_by_till((!fiscal.is_null()).then_some(fiscal)) {
                return Err(false);
            }
            match e.data["terminal_id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
            {
                Some(t) => Ok(t),
                // Left to `handle`, which says what is wrong with it.
                None => Err(true),
            }
        };
        let mut asked: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for e in events {
            if let Ok(t) = terminal(e) {
                asked.entry(e.tenantid).or_default().push(t);
            }
        }
        let mut with_device: HashMap<Uuid, Option<HashSet<Uuid>>> = HashMap::new();
        for (tenant, terminals) in asked {
            // A read error (`None`) is left to `handle`, which retries.
            let found = self.store.fiscal_terminals(tenant, &terminals).await.ok();
            with_device.insert(tenant, found);
        }
        events
            .iter()
            .map(|e| match terminal(e) {
                Err(w) => w,
                Ok(t) => with_device
                    .get(&e.tenantid)
                    .and_then(Option::as_ref)
                    .is_none_or(|found| found.contains(&t)),
            })
            .collect()
    }

    async fn handle(&self, event: &CloudEvent, attempt: u32) -> Result<(), HandleError> {
        let tenant = event.tenantid;
        let sent: Receipt = serde_json::from_value(event.data.clone())
            .map_err(|e| HandleError::Permanent(format!("not a receipt: {e}")))?;
        // The event carries the receipt as the till sent it.
        if fiscalized_by_till(sent.fiscal.as_ref()) {
            return Ok(());
        }
        let Some(device) = self
            .store
            .terminal_fiscal(tenant, sent.terminal_id)
            .await
            .map_err(storage_error)?
        else {
            return Ok(());
        };
        // A redelivery after we stored the registration: nothing left to do.
        let current = match self.store.get_receipt(tenant, sent.id).await {
            Ok(r) => r,
            Err(StorageError::NotFound(_)) => {
                return Err(HandleError::Permanent("the receipt does not exist".into()));
            }
            Err(e) => return Err(storage_error(e)),
        };
        let previous = stored_fiscal(&current);
        if previous
            .as_ref()
            .is_some_and(|f| f.status == FiscalStatus::Registered)
        {
            return Ok(());
        }
        // Refused since when: a stored `failed` keeps the time it was first refused (for the
        // same reason).
        let refused_since = previous
            .filter(|f| f.status == FiscalStatus::Failed)
            .map(|f| f.updated_at);
        let outcome = self
            .register(tenant, &current, &device)
            .await
            .map_err(storage_error)?;
        match outcome {
            Registration::Registered => {
                tracing::info!(receipt = %current.id, attempt, "receipt fiscalized");
                Ok(())
            }
            Registration::Queued => Err(HandleError::Retry(
                "queued on the fiscal gateway: not registered yet".into(),
            )),
            Registration::Unreachable(msg) => Err(HandleError::Retry(msg)),
            Registration::DeviceRefused(reason) => {
                let message = format!("fiscal device refused: {reason}");
                Err(self.refusal(message, refused_since))
            }
            Registration::Refused { message, may_pass } => {
                if may_pass {
                    Err(self.refusal(message, refused_since))
                } else {
                    Err(HandleError::Permanent(message))
                }
            }
        }
    }
}

impl FiscalConsumer {
    /// A refusal that may clear is retried until [`REFUSAL_WINDOW`] after the first one.
    fn refusal(
        &self,
        message: String,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> HandleError {
        let waited = since.map_or(chrono::Duration::zero(), |t| self.clock.now() - t);
        let window = chrono::Duration::from_std(REFUSAL_WINDOW).unwrap_or(chrono::Duration::MAX);
        if waited >= window {
            HandleError::Permanent(message)
        } else {
            HandleError::Retry(message)
        }
    }
}

#[cfg(test)]
// Money is written as sums and tiyin: `5_000_00` is 5 000.00 UZS.
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;
    use savdo_domain::Qty;
    use savdo_storage::{ReceiptLine, ReceiptPayment};
    use serde_json::json;

    fn receipt(kind: ReceiptType) -> Receipt {
        let now = chrono::Utc::now();
        Receipt {
            id: Uuid::now_v7(),
            number: 1,
            kind,
            refund_of: (kind == ReceiptType::Refund).then(Uuid::now_v7),
            store_id: Uuid::now_v7(),
            terminal_id: Uuid::now_v7(),
            shift_id: None,
            cashier_token_id: None,
            customer_id: None,
            lines: vec![ReceiptLine {
                line_no: 1,
                product_id: Uuid::now_v7(),
                sku: "NON".into(),
                name: "Non".into(),
                qty: Qty::from_milli(2_000),
                price: 5_000_00,
                discount: 100_00,
                amount: 9_900_00,
                vat_percent: 12,
                vat_amount: 1_060_71,
                mxik: Some("10202001001000000".into()),
                package_code: Some("1508583".into()),
                unit: 1,
                marking_codes: vec!["0104780101164394215Wq&x<7".into()],
            }],
            payments: vec![
                ReceiptPayment {
                    method: PaymentMethod::Cash,
                    amount: 4_000_00,
                    payment_id: None,
                },
                ReceiptPayment {
                    method: PaymentMethod::Payme,
                    amount: 5_000_00,
                    payment_id: None,
                },
                ReceiptPayment {
                    method: PaymentMethod::LoyaltyPoints,
                    amount: 900_00,
                    payment_id: None,
                },
            ],
            total: 9_900_00,
            vat_total: 1_060_71,
            discount_total: 100_00,
            warnings: vec![],
            loyalty: None,
            fiscal: None,
            note: None,
            sold_at: now,
            created_at: now,
        }
    }

    #[test]
    fn maps_lines_payments_and_labels() {
        let r = receipt(ReceiptType::Sale);
        let g = to_gateway(&r, "till-1", "Dilnoza");
        assert_eq!(g.id, r.id.to_string());
        assert_eq!(g.device_id, "till-1");
        assert_eq!(g.sale_id, None);
        let i = &g.items[0];
        assert_eq!(
            (i.qty_milli, i.price, i.discount, i.vat_amount),
            (2_000, 5_000_00, 100_00, 1_060_71)
        );
        assert_eq!(
            (i.mxik.as_str(), i.package_code.as_str(), i.unit),
            ("10202001001000000", "1508583", 1)
        );
        assert_eq!(i.labels, vec!["047801011643945Wq&x<7".to_string()]);
        assert_eq!(
            g.payments,
            GatewayPayments {
                cash: 4_000_00,
                card: 5_000_00,
                other: 900_00
            }
        );
        assert_eq!(g.total, 9_900_00);
    }

    #[test]
    fn refunds_name_the_sale() {
        let r = receipt(ReceiptType::Refund);
        let g = to_gateway(&r, "till-1", "x");
        assert_eq!(g.sale_id, r.refund_of.map(|s| s.to_string()));
        let body = serde_json::to_value(&g).unwrap();
        assert!(body["sale_id"].is_string());
        let sale = to_gateway(&receipt(ReceiptType::Sale), "till-1", "x");
        assert!(
            serde_json::to_value(&sale)
                .unwrap()
                .get("sale_id")
                .is_none()
        );
    }

    #[test]
    fn till_fiscal_data_is_recognised() {
        assert!(!fiscalized_by_till(None));
        assert!(!fiscalized_by_till(Some(&json!({}))));
        assert!(!fiscalized_by_till(Some(
            &json!({"status": "failed", "error": "no paper"})
        )));
        assert!(fiscalized_by_till(Some(
            &json!({"status": "registered", "fiscal_sign": "123456789012"})
        )));
        assert!(fiscalized_by_till(Some(
            &json!({"fiscal_sign": "123456789012"})
        )));
        assert!(fiscalized_by_till(Some(&json!({"status": "queued"}))));
    }

    #[test]
    fn gateway_urls_keep_their_prefix() {
        let u = FiscalClient::url(
            "http://h:8070/fiscal/",
            &["v1", "devices", "till 1", "shift", "open"],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://h:8070/fiscal/v1/devices/till%201/shift/open"
        );
        assert!(FiscalClient::url("not a url", &["v1"]).is_err());
    }
}
