//! `POST /api/v1/invoices/import`: online orders from a CSV file or a JSON array, each an
//! outgoing invoice keyed by its external reference; the answer reports every order.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use savdo_domain::tenant::Role;
use savdo_storage::FieldError;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, Problem};
use crate::extract::{ApiQuery, Auth};
use crate::order_import::{self, Format, ImportOptions, ImportReport, Limits};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Reserve the stock of every invoice the import creates.
    #[serde(default)]
    reserve: bool,
}

#[utoipa::path(post, path = "/api/v1/invoices/import", tag = "invoices", params(ImportQuery),
    request_body(description = "CSV (UTF-8, `;` or `,`, a header naming the columns `external_ref`, `store`, \
        `sku`/`barcode`/`product_id`, `qty`, `price` in sum, `channel`, `customer_phone`, `note`; rows with the same \
        `external_ref` are lines of one order) or a JSON array of orders (prices in tiyin). See docs/import.md.",
        content(
            (String = "text/csv", example = json!("external_ref;store;sku;barcode;qty;price;channel;customer_phone;note\nSITE-1001;Chilonzor;MILK-1;;2;12500,00;site;+998901234567;\nSITE-1001;Chilonzor;;4780000000021;0,5;;site;;\n")),
            (Vec<order_import::ImportOrder> = "application/json"),
        )),
    responses(
        (status = 200, description = "Every order: created, duplicate (imported before: nothing changed) or failed with the reasons", body = ImportReport),
        (status = 400, description = "JSON that does not parse", body = Problem),
        (status = 403, description = "Not an owner, manager or integration token", body = Problem),
        (status = 413, description = "Larger than 1 MiB", body = Problem),
        (status = 415, description = "Neither text/csv nor application/json", body = Problem),
        (status = 422, description = "The whole import is unusable: the CSV header, not a JSON array, too many rows", body = Problem)))]
pub async fn import(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match run(st, auth, q, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(
    st: AppState,
    auth: Auth,
    q: ImportQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The same roles as creating one invoice.
    auth.require(&[Role::Owner, Role::Manager, Role::Integration])?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = Format::from_content_type(ct) else {
        return Ok(unsupported_media_type());
    };
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(Limits::HTTP.max_bytes)
        } else {
            ApiError::MalformedBody(e.body_text())
        }
    })?;
    let parsed = order_import::parse(format, &body, &Limits::HTTP)?;
    let report = order_import::import(
        st.store.as_ref(),
        &auth.0,
        parsed,
        ImportOptions { reserve: q.reserve },
        |_| {},
    )
    .await?;
    Ok(Json(report).into_response())
}

/// 415 naming the two formats (the shared variant speaks of JSON only).
fn unsupported_media_type() -> Response {
    let p = Problem {
        kind: "https://savdo.uz/problems/media-type".into(),
        title: "Unsupported media type".into(),
        status: 415,
        detail: "unsupported media type: send text/csv or application/json".into(),
        errors: vec![FieldError::new(
            "Content-Type",
            "must be text/csv or application/json",
        )],
    };
    let mut r = (
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        serde_json::to_vec(&p).unwrap_or_default(),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}
