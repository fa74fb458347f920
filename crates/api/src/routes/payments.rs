//! Payments by QR (Payme, Click): the till creates a payment, shows its QR code (the provider's
//! checkout link), and learns it was paid from `GET /payments/{id}/events` (Server-Sent Events)
//! without polling. A paid payment is then used in a receipt (`payments[].payment_id`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use savdo_domain::tenant::Role;
use savdo_hub::Credentials;
use savdo_storage::integrations::{Integration, IntegrationStatus};
use savdo_storage::payments::Payment;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::text;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Auth, Id};
use crate::state::AppState;

/// How long a payment can be paid: Payme's own 12-hour window.
pub const PAYMENT_TTL: chrono::Duration = chrono::Duration::hours(12);
/// How often the event stream looks at the payment (the till hears of it within a second).
const WATCH_EVERY: Duration = Duration::from_millis(200);

const ROLES: &[Role] = &[Role::Owner, Role::Manager, Role::Cashier, Role::Integration];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// `payme` or `click`.
    provider: String,
    /// Optional when the tenant has exactly one integration of the provider.
    integration_id: Option<Uuid>,
    /// Tiyin.
    amount: i64,
    store_id: Uuid,
    terminal_id: Uuid,
    /// A receipt the payment is for (Payme's fiscal `detail` is built from its lines).
    receipt_id: Option<Uuid>,
    description: Option<String>,
}

fn view(p: &Payment) -> Value {
    let base = format!("/api/v1/payments/{}", p.id);
    json!({
        "id": p.id,
        "provider": p.provider,
        "integration_id": p.integration_id,
        "status": p.status,
        "amount": p.amount,
        "store_id": p.store_id,
        "terminal_id": p.terminal_id,
        "receipt_id": p.receipt_id,
        "description": p.description,
        "checkout_url": p.checkout_url,
        "qr_svg_url": format!("{base}/qr.svg"),
        "qr_png_url": format!("{base}/qr.png"),
        "expires_at": p.expires_at,
        "used_by_receipt": p.used_by_receipt,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

async fn integration_for(
    st: &AppState,
    tenant: Uuid,
    provider: &str,
    id: Option<Uuid>,
) -> ApiResult<Integration> {
    let usable = |i: &Integration| i.kind == provider && i.status != IntegrationStatus::Disabled;
    match id {
        Some(id) => {
            let i = st
                .store
                .get_integration(tenant, id)
                .await
                .map_err(|_| ApiError::field("integration_id", "no such integration"))?;
            if !usable(&i) {
                return Err(ApiError::field(
                    "integration_id",
                    format!("is not an enabled {provider} integration"),
                ));
            }
            Ok(i)
        }
        None => {
            let mut all: Vec<Integration> = st
                .store
                .list_integrations(tenant)
                .await?
                .into_iter()
                .filter(usable)
                .collect();
            match all.len() {
                1 => Ok(all.remove(0)),
                0 => Err(ApiError::field(
                    "integration_id",
                    format!("the business has no {provider} integration"),
                )),
                _ => Err(ApiError::field(
                    "integration_id",
                    format!("the business has several {provider} integrations: name one"),
                )),
            }
        }
    }
}

fn credentials(st: &AppState, i: &Integration) -> ApiResult<Credentials> {
    st.vault
        .open_credentials(i.tenant_id, i.id, &i.credentials_sealed)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("credentials cannot be opened: {e}")))
        .and_then(|v| {
            Credentials::from_value(v)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("credentials: {e}")))
        })
}

#[utoipa::path(post, path = "/api/v1/payments", tag = "payments", request_body = CreatePayment,
    responses((status = 201, description = "The payment, pending, with its checkout link and QR"), (status = 422, body = crate::error::Problem)))]
pub async fn create(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<CreatePayment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    auth.require(ROLES)?;
    let tenant = auth.tenant();
    if b.provider != "payme" && b.provider != "click" {
        return Err(ApiError::field("provider", "must be payme or click"));
    }
    if b.amount <= 0 {
        return Err(ApiError::field(
            "amount",
            "must be greater than zero (tiyin)",
        ));
    }
    let description = match &b.description {
        Some(d) => text("description", d, 500)?,
        None => String::new(),
    };
    st.store
        .get_store(tenant, b.store_id)
        .await
        .map_err(|_| ApiError::field("store_id", "no such store"))?;
    let terminals = st.store.list_terminals(tenant, Some(b.store_id)).await?;
    if !terminals.iter().any(|t| t.id == b.terminal_id) {
        return Err(ApiError::field(
            "terminal_id",
            "no such terminal in this store",
        ));
    }
    if let Some(r) = b.receipt_id {
        st.store
            .get_receipt(tenant, r)
            .await
            .map_err(|_| ApiError::field("receipt_id", "no such receipt"))?;
    }
    let integration = integration_for(&st, tenant, &b.provider, b.integration_id).await?;
    let creds = credentials(&st, &integration)?;
    let id = savdo_domain::ids::new_id();
    let checkout_url = if b.provider == "payme" {
        let m = creds.get_str("merchant_id").unwrap_or_default();
        savdo_connectors::payme::checkout_url(&integration.settings, m, id, b.amount)
    } else {
        savdo_connectors::click::pay_url(
            creds.get_str("service_id").unwrap_or_default(),
            creds.get_str("merchant_id").unwrap_or_default(),
            b.amount,
            id,
            None,
        )
    };
    let now = st.clock.now();
    let p = Payment {
        id,
        tenant_id: tenant,
        provider: b.provider.clone(),
        integration_id: integration.id,
        amount: b.amount,
        store_id: b.store_id,
        terminal_id: b.terminal_id,
        receipt_id: b.receipt_id,
        description,
        status: "pending".into(),
        checkout_url,
        expires_at: now + PAYMENT_TTL,
        used_by_receipt: None,
        created_at: now,
        updated_at: now,
    };
    st.store.create_payment(&p).await?;
    Ok((StatusCode::CREATED, Json(view(&p))))
}

/// The payment, expired first if its time ran out while pending.
async fn load(st: &AppState, tenant: Uuid, id: Uuid) -> ApiResult<Payment> {
    let p = st
        .store
        .get_payment(tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("payment".into()))?;
    if p.status == "pending" && p.expires_at <= st.clock.now() {
        if let Some(e) = st
            .store
            .set_payment_status(tenant, id, &["pending"], "expired")
            .await?
        {
            return Ok(e);
        }
        return st
            .store
            .get_payment(tenant, id)
            .await?
            .ok_or_else(|| ApiError::NotFound("payment".into()));
    }
    Ok(p)
}

#[utoipa::path(get, path = "/api/v1/payments/{id}", tag = "payments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The payment"), (status = 404, body = crate::error::Problem)))]
pub async fn get(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Value>> {
    auth.require(ROLES)?;
    Ok(Json(view(&load(&st, auth.tenant(), id).await?)))
}

#[utoipa::path(post, path = "/api/v1/payments/{id}/cancel", tag = "payments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Cancelled (pending) or refunded (a paid Click payment, reversed through Click)"),
        (status = 409, body = crate::error::Problem)))]
pub async fn cancel(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Json<Value>> {
    auth.require(ROLES)?;
    let tenant = auth.tenant();
    let p = load(&st, tenant, id).await?;
    match p.status.as_str() {
        "pending" => {
            let done = st
                .store
                .set_payment_status(tenant, id, &["pending"], "cancelled")
                .await?;
            match done {
                Some(p) => Ok(Json(view(&p))),
                None => Err(ApiError::Conflict {
                    message: "the payment changed meanwhile; read it again".into(),
                    field: None,
                }),
            }
        }
        "paid" if p.used_by_receipt.is_some() => Err(ApiError::Conflict {
            message: "the payment is used by a receipt: refund the receipt".into(),
            field: None,
        }),
        "paid" if p.provider == "click" => {
            let txs = st.store.click_txs_of_payment(p.id).await?;
            let Some(t) = txs.iter().find(|t| t.status == "confirmed") else {
                return Err(ApiError::Conflict {
                    message: "no confirmed Click payment to reverse".into(),
                    field: None,
                });
            };
            let i = st.store.get_integration(tenant, p.integration_id).await?;
            let creds = credentials(&st, &i)?;
            let api = savdo_connectors::click::MerchantApi::new(&i.settings, &creds)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
            api.reversal(t.click_paydoc_id)
                .await
                .map_err(|m| ApiError::Conflict {
                    message: m,
                    field: None,
                })?;
            let done = st
                .store
                .set_payment_status(tenant, id, &["paid"], "refunded")
                .await?;
            Ok(Json(view(&done.unwrap_or(p))))
        }
        "paid" => Err(ApiError::Conflict {
            message: "a paid Payme payment is refunded by Payme (CancelTransaction)".into(),
            field: None,
        }),
        other => Err(ApiError::Conflict {
            message: format!("the payment is {other}"),
            field: None,
        }),
    }
}

#[utoipa::path(get, path = "/api/v1/payments/{id}/qr.svg", tag = "payments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The checkout link as a QR code", content_type = "image/svg+xml")))]
pub async fn qr_svg(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Response> {
    auth.require(ROLES)?;
    let p = load(&st, auth.tenant(), id).await?;
    let svg = crate::console::qr_svg(&p.checkout_url)?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

#[utoipa::path(get, path = "/api/v1/payments/{id}/qr.png", tag = "payments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "The checkout link as a QR code", content_type = "image/png")))]
pub async fn qr_png(State(st): State<AppState>, auth: Auth, Id(id): Id) -> ApiResult<Response> {
    auth.require(ROLES)?;
    let p = load(&st, auth.tenant(), id).await?;
    let code =
        qrcode::QrCode::with_error_correction_level(p.checkout_url.as_bytes(), qrcode::EcLevel::M)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("QR encoding: {e}")))?;
    let png = png_of(&code, 6, 4);
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

#[utoipa::path(get, path = "/api/v1/payments/{id}/events", tag = "payments", params(("id" = Uuid, Path)),
    responses((status = 200, description = "Server-Sent Events: `payment` with the payment now, then on every status change", content_type = "text/event-stream")))]
pub async fn events(
    State(st): State<AppState>,
    auth: Auth,
    Id(id): Id,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>> {
    auth.require(ROLES)?;
    let tenant = auth.tenant();
    let first = load(&st, tenant, id).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    // State: (last status sent, whether the first event went out).
    let stream = futures::stream::unfold(
        (st, first, false, false),
        move |(st, last, sent, done)| async move {
            if done {
                return None;
            }
            if !sent {
                let ev = Event::default()
                    .event("payment")
                    .data(view(&last).to_string());
                return Some((Ok(ev), (st, last, true, false)));
            }
            loop {
                if tokio::time::Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(WATCH_EVERY).await;
                let Ok(now) = load(&st, tenant, id).await else {
                    continue;
                };
                if now.status != last.status || now.used_by_receipt != last.used_by_receipt {
                    let finished =
                        matches!(now.status.as_str(), "cancelled" | "expired" | "refunded");
                    let ev = Event::default()
                        .event("payment")
                        .data(view(&now).to_string());
                    return Some((Ok(ev), (st, now, true, finished)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Payme's endpoint answers any other method than POST with JSON-RPC error -32300 (HTTP 200);
/// every other hook type keeps the neutral 404.
pub async fn hook_not_post(
    axum::extract::Path((kind, _id)): axum::extract::Path<(String, String)>,
) -> Response {
    if kind == savdo_connectors::payme::KIND {
        let body = json!({"jsonrpc": "2.0", "id": null, "error": {
            "code": savdo_connectors::payme::ERR_NOT_POST,
            "message": savdo_connectors::payme::message(savdo_connectors::payme::ERR_NOT_POST),
        }});
        return (StatusCode::OK, Json(body)).into_response();
    }
    (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))).into_response()
}

// ------------------------------------------------------------------------------ PNG

/// The QR code as an 8-bit greyscale PNG: `scale` pixels a module, `quiet` modules of margin.
/// Stored (uncompressed) deflate blocks keep this dependency-free.
pub fn png_of(code: &qrcode::QrCode, scale: usize, quiet: usize) -> Vec<u8> {
    let w = code.width();
    let colors = code.to_colors();
    let side = (w + 2 * quiet) * scale;
    let mut raw = Vec::with_capacity(side * (side + 1));
    for y in 0..side {
        raw.push(0u8); // filter: none
        let my = (y / scale) as isize - quiet as isize;
        for x in 0..side {
            let mx = (x / scale) as isize - quiet as isize;
            let dark = mx >= 0
                && my >= 0
                && (mx as usize) < w
                && (my as usize) < w
                && colors[my as usize * w + mx as usize] == qrcode::Color::Dark;
            raw.push(if dark { 0 } else { 255 });
        }
    }
    let mut z = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, c) in chunks.iter().enumerate() {
        z.push(u8::from(i + 1 == chunks.len()));
        let len = c.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(c);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(side as u32).to_be_bytes());
    ihdr.extend_from_slice(&(side as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &d in data {
        a = (a + u32::from(d)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_adler() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }
}
