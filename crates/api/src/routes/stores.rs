use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_storage::{Store, StorePatch};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{double_option, text};
use crate::error::ApiResult;
use crate::extract::{ApiJson, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStore {
    name: String,
    address: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchStore {
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    address: Option<Option<String>>,
    active: Option<bool>,
}

#[derive(serde::Serialize, ToSchema)]
pub struct StoreList {
    items: Vec<Store>,
}

#[utoipa::path(post, path = "/api/v1/stores", tag = "stores", request_body = CreateStore,
    responses((status = 201, body = Store), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateStore>,
) -> ApiResult<(StatusCode, Json<Store>)> {
    auth.back_office()?;
    let name = text("name", &b.name, 200)?;
    let address = b
        .address
        .as_deref()
        .map(|a| text("address", a, 500))
        .transpose()?;
    let s = st
        .store
        .create_store(&auth.0, &name, address.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

#[utoipa::path(get, path = "/api/v1/stores", tag = "stores", responses((status = 200, body = StoreList)))]
pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<StoreList>> {
    Ok(Json(StoreList {
        items: st.store.list_stores(auth.tenant()).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/stores/{id}", tag = "stores", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Store), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Store>> {
    Ok(Json(st.store.get_store(auth.tenant(), id).await?))
}

#[utoipa::path(patch, path = "/api/v1/stores/{id}", tag = "stores", params(("id" = uuid::Uuid, Path)), request_body = PatchStore,
    responses((status = 200, body = Store), (status = 404, body = crate::error::Problem)))]
pub async fn patch(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PatchStore>,
) -> ApiResult<Json<Store>> {
    auth.back_office()?;
    let patch = StorePatch {
        name: b
            .name
            .as_deref()
            .map(|n| text("name", n, 200))
            .transpose()?,
        address: match b.address {
            Some(Some(a)) => Some(Some(text("address", &a, 500)?)),
            Some(None) => Some(None),
            None => None,
        },
        active: b.active,
    };
    Ok(Json(st.store.update_store(&auth.0, id, &patch).await?))
}
