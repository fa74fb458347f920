//! Click: the SHOP API (Click calls `POST /hooks/click/{integration_id}`, form-encoded,
//! `action` 0 = Prepare, 1 = Complete, md5 `sign_string` over the raw fields), the pay link,
//! and the Merchant API client (`Auth: user:sha1(ts + secret):ts`) for payment status and
//! reversal.
//!
//! Every SHOP API request is handled by the protocol's own idempotency (a repeated Prepare
//! returns the same `merchant_prepare_id`, a repeated Complete answers -4), so each request is
//! its own delivery in the inbox.

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use md5::{Digest as _, Md5};
use savdo_hub::Credentials;
use savdo_integrations::hooks::{
    DeliveryId, HookContext, HookHandler, HookReject, HookReply, hmac_sha256, verify_hmac_sha256,
};
use savdo_storage::integrations::Integration;
use savdo_storage::payments::ClickTx;
use serde_json::{Value, json};
use sha1::Sha1;
use uuid::Uuid;

mod connector;
pub use connector::{ClickConnector, register};

pub const KIND: &str = "click";
pub const PAY_URL: &str = "https://my.click.uz/services/pay";

pub const OK: i64 = 0;
pub const ERR_SIGN: i64 = -1;
pub const ERR_AMOUNT: i64 = -2;
pub const ERR_ACTION: i64 = -3;
pub const ERR_ALREADY_PAID: i64 = -4;
pub const ERR_NO_ORDER: i64 = -5;
pub const ERR_NO_TRANSACTION: i64 = -6;
pub const ERR_UPDATE: i64 = -7;
pub const ERR_REQUEST: i64 = -8;
pub const ERR_CANCELLED: i64 = -9;

/// The `error_note` of each code.
pub fn note(code: i64) -> &'static str {
    match code {
        OK => "Success",
        ERR_SIGN => "SIGN CHECK FAILED!",
        ERR_AMOUNT => "Incorrect parameter amount",
        ERR_ACTION => "Action not found",
        ERR_ALREADY_PAID => "Already paid",
        ERR_NO_ORDER => "User does not exist",
        ERR_NO_TRANSACTION => "Transaction does not exist",
        ERR_UPDATE => "Failed to update user",
        ERR_REQUEST => "Error in request from click",
        _ => "Transaction cancelled",
    }
}

/// `md5(click_trans_id + service_id + secret + merchant_trans_id [+ merchant_prepare_id] +
/// amount + action + sign_time)`, lowercase hex, over the raw strings.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    click_trans_id: &str,
    service_id: &str,
    secret: &str,
    merchant_trans_id: &str,
    merchant_prepare_id: Option<&str>,
    amount: &str,
    action: &str,
    sign_time: &str,
) -> String {
    let s = format!(
        "{click_trans_id}{service_id}{secret}{merchant_trans_id}{}{amount}{action}{sign_time}",
        merchant_prepare_id.unwrap_or("")
    );
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The digest of the Merchant API `Auth` header: `sha1(timestamp + secret)`.
pub fn merchant_digest(timestamp: &str, secret: &str) -> String {
    hex::encode(Sha1::digest(format!("{timestamp}{secret}").as_bytes()))
}

/// `Auth: <merchant_user_id>:<sha1(ts + secret)>:<ts>`.
pub fn auth_header(user: &str, secret: &str, timestamp: i64) -> String {
    let ts = timestamp.to_string();
    format!("{user}:{}:{ts}", merchant_digest(&ts, secret))
}

/// Tiyin as Click's soum amount, `1500.50`.
pub fn format_amount(tiyin: i64) -> String {
    format!("{}.{:02}", tiyin / 100, tiyin % 100)
}

/// `"1500.50"` -> 150050 tiyin; at most 2 decimals, no sign.
pub fn parse_amount(s: &str) -> Option<i64> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    int.checked_mul(100)?.checked_add(frac)
}

/// `https://my.click.uz/services/pay?service_id=…&merchant_id=…&amount=N.NN&transaction_param=<payment id>`.
pub fn pay_url(
    service_id: &str,
    merchant_id: &str,
    amount: i64,
    payment: Uuid,
    return_url: Option<&str>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("service_id", service_id)
        .append_pair("merchant_id", merchant_id)
        .append_pair("amount", &format_amount(amount))
        .append_pair("transaction_param", &payment.to_string());
    if let Some(r) = return_url {
        q.append_pair("return_url", r);
    }
    format!("{PAY_URL}?{}", q.finish())
}

fn fields(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

// ------------------------------------------------------------------------------ hook

pub struct ClickHooks;

fn reply(f: &std::collections::HashMap<String, String>, code: i64, extra: Value) -> HookReply {
    let mut out = json!({
        "click_trans_id": f.get("click_trans_id").and_then(|s| s.parse::<i64>().ok()),
        "merchant_trans_id": f.get("merchant_trans_id"),
        "error": code,
        "error_note": note(code),
    });
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    HookReply::json(200, &out)
}

#[async_trait]
impl HookHandler for ClickHooks {
    fn verify(
        &self,
        _integration: &Integration,
        credentials: &Credentials,
        _headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DeliveryId, HookReject> {
        let f = fields(body);
        let g = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
        let secret = credentials.get_str("secret_key").unwrap_or("");
        let action = g("action");
        let prepare = (action == "1").then(|| g("merchant_prepare_id"));
        let want = sign(
            g("click_trans_id"),
            g("service_id"),
            secret,
            g("merchant_trans_id"),
            prepare,
            g("amount"),
            action,
            g("sign_time"),
        );
        let given = g("sign_string").trim().to_ascii_lowercase();
        let mac = hmac_sha256(b"savdo-click-sign", want.as_bytes());
        let echo = json!({"click_trans_id": g("click_trans_id"), "merchant_trans_id": g("merchant_trans_id")});
        if secret.is_empty() || !verify_hmac_sha256(b"savdo-click-sign", given.as_bytes(), &mac) {
            return Err(HookReject::Unauthenticated(echo.to_string()));
        }
        Ok(DeliveryId(format!(
            "{}:{action}:{}",
            g("click_trans_id"),
            Uuid::new_v4()
        )))
    }

    fn rejected(&self, why: &HookReject) -> HookReply {
        let (code, echo) = match why {
            HookReject::Unauthenticated(e) => (ERR_SIGN, e.as_str()),
            HookReject::Malformed(_) => (ERR_REQUEST, "{}"),
        };
        let echo: Value = serde_json::from_str(echo).unwrap_or(json!({}));
        HookReply::json(
            200,
            &json!({
                "click_trans_id": echo.get("click_trans_id").and_then(Value::as_str).and_then(|s| s.parse::<i64>().ok()),
                "merchant_trans_id": echo.get("merchant_trans_id"),
                "error": code,
                "error_note": note(code),
            }),
        )
    }

    async fn handle(&self, ctx: &HookContext<'_>, body: &[u8]) -> HookReply {
        let f = fields(body);
        match handle(ctx, &f).await {
            Ok((code, extra)) => reply(&f, code, extra),
            Err(e) => {
                tracing::error!(error = %e, "click: storage error");
                reply(&f, ERR_UPDATE, json!({})).transient()
            }
        }
    }
}

type Outcome = Result<(i64, Value), savdo_storage::StorageError>;

async fn handle(ctx: &HookContext<'_>, f: &std::collections::HashMap<String, String>) -> Outcome {
    let fail = |c: i64| Ok((c, json!({})));
    let g = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let (Ok(ctid), Ok(paydoc)) = (
        g("click_trans_id").parse::<i64>(),
        g("click_paydoc_id").parse::<i64>(),
    ) else {
        return fail(ERR_REQUEST);
    };
    if g("service_id") != ctx.credentials.get_str("service_id").unwrap_or("") {
        return fail(ERR_REQUEST);
    }
    let action = g("action");
    if action != "0" && action != "1" {
        return fail(ERR_ACTION);
    }
    let Some(amount) = parse_amount(g("amount")) else {
        return fail(ERR_REQUEST);
    };
    let Ok(pid) = Uuid::parse_str(g("merchant_trans_id")) else {
        return fail(ERR_NO_ORDER);
    };
    let tenant = ctx.integration.tenant_id;
    let integration = ctx.integration.id;
    let Some(p) = ctx.store.get_payment(tenant, pid).await? else {
        return fail(ERR_NO_ORDER);
    };
    if p.provider != KIND || p.integration_id != integration {
        return fail(ERR_NO_ORDER);
    }
    let existing = ctx.store.click_tx(integration, ctid).await?;
    if action == "0" {
        if amount != p.amount {
            return fail(ERR_AMOUNT);
        }
        if let Some(t) = existing {
            if t.payment_id != p.id {
                return fail(ERR_REQUEST);
            }
            return match t.status.as_str() {
                "confirmed" => fail(ERR_ALREADY_PAID),
                "cancelled" => fail(ERR_CANCELLED),
                _ => Ok((OK, json!({"merchant_prepare_id": t.merchant_prepare_id}))),
            };
        }
        match p.status.as_str() {
            "pending" if p.expires_at > ctx.now => {}
            "paid" | "refunded" => return fail(ERR_ALREADY_PAID),
            _ => return fail(ERR_CANCELLED),
        }
        let t = ClickTx {
            click_trans_id: ctid,
            payment_id: p.id,
            click_paydoc_id: paydoc,
            amount: g("amount").to_owned(),
            merchant_prepare_id: 0,
            merchant_confirm_id: None,
            status: "prepared".into(),
        };
        let t = ctx
            .store
            .save_click_tx(tenant, integration, &t, None)
            .await?;
        return Ok((OK, json!({"merchant_prepare_id": t.merchant_prepare_id})));
    }
    // Complete.
    let Some(t) = existing else {
        return fail(ERR_NO_TRANSACTION);
    };
    if g("merchant_prepare_id") != t.merchant_prepare_id.to_string() || t.payment_id != p.id {
        return fail(ERR_NO_TRANSACTION);
    }
    match t.status.as_str() {
        "confirmed" => return fail(ERR_ALREADY_PAID),
        "cancelled" => return fail(ERR_CANCELLED),
        _ => {}
    }
    let click_error: i64 = g("error").trim().parse().unwrap_or(0);
    if click_error < 0 {
        let mut c = t.clone();
        c.status = "cancelled".into();
        ctx.store
            .save_click_tx(tenant, integration, &c, None)
            .await?;
        return fail(ERR_CANCELLED);
    }
    if amount != p.amount {
        return fail(ERR_AMOUNT);
    }
    match p.status.as_str() {
        "pending" => {}
        "paid" | "refunded" => return fail(ERR_ALREADY_PAID),
        _ => {
            let mut c = t.clone();
            c.status = "cancelled".into();
            ctx.store
                .save_click_tx(tenant, integration, &c, None)
                .await?;
            return fail(ERR_CANCELLED);
        }
    }
    let confirm = ctx
        .store
        .next_payment_number(tenant, "click_confirm")
        .await?;
    let mut c = t.clone();
    c.status = "confirmed".into();
    c.merchant_confirm_id = Some(confirm);
    ctx.store
        .save_click_tx(tenant, integration, &c, Some((&["pending"], "paid")))
        .await?;
    Ok((OK, json!({"merchant_confirm_id": confirm})))
}

// ------------------------------------------------------------------------------ Merchant API

/// The Merchant API client: payment status and reversal.
pub struct MerchantApi {
    pub base_url: String,
    pub service_id: String,
    pub merchant_user_id: String,
    pub secret_key: String,
    http: reqwest::Client,
}

impl MerchantApi {
    pub fn new(settings: &Value, credentials: &Credentials) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = settings
            .get("base_url")
            .and_then(Value::as_str)
            .unwrap_or("https://api.click.uz/v2/merchant/");
        let get = |k: &str| {
            credentials
                .get_str(k)
                .map(str::to_owned)
                .ok_or_else(|| format!("{k} is missing"))
        };
        Ok(MerchantApi {
            base_url: if base.ends_with('/') {
                base.to_owned()
            } else {
                format!("{base}/")
            },
            service_id: get("service_id")?,
            merchant_user_id: get("merchant_user_id")?,
            secret_key: get("secret_key")?,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Result<Value, String> {
        let auth = auth_header(
            &self.merchant_user_id,
            &self.secret_key,
            chrono::Utc::now().timestamp(),
        );
        let r = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("Auth", auth)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("Click is unreachable: {e}"))?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| format!("Click answered no JSON: {e}"))?;
        Ok(v)
    }

    /// `GET payment/status/{service_id}/{payment_id}`.
    pub async fn payment_status(&self, payment_id: i64) -> Result<Value, String> {
        self.call(
            reqwest::Method::GET,
            &format!("payment/status/{}/{payment_id}", self.service_id),
        )
        .await
    }

    /// `DELETE payment/reversal/{service_id}/{payment_id}`; Ok when `error_code` is 0.
    pub async fn reversal(&self, payment_id: i64) -> Result<Value, String> {
        let v = self
            .call(
                reqwest::Method::DELETE,
                &format!("payment/reversal/{}/{payment_id}", self.service_id),
            )
            .await?;
        match v.get("error_code").and_then(Value::as_i64) {
            Some(0) => Ok(v),
            _ => Err(format!(
                "Click refused the reversal: {}",
                v.get("error_note").and_then(Value::as_str).unwrap_or("")
            )),
        }
    }
}

/// Registered for the `click` hook type.
pub fn hooks() -> Arc<ClickHooks> {
    Arc::new(ClickHooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(
            sign(
                "2274583",
                "12345",
                "SeCrEtKeY",
                "order-42",
                None,
                "15000.00",
                "0",
                "2026-11-28 10:15:00"
            ),
            "cf89a93554356fecce56a8f0b5e616a3"
        );
        assert_eq!(
            sign(
                "2274583",
                "12345",
                "SeCrEtKeY",
                "order-42",
                Some("1001"),
                "15000.00",
                "1",
                "2026-11-28 10:15:07"
            ),
            "803d3a6e67a42eb6c1ced02dec97b1c9"
        );
        assert_eq!(
            merchant_digest("1700000000", "SeCrEtKeY"),
            "f46c148ea42cdb3c3640aa3417ddb96f37964b73"
        );
        assert_eq!(
            auth_header("u1", "SeCrEtKeY", 1_700_000_000),
            "u1:f46c148ea42cdb3c3640aa3417ddb96f37964b73:1700000000"
        );
        assert_eq!(parse_amount("15000.00"), Some(1_500_000));
        assert_eq!(format_amount(1_500_050), "15000.50");
        let u = pay_url("1", "2", 1000, Uuid::nil(), None);
        assert!(u.starts_with("https://my.click.uz/services/pay?service_id=1&merchant_id=2&amount=10.00&transaction_param="));
    }
}
