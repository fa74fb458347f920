//! JOWi Club (the customer loyalty app): customer look-up, receipt calculation, sale commit and
//! refunds. JOWi has not published its loyalty endpoints; this module speaks the **assumed**
//! contract of the protocol notes and keeps every wire detail here, so the real endpoints can
//! replace these in one place.
//!
//! - Auth: `api_key` + `sig` query parameters (`sig` = the first 10 and the last 5 hex
//!   characters of `sha256(api_key + api_secret)`), or OAuth 2.0 client credentials
//!   (`POST token_url`, `grant_type=client_credentials`) and a Bearer token, cached and
//!   refreshed a minute before it expires (or at once when JOWi says it expired).
//! - `GET club/v1/customers?card=|phone=|code=`, `POST club/v1/calculate`,
//!   `POST club/v1/transactions` (our receipt id is the idempotency key),
//!   `POST club/v1/transactions/{receipt id}/refund` (the refund receipt id is the key).
//! - Success bodies carry `"status": 1`; failures `{"status": 0, "error": <int>, "message"}`
//!   with the HTTP status equal to the error code (401 auth, 402 not enough points, 404
//!   unknown, 409 key reused with another body, 422 impossible).
//! - Money is tiyin; points are whole UZS (1 point = 100 tiyin); quantities go out as decimal
//!   strings with three decimals.
//! - Webhooks: `{id, event, customer_id, balance, time}` signed with `X-Jowi-Signature`; a
//!   `customer.updated` one also carries `customer` as the look-up answers it (its name and
//!   phone refresh our linked customer).
//!
//! Look-ups and quotes run within `lookup_timeout_ms` (800 ms) **in all**, retries included: a
//! cashier is waiting. Commits and refunds use `redeem_timeout_ms` (3 s) per attempt and are
//! safe to retry (idempotency keys).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use savdo_hub::connector::{
    CommitSale, CustomerLookup, LineDiscount, LoyaltyCommit, LoyaltyCustomer, LoyaltyLine,
    LoyaltyQuote, LoyaltyRefund, LoyaltyRefundResult, QuoteRequest,
};
use savdo_hub::registry::ConnectorContext;
use savdo_hub::{
    Connector, ConnectorError, Health, HealthStatus, HttpClient, HttpRequest, HttpResponse,
    LoyaltyProvider, Registry, Secret,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub const KIND: &str = "jowi_club";
/// What one point is worth, tiyin (1 point = 1 UZS).
pub const POINT_VALUE: i64 = 100;
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_millis(800);
pub const DEFAULT_REDEEM_TIMEOUT: Duration = Duration::from_millis(3000);
/// A cached token is replaced this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- wire

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    status: i64,
    #[serde(default)]
    error: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireCustomer {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    card: Option<String>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    discount_percent: Option<f64>,
    #[serde(default)]
    balance: i64,
}

#[derive(Debug, Deserialize)]
struct CustomerAnswer {
    customer: WireCustomer,
}

#[derive(Debug, Serialize)]
struct WireItem<'a> {
    #[serde(rename = "ref")]
    item_ref: &'a str,
    name: &'a str,
    qty: String,
    price: i64,
}

#[derive(Debug, Serialize)]
struct CalculateRequest<'a> {
    customer_id: &'a str,
    store_ref: &'a str,
    items: Vec<WireItem<'a>>,
    spend_points: i64,
}

#[derive(Debug, Deserialize)]
struct WireDiscount {
    #[serde(rename = "ref")]
    item_ref: String,
    #[serde(default)]
    discount: i64,
}

#[derive(Debug, Deserialize)]
struct CalculateAnswer {
    #[serde(default)]
    items: Vec<WireDiscount>,
    #[serde(default)]
    discount_total: i64,
    #[serde(default)]
    points_spend_max: i64,
    #[serde(default)]
    points_to_spend: i64,
    #[serde(default)]
    points_to_earn: i64,
    #[serde(default)]
    balance: i64,
    #[serde(default)]
    balance_after: i64,
    /// Tiyin per point, when the customer's program says otherwise.
    #[serde(default)]
    point_value: Option<i64>,
}

#[derive(Debug, Serialize)]
struct TransactionRequest<'a> {
    id: String,
    customer_id: &'a str,
    store_ref: &'a str,
    total: i64,
    spend_points: i64,
    items: Vec<WireItem<'a>>,
}

#[derive(Debug, Deserialize)]
struct TransactionAnswer {
    transaction_id: String,
    #[serde(default)]
    earned: i64,
    #[serde(default)]
    spent: i64,
    #[serde(default)]
    balance: i64,
}

#[derive(Debug, Serialize)]
struct RefundItem<'a> {
    #[serde(rename = "ref")]
    item_ref: &'a str,
    qty: String,
}

#[derive(Debug, Serialize)]
struct RefundRequest<'a> {
    refund_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<RefundItem<'a>>>,
}

#[derive(Debug, Deserialize)]
struct RefundAnswer {
    #[serde(default)]
    earned_reversed: i64,
    #[serde(default)]
    spent_returned: i64,
    #[serde(default)]
    balance: i64,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Thousandths as JOWi's decimal quantity: `1250` -> `"1.250"`.
fn qty(milli: i64) -> String {
    format!("{}.{:03}", milli / 1000, (milli % 1000).abs())
}

fn items(lines: &[LoyaltyLine]) -> Vec<WireItem<'_>> {
    lines
        .iter()
        .map(|l| WireItem {
            item_ref: &l.line_ref,
            name: &l.name,
            qty: qty(l.quantity),
            price: l.price,
        })
        .collect()
}

/// `sig` for an app: the first 10 and the last 5 hex characters of `sha256(key + secret)`.
pub fn sig(api_key: &str, api_secret: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(format!("{api_key}{api_secret}")));
    format!("{}{}", &digest[..10], &digest[digest.len() - 5..])
}

/// Whether `signature` (hex, as in `X-Jowi-Signature`) is the HMAC-SHA256 of `body` with the
/// integration's webhook secret. Constant-time.
pub fn verify_webhook(secret: &str, body: &[u8], signature: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Ok(expected) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
    else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// A webhook from JOWi, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JowiWebhook {
    /// Deduplication key.
    pub id: String,
    /// `balance.changed`, `points.accrued`, `customer.updated`.
    pub event: String,
    pub customer_id: String,
    #[serde(default)]
    pub balance: Option<i64>,
    /// [assumed] `customer.updated` carries the customer as a look-up answers it.
    #[serde(default)]
    pub customer: Option<WebhookCustomer>,
    /// When the change happened (RFC 3339); orders profile changes delivered out of order.
    #[serde(default)]
    pub time: Option<String>,
}

/// The customer a `customer.updated` webhook carries (the fields we keep).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WebhookCustomer {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

impl JowiWebhook {
    /// What our linked customer should now be: a non-empty name, a phone we can normalise
    /// (one we cannot is left out rather than stored).
    pub fn customer_update(&self) -> Option<savdo_storage::loyalty::ProviderCustomer> {
        if self.event != "customer.updated" {
            return None;
        }
        let c = self.customer.as_ref()?;
        let name = c
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let phone = c
            .phone
            .as_deref()
            .and_then(|p| savdo_domain::phone::normalize_phone(p).ok());
        let at = self
            .time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        Some(savdo_storage::loyalty::ProviderCustomer { name, phone, at })
    }

    pub fn parse(body: &[u8]) -> Result<Self, ConnectorError> {
        serde_json::from_slice(body)
            .map_err(|e| ConnectorError::protocol(format!("webhook body: {e}")))
    }
}

// ---------------------------------------------------------------- auth

enum Auth {
    Sig {
        api_key: String,
        sig: Secret,
    },
    OAuth {
        client_id: String,
        client_secret: Secret,
        token_url: String,
        cached: Mutex<Option<(Secret, Instant)>>,
    },
}

// ---------------------------------------------------------------- connector

pub struct JowiClub {
    http: HttpClient,
    base_url: String,
    auth: Auth,
    store_refs: BTreeMap<String, String>,
    lookup_timeout: Duration,
    redeem_timeout: Duration,
    webhook_secret: Option<Secret>,
}

impl std::fmt::Debug for JowiClub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JowiClub")
            .field("base_url", &self.base_url)
            .field("store_refs", &self.store_refs)
            .finish_non_exhaustive()
    }
}

fn ms_setting(settings: &serde_json::Value, name: &str, default: Duration) -> Duration {
    settings
        .get(name)
        .and_then(serde_json::Value::as_u64)
        .filter(|ms| *ms > 0)
        .map_or(default, Duration::from_millis)
}

impl JowiClub {
    /// From the registry's context: `api_key` + `api_secret`, or `client_id`, `client_secret`
    /// and `token_url`; settings `base_url`, `store_refs`, `lookup_timeout_ms`,
    /// `redeem_timeout_ms`; optional `webhook_secret`.
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let c = &ctx.credentials;
        let auth = if let Some(api_key) = c.get_str("api_key").filter(|s| !s.is_empty()) {
            let secret = c.require_secret("api_secret")?;
            Auth::Sig {
                api_key: api_key.to_owned(),
                sig: Secret::new(sig(api_key, secret.expose())),
            }
        } else if let Some(client_id) = c.get_str("client_id").filter(|s| !s.is_empty()) {
            Auth::OAuth {
                client_id: client_id.to_owned(),
                client_secret: c.require_secret("client_secret")?,
                token_url: c.require_str("token_url")?.to_owned(),
                cached: Mutex::new(None),
            }
        } else {
            return Err(ConnectorError::config(
                "credentials need api_key + api_secret or client_id + client_secret + token_url",
            ));
        };
        let base_url = ctx
            .settings
            .get("base_url")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConnectorError::config("settings.base_url is missing"))?
            .trim_end_matches('/')
            .to_owned();
        let store_refs = ctx
            .settings
            .get("store_refs")
            .and_then(|v| v.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(JowiClub {
            lookup_timeout: ms_setting(&ctx.settings, "lookup_timeout_ms", DEFAULT_LOOKUP_TIMEOUT),
            redeem_timeout: ms_setting(&ctx.settings, "redeem_timeout_ms", DEFAULT_REDEEM_TIMEOUT),
            webhook_secret: c.secret("webhook_secret").filter(|s| !s.is_empty()),
            http: ctx.http,
            base_url,
            auth,
            store_refs,
        })
    }

    /// The integration's webhook secret, when configured.
    pub fn webhook_secret(&self) -> Option<&Secret> {
        self.webhook_secret.as_ref()
    }

    pub fn lookup_timeout(&self) -> Duration {
        self.lookup_timeout
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url)
    }

    /// JOWi's store reference for our store (the store id itself when not mapped).
    fn store_ref<'a>(&'a self, store_id: &'a str) -> &'a str {
        self.store_refs
            .get(store_id)
            .map_or(store_id, String::as_str)
    }

    async fn token(&self, force: bool) -> Result<Option<Secret>, ConnectorError> {
        let Auth::OAuth {
            client_id,
            client_secret,
            token_url,
            cached,
        } = &self.auth
        else {
            return Ok(None);
        };
        let mut slot = cached.lock().await;
        if !force
            && let Some((token, until)) = slot.as_ref()
            && Instant::now() + TOKEN_MARGIN < *until
        {
            return Ok(Some(token.clone()));
        }
        let req = HttpRequest::post(token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
            ])
            .operation("oauth.token");
        let resp = self.http.send(req).await?;
        if !resp.is_success() {
            let e = resp.json::<OAuthError>().ok();
            let msg = format!(
                "token endpoint HTTP {}: {}",
                resp.status.as_u16(),
                e.map(|e| {
                    format!(
                        "{} {}",
                        e.error.unwrap_or_default(),
                        e.error_description.unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| resp.excerpt())
            );
            return Err(match resp.status.as_u16() {
                400 | 401 | 403 => ConnectorError::auth(msg),
                _ => ConnectorError::protocol(msg),
            });
        }
        let t: TokenAnswer = resp.json()?;
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(3600));
        let token = Secret::new(t.access_token);
        *slot = Some((token.clone(), Instant::now() + ttl));
        Ok(Some(token))
    }

    fn authorize(&self, req: HttpRequest, token: Option<&Secret>) -> HttpRequest {
        match (&self.auth, token) {
            (_, Some(t)) => req.bearer(t),
            (Auth::Sig { api_key, sig }, None) => {
                req.query(&[("api_key", api_key.as_str()), ("sig", sig.expose())])
            }
            (Auth::OAuth { .. }, None) => req,
        }
    }

    /// Sends with auth; with OAuth a 401 drops the cached token and tries once more.
    async fn call(&self, build: impl Fn() -> HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let token = self.token(false).await?;
        let resp = self
            .http
            .send(self.authorize(build(), token.as_ref()))
            .await?;
        if resp.status.as_u16() == 401 && token.is_some() {
            let token = self.token(true).await?;
            return self
                .http
                .send(self.authorize(build(), token.as_ref()))
                .await;
        }
        Ok(resp)
    }

    /// A `"status": 1` answer as `T`; anything else as the error it means.
    fn answer<T: serde::de::DeserializeOwned>(resp: &HttpResponse) -> Result<T, ConnectorError> {
        let env = resp.json::<Envelope>().ok();
        if resp.is_success() && env.as_ref().is_some_and(|e| e.status == 1) {
            return resp.json();
        }
        let code = env
            .as_ref()
            .and_then(|e| e.error)
            .unwrap_or(i64::from(resp.status.as_u16()));
        let msg = env
            .and_then(|e| e.message)
            .unwrap_or_else(|| resp.excerpt());
        let msg = format!("JOWi error {code}: {msg}");
        Err(match code {
            401 | 403 => ConnectorError::auth(msg),
            500..=599 => ConnectorError::unavailable(msg),
            _ => ConnectorError::rejected(code.to_string(), msg),
        })
    }

    /// Within the look-up budget in all (token, retries included).
    async fn within<T>(
        &self,
        budget: Duration,
        fut: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        tokio::time::timeout(budget, fut)
            .await
            .unwrap_or(Err(ConnectorError::Timeout { after: budget }))
    }

    async fn lookup(&self, by: &CustomerLookup) -> Result<Option<LoyaltyCustomer>, ConnectorError> {
        let (key, value) = match by {
            CustomerLookup::Card(v) => ("card", v),
            CustomerLookup::Phone(v) => ("phone", v),
            CustomerLookup::Code(v) => ("code", v),
        };
        let budget = self.lookup_timeout;
        let resp = self
            .call(|| {
                HttpRequest::get(self.url("club/v1/customers"))
                    .query(&[(key, value.as_str())])
                    .timeout(budget)
                    .operation("customers.lookup")
            })
            .await?;
        match Self::answer::<CustomerAnswer>(&resp) {
            Ok(a) => {
                let c = a.customer;
                Ok(Some(LoyaltyCustomer {
                    id: c.id,
                    name: c.name.filter(|n| !n.is_empty()),
                    phone: c.phone,
                    card: c.card,
                    level: c.level,
                    discount_bp: c
                        .discount_percent
                        .filter(|p| *p >= 0.0)
                        .map(|p| (p * 100.0).round() as u32),
                    balance_points: c.balance,
                }))
            }
            Err(ConnectorError::Rejected { code, .. }) if code == "404" => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Connector for JowiClub {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Looks up a card nobody has: "not found" proves the endpoint and the credentials.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        self.within(
            self.redeem_timeout,
            self.lookup(&CustomerLookup::Card("0000000000000000".into())),
        )
        .await?;
        Ok(Health {
            status: HealthStatus::Ok,
            checked_at: Utc::now(),
            latency_ms: Some(started.elapsed().as_millis() as u64),
            message: None,
        })
    }

    fn as_loyalty(&self) -> Option<&dyn LoyaltyProvider> {
        Some(self)
    }
}

#[async_trait]
impl LoyaltyProvider for JowiClub {
    async fn find_customer(
        &self,
        by: &CustomerLookup,
    ) -> Result<Option<LoyaltyCustomer>, ConnectorError> {
        self.within(self.lookup_timeout, self.lookup(by)).await
    }

    async fn quote(&self, req: &QuoteRequest) -> Result<LoyaltyQuote, ConnectorError> {
        let budget = self.lookup_timeout;
        let body = CalculateRequest {
            customer_id: &req.customer_id,
            store_ref: self.store_ref(&req.store_id),
            items: items(&req.lines),
            spend_points: req.spend_points.max(0),
        };
        let fut = async {
            let resp = self
                .call(|| {
                    HttpRequest::post(self.url("club/v1/calculate"))
                        .json(&body)
                        .timeout(budget)
                        .operation("calculate")
                })
                .await?;
            let a: CalculateAnswer = Self::answer(&resp)?;
            Ok(LoyaltyQuote {
                lines: req
                    .lines
                    .iter()
                    .map(|l| LineDiscount {
                        line_ref: l.line_ref.clone(),
                        discount: a
                            .items
                            .iter()
                            .find(|d| d.item_ref == l.line_ref)
                            .map_or(0, |d| d.discount.clamp(0, l.amount)),
                    })
                    .collect(),
                discount_total: a.discount_total,
                points_spend_max: a.points_spend_max,
                points_to_spend: a.points_to_spend,
                points_to_earn: a.points_to_earn,
                balance_points: a.balance,
                balance_after: a.balance_after,
                point_value: a.point_value.filter(|v| *v > 0).unwrap_or(POINT_VALUE),
            })
        };
        self.within(budget, fut).await
    }

    async fn commit_sale(&self, req: &CommitSale) -> Result<LoyaltyCommit, ConnectorError> {
        let body = TransactionRequest {
            id: req.receipt_id.to_string(),
            customer_id: &req.customer_id,
            store_ref: self.store_ref(&req.store_id),
            total: req.total,
            spend_points: req.spend_points.max(0),
            items: items(&req.lines),
        };
        let timeout = self.redeem_timeout;
        let resp = self
            .call(|| {
                HttpRequest::post(self.url("club/v1/transactions"))
                    .json(&body)
                    .timeout(timeout)
                    .operation("transactions.commit")
            })
            .await?;
        let a: TransactionAnswer = Self::answer(&resp)?;
        Ok(LoyaltyCommit {
            transaction_id: a.transaction_id,
            earned_points: a.earned,
            spent_points: a.spent,
            balance_points: a.balance,
        })
    }

    async fn refund(&self, req: &LoyaltyRefund) -> Result<LoyaltyRefundResult, ConnectorError> {
        let body = RefundRequest {
            refund_id: req.refund_id.to_string(),
            items: req.lines.as_ref().map(|lines| {
                lines
                    .iter()
                    .map(|l| RefundItem {
                        item_ref: &l.line_ref,
                        qty: qty(l.quantity),
                    })
                    .collect()
            }),
        };
        let timeout = self.redeem_timeout;
        let path = format!("club/v1/transactions/{}/refund", req.receipt_id);
        let resp = self
            .call(|| {
                HttpRequest::post(self.url(&path))
                    .json(&body)
                    .timeout(timeout)
                    .operation("transactions.refund")
            })
            .await?;
        let a: RefundAnswer = Self::answer(&resp)?;
        Ok(LoyaltyRefundResult {
            earned_reversed: a.earned_reversed,
            spent_returned: a.spent_returned,
            balance_points: a.balance,
        })
    }
}

/// Register the `jowi_club` factory (the type itself is one of the hub's built-ins).
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: Arc<dyn Connector> = Arc::new(JowiClub::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "jowi_club connector not registered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_have_three_decimals() {
        assert_eq!(qty(1000), "1.000");
        assert_eq!(qty(1250), "1.250");
        assert_eq!(qty(5), "0.005");
    }

    #[test]
    fn sig_is_ten_plus_five_hex() {
        let s = sig("k", "s");
        assert_eq!(s.len(), 15);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn webhook_signature_is_checked() {
        use hmac::{KeyInit, Mac};
        let body = br#"{"id":"w1","event":"balance.changed","customer_id":"c","balance":5}"#;
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"whsec").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        assert!(verify_webhook("whsec", body, &good));
        assert!(!verify_webhook("other", body, &good));
        assert!(!verify_webhook("whsec", body, "zz"));
        assert!(!verify_webhook("whsec", b"{}", &good));
        let hook = JowiWebhook::parse(body).unwrap();
        assert_eq!(hook.balance, Some(5));
    }

    #[test]
    fn customer_updated_carries_name_and_phone() {
        let body = br#"{"id":"w2","event":"customer.updated","customer_id":"c","balance":5,
            "customer":{"id":"c","name":" Aziza K ","phone":"998 90 123 45 67","level":"gold"}}"#;
        let hook = JowiWebhook::parse(body).unwrap();
        let u = hook.customer_update().unwrap();
        assert_eq!(u.name.as_deref(), Some("Aziza K"));
        assert_eq!(u.phone.as_deref(), Some("+998901234567"));
        let odd = br#"{"id":"w3","event":"customer.updated","customer_id":"c",
            "customer":{"id":"c","name":"","phone":"12"}}"#;
        let u = JowiWebhook::parse(odd).unwrap().customer_update().unwrap();
        assert_eq!((u.name, u.phone), (None, None));
        let other = br#"{"id":"w4","event":"balance.changed","customer_id":"c",
            "customer":{"id":"c","name":"X"}}"#;
        assert!(
            JowiWebhook::parse(other)
                .unwrap()
                .customer_update()
                .is_none()
        );
    }
}

// ---------------------------------------------------------------- inbound webhooks

/// `POST /hooks/jowi_club/{integration id}`: `X-Jowi-Signature` is the hex HMAC-SHA256 of the
/// raw body with the integration's `webhook_secret` (checked in constant time); deliveries are
/// deduplicated by the body's `id` (the hooks inbox). Balance and customer updates emit
/// `customer.loyalty_updated` for our linked customer; `customer.updated` also refreshes that
/// customer's name and phone (the tenant's customer linked to the JOWi id), in the same
/// transaction, emitting `customer.updated` when something changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct JowiHooks;

#[async_trait]
impl savdo_integrations::HookHandler for JowiHooks {
    fn verify(
        &self,
        _integration: &savdo_storage::integrations::Integration,
        credentials: &savdo_hub::Credentials,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<savdo_integrations::DeliveryId, savdo_integrations::HookReject> {
        use savdo_integrations::HookReject;
        let secret = credentials.get_str("webhook_secret").unwrap_or("");
        let given = headers
            .get("x-jowi-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if secret.is_empty() || !verify_webhook(secret, body, given) {
            return Err(HookReject::Unauthenticated("bad signature".into()));
        }
        let hook = JowiWebhook::parse(body).map_err(|e| HookReject::Malformed(e.to_string()))?;
        Ok(savdo_integrations::DeliveryId(hook.id))
    }

    fn rejected(&self, why: &savdo_integrations::HookReject) -> savdo_integrations::HookReply {
        use savdo_integrations::{HookReject, HookReply};
        match why {
            HookReject::Unauthenticated(_) => HookReply::json(
                401,
                &serde_json::json!({"status": 0, "error": 401, "message": "bad signature"}),
            ),
            HookReject::Malformed(m) => HookReply::json(
                400,
                &serde_json::json!({"status": 0, "error": 400, "message": m}),
            ),
        }
    }

    async fn handle(
        &self,
        ctx: &savdo_integrations::HookContext<'_>,
        body: &[u8],
    ) -> savdo_integrations::HookReply {
        use savdo_integrations::HookReply;
        let Ok(hook) = JowiWebhook::parse(body) else {
            return HookReply::json(400, &serde_json::json!({"status": 0, "error": 400}));
        };
        let tenant = ctx.integration.tenant_id;
        let ours = match ctx
            .store
            .customer_by_external_id(tenant, KIND, &hook.customer_id)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "jowi_club hook: storage");
                return HookReply::unavailable();
            }
        };
        let data = serde_json::json!({
            "customer_id": ours.as_ref().map(|c| c.id),
            "external_id": hook.customer_id,
            "provider": KIND,
            "event": hook.event,
            "balance": hook.balance,
            "delivery_id": hook.id,
            "changed": [],
        });
        let written = match (ours, hook.customer_update()) {
            (Some(c), Some(update)) => ctx
                .store
                .refresh_loyalty_customer(tenant, c.id, &update, data)
                .await
                .map(|_| ()),
            _ => {
                ctx.store
                    .emit_loyalty_event(tenant, "customer.loyalty_updated", data)
                    .await
            }
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "jowi_club hook: storage");
            return HookReply::unavailable();
        }
        HookReply::json(200, &serde_json::json!({"status": 1}))
    }
}

/// Register the `jowi_club` hook handler.
pub fn register_hooks(hooks: &mut savdo_integrations::HookRegistry) {
    hooks.register(KIND, Arc::new(JowiHooks));
}
