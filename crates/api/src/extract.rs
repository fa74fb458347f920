//! Extractors that turn every way a request can be wrong into a problem response naming the
//! field, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use savdo_domain::tenant::Role;
use savdo_storage::Actor;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub const MAX_BODY: usize = 1024 * 1024;

/// JSON body, deserialised with the path of the offending field in every error.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime == "application/json" || mime.ends_with("+json")) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(MAX_BODY)
            } else {
                ApiError::MalformedBody(e.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parse JSON, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut *de) {
        // Only whitespace may follow the value: `{...} trailing` is not JSON.
        Ok(v) => de
            .end()
            .map(|()| v)
            .map_err(|e| ApiError::MalformedBody(e.to_string())),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Err(ApiError::MalformedBody(inner.to_string()))
                }
                Category::Data => {
                    let msg = strip_position(&inner.to_string());
                    Err(ApiError::field(field_of(&path, &msg), msg))
                }
            }
        }
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The full path of the field an error is about. For a missing field serde names the field
/// only in the message (the path is its parent); for an unknown field the path already ends
/// with the field's name, so it is not appended twice.
fn field_of(path: &str, msg: &str) -> String {
    let name_in = |prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
    };
    let base = if path == "." { "" } else { path };
    let named = match (name_in("unknown field `"), name_in("missing field `")) {
        (Some(name), _) if base == name || base.ends_with(&format!(".{name}")) => None,
        (Some(name), _) | (None, Some(name)) => Some(name),
        (None, None) => None,
    };
    match named {
        Some(name) if base.is_empty() => name.to_string(),
        Some(name) => format!("{base}.{name}"),
        None => base.to_string(),
    }
}

/// Query string, deserialised with the parameter at fault named.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(q));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                ApiError::field(field_of(&path, &msg), msg)
            })
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

/// A path id; anything that is not a UUID cannot name a resource, so it is a 404.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(params) =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound("resource".into()))?;
        let (_, raw) = params
            .first()
            .ok_or_else(|| ApiError::NotFound("resource".into()))?;
        Uuid::parse_str(raw)
            .map(Id)
            .map_err(|_| ApiError::NotFound("resource".into()))
    }
}

/// The caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Auth(pub Actor);

pub fn hash_token(token: &str) -> crate::token_cache::TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(a) = parts.extensions.get::<Auth>() {
            return Ok(a.clone());
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let hash = hash_token(token);
        let info = match state.tokens.get(&hash) {
            Some(info) => info,
            None => {
                let generation = state.tokens.generation();
                let info = state
                    .store
                    .token_by_hash(&hash)
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                state.tokens.put(hash, info.clone(), generation);
                info
            }
        };
        let auth = Auth(Actor {
            tenant_id: info.tenant_id,
            token_id: Some(info.id),
            role: info.role,
            store_id: info.store_id,
        });
        parts.extensions.insert(auth.clone());
        Ok(auth)
    }
}

impl Auth {
    pub fn tenant(&self) -> Uuid {
        self.0.tenant_id
    }
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} token cannot do this",
                self.0.role.as_str()
            )))
        }
    }
    pub fn back_office(&self) -> Result<(), ApiError> {
        self.require(&[Role::Owner, Role::Manager])
    }
    pub fn owner(&self) -> Result<(), ApiError> {
        self.require(&[Role::Owner])
    }
}
