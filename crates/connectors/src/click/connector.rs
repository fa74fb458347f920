//! Click as a hub connector (`PaymentProvider`): the pay link, and through the Merchant API
//! (`Auth: user:sha1(ts + secret):ts`) a payment's status by our payment id
//! (`merchant_trans_id`) and the reversal of a paid payment.

use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use savdo_hub::connector::{
    CancelPayment, Checkout, CheckoutRequest, PaymentRef, PaymentState, PaymentStatus,
};
use savdo_hub::{
    Connector, ConnectorContext, ConnectorError, Health, HttpClient, HttpRequest, HttpResponse,
    PaymentProvider, Registry, Secret,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{KIND, auth_header, pay_url};

/// Click's Merchant API code for a request whose `Auth` was refused.
const MERR_AUTH: i64 = -16;
/// Unknown service id.
const MERR_SERVICE: i64 = -5;
/// No such payment (or invoice).
const MERR_NOT_FOUND: i64 = -6;
/// The payment is already reversed.
const MERR_ALREADY: i64 = -4;

/// `payment_status` values of the Merchant API.
const PAID: i64 = 2;
const REVERSED: i64 = -2;
const DELETED: i64 = -99;

/// What every Merchant API answer carries.
#[derive(Debug, Deserialize)]
struct MerchantAnswer {
    error_code: i64,
    #[serde(default)]
    error_note: Option<String>,
    #[serde(default)]
    payment_id: Option<i64>,
    #[serde(default)]
    payment_status: Option<i64>,
}

pub struct ClickConnector {
    base_url: String,
    service_id: String,
    merchant_id: String,
    merchant_user_id: String,
    secret_key: Secret,
    http: HttpClient,
}

/// Click's day (Tashkent, UTC+5) of a moment: the date `status_by_mti` asks for.
fn click_date(at: DateTime<Utc>) -> String {
    match FixedOffset::east_opt(5 * 3600) {
        Some(tashkent) => at.with_timezone(&tashkent).format("%Y-%m-%d").to_string(),
        None => at.format("%Y-%m-%d").to_string(),
    }
}

/// When our payment was created: its id is a UUIDv7 (time-ordered); otherwise now.
fn created_at(payment: Uuid) -> DateTime<Utc> {
    payment
        .get_timestamp()
        .and_then(|t| {
            let (secs, nanos) = t.to_unix();
            DateTime::from_timestamp(secs as i64, nanos)
        })
        .unwrap_or_else(Utc::now)
}

fn state_of(status: i64) -> PaymentState {
    match status {
        PAID => PaymentState::Paid,
        REVERSED => PaymentState::Refunded,
        DELETED => PaymentState::Cancelled,
        s if s < 0 => PaymentState::Failed,
        _ => PaymentState::Pending,
    }
}

impl ClickConnector {
    /// Credentials `service_id`, `merchant_id`, `merchant_user_id`, `secret_key`; setting
    /// `base_url` (the Merchant API).
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let c = &ctx.credentials;
        let id = |k: &str| -> Result<String, ConnectorError> {
            let v = c.require_str(k)?.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ConnectorError::config(format!(
                    "credentials.{k} must be Click's id (letters and digits)"
                )));
            }
            Ok(v.to_owned())
        };
        let base = ctx
            .settings
            .get("base_url")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("https://api.click.uz/v2/merchant/");
        if reqwest::Url::parse(base)
            .ok()
            .is_none_or(|u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConnectorError::config(
                "settings.base_url must be an http(s) URL",
            ));
        }
        Ok(ClickConnector {
            base_url: format!("{}/", base.trim_end_matches('/')),
            service_id: id("service_id")?,
            merchant_id: id("merchant_id")?,
            merchant_user_id: id("merchant_user_id")?,
            secret_key: c.require_secret("secret_key")?,
            http: ctx.http,
        })
    }

    /// One authenticated Merchant API call; `error_code` -16 (or HTTP 401/403) is `Auth`.
    async fn call(&self, req: HttpRequest) -> Result<MerchantAnswer, ConnectorError> {
        let auth = Secret::new(auth_header(
            &self.merchant_user_id,
            self.secret_key.expose(),
            Utc::now().timestamp(),
        ));
        let resp: HttpResponse = self
            .http
            .send(
                req.secret_header("Auth", &auth)
                    .header("Accept", "application/json"),
            )
            .await?;
        let answer: Option<MerchantAnswer> = resp.json().ok();
        let status = resp.status.as_u16();
        match answer {
            Some(a) if a.error_code == MERR_AUTH => Err(ConnectorError::auth(format!(
                "Click refused the Merchant API credentials: {}",
                a.error_note.unwrap_or_default()
            ))),
            Some(a) if a.error_code == MERR_SERVICE => Err(ConnectorError::auth(format!(
                "Click does not know service {}: {}",
                self.service_id,
                a.error_note.unwrap_or_default()
            ))),
            _ if status == 401 || status == 403 => Err(ConnectorError::auth(format!(
                "Click refused the Merchant API credentials (HTTP {status})"
            ))),
            Some(a) => Ok(a),
            None if status >= 500 => Err(ConnectorError::unavailable(format!(
                "Click answered HTTP {status}"
            ))),
            None => Err(ConnectorError::protocol(format!(
                "Click answered HTTP {status} without a Merchant API body: {}",
                resp.excerpt()
            ))),
        }
    }

    /// `GET payment/status_by_mti/{service_id}/{merchant_trans_id}/{date}`: `None` when Click
    /// has no payment for it yet.
    async fn status_by_mti(&self, payment: Uuid) -> Result<Option<MerchantAnswer>, ConnectorError> {
        let url = format!(
            "{}payment/status_by_mti/{}/{payment}/{}",
            self.base_url,
            self.service_id,
            click_date(created_at(payment))
        );
        let a = self
            .call(HttpRequest::get(url).operation("payment.status_by_mti"))
            .await?;
        match a.error_code {
            0 => Ok(Some(a)),
            MERR_NOT_FOUND => Ok(None),
            code => Err(ConnectorError::rejected(
                code.to_string(),
                a.error_note.unwrap_or_default(),
            )),
        }
    }

    fn status_from(&self, a: &MerchantAnswer) -> PaymentStatus {
        // Click's status answer carries no amount or times.
        let s = a.payment_status.unwrap_or(0);
        PaymentStatus {
            state: state_of(s),
            provider_ref: a.payment_id.map(|p| p.to_string()),
            amount: None,
            paid_at: None,
            cancelled_at: None,
            provider_status: Some(s.to_string()),
        }
    }
}

#[async_trait]
impl Connector for ClickConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// An authenticated status look-up of a payment id no one uses: Click answers "not found"
    /// only after accepting the `Auth` header for this service.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        self.status_by_mti(Uuid::nil()).await?;
        Ok(Health::ok(
            Utc::now(),
            Some(started.elapsed().as_millis() as u64),
        ))
    }

    fn as_payments(&self) -> Option<&dyn PaymentProvider> {
        Some(self)
    }
}

#[async_trait]
impl PaymentProvider for ClickConnector {
    async fn checkout(&self, req: &CheckoutRequest) -> Result<Checkout, ConnectorError> {
        if req.amount <= 0 {
            return Err(ConnectorError::rejected(
                "amount",
                "amount must be greater than zero (tiyin)",
            ));
        }
        if let Some(r) = req.return_url.as_deref()
            && reqwest::Url::parse(r).is_err()
        {
            return Err(ConnectorError::rejected(
                "return_url",
                "return_url must be an absolute URL",
            ));
        }
        let url = pay_url(
            &self.service_id,
            &self.merchant_id,
            req.amount,
            req.payment_id,
            req.return_url.as_deref(),
        );
        Ok(Checkout {
            qr_payload: url.clone(),
            url,
            // Click's payment exists once the buyer pays (Prepare names it).
            provider_ref: None,
            expires_at: None,
        })
    }

    async fn status(&self, payment: &PaymentRef) -> Result<PaymentStatus, ConnectorError> {
        Ok(match self.status_by_mti(payment.payment_id).await? {
            Some(a) => self.status_from(&a),
            None => PaymentStatus {
                state: PaymentState::Pending,
                provider_ref: None,
                amount: None,
                paid_at: None,
                cancelled_at: None,
                provider_status: Some("not found: no Click payment for it yet".into()),
            },
        })
    }

    /// A paid payment is reversed (whole: Click has no partial reversal); a reversed one
    /// answers its status. An unpaid one has nothing at Click to cancel: `Rejected`, so the
    /// caller cancels its own record instead.
    async fn cancel(&self, req: &CancelPayment) -> Result<PaymentStatus, ConnectorError> {
        if req.amount.is_some() {
            return Err(ConnectorError::rejected(
                "partial",
                "Click reverses whole payments only: leave amount out",
            ));
        }
        let Some(found) = self.status_by_mti(req.payment.payment_id).await? else {
            return Err(ConnectorError::rejected(
                "not_paid",
                "Click has no payment for it: nothing to reverse (cancel the pending payment in \
                 Savdo)",
            ));
        };
        let status = found.payment_status.unwrap_or(0);
        if status == REVERSED {
            return Ok(self.status_from(&found));
        }
        if status != PAID {
            return Err(ConnectorError::rejected(
                "not_paid",
                format!("the Click payment is not completed (payment_status {status})"),
            ));
        }
        let Some(pid) = found.payment_id else {
            return Err(ConnectorError::protocol(
                "Click's status names no payment_id",
            ));
        };
        let url = format!(
            "{}payment/reversal/{}/{pid}",
            self.base_url, self.service_id
        );
        let a = self
            .call(HttpRequest::delete(url).operation("payment.reversal"))
            .await?;
        match a.error_code {
            // Reversed now, or by an earlier attempt whose answer was lost.
            0 | MERR_ALREADY => Ok(PaymentStatus {
                state: PaymentState::Refunded,
                provider_ref: Some(pid.to_string()),
                amount: None,
                paid_at: None,
                cancelled_at: Some(Utc::now()),
                provider_status: Some(REVERSED.to_string()),
            }),
            code => Err(ConnectorError::rejected(
                code.to_string(),
                a.error_note.unwrap_or_default(),
            )),
        }
    }
}

/// Register the `click` connector factory.
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: std::sync::Arc<dyn Connector> = std::sync::Arc::new(ClickConnector::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "click connector not registered");
    }
}
