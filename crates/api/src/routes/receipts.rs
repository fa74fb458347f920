use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use savdo_domain::Qty;
use savdo_domain::receipt::{PaymentMethod, ReceiptType};
use savdo_storage::marking::MarkingPrecheck;
use savdo_storage::{
    Page, PaymentInput, Receipt, ReceiptFilter, ReceiptInput, ReceiptLineInput, ReceiptOutcome,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{cursor, limit, page, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth, Id, parse_json};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    product_id: Uuid,
    #[schema(value_type = f64, example = 1)]
    qty: Qty,
    /// Tiyin per unit; defaults to the product's price (for refunds, the sale's price).
    price: Option<i64>,
    /// Tiyin off the line.
    discount: Option<i64>,
    #[serde(default)]
    marking_codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    #[schema(value_type = String, example = "cash")]
    method: PaymentMethod,
    amount: i64,
    payment_id: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    /// Client-generated; a retry with the same id and content returns the first result.
    id: Uuid,
    #[serde(rename = "type", default = "sale")]
    #[schema(value_type = String, example = "sale")]
    kind: ReceiptType,
    refund_of: Option<Uuid>,
    store_id: Uuid,
    terminal_id: Uuid,
    customer_id: Option<Uuid>,
    lines: Vec<LineRequest>,
    payments: Vec<PaymentRequest>,
    sold_at: Option<DateTime<Utc>>,
    #[schema(value_type = Option<Object>)]
    fiscal: Option<Value>,
    note: Option<String>,
    /// A loyalty quote to apply and points to spend (JOWi Club).
    loyalty: Option<super::loyalty::ReceiptLoyalty>,
}

fn sale() -> ReceiptType {
    ReceiptType::Sale
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReceiptQuery {
    store_id: Option<Uuid>,
    terminal_id: Option<Uuid>,
    /// Sold at or after (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Sold before (RFC 3339).
    to: Option<DateTime<Utc>>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(value_type = Vec<ReceiptRequest>)]
    receipts: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    /// The receipt id when it could be read.
    id: Option<Uuid>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    receipt: Option<Receipt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<crate::error::Problem>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    results: Vec<BatchItem>,
}

fn to_input(r: ReceiptRequest) -> ApiResult<ReceiptInput> {
    if r.lines.len() > 1000 {
        return Err(ApiError::field("lines", "at most 1000 lines"));
    }
    if r.payments.len() > 20 {
        return Err(ApiError::field("payments", "at most 20 payments"));
    }
    if r.payments.is_empty() {
        return Err(ApiError::field(
            "payments",
            "a receipt needs at least one payment",
        ));
    }
    for (i, l) in r.lines.iter().enumerate() {
        if l.marking_codes.len() > 1000 {
            return Err(ApiError::field(
                format!("lines[{i}].marking_codes"),
                "too many codes",
            ));
        }
    }
    if let Some(f) = &r.fiscal
        && !f.is_object()
    {
        return Err(ApiError::field("fiscal", "must be an object"));
    }
    let note = r
        .note
        .as_deref()
        .map(|n| text("note", n, 1000))
        .transpose()?;
    Ok(ReceiptInput {
        id: r.id,
        kind: r.kind,
        refund_of: r.refund_of,
        store_id: r.store_id,
        terminal_id: r.terminal_id,
        customer_id: r.customer_id,
        lines: r
            .lines
            .into_iter()
            .map(|l| ReceiptLineInput {
                product_id: l.product_id,
                qty: l.qty,
                price: l.price,
                discount: l.discount,
                marking_codes: l.marking_codes,
            })
            .collect(),
        payments: r
            .payments
            .into_iter()
            .map(|p| PaymentInput {
                method: p.method,
                amount: p.amount,
                payment_id: p.payment_id,
            })
            .collect(),
        sold_at: r.sold_at,
        fiscal: r.fiscal,
        note,
        loyalty: None,
    })
}

/// Hash of the canonical form: the parsed input re-serialised (fixed field order, sorted maps).
fn request_hash(input: &ReceiptInput) -> String {
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

async fn submit(st: &AppState, auth: &Auth, r: ReceiptRequest) -> ApiResult<(StatusCode, Receipt)> {
    auth.require(&[
        savdo_domain::tenant::Role::Owner,
        savdo_domain::tenant::Role::Manager,
        savdo_domain::tenant::Role::Cashier,
        savdo_domain::tenant::Role::Integration,
    ])?;
    let mut r = r;
    let mut loyalty_record = None;
    let mut spending = None;
    // Loyalty: the quote's discounts, and points to spend with JOWi Club before acceptance.
    if let Some(l) = r.loyalty.take() {
        let lines: Vec<_> = r
            .lines
            .iter()
            .map(|x| (x.product_id, x.qty.milli(), x.price))
            .collect();
        let paid = r
            .payments
            .iter()
            .filter(|p| p.method == PaymentMethod::LoyaltyPoints)
            .map(|p| p.amount)
            .sum();
        // A retry of a recorded receipt re-applies the quote without spending again.
        let recorded = match st.store.get_receipt(auth.tenant(), r.id).await {
            Ok(_) => true,
            Err(savdo_storage::StorageError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let a = super::loyalty::apply_to_receipt(
            st, auth, r.id, r.store_id, &l, &lines, paid, recorded,
        )
        .await?;
        for (line, d) in r.lines.iter_mut().zip(a.discounts) {
            line.discount = Some(line.discount.unwrap_or(0) + d);
        }
        r.customer_id = r.customer_id.or(a.customer_id);
        loyalty_record = Some(a.record);
        spending = a.spend;
    } else if let (ReceiptType::Sale, Some(c)) = (r.kind, r.customer_id) {
        loyalty_record = super::loyalty::record_for_customer(st, auth.tenant(), c).await?;
    }
    let mut input = to_input(r)?;
    let hash = request_hash(&input);
    // Stored with the receipt, in its transaction and its event; not part of the hash.
    input.loyalty = loyalty_record;
    let precheck = super::marking::precheck(st, auth.tenant(), &input).await?;
    let Some(spending) = spending else {
        return record(st, auth, &input, &hash, &precheck).await;
    };
    let outcome = spend_and_record(st, auth, &mut input, &hash, &precheck, &spending).await;
    if let Err(e) = &outcome
        && e.is_refusal()
    {
        let p = e.problem();
        let mut reason = p.detail;
        for f in p.errors.iter().filter(|_| p.errors.len() > 1) {
            reason.push_str(&format!("; {}: {}", f.field, f.message));
        }
        super::loyalty::settle_refused(st, auth.tenant(), &spending, &reason).await?;
    }
    outcome
}

/// Points are spent only for a receipt that passes its checks now; JOWi's answer goes into the
/// record stored with it.
async fn spend_and_record(
    st: &AppState,
    auth: &Auth,
    input: &mut ReceiptInput,
    hash: &str,
    precheck: &MarkingPrecheck,
    spending: &super::loyalty::PendingSpend,
) -> ApiResult<(StatusCode, Receipt)> {
    st.store
        .check_receipt(&auth.0, input, hash, precheck)
        .await?;
    let redeem = super::loyalty::spend(st, auth.tenant(), spending).await?;
    if let Some(l) = input.loyalty.as_mut() {
        l["redeem"] = redeem;
    }
    record(st, auth, input, hash, precheck).await
}

async fn record(
    st: &AppState,
    auth: &Auth,
    input: &ReceiptInput,
    hash: &str,
    precheck: &MarkingPrecheck,
) -> ApiResult<(StatusCode, Receipt)> {
    match st
        .store
        .submit_receipt_checked(&auth.0, input, hash, precheck)
        .await?
    {
        ReceiptOutcome::Created(r) => Ok((StatusCode::CREATED, r)),
        ReceiptOutcome::Replayed(r) => Ok((StatusCode::OK, r)),
    }
}

#[utoipa::path(post, path = "/api/v1/receipts", tag = "receipts", request_body = ReceiptRequest,
    responses((status = 201, description = "Recorded", body = Receipt), (status = 200, description = "A retry of a receipt already recorded", body = Receipt),
        (status = 409, description = "Same id, different content", body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<ReceiptRequest>,
) -> ApiResult<Response> {
    let (status, r) = submit(&st, &auth, b).await?;
    let location = format!("/api/v1/receipts/{}", r.id);
    Ok((status, [(header::LOCATION, location)], Json(r)).into_response())
}

#[utoipa::path(post, path = "/api/v1/receipts/batch", tag = "receipts", request_body = BatchRequest,
    responses((status = 200, description = "Each receipt's own result", body = BatchResponse)))]
pub async fn batch(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<BatchRequest>,
) -> ApiResult<Json<BatchResponse>> {
    if b.receipts.is_empty() || b.receipts.len() > 500 {
        return Err(ApiError::field(
            "receipts",
            "send between 1 and 500 receipts",
        ));
    }
    let mut results = Vec::with_capacity(b.receipts.len());
    for (i, raw) in b.receipts.into_iter().enumerate() {
        let id = raw
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok());
        let bytes = serde_json::to_vec(&raw).unwrap_or_default();
        let outcome = match parse_json::<ReceiptRequest>(&bytes) {
            Ok(r) => submit(&st, &auth, r).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok((status, r)) => BatchItem {
                id: Some(r.id),
                status: status.as_u16(),
                receipt: Some(r),
                problem: None,
            },
            Err(e) => {
                let mut p = e.problem();
                for f in &mut p.errors {
                    f.field = if f.field.is_empty() {
                        format!("receipts[{i}]")
                    } else {
                        format!("receipts[{i}].{}", f.field)
                    };
                }
                BatchItem {
                    id,
                    status: p.status,
                    receipt: None,
                    problem: Some(p),
                }
            }
        });
    }
    Ok(Json(BatchResponse { results }))
}

#[utoipa::path(get, path = "/api/v1/receipts/{id}", tag = "receipts", params(("id" = Uuid, Path)),
    responses((status = 200, body = Receipt), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Receipt>> {
    Ok(Json(st.store.get_receipt(auth.tenant(), id).await?))
}

#[utoipa::path(get, path = "/api/v1/receipts", tag = "receipts", params(ReceiptQuery), responses((status = 200, body = Page<Receipt>)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> ApiResult<Json<Page<Receipt>>> {
    let store_id = match (auth.0.store_id, q.store_id) {
        (Some(bound), Some(s)) if bound != s => {
            return Err(ApiError::Forbidden(
                "this token is bound to another store".into(),
            ));
        }
        (Some(bound), _) => Some(bound),
        (None, s) => s,
    };
    let f = ReceiptFilter {
        store_id,
        terminal_id: q.terminal_id,
        from: q.from,
        to: q.to,
        cursor: cursor(&q.cursor)?,
        limit: limit(q.limit)?,
    };
    Ok(Json(page(st.store.list_receipts(auth.tenant(), &f).await?)))
}
