//! Inbound hooks from providers: `POST /hooks/{type}/{integration_id}`, outside `/api/v1` and
//! without a bearer token. The provider's own authentication is checked by the type's handler;
//! answers are in the provider's format (a neutral 404 for anything unknown).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

#[utoipa::path(post, path = "/hooks/{type}/{integration_id}", tag = "hooks",
    params(("type" = String, Path), ("integration_id" = Uuid, Path)), security(()),
    request_body(content = String, description = "The provider's raw delivery", content_type = "application/json"),
    responses((status = 200, description = "The provider's own answer format"), (status = 404, description = "Unknown integration")))]
pub async fn receive(
    State(st): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = savdo_integrations::hooks::receive(
        &st.store,
        &st.vault,
        &st.hooks,
        &kind,
        &id,
        &headers,
        &body,
        st.clock.now(),
    )
    .await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, reply.body).into_response();
    if let Ok(ct) = HeaderValue::from_str(&reply.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}
