use axum::Json;
use axum::extract::State;
use savdo_domain::event::CloudEvent;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Auth};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// The `next_cursor` of the previous page; omitted = from the beginning.
    after: Option<String>,
    /// Comma-separated event types.
    types: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<Object>)]
    items: Vec<CloudEvent>,
    /// Pass as `after` to continue; stays the same when there is nothing new.
    next_cursor: String,
}

/// The tenant's events in order, so a client can catch up after downtime without webhooks.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery), responses((status = 200, body = EventPage)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Json<EventPage>> {
    let after: i64 = match q.after.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse()
            .ok()
            .filter(|v: &i64| *v >= 0)
            .ok_or_else(|| ApiError::field("after", "is not a cursor this API issued"))?,
    };
    let types: Vec<String> = q
        .types
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if types.len() > 50 {
        return Err(ApiError::field("types", "at most 50 types"));
    }
    let limit = super::limit(q.limit)?;
    let rows = st.store.events(auth.tenant(), after, &types, limit).await?;
    let next = rows.last().map(|e| e.seq).unwrap_or(after);
    let items = rows
        .into_iter()
        .map(|e| CloudEvent::new(e.id, e.tenant_id, &e.kind, e.time, e.data))
        .collect();
    Ok(Json(EventPage {
        items,
        next_cursor: next.to_string(),
    }))
}
