//! The integration hub (owner and manager tokens only): the catalog of types, integrations with
//! their credentials (sealed by the vault, masked in every answer), health tests, sync jobs and
//! the exchange log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use savdo_storage::integrations::{
    Integration, IntegrationPatch, IntegrationStatus, Job, LogEntry, LogFilter, LogStatus,
    NewIntegration,
};
use savdo_storage::{FieldError, Page};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{cursor, limit, page, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIntegration {
    /// A type from the catalog (`payme`, `uzum`…).
    #[serde(rename = "type")]
    kind: String,
    name: String,
    /// The type's credential fields; stored encrypted, never shown again.
    #[schema(value_type = Object)]
    credentials: Value,
    #[serde(default)]
    #[schema(value_type = Object)]
    settings: Value,
    /// Run the connection test (default true).
    test: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchIntegration {
    name: Option<String>,
    /// `active` or `disabled`.
    status: Option<String>,
    /// Merged into the stored credentials: fields given replace, `null` removes, others stay.
    #[schema(value_type = Option<Object>)]
    credentials: Option<Value>,
    /// Merged into the stored settings the same way, then validated again.
    #[schema(value_type = Option<Object>)]
    settings: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSync {
    /// What to synchronise; the type's handlers say which exist.
    what: String,
}

/// An integration as answers show it: credentials masked.
#[derive(Serialize, ToSchema)]
pub struct IntegrationView {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    status: IntegrationStatus,
    #[schema(value_type = Object)]
    settings: Value,
    /// Every value masked (`"****abcd"` at most).
    #[schema(value_type = Object)]
    credentials: Value,
    /// The last health result, with the circuit breaker's state when calls were made.
    #[schema(value_type = Option<Object>)]
    health: Option<Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct IntegrationList {
    items: Vec<IntegrationView>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    items: Vec<Job>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// `ok`, `error` or an HTTP status.
    status: Option<String>,
    /// RFC 3339.
    since: Option<DateTime<Utc>>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("{e}"))
}

fn view(st: &AppState, i: Integration) -> IntegrationView {
    let credentials = st
        .vault
        .open_credentials(i.tenant_id, i.id, &i.credentials_sealed)
        .map(|c| savdo_integrations::mask_credentials(&c))
        .unwrap_or_else(|e| {
            tracing::error!(integration = %i.id, error = %e, "credentials cannot be opened");
            Value::Object(Map::new())
        });
    let breaker = st
        .hub
        .as_ref()
        .and_then(|h| h.breaker_state(&i.id.to_string()));
    let health = match (i.health, breaker) {
        (Some(mut h), Some(b)) => {
            h["breaker"] = json!(b);
            Some(h)
        }
        (None, Some(b)) => Some(json!({ "breaker": b })),
        (h, None) => h,
    };
    IntegrationView {
        id: i.id,
        kind: i.kind,
        name: i.name,
        status: i.status,
        settings: i.settings,
        credentials,
        health,
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}

fn validate(st: &AppState, kind: &str, credentials: &Value, settings: &Value) -> ApiResult<()> {
    st.registry
        .validate(kind, credentials, settings)
        .map_err(|errs| {
            ApiError::fields(
                errs.into_iter()
                    .map(|(f, m)| FieldError::new(f, m))
                    .collect(),
            )
        })
}

/// `patch` merged into `base`: keys given replace, `null` removes.
fn merge(base: &Value, patch: &Value, field: &str) -> ApiResult<Value> {
    let Some(p) = patch.as_object() else {
        return Err(ApiError::field(field, "must be an object"));
    };
    let mut out = base.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

async fn check(st: &AppState, i: &Integration) -> ApiResult<Integration> {
    Ok(
        savdo_integrations::check_health(&st.store, &st.vault, &st.registry, st.hub.as_ref(), i)
            .await?,
    )
}

#[utoipa::path(get, path = "/api/v1/integrations/catalog", tag = "integrations",
    responses((status = 200, description = "Every integration type: capabilities, credential and settings fields", body = Object)))]
pub async fn catalog(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.back_office()?;
    Ok(Json(json!(st.registry.catalog())))
}

#[utoipa::path(post, path = "/api/v1/integrations", tag = "integrations", request_body = CreateIntegration,
    responses((status = 201, body = IntegrationView), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateIntegration>,
) -> ApiResult<(StatusCode, Json<IntegrationView>)> {
    auth.back_office()?;
    let name = text("name", &b.name, 200)?;
    let settings = if b.settings.is_null() {
        json!({})
    } else {
        b.settings
    };
    validate(&st, &b.kind, &b.credentials, &settings)?;
    let id = savdo_domain::ids::new_id();
    let sealed = st
        .vault
        .seal_credentials(auth.tenant(), id, &b.credentials)
        .map_err(internal)?;
    let mut i = st
        .store
        .create_integration(
            &auth.0,
            &NewIntegration {
                id,
                kind: b.kind,
                name,
                status: IntegrationStatus::Active,
                settings,
                credentials_sealed: sealed,
            },
        )
        .await?;
    if b.test != Some(false) {
        i = check(&st, &i).await?;
    }
    Ok((StatusCode::CREATED, Json(view(&st, i))))
}

#[utoipa::path(get, path = "/api/v1/integrations", tag = "integrations", responses((status = 200, body = IntegrationList)))]
pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<IntegrationList>> {
    auth.back_office()?;
    let items = st.store.list_integrations(auth.tenant()).await?;
    Ok(Json(IntegrationList {
        items: items.into_iter().map(|i| view(&st, i)).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = IntegrationView), (status = 404, body = crate::error::Problem)))]
pub async fn get(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<IntegrationView>> {
    auth.back_office()?;
    let i = st.store.get_integration(auth.tenant(), id).await?;
    Ok(Json(view(&st, i)))
}

#[utoipa::path(patch, path = "/api/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)), request_body = PatchIntegration,
    responses((status = 200, body = IntegrationView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn patch(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PatchIntegration>,
) -> ApiResult<Json<IntegrationView>> {
    auth.back_office()?;
    let old = st.store.get_integration(auth.tenant(), id).await?;
    let name = b
        .name
        .as_deref()
        .map(|n| text("name", n, 200))
        .transpose()?;
    let status = match b.status.as_deref() {
        None => None,
        Some("active") => Some(IntegrationStatus::Active),
        Some("disabled") => Some(IntegrationStatus::Disabled),
        Some(_) => return Err(ApiError::field("status", "must be active or disabled")),
    };
    let settings = b
        .settings
        .as_ref()
        .map(|s| merge(&old.settings, s, "settings"))
        .transpose()?;
    let mut credentials_sealed = None;
    if b.credentials.is_some() || settings.is_some() {
        let stored = st
            .vault
            .open_credentials(auth.tenant(), id, &old.credentials_sealed)
            .map_err(internal)?;
        let creds = match &b.credentials {
            Some(c) => merge(&stored, c, "credentials")?,
            None => stored,
        };
        validate(
            &st,
            &old.kind,
            &creds,
            settings.as_ref().unwrap_or(&old.settings),
        )?;
        if b.credentials.is_some() {
            credentials_sealed = Some(
                st.vault
                    .seal_credentials(auth.tenant(), id, &creds)
                    .map_err(internal)?,
            );
        }
    }
    let i = st
        .store
        .update_integration(
            &auth.0,
            id,
            &IntegrationPatch {
                name,
                status,
                settings,
                credentials_sealed,
            },
        )
        .await?;
    Ok(Json(view(&st, i)))
}

#[utoipa::path(delete, path = "/api/v1/integrations/{id}", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<StatusCode> {
    auth.back_office()?;
    st.store.delete_integration(&auth.0, id).await?;
    if let Some(h) = &st.hub {
        h.forget(&id.to_string());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/test", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = IntegrationView), (status = 404, body = crate::error::Problem)))]
pub async fn test(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<IntegrationView>> {
    auth.back_office()?;
    let i = st.store.get_integration(auth.tenant(), id).await?;
    let i = check(&st, &i).await?;
    Ok(Json(view(&st, i)))
}

#[utoipa::path(post, path = "/api/v1/integrations/{id}/sync", tag = "integrations", params(("id" = Uuid, Path)), request_body = StartSync,
    responses((status = 202, body = Job), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn sync(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<StartSync>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    auth.back_office()?;
    let i = st.store.get_integration(auth.tenant(), id).await?;
    let what = b.what.trim();
    if st.sync.get(&i.kind, what).is_none() {
        let known = st.sync.whats(&i.kind);
        let msg = if known.is_empty() {
            format!("{} has nothing to synchronise yet", i.kind)
        } else {
            format!("must be one of {}", known.join(", "))
        };
        return Err(ApiError::field("what", msg));
    }
    if i.status == IntegrationStatus::Disabled {
        return Err(ApiError::Conflict {
            message: "the integration is disabled".into(),
            field: None,
        });
    }
    let job = st.store.create_job(auth.tenant(), id, what).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/jobs", tag = "integrations", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobList), (status = 404, body = crate::error::Problem)))]
pub async fn jobs(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<JobList>> {
    auth.back_office()?;
    st.store.get_integration(auth.tenant(), id).await?;
    Ok(Json(JobList {
        items: st.store.list_jobs(auth.tenant(), id, 100).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/jobs/{job_id}", tag = "integrations",
    params(("id" = Uuid, Path), ("job_id" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 404, body = crate::error::Problem)))]
pub async fn job(
    State(st): State<AppState>,
    auth: Auth,
    Path((id, job_id)): Path<(String, String)>,
) -> ApiResult<Json<Job>> {
    auth.back_office()?;
    let parse = |s: &str| Uuid::parse_str(s).map_err(|_| ApiError::NotFound("job".into()));
    let (id, job_id) = (parse(&id)?, parse(&job_id)?);
    Ok(Json(st.store.get_job(auth.tenant(), id, job_id).await?))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/log", tag = "integrations",
    params(("id" = Uuid, Path), ("status" = Option<String>, Query, description = "ok, error or an HTTP status"),
        ("since" = Option<String>, Query, description = "RFC 3339"), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = Page<LogEntry>), (status = 404, body = crate::error::Problem)))]
pub async fn log(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<Page<LogEntry>>> {
    auth.back_office()?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("ok") => Some(LogStatus::Ok),
        Some("error") => Some(LogStatus::Error),
        Some(s) => match s.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Some(LogStatus::Code(c)),
            _ => {
                return Err(ApiError::field(
                    "status",
                    "must be ok, error or an HTTP status",
                ));
            }
        },
    };
    let filter = LogFilter {
        status,
        since: q.since,
        cursor: cursor(&q.cursor)?,
        limit: limit(q.limit)?,
    };
    st.store.get_integration(auth.tenant(), id).await?;
    Ok(Json(page(
        st.store.list_log(auth.tenant(), id, &filter).await?,
    )))
}
