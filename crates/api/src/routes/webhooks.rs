//! Outbound webhook subscriptions and their deliveries (owner and manager tokens only).
//! The signing secret is shown in full only in the answers to creation and rotation; it is
//! stored sealed by the credential vault, bound to the tenant and the webhook.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use savdo_domain::event::CloudEvent;
use savdo_storage::webhooks::{Delivery, NewWebhook, Webhook, WebhookPatch};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{double_option, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http` or `https`; must resolve to public addresses.
    url: String,
    /// Event types (`receipt.created`), groups (`receipt.*`) or `["*"]`.
    events: Vec<String>,
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// Enabling again resets the failure clock.
    enabled: Option<bool>,
}

/// A subscription with its secret in full: only in the answers to creation and rotation.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    webhook: Webhook,
    /// `whsec_<base64>`: store it now, it is not shown again.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    items: Vec<Webhook>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    items: Vec<Delivery>,
}

async fn check_url(st: &AppState, raw: &str) -> ApiResult<String> {
    savdo_webhooks::check_url(raw, st.webhooks_allow_private)
        .await
        .map(|u| u.to_string())
        .map_err(|e| ApiError::field("url", e.0))
}

fn check_events(events: &[String]) -> ApiResult<Vec<String>> {
    if events.is_empty() {
        return Err(ApiError::field(
            "events",
            "must name at least one event type (or \"*\")",
        ));
    }
    if events.len() > 100 {
        return Err(ApiError::field("events", "at most 100 entries"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let e = e.trim();
        savdo_webhooks::validate_pattern(e)
            .map_err(|m| ApiError::field(format!("events[{i}]"), m))?;
        if !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    Ok(out)
}

fn check_description(d: Option<&str>) -> ApiResult<Option<String>> {
    d.map(|d| text("description", d, 500)).transpose()
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookWithSecret>)> {
    auth.back_office()?;
    // Cheap checks first; the URL's addresses need a DNS lookup.
    let events = check_events(&b.events)?;
    let description = check_description(b.description.as_deref())?;
    let url = check_url(&st, &b.url).await?;
    // The id is chosen here: the sealed secret is bound to it.
    let id = savdo_domain::ids::new_id();
    let (secret, sealed) = savdo_webhooks::secrets::issue(&st.vault, auth.tenant(), id)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let webhook = st
        .store
        .create_webhook(
            &auth.0,
            &NewWebhook {
                id,
                url,
                events,
                description,
                secret: sealed,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookWithSecret {
            webhook,
            secret: secret.expose().to_owned(),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)))]
pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<WebhookList>> {
    auth.back_office()?;
    Ok(Json(WebhookList {
        items: st.store.list_webhooks(auth.tenant()).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Webhook>> {
    auth.back_office()?;
    Ok(Json(st.store.get_webhook(auth.tenant(), id).await?))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = PatchWebhook,
    responses((status = 200, body = Webhook), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn patch(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PatchWebhook>,
) -> ApiResult<Json<Webhook>> {
    auth.back_office()?;
    // 404 before validation, so another tenant's id says nothing about its contents.
    st.store.get_webhook(auth.tenant(), id).await?;
    let url = match b.url.as_deref() {
        Some(u) => Some(check_url(&st, u).await?),
        None => None,
    };
    let events = b.events.as_deref().map(check_events).transpose()?;
    let description = match b.description {
        Some(Some(d)) => Some(check_description(Some(&d))?),
        Some(None) => Some(None),
        None => None,
    };
    let patch = WebhookPatch {
        url,
        events,
        description,
        enabled: b.enabled,
    };
    Ok(Json(st.store.update_webhook(&auth.0, id, &patch).await?))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<StatusCode> {
    auth.back_office()?;
    st.store.delete_webhook(&auth.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookWithSecret), (status = 404, body = crate::error::Problem)))]
pub async fn rotate_secret(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<WebhookWithSecret>> {
    auth.back_office()?;
    // 404 before sealing anything for an id that is not the tenant's.
    st.store.get_webhook(auth.tenant(), id).await?;
    let (secret, sealed) = savdo_webhooks::secrets::issue(&st.vault, auth.tenant(), id)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let until = st.clock.now() + savdo_webhooks::ROTATION_OVERLAP;
    let webhook = st
        .store
        .rotate_webhook_secret(&auth.0, id, &sealed, until)
        .await?;
    Ok(Json(WebhookWithSecret {
        webhook,
        secret: secret.expose().to_owned(),
    }))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = DeliveryList), (status = 404, body = crate::error::Problem)))]
pub async fn deliveries(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Json<DeliveryList>> {
    auth.back_office()?;
    st.store.get_webhook(auth.tenant(), id).await?;
    Ok(Json(DeliveryList {
        items: st.store.list_deliveries(auth.tenant(), id, 100).await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 202, body = Delivery), (status = 404, body = crate::error::Problem)))]
pub async fn retry(
    State(st): State<AppState>,
    auth: Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    auth.back_office()?;
    let parse = |s: &str| Uuid::parse_str(s).map_err(|_| ApiError::NotFound("delivery".into()));
    let (id, delivery_id) = (parse(&id)?, parse(&delivery_id)?);
    let d = st
        .store
        .requeue_delivery(auth.tenant(), id, delivery_id, st.clock.now())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 202, body = Delivery), (status = 404, body = crate::error::Problem)))]
pub async fn test(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    auth.back_office()?;
    let w = st.store.get_webhook(auth.tenant(), id).await?;
    let now = st.clock.now();
    let event = CloudEvent::new(
        savdo_domain::ids::new_id(),
        auth.tenant(),
        "webhook.test",
        now,
        json!({ "webhook_id": w.id, "message": "This is a test delivery from Savdo." }),
    );
    let payload = serde_json::to_value(&event).map_err(|e| ApiError::Internal(e.into()))?;
    st.store
        .enqueue_deliveries(auth.tenant(), &[w.id], event.id, &event.kind, &payload, now)
        .await?;
    let d = st
        .store
        .list_deliveries(auth.tenant(), w.id, 100)
        .await?
        .into_iter()
        .find(|d| d.event_id == event.id)
        .ok_or_else(|| ApiError::NotFound("delivery".into()))?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
