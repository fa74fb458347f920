use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_storage::{Shift, Terminal};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::text;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTerminal {
    store_id: Uuid,
    name: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    store_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct TerminalList {
    items: Vec<Terminal>,
}

#[utoipa::path(post, path = "/api/v1/terminals", tag = "terminals", request_body = CreateTerminal,
    responses((status = 201, body = Terminal), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateTerminal>,
) -> ApiResult<(StatusCode, Json<Terminal>)> {
    auth.back_office()?;
    let name = text("name", &b.name, 200)?;
    Ok((
        StatusCode::CREATED,
        Json(st.store.create_terminal(&auth.0, b.store_id, &name).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/terminals", tag = "terminals", params(TerminalQuery), responses((status = 200, body = TerminalList)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<TerminalQuery>,
) -> ApiResult<Json<TerminalList>> {
    Ok(Json(TerminalList {
        items: st.store.list_terminals(auth.tenant(), q.store_id).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/terminals/{id}", tag = "terminals", params(("id" = Uuid, Path)),
    responses((status = 200, body = Terminal), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Terminal>> {
    Ok(Json(st.store.get_terminal(auth.tenant(), id).await?))
}

#[utoipa::path(post, path = "/api/v1/terminals/{id}/shifts/open", tag = "terminals", params(("id" = Uuid, Path)),
    responses((status = 201, body = Shift), (status = 409, body = crate::error::Problem)))]
pub async fn open_shift(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<(StatusCode, Json<Shift>)> {
    check_store(&st, &auth, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(st.store.open_shift(&auth.0, id).await?),
    ))
}

#[utoipa::path(post, path = "/api/v1/terminals/{id}/shifts/close", tag = "terminals", params(("id" = Uuid, Path)),
    responses((status = 200, body = Shift), (status = 409, body = crate::error::Problem)))]
pub async fn close_shift(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<Shift>> {
    check_store(&st, &auth, id).await?;
    Ok(Json(st.store.close_shift(&auth.0, id).await?))
}

/// A cashier bound to a store works only that store's tills.
async fn check_store(st: &AppState, auth: &Auth, terminal: Uuid) -> ApiResult<()> {
    if let Some(bound) = auth.0.store_id {
        let t = st.store.get_terminal(auth.tenant(), terminal).await?;
        if t.store_id != bound {
            return Err(crate::error::ApiError::Forbidden(
                "this token is bound to another store".into(),
            ));
        }
    }
    Ok(())
}
