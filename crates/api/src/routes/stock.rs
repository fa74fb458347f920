use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_domain::Qty;
use savdo_storage::{Movement, NewStockDoc, StockDoc, StockDocKind, StockDocLine, StockLevel};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::text;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StockQuery {
    store_id: Option<Uuid>,
    product_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct StockList {
    items: Vec<StockLevel>,
}

#[derive(Serialize, ToSchema)]
pub struct MovementList {
    items: Vec<Movement>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockDocRequest {
    store_id: Uuid,
    /// Transfers only: the receiving store.
    to_store_id: Option<Uuid>,
    note: Option<String>,
    lines: Vec<StockDocLine>,
}

#[utoipa::path(get, path = "/api/v1/stock", tag = "stock", params(StockQuery), responses((status = 200, body = StockList)))]
pub async fn levels(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<StockQuery>,
) -> ApiResult<Json<StockList>> {
    Ok(Json(StockList {
        items: st
            .store
            .stock(auth.tenant(), q.store_id, q.product_id)
            .await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/stock/movements", tag = "stock", params(StockQuery), responses((status = 200, body = MovementList)))]
pub async fn movements(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<StockQuery>,
) -> ApiResult<Json<MovementList>> {
    auth.back_office()?;
    Ok(Json(MovementList {
        items: st
            .store
            .movements(auth.tenant(), q.store_id, q.product_id)
            .await?,
    }))
}

async fn create(
    st: AppState,
    auth: Auth,
    kind: StockDocKind,
    b: StockDocRequest,
) -> ApiResult<(StatusCode, Json<StockDoc>)> {
    auth.back_office()?;
    if b.lines.is_empty() || b.lines.len() > 5000 {
        return Err(ApiError::field("lines", "send between 1 and 5000 lines"));
    }
    for (i, l) in b.lines.iter().enumerate() {
        let ok = match kind {
            StockDocKind::Count => l.qty >= Qty::ZERO,
            _ => l.qty.is_positive(),
        };
        if !ok {
            let msg = if kind == StockDocKind::Count {
                "must not be negative"
            } else {
                "must be greater than zero"
            };
            return Err(ApiError::field(format!("lines[{i}].qty"), msg));
        }
        if let Some(c) = l.cost
            && c < 0
        {
            return Err(ApiError::field(
                format!("lines[{i}].cost"),
                "must not be negative",
            ));
        }
    }
    match (kind, b.to_store_id) {
        (StockDocKind::Transfer, None) => {
            return Err(ApiError::field(
                "to_store_id",
                "a transfer needs the receiving store",
            ));
        }
        (StockDocKind::Transfer, Some(to)) if to == b.store_id => {
            return Err(ApiError::field("to_store_id", "must differ from store_id"));
        }
        (StockDocKind::Transfer, Some(_)) => {}
        (_, Some(_)) => {
            return Err(ApiError::field(
                "to_store_id",
                "only transfers have a receiving store",
            ));
        }
        _ => {}
    }
    let note = b
        .note
        .as_deref()
        .map(|n| text("note", n, 1000))
        .transpose()?;
    let doc = NewStockDoc {
        kind,
        store_id: b.store_id,
        to_store_id: b.to_store_id,
        note,
        lines: b.lines,
    };
    Ok((
        StatusCode::CREATED,
        Json(st.store.create_stock_doc(&auth.0, &doc).await?),
    ))
}

#[utoipa::path(post, path = "/api/v1/stock/supplies", tag = "stock", request_body = StockDocRequest,
    responses((status = 201, body = StockDoc), (status = 422, body = crate::error::Problem)))]
pub async fn supply(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<StockDocRequest>,
) -> ApiResult<(StatusCode, Json<StockDoc>)> {
    create(st, auth, StockDocKind::Supply, b).await
}

#[utoipa::path(post, path = "/api/v1/stock/writeoffs", tag = "stock", request_body = StockDocRequest,
    responses((status = 201, body = StockDoc), (status = 422, body = crate::error::Problem)))]
pub async fn writeoff(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<StockDocRequest>,
) -> ApiResult<(StatusCode, Json<StockDoc>)> {
    create(st, auth, StockDocKind::Writeoff, b).await
}

/// Inventory count: sets the quantity on hand to what was counted.
#[utoipa::path(post, path = "/api/v1/stock/counts", tag = "stock", request_body = StockDocRequest,
    responses((status = 201, body = StockDoc), (status = 422, body = crate::error::Problem)))]
pub async fn count(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<StockDocRequest>,
) -> ApiResult<(StatusCode, Json<StockDoc>)> {
    create(st, auth, StockDocKind::Count, b).await
}

#[utoipa::path(post, path = "/api/v1/stock/transfers", tag = "stock", request_body = StockDocRequest,
    responses((status = 201, body = StockDoc), (status = 422, body = crate::error::Problem)))]
pub async fn transfer(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<StockDocRequest>,
) -> ApiResult<(StatusCode, Json<StockDoc>)> {
    create(st, auth, StockDocKind::Transfer, b).await
}
