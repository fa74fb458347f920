//! Marketplace orders of an integration (owner and manager tokens): what the order poller
//! imported, what needs attention and why, what was cancelled; and the retry of an order that
//! needs attention once its items are mapped.

use axum::Json;
use axum::extract::{Path, State};
use savdo_connectors::marketplace::orders::{OrderImporter, RetryError};
use savdo_hub::Capability;
use savdo_storage::Page;
use savdo_storage::integrations::Integration;
use savdo_storage::marketplace_orders::{
    MarketplaceOrderRecord, MarketplaceOrderState, OrderFilter,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{cursor, limit, page};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrderQuery {
    /// `imported`, `needs_attention` or `cancelled`.
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The tenant's integration, which must be a marketplace (404 otherwise: no orders there).
async fn marketplace(st: &AppState, auth: &Auth, id: Uuid) -> ApiResult<Integration> {
    let i = st.store.get_integration(auth.tenant(), id).await?;
    if !st
        .registry
        .descriptor(&i.kind)
        .is_some_and(|d| d.has(Capability::Marketplace))
    {
        return Err(ApiError::NotFound("marketplace integration".into()));
    }
    Ok(i)
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/orders", tag = "integrations",
    params(("id" = Uuid, Path), OrderQuery),
    responses((status = 200, body = Page<MarketplaceOrderRecord>), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<OrderQuery>,
) -> ApiResult<Json<Page<MarketplaceOrderRecord>>> {
    auth.back_office()?;
    let state = match q.state.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(MarketplaceOrderState::parse(s).ok_or_else(|| {
            ApiError::field("state", "must be imported, needs_attention or cancelled")
        })?),
    };
    let filter = OrderFilter {
        state,
        unconfirmed_below: None,
        cursor: cursor(&q.cursor)?,
        limit: limit(q.limit)?,
    };
    let i = marketplace(&st, &auth, id).await?;
    Ok(Json(page(
        st.store
            .list_marketplace_orders(auth.tenant(), i.id, &filter)
            .await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/orders/{external_id}/retry", tag = "integrations",
    params(("id" = Uuid, Path), ("external_id" = String, Path, description = "The marketplace's order id")),
    responses((status = 200, description = "The order after the attempt: imported, or still needs_attention with the reason", body = MarketplaceOrderRecord),
        (status = 404, body = crate::error::Problem), (status = 409, description = "The order does not need attention", body = crate::error::Problem)))]
pub async fn retry(
    State(st): State<AppState>,
    auth: Auth,
    Path((id, external_id)): Path<(String, String)>,
) -> ApiResult<Json<MarketplaceOrderRecord>> {
    auth.back_office()?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("integration".into()))?;
    let i = marketplace(&st, &auth, id).await?;
    let outcome = OrderImporter::new(st.store.clone())
        .retry(&i, &external_id)
        .await
        .map_err(|e| match e {
            RetryError::NotFound => ApiError::NotFound("marketplace order".into()),
            e @ RetryError::NotRetryable(_) => ApiError::Conflict {
                message: e.to_string(),
                field: Some("state".into()),
            },
            RetryError::Storage(e) => e.into(),
        })?;
    Ok(Json(outcome.record().clone()))
}
