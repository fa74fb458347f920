//! Product mappings of a marketplace integration (owner and manager tokens): which marketplace
//! item is which of our products, what is unmapped on either side, and each item's push state.
//! A "products" sync pulls the catalogue and links by barcode; links set here are manual and
//! never replaced by the matcher.

use axum::Json;
use axum::extract::State;
use savdo_storage::marketplace::{
    LinkChange, LocalProduct, Mapping, MappingCounts, MappingFilter, MappingState, PushStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{cursor, double_option, limit};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth, Id};
use crate::state::AppState;

/// The integration types whose items can be mapped.
const MARKETPLACES: &[&str] = &["uzum", "wildberries", "ozon"];
const MAX_LINKS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingQuery {
    /// `mapped` or `unmapped`; both when absent.
    state: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// A page of our products that no item of the integration links to.
#[derive(Serialize, ToSchema)]
pub struct LocalPage {
    items: Vec<LocalProduct>,
    /// Continue with `GET …/mappings/unmapped-local?cursor=…`.
    next_cursor: Option<String>,
}

/// Marketplace items with their links (paged by `next_cursor`), counts of both sides, and the
/// first page of our unmapped products (`unmapped_local`; further pages at
/// `GET /api/v1/integrations/{id}/mappings/unmapped-local`).
#[derive(Serialize, ToSchema)]
pub struct MappingList {
    items: Vec<Mapping>,
    next_cursor: Option<String>,
    counts: MappingCounts,
    unmapped_local: LocalPage,
    /// The pusher's state for this integration (a 429 wait, the last request failure);
    /// `null` before the first push.
    push: Option<PushStatus>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkInput {
    /// The marketplace's item id, as listed.
    external_id: String,
    /// Our product, or `null` to unlink (the matcher will not link the item again).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    product_id: Option<Option<Uuid>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutMappings {
    /// At most 1000; applied all or nothing.
    links: Vec<LinkInput>,
}

#[derive(Serialize, ToSchema)]
pub struct PutMappingsResult {
    /// Links that changed (a changed link schedules the item's stock push).
    changed: usize,
}

async fn marketplace(st: &AppState, tenant: Uuid, id: Uuid) -> ApiResult<()> {
    let i = st.store.get_integration(tenant, id).await?;
    if !MARKETPLACES.contains(&i.kind.as_str()) {
        return Err(ApiError::Conflict {
            message: format!(
                "{} is not a marketplace: it has no product mappings",
                i.kind
            ),
            field: None,
        });
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/mappings", tag = "integrations",
    params(("id" = Uuid, Path),
        ("state" = Option<String>, Query, description = "mapped or unmapped"),
        ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "1..500, default 50; also the size of unmapped_local")),
    responses((status = 200, body = MappingList), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem, description = "not a marketplace integration"),
        (status = 422, body = crate::error::Problem)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<MappingQuery>,
) -> ApiResult<Json<MappingList>> {
    auth.back_office()?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some("mapped") => Some(MappingState::Mapped),
        Some("unmapped") => Some(MappingState::Unmapped),
        Some(_) => return Err(ApiError::field("state", "must be mapped or unmapped")),
    };
    let limit = limit(q.limit)?;
    marketplace(&st, auth.tenant(), id).await?;
    let filter = MappingFilter {
        state,
        cursor: q.cursor.filter(|c| !c.is_empty()),
        limit,
    };
    let (items, next) = st.store.list_mappings(auth.tenant(), id, &filter).await?;
    let counts = st.store.mapping_counts(auth.tenant(), id).await?;
    let (local, local_next) = st
        .store
        .unmapped_local(auth.tenant(), id, None, limit)
        .await?;
    let push = st.store.push_status(auth.tenant(), id).await?;
    Ok(Json(MappingList {
        items,
        next_cursor: next,
        counts,
        push,
        unmapped_local: LocalPage {
            items: local,
            next_cursor: local_next.map(|c| c.to_string()),
        },
    }))
}

#[utoipa::path(get, path = "/api/v1/integrations/{id}/mappings/unmapped-local", tag = "integrations",
    params(("id" = Uuid, Path), ("cursor" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = LocalPage, description = "Our active products no item of this integration links to"),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)))]
pub async fn unmapped_local(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiQuery(q): ApiQuery<LocalQuery>,
) -> ApiResult<Json<LocalPage>> {
    auth.back_office()?;
    let (c, limit) = (cursor(&q.cursor)?, limit(q.limit)?);
    marketplace(&st, auth.tenant(), id).await?;
    let (items, next) = st.store.unmapped_local(auth.tenant(), id, c, limit).await?;
    Ok(Json(LocalPage {
        items,
        next_cursor: next.map(|c| c.to_string()),
    }))
}

#[utoipa::path(put, path = "/api/v1/integrations/{id}/mappings", tag = "integrations",
    params(("id" = Uuid, Path)), request_body = PutMappings,
    responses((status = 200, body = PutMappingsResult), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem, description = "names links[i].external_id or links[i].product_id")))]
pub async fn put(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PutMappings>,
) -> ApiResult<Json<PutMappingsResult>> {
    auth.back_office()?;
    if b.links.len() > MAX_LINKS {
        return Err(ApiError::field(
            "links",
            format!("at most {MAX_LINKS} links a request"),
        ));
    }
    let mut links = Vec::with_capacity(b.links.len());
    let mut errors = Vec::new();
    for (i, l) in b.links.into_iter().enumerate() {
        let external_id = l.external_id.trim().to_owned();
        if external_id.is_empty() {
            errors.push(savdo_storage::FieldError::new(
                format!("links[{i}].external_id"),
                "must not be empty",
            ));
        }
        let Some(product_id) = l.product_id else {
            errors.push(savdo_storage::FieldError::new(
                format!("links[{i}].product_id"),
                "required: a product id, or null to unlink",
            ));
            continue;
        };
        links.push(LinkChange {
            external_id,
            product_id,
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    marketplace(&st, auth.tenant(), id).await?;
    let changed = st.store.set_links(&auth.0, id, &links).await?;
    Ok(Json(PutMappingsResult { changed }))
}
