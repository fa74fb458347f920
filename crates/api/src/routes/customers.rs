use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_domain::phone::normalize_phone;
use savdo_storage::{Customer, CustomerFields, CustomerFilter, Page};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{cursor, double_option, limit, page, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    name: String,
    phone: Option<String>,
    loyalty_card: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    external_ids: serde_json::Map<String, Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCustomer {
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    loyalty_card: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    external_ids: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CustomerQuery {
    q: Option<String>,
    phone: Option<String>,
    card: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn check(f: CustomerFields) -> ApiResult<CustomerFields> {
    Ok(CustomerFields {
        name: text("name", &f.name, 200)?,
        phone: f
            .phone
            .map(|p| normalize_phone(&p).map_err(|e| ApiError::field("phone", e.to_string())))
            .transpose()?,
        loyalty_card: f
            .loyalty_card
            .map(|c| text("loyalty_card", &c, 64))
            .transpose()?,
        external_ids: {
            for (k, v) in &f.external_ids {
                if !v.is_string() {
                    return Err(ApiError::field(
                        format!("external_ids.{k}"),
                        "must be a string",
                    ));
                }
            }
            f.external_ids
        },
    })
}

#[utoipa::path(post, path = "/api/v1/customers", tag = "customers", request_body = CreateCustomer,
    responses((status = 201, body = Customer), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateCustomer>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    let f = check(CustomerFields {
        name: b.name,
        phone: b.phone,
        loyalty_card: b.loyalty_card,
        external_ids: b.external_ids,
    })?;
    Ok((
        StatusCode::CREATED,
        Json(st.store.create_customer(&auth.0, &f).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", params(CustomerQuery), responses((status = 200, body = Page<Customer>)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> ApiResult<Json<Page<Customer>>> {
    let phone = q
        .phone
        .map(|p| normalize_phone(&p).map_err(|e| ApiError::field("phone", e.to_string())))
        .transpose()?;
    let f = CustomerFilter {
        q: q.q.filter(|s| !s.is_empty()),
        phone,
        card: q.card,
        cursor: cursor(&q.cursor)?,
        limit: limit(q.limit)?,
    };
    Ok(Json(page(
        st.store.list_customers(auth.tenant(), &f).await?,
    )))
}

#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Customer), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Customer>> {
    Ok(Json(st.store.get_customer(auth.tenant(), id).await?))
}

#[utoipa::path(patch, path = "/api/v1/customers/{id}", tag = "customers", params(("id" = uuid::Uuid, Path)), request_body = PatchCustomer,
    responses((status = 200, body = Customer), (status = 404, body = crate::error::Problem)))]
pub async fn patch(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PatchCustomer>,
) -> ApiResult<Json<Customer>> {
    let cur = st.store.get_customer(auth.tenant(), id).await?;
    let f = check(CustomerFields {
        name: b.name.unwrap_or(cur.name),
        phone: b.phone.unwrap_or(cur.phone),
        loyalty_card: b.loyalty_card.unwrap_or(cur.loyalty_card),
        external_ids: b.external_ids.unwrap_or(cur.external_ids),
    })?;
    Ok(Json(st.store.update_customer(&auth.0, id, &f).await?))
}
