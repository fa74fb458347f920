use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use savdo_domain::barcode::Barcode;
use savdo_domain::money::MAX_TIYIN;
use savdo_domain::mxik::validate_mxik;
use savdo_storage::{BulkResult, FieldError, Page, Product, ProductFields, ProductFilter};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{cursor, double_option, limit, page, text};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth, Id};
use crate::state::AppState;

#[derive(Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    sku: String,
    name: String,
    #[serde(default)]
    barcodes: Vec<String>,
    /// Tiyin per unit, VAT included.
    price: i64,
    vat_percent: Option<u8>,
    mxik: Option<String>,
    package_code: Option<String>,
    unit: Option<i32>,
    #[serde(default)]
    marked: bool,
    active: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProduct {
    sku: Option<String>,
    name: Option<String>,
    barcodes: Option<Vec<String>>,
    price: Option<i64>,
    vat_percent: Option<u8>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    mxik: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    package_code: Option<Option<String>>,
    unit: Option<i32>,
    marked: Option<bool>,
    active: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkProducts {
    items: Vec<CreateProduct>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProductQuery {
    q: Option<String>,
    barcode: Option<String>,
    sku: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Validate every field, reporting all problems at once under `prefix`.
fn validate(prefix: &str, f: ProductFields) -> Result<ProductFields, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut push =
        |field: &str, msg: String| errs.push(FieldError::new(format!("{prefix}{field}"), msg));
    let mut out = f;
    match text("sku", &out.sku, 64) {
        Ok(s) => out.sku = s,
        Err(e) => push("sku", problem_msg(e)),
    }
    match text("name", &out.name, 256) {
        Ok(s) => out.name = s,
        Err(e) => push("name", problem_msg(e)),
    }
    if out.barcodes.len() > 32 {
        push("barcodes", "at most 32 barcodes".into());
    }
    let mut seen = std::collections::HashSet::new();
    let mut codes = Vec::new();
    for (i, b) in out.barcodes.iter().enumerate() {
        match Barcode::parse(b) {
            Ok(code) => {
                if seen.insert(code.as_str().to_string()) {
                    codes.push(code.as_str().to_string());
                }
            }
            Err(e) => push(&format!("barcodes[{i}]"), e.to_string()),
        }
    }
    out.barcodes = codes;
    if !(0..=MAX_TIYIN).contains(&out.price) {
        push("price", "must be between 0 and 10^15 tiyin".into());
    }
    if out.vat_percent > 50 {
        push("vat_percent", "must be between 0 and 50".into());
    }
    if let Some(m) = &out.mxik
        && let Err(e) = validate_mxik(m)
    {
        push("mxik", e.to_string());
    }
    if let Some(p) = &out.package_code
        && (p.trim().is_empty() || p.len() > 32 || !p.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        push("package_code", "must be 1 to 32 letters or digits".into());
    }
    if !(1..=9999).contains(&out.unit) {
        push(
            "unit",
            "must be a fiscal unit code between 1 and 9999".into(),
        );
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

fn problem_msg(e: ApiError) -> String {
    e.problem()
        .errors
        .first()
        .map(|f| f.message.clone())
        .unwrap_or_else(|| e.to_string())
}

fn fields_from(c: CreateProduct, default_vat: u8) -> ProductFields {
    ProductFields {
        sku: c.sku,
        name: c.name,
        barcodes: c.barcodes,
        price: c.price,
        vat_percent: c.vat_percent.unwrap_or(default_vat),
        mxik: c.mxik,
        package_code: c.package_code,
        unit: c.unit.unwrap_or(1),
        marked: c.marked,
        active: c.active.unwrap_or(true),
    }
}

#[utoipa::path(post, path = "/api/v1/products", tag = "products", request_body = CreateProduct,
    responses((status = 201, body = Product), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreateProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    auth.back_office()?;
    let settings = st.store.settings(auth.tenant()).await?;
    let f = validate("", fields_from(b, settings.default_vat_percent)).map_err(ApiError::fields)?;
    Ok((
        StatusCode::CREATED,
        Json(st.store.create_product(&auth.0, &f).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/products", tag = "products", params(ProductQuery), responses((status = 200, body = Page<Product>)))]
pub async fn list(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ProductQuery>,
) -> ApiResult<Json<Page<Product>>> {
    let f = ProductFilter {
        q: q.q.filter(|s| !s.is_empty()),
        barcode: q.barcode,
        sku: q.sku,
        cursor: cursor(&q.cursor)?,
        limit: limit(q.limit)?,
    };
    Ok(Json(page(st.store.list_products(auth.tenant(), &f).await?)))
}

#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Product), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Product>> {
    Ok(Json(st.store.get_product(auth.tenant(), id).await?))
}

#[utoipa::path(patch, path = "/api/v1/products/{id}", tag = "products", params(("id" = uuid::Uuid, Path)), request_body = PatchProduct,
    responses((status = 200, body = Product), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn patch(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
    ApiJson(b): ApiJson<PatchProduct>,
) -> ApiResult<Json<Product>> {
    auth.back_office()?;
    let cur = st.store.get_product(auth.tenant(), id).await?;
    let f = ProductFields {
        sku: b.sku.unwrap_or(cur.sku),
        name: b.name.unwrap_or(cur.name),
        barcodes: b.barcodes.unwrap_or(cur.barcodes),
        price: b.price.unwrap_or(cur.price),
        vat_percent: b.vat_percent.unwrap_or(cur.vat_percent),
        mxik: b.mxik.unwrap_or(cur.mxik),
        package_code: b.package_code.unwrap_or(cur.package_code),
        unit: b.unit.unwrap_or(cur.unit),
        marked: b.marked.unwrap_or(cur.marked),
        active: b.active.unwrap_or(cur.active),
    };
    let f = validate("", f).map_err(ApiError::fields)?;
    Ok(Json(st.store.update_product(&auth.0, id, &f).await?))
}

#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "products", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn delete(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<StatusCode> {
    auth.back_office()?;
    st.store.delete_product(&auth.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/products/bulk", tag = "products", request_body = BulkProducts,
    responses((status = 200, body = BulkResult), (status = 422, body = crate::error::Problem)))]
pub async fn bulk(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<BulkProducts>,
) -> ApiResult<Json<BulkResult>> {
    auth.back_office()?;
    if b.items.is_empty() || b.items.len() > 1000 {
        return Err(ApiError::field("items", "send between 1 and 1000 products"));
    }
    let settings = st.store.settings(auth.tenant()).await?;
    let mut errors = Vec::new();
    let mut fields = Vec::with_capacity(b.items.len());
    let mut skus = std::collections::HashSet::new();
    for (i, item) in b.items.into_iter().enumerate() {
        match validate(
            &format!("items[{i}]."),
            fields_from(item, settings.default_vat_percent),
        ) {
            Ok(f) => {
                if !skus.insert(f.sku.clone()) {
                    errors.push(FieldError::new(
                        format!("items[{i}].sku"),
                        "appears twice in this request",
                    ));
                }
                fields.push(f)
            }
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    Ok(Json(st.store.bulk_upsert_products(&auth.0, &fields).await?))
}
