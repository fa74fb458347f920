use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use savdo_domain::tenant::Role;
use savdo_storage::{NewToken, TokenInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::text;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Auth, Id, hash_token};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    #[schema(value_type = String, example = "cashier")]
    role: Role,
    /// Binds a cashier token to one store.
    store_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// Shown once; only its hash is stored.
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    items: Vec<TokenInfo>,
}

/// A new random token: 32 bytes from the OS generator, URL-safe base64, with a prefix that
/// secret scanners can recognise.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "svd_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    auth.owner()?;
    let name = text("name", &b.name, 200)?;
    if b.store_id.is_some() && b.role != Role::Cashier {
        return Err(ApiError::field(
            "store_id",
            "only cashier tokens are bound to a store",
        ));
    }
    let token = generate_token();
    let info = st
        .store
        .create_token(
            &auth.0,
            &NewToken {
                name,
                role: b.role,
                store_id: b.store_id,
            },
            &hash_token(&token),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info, token })))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = TokenList)))]
pub async fn list(State(st): State<AppState>, auth: Auth) -> ApiResult<Json<TokenList>> {
    auth.owner()?;
    Ok(Json(TokenList {
        items: st.store.list_tokens(auth.tenant()).await?,
    }))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<StatusCode> {
    auth.owner()?;
    st.store.delete_token(&auth.0, id).await?;
    st.tokens.forget(id);
    Ok(StatusCode::NO_CONTENT)
}
