//! Every error the API can answer, mapped to an RFC 9457 problem response in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use savdo_storage::{FieldError, StorageError};
use serde::Serialize;
use utoipa::ToSchema;

/// `application/problem+json` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Validation {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("unsupported media type: send application/json")]
    UnsupportedMediaType,
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInProgress,
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let e = FieldError::new(field, message);
        ApiError::Validation {
            detail: format!("{}: {}", e.field, e.message),
            errors: vec![e],
        }
    }
    pub fn fields(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        ApiError::Validation { detail, errors }
    }

    /// Refused for what the request says or the state it meets (a retry of the same request
    /// would be refused again), as opposed to a failure a retry may get past.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ApiError::Validation { .. } | ApiError::NotFound(_) | ApiError::Conflict { .. }
        )
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            ApiError::MalformedBody(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "Malformed request body",
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "media-type",
                "Unsupported media type",
            ),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::IdempotencyInProgress => (
                StatusCode::CONFLICT,
                "idempotency-in-progress",
                "Request in progress",
            ),
            ApiError::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-mismatch",
                "Idempotency-Key reused",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let errors = match self {
            ApiError::Validation { errors, .. } => errors.clone(),
            ApiError::Conflict {
                field: Some(f),
                message,
            } => vec![FieldError::new(f.clone(), message.clone())],
            _ => Vec::new(),
        };
        Problem {
            kind: format!("https://savdo.uz/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(what) => ApiError::NotFound(what.to_string()),
            StorageError::Conflict { message, field } => ApiError::Conflict { message, field },
            StorageError::Invalid(errors) => ApiError::fields(errors),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
        }
        let p = self.problem();
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&p).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
