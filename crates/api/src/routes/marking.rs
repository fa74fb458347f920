//! Marking codes at the till: `POST /marking/check` (as codes are scanned) and the online check
//! a sale of marked goods goes through before its transaction.
//!
//! The online check never runs under the database's write lock and is bounded by
//! [`AppState::marking_budget`](crate::state::AppState) (1.5 s): when the service does not
//! answer in time the tenant's `marking_offline_policy` decides, `refuse` (422) or `allow` (the
//! receipt carries a warning and its codes are re-checked later).

use axum::Json;
use axum::extract::State;
use savdo_domain::marking::MarkingCode;
use savdo_domain::receipt::ReceiptType;
use savdo_domain::tenant::{MarkingOfflinePolicy, Role};
use savdo_hub::connector::{CodeCheck, CodeVerdict};
use savdo_hub::marking::{refusal, verdict_word};
use savdo_storage::marking::CodeState;
use savdo_storage::{FieldError, MarkingPrecheck, OnlineCheck, ReceiptInput};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Auth};
use crate::state::AppState;

/// Most codes one check takes.
const MAX_CODES: usize = 100;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Codes as the scanner delivered them (GS as `\u001d`, `<GS>`…), at most 100.
    codes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CodeResult {
    /// The code as sent.
    code: String,
    /// The code parses as a marking code (GTIN check digit, serial).
    valid: bool,
    gtin: Option<String>,
    serial: Option<String>,
    /// GTIN + serial: the unit's identity and the fiscal receipt's label.
    label: Option<String>,
    /// Our product whose barcode is the code's GTIN.
    product_id: Option<Uuid>,
    /// May be sold now, as far as we and (when reachable) Asl Belgisi know.
    sellable: bool,
    /// In our registry: `new` (never sold here), `sold` or `returned`.
    status: Option<String>,
    /// Asl Belgisi's verdict (`sellable`, `not_found`, `blocked`, `expired`, `already_sold`,
    /// `invalid`, `not_sellable`), `unavailable` when it did not answer, absent when no marking
    /// integration is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    online_status: Option<String>,
    /// The operator's own status word (INTRODUCED, RETIRED…), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    operator_status: Option<String>,
    /// Why the code is not valid or not sellable.
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckResponse {
    results: Vec<CodeResult>,
}

enum Online {
    NotConfigured,
    Answered(Vec<CodeCheck>),
    Unavailable(String),
}

/// Ask the tenant's marking service about `codes`, within the budget.
async fn online(st: &AppState, tenant: Uuid, codes: &[String]) -> Online {
    let Some(check) = &st.marking else {
        return Online::NotConfigured;
    };
    if codes.is_empty() {
        return Online::NotConfigured;
    }
    match tokio::time::timeout(st.marking_budget, check.check(tenant, codes)).await {
        Ok(Ok(None)) => Online::NotConfigured,
        Ok(Ok(Some(v))) if v.len() == codes.len() => Online::Answered(v),
        Ok(Ok(Some(v))) => Online::Unavailable(format!(
            "sent {} codes, got {} verdicts",
            codes.len(),
            v.len()
        )),
        Ok(Err(e)) => Online::Unavailable(e.to_string()),
        Err(_) => Online::Unavailable(format!(
            "no answer within {} ms",
            st.marking_budget.as_millis()
        )),
    }
}

/// The online check of a sale's marking codes, before its transaction. Codes Asl Belgisi
/// refuses are a 422 naming `lines[i].marking_codes[j]`; an unreachable service is a 422 or a
/// warning, as the tenant's policy says. Malformed codes are left to the receipt's own checks.
pub async fn precheck(
    st: &AppState,
    tenant: Uuid,
    input: &ReceiptInput,
) -> ApiResult<MarkingPrecheck> {
    if st.marking.is_none() || input.kind != ReceiptType::Sale {
        return Ok(MarkingPrecheck::default());
    }
    let mut at = Vec::new();
    let mut codes = Vec::new();
    for (i, l) in input.lines.iter().enumerate() {
        for (j, c) in l.marking_codes.iter().enumerate() {
            if let Ok(mc) = MarkingCode::parse(c) {
                at.push((i, j));
                codes.push(mc.raw().to_owned());
            }
        }
    }
    if codes.is_empty() {
        return Ok(MarkingPrecheck::default());
    }
    // A retry of a recorded receipt is answered from storage, not checked again (its codes are
    // sold by now, and may be reported so).
    if st.store.get_receipt(tenant, input.id).await.is_ok() {
        return Ok(MarkingPrecheck::default());
    }
    match online(st, tenant, &codes).await {
        Online::NotConfigured => Ok(MarkingPrecheck::default()),
        Online::Answered(checks) => {
            let errors: Vec<FieldError> = checks
                .iter()
                .zip(&at)
                .filter_map(|(c, (i, j))| {
                    refusal(c).map(|r| FieldError::new(format!("lines[{i}].marking_codes[{j}]"), r))
                })
                .collect();
            if errors.is_empty() {
                Ok(MarkingPrecheck {
                    online: OnlineCheck::Passed,
                    warnings: Vec::new(),
                })
            } else {
                Err(ApiError::fields(errors))
            }
        }
        Online::Unavailable(why) => {
            let settings = st.store.settings(tenant).await?;
            match settings.marking_offline_policy {
                MarkingOfflinePolicy::Refuse => Err(ApiError::field(
                    format!("lines[{}].marking_codes", at[0].0),
                    format!(
                        "the Asl Belgisi code check is unreachable ({why}) and the marking_offline_policy setting is refuse: marked goods cannot be sold until it answers"
                    ),
                )),
                MarkingOfflinePolicy::Allow => Ok(MarkingPrecheck {
                    online: OnlineCheck::Pending,
                    warnings: vec![format!(
                        "Marking codes were not checked online: the Asl Belgisi code check is unreachable ({why}). They will be re-checked later."
                    )],
                }),
            }
        }
    }
}

#[utoipa::path(post, path = "/api/v1/marking/check", tag = "marking", request_body = CheckRequest,
    responses((status = 200, description = "One result per code, in order", body = CheckResponse),
        (status = 422, body = crate::error::Problem)))]
pub async fn check(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckResponse>> {
    auth.require(&[Role::Owner, Role::Manager, Role::Cashier, Role::Integration])?;
    if b.codes.is_empty() || b.codes.len() > MAX_CODES {
        return Err(ApiError::field(
            "codes",
            format!("send between 1 and {MAX_CODES} codes"),
        ));
    }
    let tenant = auth.tenant();
    let parsed: Vec<Option<MarkingCode>> =
        b.codes.iter().map(|c| MarkingCode::parse(c).ok()).collect();
    let labels: Vec<String> = parsed.iter().flatten().map(MarkingCode::label).collect();
    let mut known = st.store.marked_codes(tenant, &labels).await?.into_iter();
    let sendable: Vec<String> = parsed
        .iter()
        .flatten()
        .map(|c| c.raw().to_owned())
        .collect();
    let answer = online(&st, tenant, &sendable).await;
    let mut verdicts = match &answer {
        Online::Answered(v) => v.iter().map(Some).collect::<Vec<_>>().into_iter(),
        _ => Vec::new().into_iter(),
    };
    let mut results = Vec::with_capacity(b.codes.len());
    for (raw, p) in b.codes.iter().zip(&parsed) {
        let Some(c) = p else {
            let reason = MarkingCode::parse(raw).err().map(|e| e.to_string());
            results.push(CodeResult {
                code: raw.clone(),
                valid: false,
                gtin: None,
                serial: None,
                label: None,
                product_id: None,
                sellable: false,
                status: None,
                online_status: None,
                operator_status: None,
                reason,
            });
            continue;
        };
        let reg = known.next().flatten();
        let product = st.store.product_by_gtin(tenant, c.gtin()).await?;
        let verdict = verdicts.next().flatten();
        let status = match reg.as_ref().map(|r| r.state) {
            None => "new",
            Some(CodeState::Sold) => "sold",
            Some(CodeState::Returned) => "returned",
        };
        let mut reason = None;
        match product {
            None => {
                reason = Some(format!(
                    "no product has the code's GTIN {} among its barcodes",
                    c.gtin()
                ))
            }
            Some((_, false)) => {
                reason = Some("the product with this GTIN is not marked".to_owned())
            }
            Some(_) => {}
        }
        if reason.is_none()
            && let Some(r) = &reg
            && r.state == CodeState::Sold
        {
            reason = Some(format!(
                "this unit was already sold (receipt {}) and has not been returned",
                r.sale_receipt_id
            ));
        }
        if reason.is_none() {
            reason = verdict.and_then(refusal);
        }
        let online_status = match (&answer, verdict) {
            (Online::NotConfigured, _) => None,
            (Online::Unavailable(_), _) => Some("unavailable".to_owned()),
            (Online::Answered(_), Some(v)) => Some(verdict_word(v.verdict).to_owned()),
            (Online::Answered(_), None) => None,
        };
        let sellable =
            reason.is_none() && verdict.is_none_or(|v| v.verdict == CodeVerdict::Sellable);
        results.push(CodeResult {
            code: raw.clone(),
            valid: true,
            gtin: Some(c.gtin().to_owned()),
            serial: Some(c.serial().to_owned()),
            label: Some(c.label()),
            product_id: product.map(|(id, _)| id),
            sellable,
            status: Some(status.to_owned()),
            online_status,
            operator_status: verdict.and_then(|v| v.status.clone()),
            reason,
        });
    }
    Ok(Json(CheckResponse { results }))
}
