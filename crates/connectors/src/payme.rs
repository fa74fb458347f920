//! Payme (Paycom) Merchant API: Payme calls us. `POST /hooks/payme/{integration_id}` is a
//! JSON-RPC endpoint authenticated with Basic `Paycom:<key>` (the test key in test mode); every
//! answer is HTTP 200, errors carry a localized `message` (ru/uz/en). The account field
//! `order_id` is our payment id; amounts are tiyin; times are 13-digit Unix milliseconds.
//!
//! Transactions are persisted with every timestamp ([`savdo_storage::payments::PaymeTx`]), so
//! CheckTransaction, GetStatement and repeated Create/Perform/Cancel answer the same after a
//! restart. A transaction older than 12 hours (after Payme's `time`) can no longer be created
//! or performed: it is cancelled with reason 4 and -31008 is returned.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use http::HeaderMap;
use savdo_hub::Credentials;
use savdo_integrations::VaultHandle;
use savdo_integrations::hooks::{
    DeliveryId, HookContext, HookHandler, HookReject, HookReply, hmac_sha256, verify_hmac_sha256,
};
use savdo_storage::Storage;
use savdo_storage::integrations::Integration;
use savdo_storage::payments::{PaymeTx, Payment};
use serde_json::{Value, json};
use uuid::Uuid;

mod connector;
pub use connector::{PaymeConnector, UNSUPPORTED, register};

pub const KIND: &str = "payme";
/// 12 hours after Payme's `time`.
pub const TIMEOUT_MS: i64 = 43_200_000;
pub const CHECKOUT_HOST: &str = "https://checkout.paycom.uz/";
pub const TEST_CHECKOUT_HOST: &str = "https://test.paycom.uz/";

// ------------------------------------------------------------------------------ errors

pub const ERR_NOT_POST: i64 = -32300;
pub const ERR_PARSE: i64 = -32700;
pub const ERR_REQUEST: i64 = -32600;
pub const ERR_METHOD: i64 = -32601;
pub const ERR_AUTH: i64 = -32504;
pub const ERR_SYSTEM: i64 = -32400;
pub const ERR_AMOUNT: i64 = -31001;
pub const ERR_TX_NOT_FOUND: i64 = -31003;
pub const ERR_CANNOT_CANCEL: i64 = -31007;
pub const ERR_CANNOT_PERFORM: i64 = -31008;
/// Account errors (-31050..-31099).
pub const ERR_ORDER_NOT_FOUND: i64 = -31050;
pub const ERR_ORDER_NOT_PAYABLE: i64 = -31051;
pub const ERR_ORDER_BUSY: i64 = -31052;

/// The ru/uz/en message of an error code.
pub fn message(code: i64) -> Value {
    let (ru, uz, en) = match code {
        ERR_NOT_POST => (
            "Метод запроса не POST",
            "So'rov usuli POST emas",
            "The request method is not POST",
        ),
        ERR_PARSE => (
            "Ошибка разбора JSON",
            "JSON tahlilida xatolik",
            "JSON parse error",
        ),
        ERR_REQUEST => (
            "Отсутствуют обязательные поля или неверный тип полей",
            "Majburiy maydonlar yo'q yoki maydon turi noto'g'ri",
            "Required fields are missing or have a wrong type",
        ),
        ERR_METHOD => (
            "Запрашиваемый метод не найден",
            "So'ralgan usul topilmadi",
            "The requested method was not found",
        ),
        ERR_AUTH => (
            "Недостаточно привилегий для выполнения метода",
            "Usulni bajarish uchun huquqlar yetarli emas",
            "Insufficient privileges to perform the method",
        ),
        ERR_AMOUNT => ("Неверная сумма", "Noto'g'ri summa", "Wrong amount"),
        ERR_TX_NOT_FOUND => (
            "Транзакция не найдена",
            "Tranzaksiya topilmadi",
            "Transaction not found",
        ),
        ERR_CANNOT_CANCEL => (
            "Невозможно отменить транзакцию: заказ выполнен",
            "Tranzaksiyani bekor qilib bo'lmaydi: buyurtma bajarilgan",
            "The transaction cannot be cancelled: the order is fulfilled",
        ),
        ERR_CANNOT_PERFORM => (
            "Невозможно выполнить данную операцию",
            "Ushbu amalni bajarib bo'lmaydi",
            "The operation cannot be performed",
        ),
        ERR_ORDER_NOT_FOUND => ("Заказ не найден", "Buyurtma topilmadi", "Order not found"),
        ERR_ORDER_NOT_PAYABLE => (
            "Заказ уже оплачен или отменён",
            "Buyurtma allaqachon to'langan yoki bekor qilingan",
            "The order is already paid or cancelled",
        ),
        ERR_ORDER_BUSY => (
            "Заказ ожидает оплаты другой транзакцией",
            "Buyurtma boshqa tranzaksiya bilan to'lovni kutmoqda",
            "The order is awaiting payment by another transaction",
        ),
        _ => ("Системная ошибка", "Tizim xatosi", "System error"),
    };
    json!({"ru": ru, "uz": uz, "en": en})
}

fn error(id: &Value, code: i64, data: Option<&str>) -> Value {
    let mut e = json!({"code": code, "message": message(code)});
    if let Some(d) = data {
        e["data"] = json!(d);
    }
    json!({"jsonrpc": "2.0", "id": id, "error": e})
}

fn result(id: &Value, r: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": r})
}

// ------------------------------------------------------------------------------ checkout

/// The parameters of a checkout link before encoding: `m=<merchant>;ac.order_id=<order>;a=<tiyin>`.
pub fn checkout_params(merchant_id: &str, order_id: &str, amount: i64) -> String {
    format!("m={merchant_id};ac.order_id={order_id};a={amount}")
}

/// The base64 part of a checkout link: `m=<merchant>;ac.order_id=<order>;a=<tiyin>`.
pub fn checkout_path(merchant_id: &str, order_id: &str, amount: i64) -> String {
    base64::engine::general_purpose::STANDARD.encode(checkout_params(merchant_id, order_id, amount))
}

/// The checkout host of an integration: the `checkout_host` setting, or the test host in test
/// mode when the setting is left at the production default.
pub fn checkout_host(settings: &Value) -> String {
    let test = test_mode(settings);
    let host = settings
        .get("checkout_host")
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .unwrap_or(CHECKOUT_HOST);
    let host = if test && host == CHECKOUT_HOST {
        TEST_CHECKOUT_HOST
    } else {
        host
    };
    if host.ends_with('/') {
        host.to_owned()
    } else {
        format!("{host}/")
    }
}

/// `https://checkout.paycom.uz/<base64>` for our payment.
pub fn checkout_url(settings: &Value, merchant_id: &str, payment: Uuid, amount: i64) -> String {
    format!(
        "{}{}",
        checkout_host(settings),
        checkout_path(merchant_id, &payment.to_string(), amount)
    )
}

fn test_mode(settings: &Value) -> bool {
    settings
        .get("test_mode")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

// ------------------------------------------------------------------------------ hook

/// The `payme` hook handler. Holds the vault for ChangePassword.
pub struct PaymeHooks {
    pub vault: Arc<VaultHandle>,
}

impl PaymeHooks {
    pub fn new(vault: Arc<VaultHandle>) -> Self {
        PaymeHooks { vault }
    }
}

/// The key Payme must present: `test_key` in test mode (when set), else `key`.
fn key_name(integration: &Integration, credentials: &Credentials) -> &'static str {
    if test_mode(&integration.settings)
        && credentials
            .get_str("test_key")
            .is_some_and(|k| !k.is_empty())
    {
        "test_key"
    } else {
        "key"
    }
}

/// Whether the Authorization header is `Basic base64("Paycom:" + key)`, in constant time.
pub fn auth_ok(headers: &HeaderMap, key: &str) -> bool {
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("Paycom:{key}"))
    );
    // Compare MACs of both under a fixed key: constant time whatever the lengths.
    let want = hmac_sha256(b"savdo-payme-auth", expected.as_bytes());
    !key.is_empty() && verify_hmac_sha256(b"savdo-payme-auth", given.trim().as_bytes(), &want)
}

fn rpc_id(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(Value::Null)
}

#[async_trait]
impl HookHandler for PaymeHooks {
    fn verify(
        &self,
        integration: &Integration,
        credentials: &Credentials,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DeliveryId, HookReject> {
        let key = credentials
            .get_str(key_name(integration, credentials))
            .unwrap_or("");
        // The rpc id travels in the reason so the refusal can echo it.
        let id = rpc_id(body);
        if !auth_ok(headers, key) {
            return Err(HookReject::Unauthenticated(id.to_string()));
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Err(HookReject::Malformed("parse".into()));
        };
        let method = v.get("method").and_then(Value::as_str).unwrap_or("");
        let tx = v
            .get("params")
            .and_then(|p| p.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // One delivery = one RPC (Payme numbers its calls); repeats with a new rpc id are
        // answered by the protocol's own idempotency below.
        // Only an exact retransmission (same bytes) of a state-changing call is a duplicate;
        // reads always answer from the current state.
        let digest = match method {
            "CreateTransaction" | "PerformTransaction" | "CancelTransaction" => {
                hex::encode(&hmac_sha256(b"savdo-payme-delivery", body)[..12])
            }
            _ => Uuid::new_v4().to_string(),
        };
        Ok(DeliveryId(format!("{method}:{tx}:{id}:{digest}")))
    }

    fn rejected(&self, why: &HookReject) -> HookReply {
        let (id, code) = match why {
            HookReject::Unauthenticated(id) => (
                serde_json::from_str::<Value>(id).unwrap_or(Value::Null),
                ERR_AUTH,
            ),
            HookReject::Malformed(m) if m == "parse" => (Value::Null, ERR_PARSE),
            HookReject::Malformed(_) => (Value::Null, ERR_REQUEST),
        };
        HookReply::json(200, &error(&id, code, None))
    }

    fn busy(&self) -> HookReply {
        HookReply::json(200, &error(&Value::Null, ERR_SYSTEM, None))
    }

    async fn handle(&self, ctx: &HookContext<'_>, body: &[u8]) -> HookReply {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return HookReply::json(200, &error(&Value::Null, ERR_PARSE, None));
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        match dispatch(self, ctx, &v).await {
            Ok(r) => HookReply::json(200, &result(&id, r)),
            // A system error is ours and passing: Payme's retry must be handled again.
            Err(Fail(ERR_SYSTEM, data)) => {
                HookReply::json(200, &error(&id, ERR_SYSTEM, data)).transient()
            }
            Err(Fail(code, data)) => HookReply::json(200, &error(&id, code, data)),
        }
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &["content-type", "user-agent", "x-request-id"]
    }
}

struct Fail(i64, Option<&'static str>);

impl From<savdo_storage::StorageError> for Fail {
    fn from(e: savdo_storage::StorageError) -> Self {
        tracing::error!(error = %e, "payme: storage error");
        Fail(ERR_SYSTEM, None)
    }
}

type R = Result<Value, Fail>;

fn bad() -> Fail {
    Fail(ERR_REQUEST, None)
}

fn p_str<'a>(p: &'a Value, k: &str) -> Result<&'a str, Fail> {
    p.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(bad)
}

fn p_i64(p: &Value, k: &str) -> Result<i64, Fail> {
    p.get(k).and_then(Value::as_i64).ok_or_else(bad)
}

async fn dispatch(h: &PaymeHooks, ctx: &HookContext<'_>, v: &Value) -> R {
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return Err(bad());
    };
    let empty = json!({});
    let params = v.get("params").unwrap_or(&empty);
    if !params.is_object() {
        return Err(bad());
    }
    let now = ctx.now.timestamp_millis();
    match method {
        "CheckPerformTransaction" => check_perform(ctx, params).await,
        "CreateTransaction" => create(ctx, params, now).await,
        "PerformTransaction" => perform(ctx, params, now).await,
        "CancelTransaction" => cancel(ctx, params, now).await,
        "CheckTransaction" => {
            let t = find(ctx, params).await?;
            Ok(tx_json(&t))
        }
        "GetStatement" => statement(ctx, params).await,
        "ChangePassword" => change_password(h, ctx, params).await,
        _ => Err(Fail(ERR_METHOD, Some("method"))),
    }
}

/// The order named by `account.order_id`, checked against the amount.
async fn order(ctx: &HookContext<'_>, params: &Value) -> Result<Payment, Fail> {
    let amount = p_i64(params, "amount")?;
    let account = params
        .get("account")
        .and_then(Value::as_object)
        .ok_or_else(bad)?;
    let not_found = Fail(ERR_ORDER_NOT_FOUND, Some("order_id"));
    let order_id = account
        .get("order_id")
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .ok_or(Fail(ERR_ORDER_NOT_FOUND, Some("order_id")))?;
    let Ok(pid) = Uuid::parse_str(&order_id) else {
        return Err(not_found);
    };
    let Some(p) = ctx
        .store
        .get_payment(ctx.integration.tenant_id, pid)
        .await?
    else {
        return Err(not_found);
    };
    if p.provider != KIND || p.integration_id != ctx.integration.id {
        return Err(not_found);
    }
    if p.amount != amount {
        return Err(Fail(ERR_AMOUNT, Some("amount")));
    }
    Ok(p)
}

fn payable(p: &Payment, now: chrono::DateTime<chrono::Utc>) -> Result<(), Fail> {
    if p.status != "pending" || p.expires_at <= now {
        return Err(Fail(ERR_ORDER_NOT_PAYABLE, Some("order_id")));
    }
    Ok(())
}

async fn check_perform(ctx: &HookContext<'_>, params: &Value) -> R {
    let p = order(ctx, params).await?;
    payable(&p, ctx.now)?;
    let mut out = json!({"allow": true});
    if let Some(detail) = fiscal_detail(ctx.store, &p).await {
        out["detail"] = detail;
    }
    Ok(out)
}

/// Fiscal `detail` when the payment is tied to a receipt: its lines with MXIK, package code and
/// VAT (12 % unless the line says otherwise).
async fn fiscal_detail(store: &Arc<dyn Storage>, p: &Payment) -> Option<Value> {
    let rid = p.receipt_id?;
    let r = store.get_receipt(p.tenant_id, rid).await.ok()?;
    let items: Vec<Value> = r
        .lines
        .iter()
        .map(|l| {
            let milli = l.qty.milli();
            let count = if milli % 1000 == 0 {
                json!(milli / 1000)
            } else {
                json!(milli as f64 / 1000.0)
            };
            json!({
                "title": l.name,
                "price": l.price,
                "count": count,
                "code": l.mxik.clone().unwrap_or_default(),
                "units": l.unit,
                "vat_percent": if l.vat_percent == 0 { 12 } else { l.vat_percent },
                "package_code": l.package_code.clone().unwrap_or_default(),
                "discount": l.discount,
            })
        })
        .collect();
    Some(json!({"receipt_type": 0, "items": items}))
}

fn timed_out(t: &PaymeTx, now: i64) -> bool {
    now - t.time > TIMEOUT_MS
}

async fn expire(ctx: &HookContext<'_>, t: &PaymeTx, now: i64) -> Result<(), Fail> {
    let mut c = t.clone();
    c.state = -1;
    c.reason = Some(4);
    c.cancel_time = now;
    ctx.store
        .save_payme_tx(ctx.integration.tenant_id, ctx.integration.id, &c, None)
        .await?;
    Ok(())
}

async fn create(ctx: &HookContext<'_>, params: &Value, now: i64) -> R {
    let pid = p_str(params, "id")?;
    let time = p_i64(params, "time")?;
    p_i64(params, "amount")?;
    if let Some(t) = ctx.store.payme_tx(ctx.integration.id, pid).await? {
        if t.state != 1 {
            return Err(Fail(ERR_CANNOT_PERFORM, None));
        }
        if timed_out(&t, now) {
            expire(ctx, &t, now).await?;
            return Err(Fail(ERR_CANNOT_PERFORM, None));
        }
        return Ok(
            json!({"create_time": t.create_time, "transaction": t.seq.to_string(), "state": 1}),
        );
    }
    let p = order(ctx, params).await?;
    payable(&p, ctx.now)?;
    for other in ctx.store.payme_txs_of_payment(p.id).await? {
        match other.state {
            1 if timed_out(&other, now) => expire(ctx, &other, now).await?,
            1 => return Err(Fail(ERR_ORDER_BUSY, Some("order_id"))),
            2 => return Err(Fail(ERR_ORDER_NOT_PAYABLE, Some("order_id"))),
            _ => {}
        }
    }
    if now - time > TIMEOUT_MS {
        return Err(Fail(ERR_CANNOT_PERFORM, None));
    }
    let t = PaymeTx {
        payme_id: pid.to_owned(),
        payment_id: p.id,
        time,
        amount: p.amount,
        create_time: now,
        perform_time: 0,
        cancel_time: 0,
        state: 1,
        reason: None,
        seq: 0,
    };
    let t = ctx
        .store
        .save_payme_tx(ctx.integration.tenant_id, ctx.integration.id, &t, None)
        .await?;
    Ok(json!({"create_time": t.create_time, "transaction": t.seq.to_string(), "state": 1}))
}

async fn find(ctx: &HookContext<'_>, params: &Value) -> Result<PaymeTx, Fail> {
    let pid = p_str(params, "id")?;
    ctx.store
        .payme_tx(ctx.integration.id, pid)
        .await?
        .ok_or(Fail(ERR_TX_NOT_FOUND, None))
}

async fn perform(ctx: &HookContext<'_>, params: &Value, now: i64) -> R {
    let t = find(ctx, params).await?;
    match t.state {
        1 => {
            if timed_out(&t, now) {
                expire(ctx, &t, now).await?;
                return Err(Fail(ERR_CANNOT_PERFORM, None));
            }
            let p = ctx
                .store
                .get_payment(ctx.integration.tenant_id, t.payment_id)
                .await?
                .ok_or(Fail(ERR_CANNOT_PERFORM, None))?;
            if p.status != "pending" {
                return Err(Fail(ERR_CANNOT_PERFORM, None));
            }
            let mut d = t.clone();
            d.state = 2;
            d.perform_time = now;
            let d = ctx
                .store
                .save_payme_tx(
                    ctx.integration.tenant_id,
                    ctx.integration.id,
                    &d,
                    Some((&["pending"], "paid")),
                )
                .await?;
            Ok(
                json!({"transaction": d.seq.to_string(), "perform_time": d.perform_time, "state": 2}),
            )
        }
        2 => Ok(
            json!({"transaction": t.seq.to_string(), "perform_time": t.perform_time, "state": 2}),
        ),
        _ => Err(Fail(ERR_CANNOT_PERFORM, None)),
    }
}

async fn cancel(ctx: &HookContext<'_>, params: &Value, now: i64) -> R {
    let reason = p_i64(params, "reason")?;
    if !matches!(reason, 1..=5 | 10) {
        return Err(Fail(ERR_REQUEST, Some("reason")));
    }
    let t = find(ctx, params).await?;
    let answer = |t: &PaymeTx| json!({"transaction": t.seq.to_string(), "cancel_time": t.cancel_time, "state": t.state});
    match t.state {
        1 => {
            let mut c = t.clone();
            c.state = -1;
            c.reason = Some(reason as i32);
            c.cancel_time = now;
            let c = ctx
                .store
                .save_payme_tx(ctx.integration.tenant_id, ctx.integration.id, &c, None)
                .await?;
            Ok(answer(&c))
        }
        2 => {
            let p = ctx
                .store
                .get_payment(ctx.integration.tenant_id, t.payment_id)
                .await?;
            if p.as_ref().is_some_and(|p| p.used_by_receipt.is_some()) {
                return Err(Fail(ERR_CANNOT_CANCEL, None));
            }
            let mut c = t.clone();
            c.state = -2;
            c.reason = Some(reason as i32);
            c.cancel_time = now;
            let c = ctx
                .store
                .save_payme_tx(
                    ctx.integration.tenant_id,
                    ctx.integration.id,
                    &c,
                    Some((&["paid"], "refunded")),
                )
                .await?;
            Ok(answer(&c))
        }
        _ => Ok(answer(&t)),
    }
}

/// CheckTransaction's answer (and the fields GetStatement repeats).
pub fn tx_json(t: &PaymeTx) -> Value {
    json!({
        "create_time": t.create_time,
        "perform_time": t.perform_time,
        "cancel_time": t.cancel_time,
        "transaction": t.seq.to_string(),
        "state": t.state,
        "reason": t.reason,
    })
}

async fn statement(ctx: &HookContext<'_>, params: &Value) -> R {
    let from = p_i64(params, "from")?;
    let to = p_i64(params, "to")?;
    let list = ctx
        .store
        .payme_statement(ctx.integration.id, from, to)
        .await?;
    let items: Vec<Value> = list
        .iter()
        .map(|t| {
            json!({
                "id": t.payme_id,
                "time": t.time,
                "amount": t.amount,
                "account": {"order_id": t.payment_id.to_string()},
                "create_time": t.create_time,
                "perform_time": t.perform_time,
                "cancel_time": t.cancel_time,
                "transaction": t.seq.to_string(),
                "state": t.state,
                "reason": t.reason,
                "receivers": null,
            })
        })
        .collect();
    Ok(json!({"transactions": items}))
}

async fn change_password(h: &PaymeHooks, ctx: &HookContext<'_>, params: &Value) -> R {
    let password = p_str(params, "password")?;
    let i = ctx.integration;
    let name = key_name(i, ctx.credentials);
    let mut creds = h
        .vault
        .open_credentials(i.tenant_id, i.id, &i.credentials_sealed)
        .map_err(|e| {
            tracing::error!(error = %e, "payme: credentials cannot be opened");
            Fail(ERR_SYSTEM, None)
        })?;
    creds[name] = json!(password);
    let sealed = h
        .vault
        .seal_credentials(i.tenant_id, i.id, &creds)
        .map_err(|e| {
            tracing::error!(error = %e, "payme: credentials cannot be sealed");
            Fail(ERR_SYSTEM, None)
        })?;
    let swapped = ctx
        .store
        .swap_sealed_credentials(i.tenant_id, i.id, &i.credentials_sealed, &sealed)
        .await?;
    if !swapped {
        return Err(Fail(ERR_SYSTEM, None));
    }
    Ok(json!({"success": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_vector() {
        assert_eq!(
            checkout_path("587f72c72cac0d162c722ae2", "197", 500),
            "bT01ODdmNzJjNzJjYWMwZDE2MmM3MjJhZTI7YWMub3JkZXJfaWQ9MTk3O2E9NTAw"
        );
        let id = Uuid::nil();
        let url = checkout_url(&json!({"test_mode": true}), "m1", id, 100);
        assert!(url.starts_with(TEST_CHECKOUT_HOST));
        let url = checkout_url(&json!({}), "m1", id, 100);
        assert!(url.starts_with(CHECKOUT_HOST));
    }

    #[test]
    fn auth_is_checked() {
        let mut h = HeaderMap::new();
        assert!(!auth_ok(&h, "k"));
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("Paycom:k")
        );
        h.insert(http::header::AUTHORIZATION, good.parse().unwrap());
        assert!(auth_ok(&h, "k"));
        assert!(!auth_ok(&h, "other"));
        assert!(!auth_ok(&h, ""));
    }

    #[test]
    fn every_error_has_three_languages() {
        for c in [
            ERR_NOT_POST,
            ERR_PARSE,
            ERR_REQUEST,
            ERR_METHOD,
            ERR_AUTH,
            ERR_SYSTEM,
            ERR_AMOUNT,
            ERR_TX_NOT_FOUND,
            ERR_CANNOT_CANCEL,
            ERR_CANNOT_PERFORM,
            ERR_ORDER_NOT_FOUND,
            ERR_ORDER_NOT_PAYABLE,
            ERR_ORDER_BUSY,
        ] {
            let m = message(c);
            for l in ["ru", "uz", "en"] {
                assert!(m[l].as_str().is_some_and(|s| !s.is_empty()), "{c} {l}");
            }
        }
    }
}
