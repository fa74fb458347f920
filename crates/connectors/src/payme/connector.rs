//! Payme as a hub connector (`PaymentProvider`). Payme's Merchant API is inbound only: Payme
//! calls our hook to check, create, perform and cancel transactions, and offers the merchant no
//! API to ask about one. So the connector can make checkout links, but a payment's status lives
//! in our own payment record (kept by the hook) and a paid payment is cancelled by Payme
//! (CancelTransaction); `status` and `cancel` answer `Rejected` with code `unsupported` saying
//! where to look instead.

use std::time::Instant;

use async_trait::async_trait;
use base64::Engine;
use savdo_hub::connector::{CancelPayment, Checkout, CheckoutRequest, PaymentRef, PaymentStatus};
use savdo_hub::{
    Connector, ConnectorContext, ConnectorError, Health, HealthStatus, HttpClient, HttpRequest,
    PaymentProvider, Registry,
};
use serde_json::Value;
use uuid::Uuid;

use super::{KIND, checkout_host, checkout_params, checkout_url, test_mode};

/// The `unsupported` rejection code of the operations Payme has no outbound API for.
pub const UNSUPPORTED: &str = "unsupported";

pub struct PaymeConnector {
    merchant_id: String,
    settings: Value,
    http: HttpClient,
}

impl PaymeConnector {
    /// Credentials `merchant_id` and `key` (`test_key` in test mode); settings `test_mode`,
    /// `checkout_host`.
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let c = &ctx.credentials;
        let merchant_id = c.require_str("merchant_id")?.trim().to_owned();
        if merchant_id.is_empty() || merchant_id.contains([';', '=']) {
            return Err(ConnectorError::config(
                "merchant_id must be Payme's cash desk id (no ';' or '=')",
            ));
        }
        // The key is what Payme's calls to our hook must carry; without it none would pass.
        let key = if test_mode(&ctx.settings) {
            "test_key"
        } else {
            "key"
        };
        if c.secret(key).is_none_or(|s| s.is_empty()) {
            return Err(ConnectorError::config(format!(
                "credentials.{key} is missing: Payme's calls to the hook could not be verified"
            )));
        }
        let host = checkout_host(&ctx.settings);
        if reqwest::Url::parse(&host)
            .ok()
            .is_none_or(|u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConnectorError::config(
                "settings.checkout_host must be an http(s) URL",
            ));
        }
        Ok(PaymeConnector {
            merchant_id,
            settings: ctx.settings,
            http: ctx.http,
        })
    }

    /// The checkout link of a request: `m`, `ac.order_id`, `a`, and `l`/`c` when given.
    pub fn link(&self, req: &CheckoutRequest) -> Result<String, ConnectorError> {
        if req.amount <= 0 {
            return Err(ConnectorError::rejected(
                "amount",
                "amount must be greater than zero (tiyin)",
            ));
        }
        let mut params =
            checkout_params(&self.merchant_id, &req.payment_id.to_string(), req.amount);
        if let Some(l) = req.lang.as_deref() {
            if !matches!(l, "ru" | "uz" | "en") {
                return Err(ConnectorError::rejected(
                    "lang",
                    "lang must be ru, uz or en",
                ));
            }
            params.push_str(&format!(";l={l}"));
        }
        if let Some(c) = req.return_url.as_deref() {
            if c.contains(';') || reqwest::Url::parse(c).is_err() {
                return Err(ConnectorError::rejected(
                    "return_url",
                    "return_url must be an absolute URL without ';'",
                ));
            }
            params.push_str(&format!(";c={c}"));
        }
        Ok(format!(
            "{}{}",
            checkout_host(&self.settings),
            base64::engine::general_purpose::STANDARD.encode(params)
        ))
    }
}

#[async_trait]
impl Connector for PaymeConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// The configuration was validated when the connector was built; what is left to check is
    /// that the checkout host answers a link for this merchant. The key cannot be tried from
    /// here (Payme calls us with it), which the message says.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        let probe = checkout_url(&self.settings, &self.merchant_id, Uuid::nil(), 100);
        let req = HttpRequest::get(probe).operation("checkout.probe");
        let answer = self.http.send(req).await;
        let latency_ms = Some(started.elapsed().as_millis() as u64);
        let checked_at = chrono::Utc::now();
        let (status, message) = match answer {
            Ok(r) if r.is_success() => (
                HealthStatus::Ok,
                "configuration valid and the checkout host answers; Payme's Merchant API is \
                 inbound only, so the key is proven by Payme's first call to the hook"
                    .to_owned(),
            ),
            Ok(r) => (
                HealthStatus::Degraded,
                format!(
                    "configuration valid, but the checkout host answered HTTP {}: nothing could \
                     be verified with Payme (its Merchant API is inbound only)",
                    r.status.as_u16()
                ),
            ),
            Err(e) => (
                HealthStatus::Degraded,
                format!(
                    "configuration valid, but the checkout host is not reachable ({}): nothing \
                     could be verified with Payme (its Merchant API is inbound only)",
                    e.code()
                ),
            ),
        };
        Ok(Health {
            status,
            checked_at,
            latency_ms,
            message: Some(message),
        })
    }

    fn as_payments(&self) -> Option<&dyn PaymentProvider> {
        Some(self)
    }
}

#[async_trait]
impl PaymentProvider for PaymeConnector {
    async fn checkout(&self, req: &CheckoutRequest) -> Result<Checkout, ConnectorError> {
        let url = self.link(req)?;
        Ok(Checkout {
            qr_payload: url.clone(),
            url,
            // Payme creates its transaction only when the buyer pays (CreateTransaction).
            provider_ref: None,
            expires_at: None,
        })
    }

    async fn status(&self, _payment: &PaymentRef) -> Result<PaymentStatus, ConnectorError> {
        Err(ConnectorError::rejected(
            UNSUPPORTED,
            "Payme has no API to ask about a payment: Payme reports it to our hook, so its \
             status is our payment record (GET /api/v1/payments/{id})",
        ))
    }

    async fn cancel(&self, _req: &CancelPayment) -> Result<PaymentStatus, ConnectorError> {
        Err(ConnectorError::rejected(
            UNSUPPORTED,
            "Payme has no API to cancel a payment: a pending one is cancelled in Savdo \
             (POST /api/v1/payments/{id}/cancel), a paid one by Payme (CancelTransaction)",
        ))
    }
}

/// Register the `payme` connector factory.
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: std::sync::Arc<dyn Connector> = std::sync::Arc::new(PaymeConnector::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "payme connector not registered");
    }
}
