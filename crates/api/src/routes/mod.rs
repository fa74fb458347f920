//! REST handlers under `/api/v1`, one module per resource.

pub mod audit;
pub mod customers;
pub mod events;
pub mod hooks;
pub mod integrations;
pub mod invoice_import;
pub mod invoices;
pub mod loyalty;
pub mod marketplace;
pub mod marketplace_orders;
pub mod marking;
pub mod payments;
pub mod products;
pub mod receipts;
pub mod settings;
pub mod stock;
pub mod stores;
pub mod system;
pub mod terminals;
pub mod tokens;
pub mod webhooks;

use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::error::ApiError;

/// `Option<Option<T>>` for PATCH: absent = keep, `null` = clear, value = set.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A text field: trimmed, non-empty, at most `max` characters.
pub fn text(field: &str, v: &str, max: usize) -> Result<String, ApiError> {
    let t = v.trim();
    if t.is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(t.to_string())
}

/// Cursor pagination: the cursor is the last id of the previous page.
pub fn cursor(c: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    match c {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| ApiError::field("cursor", "is not a cursor this API issued")),
    }
}

pub fn limit(l: Option<u32>) -> Result<u32, ApiError> {
    match l {
        None => Ok(50),
        Some(n) if (1..=500).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 500")),
    }
}

pub fn page<T: utoipa::ToSchema>(p: savdo_storage::Paged<T>) -> savdo_storage::Page<T> {
    savdo_storage::Page {
        items: p.0,
        next_cursor: p.1.map(|c| c.to_string()),
    }
}
