use axum::Json;
use axum::extract::State;
use savdo_storage::{AuditEntry, Page};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{cursor, limit, page};
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Auth};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The append-only log of who changed what (owners only).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = Page<AuditEntry>)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    auth.owner()?;
    Ok(Json(page(
        st.store
            .audit_log(auth.tenant(), cursor(&q.cursor)?, limit(q.limit)?)
            .await?,
    )))
}
