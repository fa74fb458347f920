use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_domain::Qty;
use savdo_storage::{Invoice, InvoiceAction, InvoiceFilter, InvoiceStatus, NewInvoice, Page};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{cursor, limit, page, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceLineRequest {
    product_id: Uuid,
    #[schema(value_type = f64)]
    qty: Qty,
    price: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoice {
    store_id: Uuid,
    customer_id: Option<Uuid>,
    /// Where the order came from (`uzum`, `phone`, …).
    channel: Option<String>,
    /// Unique per tenant: a second invoice with the same reference returns the first (200).
    external_ref: Option<String>,
    note: Option<String>,
    lines: Vec<InvoiceLineRequest>,
    /// Reserve the stock at once.
    #[serde(default)]
    reserve: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    #[param(value_type = Option<String>)]
    status: Option<InvoiceStatus>,
    store_id: Option<Uuid>,
    external_ref: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/invoices", tag = "invoices", request_body = CreateInvoice,
    responses((status = 201, body = Invoice), (status = 200, description = "An invoice with this external_ref exists", body = Invoice),
        (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateInvoice>,
) -> ApiResult<(StatusCode, Json<Invoice>)> {
    auth.require(&[
        savdo_domain::tenant::Role::Owner,
        savdo_domain::tenant::Role::Manager,
        savdo_domain::tenant::Role::Integration,
    ])?;
    if b.lines.len() > 1000 {
        return Err(ApiError::field("lines", "at most 1000 lines"));
    }
    for (i, l) in b.lines.iter().enumerate() {
        if !l.qty.is_positive() {
            return Err(ApiError::field(
                format!("lines[{i}].qty"),
                "must be greater than zero",
            ));
        }
        if l.price.is_some_and(|p| p < 0) {
            return Err(ApiError::field(
                format!("lines[{i}].price"),
                "must not be negative",
            ));
        }
    }
    let inv = NewInvoice {
        store_id: b.store_id,
        customer_id: b.customer_id,
        channel: b
            .channel
            .as_deref()
            .map(|c| text("channel", c, 64))
            .transpose()?,
        external_ref: b
            .external_ref
            .as_deref()
            .map(|c| text("external_ref", c, 200))
            .transpose()?,
        note: b
            .note
            .as_deref()
            .map(|c| text("note", c, 1000))
            .transpose()?,
        lines: b
            .lines
            .iter()
            .map(|l| (l.product_id, l.qty, l.price))
            .collect(),
        reserve: b.reserve,
    };
    let (invoice, created) = st.store.create_invoice(&auth.0, &inv).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(invoice),
    ))
}

#[utoipa::path(get, path = "/api/v1/invoices", tag = "invoices", params(InvoiceQuery), responses((status = 200, body = Page<Invoice>)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> ApiResult<Json<Page<Invoice>>> {
    let f = InvoiceFilter {
        status: q.status,
        store_id: q.store_id,
        external_ref: q.external_ref,
        cursor: cursor(&q.cursor)?,
        limit: limit(q.limit)?,
    };
    Ok(Json(page(st.store.list_invoices(auth.tenant(), &f).await?)))
}

#[utoipa::path(get, path = "/api/v1/invoices/{id}", tag = "invoices", params(("id" = Uuid, Path)),
    responses((status = 200, body = Invoice), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Invoice>> {
    Ok(Json(st.store.get_invoice(auth.tenant(), id).await?))
}

async fn act(st: AppState, auth: Auth, id: Uuid, a: InvoiceAction) -> ApiResult<Json<Invoice>> {
    auth.require(&[
        savdo_domain::tenant::Role::Owner,
        savdo_domain::tenant::Role::Manager,
        savdo_domain::tenant::Role::Integration,
    ])?;
    Ok(Json(st.store.invoice_action(&auth.0, id, a).await?))
}

#[utoipa::path(post, path = "/api/v1/invoices/{id}/reserve", tag = "invoices", params(("id" = Uuid, Path)),
    responses((status = 200, body = Invoice), (status = 409, body = crate::error::Problem)))]
pub async fn reserve(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<Invoice>> {
    act(st, auth, id, InvoiceAction::Reserve).await
}

#[utoipa::path(post, path = "/api/v1/invoices/{id}/ship", tag = "invoices", params(("id" = Uuid, Path)),
    responses((status = 200, body = Invoice), (status = 409, body = crate::error::Problem)))]
pub async fn ship(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Invoice>> {
    act(st, auth, id, InvoiceAction::Ship).await
}

#[utoipa::path(post, path = "/api/v1/invoices/{id}/cancel", tag = "invoices", params(("id" = Uuid, Path)),
    responses((status = 200, body = Invoice), (status = 409, body = crate::error::Problem)))]
pub async fn cancel(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<Invoice>> {
    act(st, auth, id, InvoiceAction::Cancel).await
}
