//! Storage errors. The API maps each variant to a problem response in one place.

use serde::Serialize;

/// A problem with one field of the request, named by its JSON path (`lines[2].qty`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is well-formed but conflicts with the current state.
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    /// The request refers to things that do not exist or breaks a rule.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("publishing to the bus failed: {0}")]
    Publish(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StorageError {
    pub fn conflict(message: impl Into<String>) -> Self {
        StorageError::Conflict {
            message: message.into(),
            field: None,
        }
    }
    pub fn conflict_on(field: impl Into<String>, message: impl Into<String>) -> Self {
        StorageError::Conflict {
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        StorageError::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<serde_json::Error> for StorageError {
    fn from(e: serde_json::Error) -> Self {
        StorageError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
