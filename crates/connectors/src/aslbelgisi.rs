//! Asl Belgisi (Uzbekistan's national marking, a mirror of Russia's "True API"): the online
//! check of marking codes a till makes before a sale.
//!
//! `POST {base_url}/api/v4/true-api/codes/check {"codes": [...]}` with `X-API-KEY`, answered
//! `{code, description, codes: [{cis, valid, found, verified, realizable, utilised, isBlocked,
//! sold, expireDate, gtin, errorCode, message}], reqId, reqTimestamp}`, one entry per code in
//! the order sent. At most 100 codes a call. The client's timeout is the integration's
//! `check_timeout_ms` (1.5 s by default) with a single attempt: a cashier is waiting, and the
//! tenant's offline policy decides what happens when the service does not answer.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use savdo_hub::connector::{CodeCheck, CodeVerdict};
use savdo_hub::registry::ConnectorContext;
use savdo_hub::{
    Connector, ConnectorError, Health, HealthStatus, HttpClient, HttpRequest, MarkingCheck,
    MarkingService, Registry, Secret,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const KIND: &str = "aslbelgisi";
/// Most codes one `codes/check` call takes.
pub const MAX_CODES: usize = 100;
const CHECK_PATH: &str = "api/v4/true-api/codes/check";

// ---------------------------------------------------------------- wire

#[derive(Debug, Serialize)]
struct CheckRequest<'a> {
    codes: &'a [String],
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckResponse {
    code: i64,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    codes: Vec<WireCode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireCode {
    cis: Option<String>,
    valid: bool,
    found: bool,
    realizable: bool,
    is_blocked: bool,
    sold: bool,
    expire_date: Option<String>,
    gtin: Option<String>,
    status: Option<String>,
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    description: Option<String>,
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// The operator's answer for one code, as a verdict.
fn verdict(w: &WireCode, today: NaiveDate) -> CodeVerdict {
    let expires = w.expire_date.as_deref().and_then(parse_date);
    let status = w.status.as_deref().unwrap_or("");
    if !w.valid || w.error_code == Some(1) {
        CodeVerdict::Invalid
    } else if !w.found || w.error_code == Some(2) {
        CodeVerdict::NotFound
    } else if w.is_blocked {
        CodeVerdict::Blocked
    } else if w.sold || status.eq_ignore_ascii_case("RETIRED") {
        CodeVerdict::AlreadySold
    } else if expires.is_some_and(|d| d < today) {
        CodeVerdict::Expired
    } else if w.realizable {
        CodeVerdict::Sellable
    } else {
        CodeVerdict::NotSellable
    }
}

fn to_check(sent: &str, w: WireCode, today: NaiveDate) -> CodeCheck {
    let v = verdict(&w, today);
    CodeCheck {
        code: sent.to_owned(),
        expires_on: w.expire_date.as_deref().and_then(parse_date),
        cis: w.cis,
        gtin: w.gtin,
        verdict: v,
        status: w.status,
        error_code: w.error_code.filter(|c| *c != 0).map(|c| c.to_string()),
        message: w.message,
    }
}

// ---------------------------------------------------------------- connector

pub struct AslBelgisi {
    http: HttpClient,
    base_url: String,
    api_key: Secret,
}

impl std::fmt::Debug for AslBelgisi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AslBelgisi")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AslBelgisi {
    /// From the registry's context: `credentials.api_key`, `settings.base_url`; the HTTP
    /// client already carries the timeout (`check_timeout_ms`), retry and breaker policy.
    pub fn new(ctx: ConnectorContext) -> Result<Self, ConnectorError> {
        let api_key = ctx.credentials.require_secret("api_key")?;
        let base_url = ctx
            .settings
            .get("base_url")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConnectorError::config("settings.base_url is missing"))?
            .to_owned();
        Ok(Self::with_client(ctx.http, base_url, api_key))
    }

    pub fn with_client(http: HttpClient, base_url: impl Into<String>, api_key: Secret) -> Self {
        AslBelgisi {
            http,
            base_url: base_url.into(),
            api_key,
        }
    }

    fn url(&self) -> String {
        format!("{}/{CHECK_PATH}", self.base_url.trim_end_matches('/'))
    }

    async fn check_batch(&self, codes: &[String]) -> Result<Vec<CodeCheck>, ConnectorError> {
        let req = HttpRequest::post(self.url())
            .secret_header("X-API-KEY", &self.api_key)
            .json(&CheckRequest { codes })
            .operation("codes/check");
        let resp = self.http.send(req).await?;
        if !resp.is_success() {
            let why = resp
                .json::<ErrorBody>()
                .ok()
                .and_then(|b| b.description)
                .unwrap_or_else(|| resp.excerpt());
            let msg = format!("HTTP {}: {why}", resp.status.as_u16());
            return Err(match resp.status.as_u16() {
                401 | 403 => ConnectorError::auth(msg),
                400..=499 => ConnectorError::rejected(resp.status.as_u16().to_string(), msg),
                _ => ConnectorError::protocol(msg),
            });
        }
        let body: CheckResponse = resp.json()?;
        if body.code != 0 {
            return Err(ConnectorError::rejected(
                body.code.to_string(),
                body.description.unwrap_or_default(),
            ));
        }
        if body.codes.len() != codes.len() {
            return Err(ConnectorError::protocol(format!(
                "sent {} codes, got {} answers",
                codes.len(),
                body.codes.len()
            )));
        }
        let today = Utc::now().date_naive();
        Ok(codes
            .iter()
            .zip(body.codes)
            .map(|(sent, w)| to_check(sent, w, today))
            .collect())
    }
}

#[async_trait]
impl Connector for AslBelgisi {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Checks one well-formed code nobody issued: any answer but 401/403 proves the endpoint and
    /// the key.
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        let probe = vec!["0104600000000008215PROBE".to_owned()];
        self.check_batch(&probe).await?;
        Ok(Health {
            status: HealthStatus::Ok,
            checked_at: Utc::now(),
            latency_ms: Some(started.elapsed().as_millis() as u64),
            message: None,
        })
    }

    fn as_marking(&self) -> Option<&dyn MarkingService> {
        Some(self)
    }
}

#[async_trait]
impl MarkingService for AslBelgisi {
    async fn check_codes(&self, codes: &[String]) -> Result<Vec<CodeCheck>, ConnectorError> {
        let mut out = Vec::with_capacity(codes.len());
        for chunk in codes.chunks(MAX_CODES) {
            out.extend(self.check_batch(chunk).await?);
        }
        Ok(out)
    }
}

/// Register the `aslbelgisi` factory (the type itself is one of the hub's built-ins).
pub fn register(registry: &mut Registry) {
    let res = registry.register(KIND, |ctx| {
        let c: Arc<dyn Connector> = Arc::new(AslBelgisi::new(ctx)?);
        Ok(c)
    });
    if let Err(e) = res {
        tracing::warn!(error = %e, "aslbelgisi connector not registered");
    }
}

// ---------------------------------------------------------------- tenant-level check

/// A [`MarkingCheck`] that asks one marking connector for every tenant: a single-shop
/// deployment, and tests. A chain resolves the tenant's own `aslbelgisi` integration instead.
pub struct SingleMarkingCheck {
    connector: Arc<dyn Connector>,
}

impl SingleMarkingCheck {
    /// Fails when the connector has no marking capability.
    pub fn new(connector: Arc<dyn Connector>) -> Result<Self, ConnectorError> {
        if connector.as_marking().is_none() {
            return Err(ConnectorError::config(format!(
                "{} has no marking capability",
                connector.kind()
            )));
        }
        Ok(SingleMarkingCheck { connector })
    }
}

#[async_trait]
impl MarkingCheck for SingleMarkingCheck {
    async fn check(
        &self,
        _tenant: Uuid,
        codes: &[String],
    ) -> Result<Option<Vec<CodeCheck>>, ConnectorError> {
        let svc = self
            .connector
            .as_marking()
            .ok_or_else(|| ConnectorError::config("no marking capability"))?;
        svc.check_codes(codes).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(v: serde_json::Value) -> WireCode {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn verdicts_from_the_wire() {
        let today = NaiveDate::from_ymd_opt(2025, 6, 1).unwrap();
        let ok = wire(serde_json::json!({"cis": "x", "valid": true, "found": true,
            "realizable": true, "isBlocked": false, "sold": false, "status": "INTRODUCED",
            "errorCode": 0}));
        assert_eq!(verdict(&ok, today), CodeVerdict::Sellable);
        let bad = wire(serde_json::json!({"valid": false, "errorCode": 1}));
        assert_eq!(verdict(&bad, today), CodeVerdict::Invalid);
        let missing = wire(serde_json::json!({"valid": true, "found": false, "errorCode": 2}));
        assert_eq!(verdict(&missing, today), CodeVerdict::NotFound);
        let blocked = wire(serde_json::json!({"valid": true, "found": true, "isBlocked": true}));
        assert_eq!(verdict(&blocked, today), CodeVerdict::Blocked);
        let sold = wire(
            serde_json::json!({"valid": true, "found": true, "sold": true,
            "status": "RETIRED"}),
        );
        assert_eq!(verdict(&sold, today), CodeVerdict::AlreadySold);
        let expired = wire(serde_json::json!({"valid": true, "found": true,
            "expireDate": "2025-05-31", "status": "INTRODUCED"}));
        assert_eq!(verdict(&expired, today), CodeVerdict::Expired);
        let emitted = wire(serde_json::json!({"valid": true, "found": true,
            "status": "EMITTED"}));
        assert_eq!(verdict(&emitted, today), CodeVerdict::NotSellable);
    }
}
