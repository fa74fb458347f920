//! The outbound HTTP stack every connector uses.
//!
//! One [`HttpHub`] per process holds the connection pool and, keyed by integration id, the rate
//! limiters and circuit breakers, so every [`HttpClient`] built for the same integration (a
//! connector rebuilt after a settings change, two workers) shares one bucket and one breaker.
//!
//! A call goes: breaker (fail at once when open) -> rate limit (wait for a permit, up to a
//! maximum) -> request with a timeout -> exchange log -> retry with backoff and jitter, only
//! when the failure is retryable: connect errors, timeouts, 5xx, 408 and 429 (honouring
//! `Retry-After` and Wildberries' `X-Ratelimit-Retry`). Other 4xx are answers, not failures.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use savdo_domain::clock::Clock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::breaker::{Breaker, BreakerPermit, BreakerPolicy, BreakerSnapshot};
use crate::connector::ConnectorError;
use crate::redact;
use crate::secret::Secret;

/// Biggest response body read into memory; a bigger one is a protocol error, not an OOM.
const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;
/// Part of a failed answer's body quoted in an error message.
const ERROR_EXCERPT: usize = 300;

/// A token bucket: `requests` per `per`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
    /// Longest a call waits for a permit before failing with `RateLimited`.
    pub max_wait: Duration,
}

impl RateLimit {
    pub fn per_second(requests: u32) -> Self {
        RateLimit {
            requests,
            per: Duration::from_secs(1),
            burst: requests.max(1),
            max_wait: Duration::from_secs(30),
        }
    }

    pub fn per_minute(requests: u32, burst: u32) -> Self {
        RateLimit {
            requests,
            per: Duration::from_secs(60),
            burst: burst.max(1),
            max_wait: Duration::from_secs(60),
        }
    }

    fn quota(&self) -> Option<Quota> {
        let period = self.per.checked_div(self.requests.max(1))?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(Quota::with_period(period)?.allow_burst(burst))
    }
}

/// A limit of one endpoint on top of the integration's own (Ozon: 80 stock updates a minute,
/// while its catalogue and orders go at the general rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    /// Matched against the end of the request URL's path.
    pub path: &'static str,
    pub limit: RateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt.
    pub base: Duration,
    /// Cap of one backoff, and of a provider's `Retry-After` we are willing to sleep through
    /// (longer: fail with `RateLimited { retry_after }` and let the caller reschedule).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// `base · 2^(retry−1)`, capped, with ±25 % jitter so many callers do not retry in step.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        exp.min(self.max_delay)
            .mul_f64(rand::random_range(0.75..1.25))
    }
}

/// How one integration talks to its provider.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub tenant_id: String,
    pub integration_id: String,
    /// Integration type, e.g. `"wildberries"`.
    pub kind: String,
    /// Per attempt, connect to last byte.
    pub timeout: Duration,
    pub rate_limit: Option<RateLimit>,
    pub route_limits: Vec<RouteLimit>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// The integration's secret values: scrubbed from everything the exchange log keeps.
    pub secrets: Vec<Secret>,
    pub max_body: usize,
}

impl ClientConfig {
    pub fn new(
        tenant_id: impl Into<String>,
        integration_id: impl Into<String>,
        kind: impl Into<String>,
    ) -> Self {
        ClientConfig {
            tenant_id: tenant_id.into(),
            integration_id: integration_id.into(),
            kind: kind.into(),
            timeout: Duration::from_secs(10),
            rate_limit: None,
            route_limits: Vec::new(),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            secrets: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// One HTTP attempt, as the integration log keeps it: secrets redacted, bodies truncated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    pub tenant_id: String,
    pub integration_id: String,
    pub kind: String,
    /// What the connector was doing (`stocks.push`), when it said.
    pub operation: Option<String>,
    pub started_at: DateTime<Utc>,
    /// 1 for the first try of a call.
    pub attempt: u32,
    pub method: String,
    /// Query values of secret keys and known secrets replaced.
    pub url: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

/// Where exchanges go: the storage layer writes them to the integration log.
#[async_trait]
pub trait ExchangeSink: Send + Sync {
    /// Called inline after every attempt; keep it quick (buffer if storage is slow).
    async fn record(&self, exchange: Exchange);
}

/// Keeps exchanges in memory (tests, demos).
#[derive(Debug, Default)]
pub struct MemorySink(Mutex<Vec<Exchange>>);

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[async_trait]
impl ExchangeSink for MemorySink {
    async fn record(&self, exchange: Exchange) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(exchange);
    }
}

/// Drops exchanges.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

#[async_trait]
impl ExchangeSink for NullSink {
    async fn record(&self, _exchange: Exchange) {}
}

/// A request that can be sent again on retry.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    timeout: Option<Duration>,
    idempotent: bool,
    operation: Option<String>,
    /// A builder step failed (bad header value, unserialisable body): reported by `send`.
    invalid: Option<String>,
}

impl HttpRequest {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
            idempotent: true,
            operation: None,
            invalid: None,
        }
    }
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::GET, url)
    }
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::POST, url)
    }
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::PUT, url)
    }
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::DELETE, url)
    }

    fn fail(mut self, why: String) -> Self {
        self.invalid.get_or_insert(why);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            return self.fail(format!("invalid header name {name}"));
        };
        let Ok(mut value) = HeaderValue::from_str(value) else {
            // The value may be a credential: name the header only.
            return self.fail(format!("invalid value for header {name}"));
        };
        if redact::is_secret_header(name.as_str()) {
            value.set_sensitive(true);
        }
        self.headers.insert(name, value);
        self
    }

    /// A credential header (logged masked whatever its name).
    pub fn secret_header(mut self, name: &str, value: &Secret) -> Self {
        self = self.header(name, value.expose());
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes())
            && let Some(v) = self.headers.get_mut(&n)
        {
            v.set_sensitive(true);
        }
        self
    }

    pub fn bearer(self, token: &Secret) -> Self {
        self.secret_header(
            "authorization",
            &Secret::new(format!("Bearer {}", token.expose())),
        )
    }

    /// Append query parameters (anything `serde_urlencoded` takes: a struct, `&[(k, v)]`).
    pub fn query<T: Serialize + ?Sized>(mut self, query: &T) -> Self {
        match serde_urlencoded::to_string(query) {
            Ok(q) if q.is_empty() => self,
            Ok(q) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                self.url = format!("{}{sep}{q}", self.url);
                self
            }
            Err(e) => self.fail(format!("query: {e}")),
        }
    }

    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(b) => self.body(b, "application/json"),
            Err(e) => self.fail(format!("json body: {e}")),
        }
    }

    pub fn form<T: Serialize + ?Sized>(self, body: &T) -> Self {
        match serde_urlencoded::to_string(body) {
            Ok(b) => self.body(b, "application/x-www-form-urlencoded"),
            Err(e) => self.fail(format!("form body: {e}")),
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>, content_type: &str) -> Self {
        self.body = Some(body.into());
        self.header(CONTENT_TYPE.as_str(), content_type)
    }

    /// Override the integration's timeout for this call (a 800 ms loyalty lookup).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The request has effects and no idempotency key: retry only when it surely never reached
    /// the provider (connect error) or was refused unprocessed (429).
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// A name for the integration log (`orders.confirm`).
    pub fn operation(mut self, name: impl Into<String>) -> Self {
        self.operation = Some(name.into());
        self
    }
}

/// A final answer (2xx, 3xx, or a 4xx other than 408/429: the provider's word, for the
/// connector to interpret).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Attempts the call took.
    pub attempts: u32,
    secrets: Arc<[Secret]>,
}

impl HttpResponse {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        // serde's message names the field and position, never the data.
        serde_json::from_slice(&self.body).map_err(|e| {
            ConnectorError::protocol(format!(
                "HTTP {}: body is not the expected JSON: {e}",
                self.status.as_u16()
            ))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body for an error message or log: redacted and short.
    pub fn excerpt(&self) -> String {
        let ct = self.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        redact::truncate(
            redact::redact_body(&self.body, ct, &self.secrets),
            ERROR_EXCERPT,
        )
    }

    /// 2xx passes; 401/403 become `Auth`, 404/409/422/other 4xx `Rejected`, anything else
    /// `Protocol`. For connectors whose provider uses plain HTTP statuses.
    pub fn error_for_status(self) -> Result<Self, ConnectorError> {
        let s = self.status;
        if s.is_success() {
            return Ok(self);
        }
        let msg = format!("HTTP {}: {}", s.as_u16(), self.excerpt());
        Err(match s.as_u16() {
            401 | 403 => ConnectorError::auth(msg),
            400..=499 => ConnectorError::rejected(s.as_u16().to_string(), msg),
            _ => ConnectorError::protocol(msg),
        })
    }
}

struct HubInner {
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn ExchangeSink>,
    limiters: Mutex<HashMap<String, (RateLimit, Arc<DefaultDirectRateLimiter>)>>,
    breakers: Mutex<HashMap<String, Breaker>>,
}

/// Process-wide state of outbound calls: the pool, per-integration limiters and breakers.
#[derive(Clone)]
pub struct HttpHub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for HttpHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHub").finish_non_exhaustive()
    }
}

impl HttpHub {
    pub fn new(clock: Arc<dyn Clock>, sink: Arc<dyn ExchangeSink>) -> Result<Self, ConnectorError> {
        // reqwest is built without a default crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("savdo/", env!("CARGO_PKG_VERSION")))
            // An API never needs one, and a redirect could carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConnectorError::config(format!("http client: {e}")))?;
        Ok(HttpHub {
            inner: Arc::new(HubInner {
                client,
                clock,
                sink,
                limiters: Mutex::new(HashMap::new()),
                breakers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client for one integration. Its limiter and breaker are shared with every other client
    /// of the same integration id; a changed rate limit or breaker policy applies to all.
    pub fn client(&self, config: ClientConfig) -> HttpClient {
        let id = config.integration_id.clone();
        let limiter = config
            .rate_limit
            .and_then(|rl| self.shared_limiter(id.clone(), rl));
        let route_limiters = config
            .route_limits
            .iter()
            .filter_map(|r| {
                let lim = self.shared_limiter(format!("{id} {}", r.path), r.limit)?;
                Some((*r, lim))
            })
            .collect();
        let breaker = {
            let mut map = self
                .inner
                .breakers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let b = map
                .entry(id)
                .or_insert_with(|| Breaker::new(config.breaker, self.inner.clock.clone()))
                .clone();
            b.set_policy(config.breaker);
            b
        };
        let secrets: Arc<[Secret]> = config.secrets.clone().into();
        HttpClient {
            hub: self.inner.clone(),
            config: Arc::new(config),
            limiter,
            route_limiters,
            breaker,
            secrets,
        }
    }

    /// The limiter kept under `key` across clients; a changed limit replaces it.
    fn shared_limiter(&self, key: String, rl: RateLimit) -> Option<Arc<DefaultDirectRateLimiter>> {
        let quota = rl.quota()?;
        let mut map = self
            .inner
            .limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some((old, lim)) if *old == rl => Some(lim.clone()),
            _ => {
                let lim = Arc::new(RateLimiter::direct(quota));
                map.insert(key, (rl, lim.clone()));
                Some(lim)
            }
        }
    }

    pub fn breaker_state(&self, integration_id: &str) -> Option<BreakerSnapshot> {
        let map = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(integration_id).map(Breaker::snapshot)
    }

    pub fn breaker_states(&self) -> Vec<(String, BreakerSnapshot)> {
        let map = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, b)| (k.clone(), b.snapshot())).collect()
    }

    /// Close an integration's circuit by hand.
    pub fn reset_breaker(&self, integration_id: &str) {
        let map = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(integration_id) {
            b.reset();
        }
    }

    /// Drop an integration's limiter and breaker (it was deleted).
    pub fn forget(&self, integration_id: &str) {
        self.inner
            .limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| {
                k != integration_id
                    && !k
                        .strip_prefix(integration_id)
                        .is_some_and(|rest| rest.starts_with(' '))
            });
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(integration_id);
    }
}

/// How one attempt ended, before deciding on a retry.
enum Attempt {
    /// A final answer.
    Done(HttpResponse),
    /// Worth another attempt (after `after` when the provider said so).
    Retry {
        error: ConnectorError,
        after: Option<Duration>,
        /// Reached the provider (not a connect error): a non-idempotent request must not retry.
        sent: bool,
    },
    /// Retrying cannot help.
    Fail(ConnectorError),
}

/// The HTTP client of one integration. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    hub: Arc<HubInner>,
    config: Arc<ClientConfig>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    route_limiters: Vec<(RouteLimit, Arc<DefaultDirectRateLimiter>)>,
    breaker: Breaker,
    secrets: Arc<[Secret]>,
}

/// Wait for a permit of `lim`, at most `rl.max_wait`.
async fn wait_for_permit(
    lim: &DefaultDirectRateLimiter,
    rl: RateLimit,
) -> Result<(), ConnectorError> {
    let deadline = Instant::now() + rl.max_wait;
    let clock = DefaultClock::default();
    loop {
        match lim.check() {
            Ok(()) => return Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                let now = Instant::now();
                if now + wait > deadline {
                    return Err(ConnectorError::RateLimited {
                        retry_after: Some(wait),
                    });
                }
                // A little jitter so the waiters do not all wake on the same tick.
                let jitter = Duration::from_micros(rand::random_range(0..2000));
                tokio::time::sleep(wait + jitter).await;
            }
        }
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("integration_id", &self.config.integration_id)
            .field("kind", &self.config.kind)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn integration_id(&self) -> &str {
        &self.config.integration_id
    }

    pub fn breaker(&self) -> BreakerSnapshot {
        self.breaker.snapshot()
    }

    /// Send with breaker, rate limit, timeout, retries and exchange log. `Ok` for any final
    /// answer (see [`HttpResponse`]); `Err` when no usable answer came.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        if let Some(why) = &req.invalid {
            return Err(ConnectorError::config(why.clone()));
        }
        let retry = self.config.retry;
        let max_attempts = retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = match self.breaker.acquire() {
                Ok(p) => p,
                Err(retry_after) => return Err(ConnectorError::CircuitOpen { retry_after }),
            };
            if let Err(e) = self.wait_for_permits(&req.url).await {
                // Our own limit, not the provider's failure: the breaker learns nothing.
                drop(permit);
                return Err(e);
            }
            let outcome = self.attempt(&req, attempt, permit).await;
            let (error, after, sent) = match outcome {
                Attempt::Done(mut resp) => {
                    resp.attempts = attempt;
                    return Ok(resp);
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { error, after, sent } => (error, after, sent),
            };
            let allowed =
                req.idempotent || !sent || matches!(error, ConnectorError::RateLimited { .. });
            if attempt >= max_attempts || !allowed {
                return Err(error);
            }
            let delay = match after {
                // The provider's word beats our backoff, within reason.
                Some(d) if d > retry.max_delay => {
                    return Err(match error {
                        ConnectorError::RateLimited { .. } => ConnectorError::RateLimited {
                            retry_after: Some(d),
                        },
                        other => other,
                    });
                }
                Some(d) => d + d.mul_f64(rand::random_range(0.0..0.1)),
                None => retry.backoff(attempt),
            };
            tracing::debug!(
                integration_id = %self.config.integration_id,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = error.code(),
                "retrying outbound call"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The integration's permit, then the endpoint's when one of `route_limits` matches.
    async fn wait_for_permits(&self, url: &str) -> Result<(), ConnectorError> {
        if let (Some(lim), Some(rl)) = (&self.limiter, self.config.rate_limit) {
            wait_for_permit(lim, rl).await?;
        }
        let path = url.split(['?', '#']).next().unwrap_or(url);
        for (route, lim) in &self.route_limiters {
            if path.ends_with(route.path) {
                wait_for_permit(lim, route.limit).await?;
            }
        }
        Ok(())
    }

    async fn attempt(&self, req: &HttpRequest, attempt: u32, permit: BreakerPermit) -> Attempt {
        let timeout = req.timeout.unwrap_or(self.config.timeout);
        let started_at = self.hub.clock.now();
        let t0 = Instant::now();
        let mut builder = self
            .hub
            .client
            .request(req.method.clone(), &req.url)
            .headers(req.headers.clone())
            .timeout(timeout);
        if let Some(b) = &req.body {
            builder = builder.body(b.clone());
        }
        let result = tokio::time::timeout(timeout, async {
            let resp = builder.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_body(resp, self.config.max_body).await?;
            Ok::<_, BodyError>((status, headers, body))
        })
        .await;
        let latency_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);

        let (outcome, status, resp_body, error_text) = match result {
            Err(_) => {
                permit.failure("timeout");
                (
                    Attempt::Retry {
                        error: ConnectorError::Timeout { after: timeout },
                        after: None,
                        sent: true,
                    },
                    None,
                    None,
                    Some(format!("timed out after {} ms", timeout.as_millis())),
                )
            }
            Ok(Err(e)) => {
                let (attempt_outcome, text) = self.classify_error(e, timeout);
                match &attempt_outcome {
                    Attempt::Retry { error, .. } | Attempt::Fail(error)
                        if !matches!(
                            error,
                            ConnectorError::Config { .. } | ConnectorError::Protocol { .. }
                        ) =>
                    {
                        permit.failure(error.code());
                    }
                    _ => permit.success(),
                }
                (attempt_outcome, None, None, Some(text))
            }
            Ok(Ok((status, headers, body))) => {
                let ct = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
                let logged = redact::redact_body(&body, ct, &self.secrets);
                let code = status.as_u16();
                let outcome = if status.is_server_error() || code == 408 {
                    permit.failure("unavailable");
                    Attempt::Retry {
                        error: ConnectorError::unavailable(format!(
                            "HTTP {code}: {}",
                            redact::truncate(logged.clone(), ERROR_EXCERPT)
                        )),
                        after: retry_after(&headers, Utc::now()),
                        sent: true,
                    }
                } else if code == 429 {
                    // The provider is alive and answering: not a breaker failure.
                    permit.success();
                    let after = retry_after(&headers, Utc::now());
                    Attempt::Retry {
                        error: ConnectorError::RateLimited { retry_after: after },
                        after,
                        sent: true,
                    }
                } else {
                    permit.success();
                    Attempt::Done(HttpResponse {
                        status,
                        headers,
                        body,
                        attempts: attempt,
                        secrets: self.secrets.clone(),
                    })
                };
                (outcome, Some(code), Some(logged), None)
            }
        };

        let ct = req.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let exchange = Exchange {
            tenant_id: self.config.tenant_id.clone(),
            integration_id: self.config.integration_id.clone(),
            kind: self.config.kind.clone(),
            operation: req.operation.clone(),
            started_at,
            attempt,
            method: req.method.to_string(),
            url: redact::redact_url(&req.url, &self.secrets),
            status,
            latency_ms,
            error: error_text.map(|e| redact::scrub(&e, &self.secrets)),
            request_headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    let shown = if v.is_sensitive() {
                        crate::secret::mask(&String::from_utf8_lossy(v.as_bytes()))
                    } else {
                        redact::redact_header(
                            k.as_str(),
                            &String::from_utf8_lossy(v.as_bytes()),
                            &self.secrets,
                        )
                    };
                    (k.as_str().to_owned(), shown)
                })
                .collect(),
            request_body: req
                .body
                .as_ref()
                .map(|b| redact::redact_body(b, ct, &self.secrets)),
            response_body: resp_body,
        };
        self.hub.sink.record(exchange).await;
        outcome
    }

    fn classify_error(&self, e: BodyError, timeout: Duration) -> (Attempt, String) {
        match e {
            BodyError::TooLarge => {
                let err = ConnectorError::protocol(format!(
                    "response body larger than {} bytes",
                    self.config.max_body
                ));
                let text = err.to_string();
                (Attempt::Fail(err), text)
            }
            BodyError::Http(e) => {
                // reqwest's message names the URL, which may hold a credential: drop it.
                let e = e.without_url();
                let text = redact::scrub(&error_chain(&e), &self.secrets);
                let outcome = if e.is_timeout() {
                    Attempt::Retry {
                        error: ConnectorError::Timeout { after: timeout },
                        after: None,
                        sent: true,
                    }
                } else if e.is_builder() {
                    Attempt::Fail(ConnectorError::config(text.clone()))
                } else {
                    Attempt::Retry {
                        error: ConnectorError::unavailable(text.clone()),
                        after: None,
                        sent: !e.is_connect(),
                    }
                };
                (outcome, text)
            }
        }
    }
}

enum BodyError {
    Http(reqwest::Error),
    TooLarge,
}

impl From<reqwest::Error> for BodyError {
    fn from(e: reqwest::Error) -> Self {
        BodyError::Http(e)
    }
}

async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// reqwest's top-level message says little ("error sending request"); the causes say why.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long the provider asked us to wait: the larger of `Retry-After` (seconds or an HTTP
/// date) and Wildberries' `X-Ratelimit-Retry` (seconds).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let parse = |name: &str| -> Option<Duration> {
        let v = headers.get(name)?.to_str().ok()?.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(secs) = v.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Duration::try_from_secs_f64(secs).ok();
        }
        let at = DateTime::parse_from_rfc2822(v).ok()?;
        Some(
            (at.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO),
        )
    };
    match (parse("retry-after"), parse("x-ratelimit-retry")) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Fri, 01 May 2026 10:00:05 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(5)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Fri, 01 May 2026 09:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("x-ratelimit-retry", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let d1 = p.backoff(1);
        assert!(d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125));
        let d5 = p.backoff(5);
        assert!(d5 <= Duration::from_millis(375));
    }

    #[test]
    fn builder_errors_surface_on_send() {
        let r = HttpRequest::get("http://x/").header("x-api-key", "bad\nvalue");
        assert_eq!(
            r.invalid.as_deref(),
            Some("invalid value for header x-api-key")
        );
    }

    #[test]
    fn quota_from_rate_limit() {
        assert!(RateLimit::per_second(10).quota().is_some());
        assert!(RateLimit::per_minute(300, 20).quota().is_some());
        let zero = RateLimit {
            requests: 1,
            per: Duration::ZERO,
            burst: 1,
            max_wait: Duration::ZERO,
        };
        assert!(zero.quota().is_none());
    }
}
