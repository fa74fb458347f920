use axum::Json;
use axum::extract::State;
use savdo_domain::tenant::TenantSettings;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Auth};
use crate::state::AppState;

#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = TenantSettings)]
pub struct SettingsDoc {
    pub require_open_shift: bool,
    pub forbid_negative_stock: bool,
    /// `allow` (default) or `refuse`.
    pub marking_offline_policy: String,
    pub default_vat_percent: u8,
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "settings", responses((status = 200, body = SettingsDoc)))]
pub async fn get(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<TenantSettings>> {
    Ok(Json(st.store.settings(auth.tenant()).await?))
}

#[utoipa::path(patch, path = "/api/v1/settings", tag = "settings", request_body = SettingsDoc,
    responses((status = 200, body = SettingsDoc), (status = 422, body = crate::error::Problem)))]
pub async fn patch(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<Value>,
) -> ApiResult<Json<TenantSettings>> {
    auth.owner()?;
    let Some(obj) = b.as_object() else {
        return Err(ApiError::field("", "settings must be a JSON object"));
    };
    // Check each key on its own so the problem names it.
    let defaults = serde_json::to_value(TenantSettings::default()).unwrap_or_default();
    for (k, v) in obj {
        if defaults.get(k).is_none() {
            return Err(ApiError::field(k, "unknown setting"));
        }
        let mut probe = defaults.clone();
        probe[k] = v.clone();
        if let Err(e) = serde_json::from_value::<TenantSettings>(probe) {
            return Err(ApiError::field(k, e.to_string()));
        }
    }
    if obj
        .get("default_vat_percent")
        .and_then(Value::as_u64)
        .is_some_and(|v| v > 50)
    {
        return Err(ApiError::field(
            "default_vat_percent",
            "must be between 0 and 50",
        ));
    }
    Ok(Json(st.store.update_settings(&auth.0, &b).await?))
}
