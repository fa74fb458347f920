//! The HTTP JSON face. Errors are RFC 9457 `application/problem+json` with an `errors` list
//! naming each offending field.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::gateway::{Answer, ApiError, Gateway};
use crate::model::{Operation, Receipt, ShiftRequest, Status};
use crate::validate::FieldError;

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}", get(get_device))
        .route("/v1/devices/{id}/shift/open", post(open_shift))
        .route("/v1/devices/{id}/shift/close", post(close_shift))
        .route("/v1/devices/{id}/reports/x", post(x_report))
        .route("/v1/receipts/sale", post(sale))
        .route("/v1/receipts/refund", post(refund))
        .route("/v1/receipts/{id}", get(get_receipt))
        .with_state(gw)
}

fn problem(status: StatusCode, title: &str, detail: String, errors: &[FieldError]) -> Response {
    let mut body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if !errors.is_empty() {
        body["errors"] = json!(errors);
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Invalid(errors) => {
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The request breaks receipt rules",
                    detail,
                    &errors,
                )
            }
            ApiError::NotFound(d) => problem(StatusCode::NOT_FOUND, "Not found", d, &[]),
            ApiError::Conflict(d) => problem(StatusCode::CONFLICT, "Id already used", d, &[]),
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "internal error");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "the gateway could not journal the request; nothing was sent to a device"
                        .into(),
                    &[],
                )
            }
        }
    }
}

/// Parses JSON, naming the field at fault (`items[0].price`) when a value has the wrong type.
fn parse<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // serde reports a missing field at its parent's path; name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_string(),
            (_, Some(name)) => format!("{path}.{name}"),
            (".", None) => "body".to_string(),
            _ => path,
        };
        ApiError::Invalid(vec![FieldError::new(field, message)])
    })
}

fn answer<T: serde::Serialize>(a: Answer<T>, status: Status) -> Response {
    let code = match status {
        Status::Queued => StatusCode::ACCEPTED,
        Status::Registered | Status::Failed => StatusCode::OK,
    };
    (code, Json(a.result)).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn list_devices(State(gw): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    let devices = gw.devices().await?;
    Ok(Json(json!({ "devices": devices })).into_response())
}

async fn get_device(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match gw.device_info(&id).await? {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(ApiError::NotFound(format!("no device {id} is configured"))),
    }
}

async fn shift_op(
    gw: Arc<Gateway>,
    id: String,
    op: Operation,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ShiftRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ShiftRequest::default()
    } else {
        parse(&body)?
    };
    let a = gw.shift(&id, op, req).await?;
    let status = a.result.status;
    Ok(answer(a, status))
}

async fn open_shift(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    shift_op(gw, id, Operation::OpenShift, body).await
}

async fn close_shift(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    shift_op(gw, id, Operation::CloseShift, body).await
}

async fn x_report(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    shift_op(gw, id, Operation::XReport, body).await
}

async fn register(gw: Arc<Gateway>, op: Operation, body: Bytes) -> Result<Response, ApiError> {
    let receipt: Receipt = parse(&body)?;
    let a = gw.register(op, receipt).await?;
    let status = a.result.status;
    Ok(answer(a, status))
}

async fn sale(State(gw): State<Arc<Gateway>>, body: Bytes) -> Result<Response, ApiError> {
    register(gw, Operation::Sale, body).await
}

async fn refund(State(gw): State<Arc<Gateway>>, body: Bytes) -> Result<Response, ApiError> {
    register(gw, Operation::Refund, body).await
}

async fn get_receipt(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(gw.receipt(&id).await?).into_response())
}
