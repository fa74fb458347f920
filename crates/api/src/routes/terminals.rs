use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_connectors::fiscal_gateway::{ShiftOp, cashier_name};
use savdo_storage::fiscal::TerminalFiscal;
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

/// A shift, and what the till's fiscal device said when it has one.
#[derive(Serialize, ToSchema)]
pub struct ShiftAnswer {
    #[serde(flatten)]
    shift: Shift,
    /// Set when the till has a fiscal device and its shift could not be opened or closed with
    /// ours (gateway unreachable, device refused): Savdo's shift changed anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    fiscal_warning: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/terminals/{id}/shifts/open", tag = "terminals", params(("id" = Uuid, Path)),
    responses((status = 201, body = ShiftAnswer), (status = 409, body = crate::error::Problem)))]
pub async fn open_shift(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<(StatusCode, Json<ShiftAnswer>)> {
    check_store(&st, &auth, id).await?;
    let shift = st.store.open_shift(&auth.0, id).await?;
    let fiscal_warning = fiscal_shift(&st, &auth, id, ShiftOp::Open, shift.id).await;
    Ok((
        StatusCode::CREATED,
        Json(ShiftAnswer {
            shift,
            fiscal_warning,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/terminals/{id}/shifts/close", tag = "terminals", params(("id" = Uuid, Path)),
    responses((status = 200, body = ShiftAnswer), (status = 409, body = crate::error::Problem)))]
pub async fn close_shift(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<ShiftAnswer>> {
    check_store(&st, &auth, id).await?;
    let shift = st.store.close_shift(&auth.0, id).await?;
    let fiscal_warning = fiscal_shift(&st, &auth, id, ShiftOp::Close, Uuid::now_v7()).await;
    Ok(Json(ShiftAnswer {
        shift,
        fiscal_warning,
    }))
}

/// Open or close the fiscal shift on the till's device after ours changed; never blocks the
/// shift itself, only warns.
async fn fiscal_shift(
    st: &AppState,
    auth: &Auth,
    terminal: Uuid,
    op: ShiftOp,
    op_id: Uuid,
) -> Option<String> {
    let device = match st.store.terminal_fiscal(auth.tenant(), terminal).await {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(%terminal, error = %e, "cannot read the till's fiscal device");
            return Some(format!("the fiscal device was not reached: {e}"));
        }
    };
    let cashier = cashier_name(st.store.as_ref(), auth.tenant(), auth.0.token_id).await;
    st.fiscal.shift_warning(&device, op, op_id, &cashier).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutFiscal {
    /// Base URL of the `savdo-fiscal` gateway (`http://…` or `https://…`).
    gateway_url: String,
    /// The device's id in the gateway's configuration.
    device_id: String,
}

#[utoipa::path(put, path = "/api/v1/terminals/{id}/fiscal", tag = "terminals", params(("id" = Uuid, Path)),
    request_body = PutFiscal,
    responses((status = 200, body = Terminal), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn put_fiscal(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PutFiscal>,
) -> ApiResult<Json<Terminal>> {
    auth.back_office()?;
    let gateway_url = text("gateway_url", &b.gateway_url, 500)?;
    match check_gateway_url(&gateway_url) {
        Ok(()) => {}
        Err(m) => return Err(crate::error::ApiError::field("gateway_url", m)),
    }
    let device_id = text("device_id", &b.device_id, 100)?;
    let cfg = TerminalFiscal {
        gateway_url: gateway_url.trim_end_matches('/').to_string(),
        device_id,
    };
    st.store
        .set_terminal_fiscal(&auth.0, id, Some(&cfg))
        .await?;
    Ok(Json(st.store.get_terminal(auth.tenant(), id).await?))
}

#[utoipa::path(delete, path = "/api/v1/terminals/{id}/fiscal", tag = "terminals", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete_fiscal(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<StatusCode> {
    auth.back_office()?;
    st.store.set_terminal_fiscal(&auth.0, id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An absolute `http`/`https` URL with a host, without credentials, query or fragment.
fn check_gateway_url(s: &str) -> Result<(), &'static str> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or("must be an http:// or https:// URL")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err("must name a host");
    }
    if rest.contains(['?', '#', '@', ' ']) {
        return Err("must not carry credentials, a query or a fragment");
    }
    Ok(())
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
