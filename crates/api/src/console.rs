//! The back-office console: plain HTML, CSS and JavaScript modules embedded in the binary and
//! served at `/` (no CDN, no build step). The pages talk to `/api/v1` with the token the user
//! signs in with; nothing here bypasses the API's authorization.
//!
//! Also the fiscal receipt's QR code as SVG (`GET /api/v1/receipts/{id}/fiscal-qr.svg`), so the
//! cashier screen can show it without a QR encoder in JavaScript.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Id};
use crate::state::AppState;

/// Scripts and styles only from this origin, no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $mime:expr) => {
        Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("i18n.js", JS),
    asset!("integrations.js", JS),
    asset!("webhooks.js", JS),
    asset!("events.js", JS),
    asset!("cashier.js", JS),
];

/// Strong ETags, computed once from the embedded bytes.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
        .collect()
});

/// `/` (the console page) and `/console/<asset>`; merge into the application router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/favicon.ico",
            get(|h: HeaderMap| async move { serve("favicon.svg", &h) }),
        )
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { serve(&file, &h) }),
        )
}

fn serve(name: &str, req: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::NotFound("console asset".into()).into_response();
    };
    let a = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, a.mime)], a.body).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex etag"));
    // Revalidate every time (a 304 costs nothing): an upgraded binary never mixes old and new
    // scripts.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if a.name == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

/// The QR code of a fiscalized receipt (its `fiscal.qr_url`) as SVG; 404 until the receipt has
/// one.
pub async fn fiscal_qr(st: State<AppState>, auth: Auth, id: Id) -> ApiResult<Response> {
    let axum::Json(receipt) = crate::routes::receipts::get(st, auth, id).await?;
    let value = serde_json::to_value(&receipt)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("receipt as JSON: {e}")))?;
    let url = value
        .pointer("/fiscal/qr_url")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::NotFound("fiscal QR code of this receipt".into()))?;
    let svg = qr_svg(url)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        svg,
    )
        .into_response())
}

/// Encode `text` as a QR code (error correction M) rendered as SVG.
pub fn qr_svg(text: &str) -> ApiResult<String> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("QR encoding: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}
