//! `Idempotency-Key` on POST (IETF draft): the first request with a key is executed and its
//! answer stored; a repeat with the same body gets the stored answer, a different body is a
//! 422, and a repeat while the first is still running is a 409.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use savdo_storage::IdemState;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::extract::{Auth, MAX_BODY};
use crate::state::AppState;

const HEADER: &str = "idempotency-key";

pub async fn layer(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    match handle(st, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(st: AppState, req: Request, next: Next) -> Result<Response, ApiError> {
    let key = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| ApiError::field("Idempotency-Key", "must be 1 to 255 visible characters"))?
        .to_string();
    let (mut parts, body) = req.into_parts();
    let auth = Auth::from_request_parts(&mut parts, &st).await?;
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::TooLarge(MAX_BODY))?;
    let mut h = Sha256::new();
    // The query is part of the request: `?reserve=true` with the same key is another request.
    h.update(parts.uri.path().as_bytes());
    h.update([0]);
    h.update(parts.uri.query().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(&bytes);
    let hash = hex::encode(h.finalize());
    let tenant = auth.tenant();
    match st.store.idem_begin(tenant, &key, &hash).await? {
        IdemState::InProgress => return Err(ApiError::IdempotencyInProgress),
        IdemState::Done {
            same_request: false,
            ..
        } => return Err(ApiError::IdempotencyMismatch),
        IdemState::Done {
            same_request: true,
            status,
            body,
        } => {
            let mut r =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            let ct = if status >= 400 {
                "application/problem+json"
            } else {
                "application/json"
            };
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(r);
        }
        IdemState::Started => {}
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (rparts, rbody) = resp.into_parts();
    let body: Bytes = match to_bytes(rbody, 16 * MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            st.store.idem_abort(tenant, &key).await?;
            return Err(ApiError::Internal(anyhow::anyhow!(
                "response too large to store"
            )));
        }
    };
    // A server-side failure is not an answer to remember: the client may retry.
    if rparts.status.is_server_error() {
        st.store.idem_abort(tenant, &key).await?;
    } else {
        st.store
            .idem_finish(tenant, &key, rparts.status.as_u16(), &body)
            .await?;
    }
    Ok(Response::from_parts(rparts, Body::from(body)))
}
