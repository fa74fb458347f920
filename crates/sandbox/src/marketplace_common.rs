//! What the marketplace simulators (Uzum, Wildberries, Ozon) share: a clock tests can move,
//! the two limiter shapes the providers publish (token bucket, sliding window), request and
//! stock counters, and small JSON helpers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Lock that survives a panicked holder: simulator state stays usable for the next request.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Real monotonic time plus an offset that `POST /_control/<name>/clock` moves forward, so
/// tests can cross a two-minute rule or a per-minute window without sleeping. It can also be
/// frozen, so a burst of requests sees no refill however slowly the machine serves them.
#[derive(Default)]
pub struct Clock {
    offset_ms: AtomicU64,
    frozen: Mutex<Option<(Instant, chrono::DateTime<chrono::Utc>)>>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let base = lock(&self.frozen)
            .map(|(i, _)| i)
            .unwrap_or_else(Instant::now);
        base.checked_add(self.offset()).unwrap_or(base)
    }
    pub fn utc_now(&self) -> chrono::DateTime<chrono::Utc> {
        let base = lock(&self.frozen)
            .map(|(_, u)| u)
            .unwrap_or_else(chrono::Utc::now);
        let offset = i64::try_from(self.offset_ms()).unwrap_or(i64::MAX);
        chrono::TimeDelta::try_milliseconds(offset)
            .and_then(|d| base.checked_add_signed(d))
            .unwrap_or(base)
    }
    /// Move forward; the total offset is capped at 100 years so time arithmetic cannot overflow.
    pub fn advance(&self, by: Duration) {
        const MAX_OFFSET_MS: u64 = 100 * 366 * 24 * 3600 * 1000;
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let cur = self.offset_ms();
        self.offset_ms
            .store(cur.saturating_add(ms).min(MAX_OFFSET_MS), Ordering::Relaxed);
    }
    /// Stop (or restart) real time; the offset still applies.
    pub fn freeze(&self, on: bool) {
        let mut f = lock(&self.frozen);
        match (on, f.is_some()) {
            (true, false) => *f = Some((Instant::now(), chrono::Utc::now())),
            (false, true) => {
                // Keep the current reading continuous: fold the frozen span into the offset.
                if let Some((i, _)) = f.take() {
                    let behind = Instant::now().saturating_duration_since(i);
                    drop(f);
                    let ms = u64::try_from(behind.as_millis()).unwrap_or(u64::MAX);
                    let cur = self.offset_ms();
                    self.offset_ms
                        .store(cur.saturating_sub(ms), Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
    pub fn is_frozen(&self) -> bool {
        lock(&self.frozen).is_some()
    }
    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms())
    }
    fn offset_ms(&self) -> u64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::Relaxed);
        *lock(&self.frozen) = None;
    }
}

/// A refused request: how long until one more is allowed.
#[derive(Debug, Clone, Copy)]
pub struct Limited {
    pub retry_after: Duration,
    /// Until the bucket or window is fully available again.
    pub reset_after: Duration,
}

/// Token bucket: `capacity` requests at once, refilled at `refill_per_sec`. Tokens may go
/// negative through [`TokenBucket::charge`], which is how a penalty (WB: a 409 costs 10
/// requests) pushes the next allowed request further out.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(capacity: f64, refill_per_sec: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            refill_per_sec: refill_per_sec.max(f64::MIN_POSITIVE),
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Take `cost` tokens, or say how long to wait for them (nothing is taken then).
    pub fn try_take(&mut self, now: Instant, cost: f64) -> Result<u64, Limited> {
        self.refill(now);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(self.remaining())
        } else {
            Err(Limited {
                retry_after: self.secs_for(cost - self.tokens),
                reset_after: self.secs_for(self.capacity - self.tokens),
            })
        }
    }

    /// Take tokens unconditionally (a penalty after the fact).
    pub fn charge(&mut self, now: Instant, cost: f64) {
        self.refill(now);
        self.tokens -= cost;
    }

    /// Whole requests allowed right now.
    pub fn remaining(&self) -> u64 {
        self.tokens.max(0.0).floor() as u64
    }

    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    fn secs_for(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((tokens.max(0.0) / self.refill_per_sec).min(86_400.0))
    }
}

/// At most `limit` requests in any `window` (how "N requests per minute" is enforced when the
/// provider publishes no burst).
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    hits: VecDeque<Instant>,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            hits: VecDeque::new(),
        }
    }

    pub fn try_hit(&mut self, now: Instant) -> Result<u64, Limited> {
        while let Some(first) = self.hits.front() {
            if now.saturating_duration_since(*first) >= self.window {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        if self.hits.len() < self.limit {
            self.hits.push_back(now);
            Ok((self.limit - self.hits.len()) as u64)
        } else {
            let until = |at: &Instant| {
                at.checked_add(self.window)
                    .map_or(self.window, |t| t.saturating_duration_since(now))
            };
            Err(Limited {
                retry_after: self.hits.front().map(until).unwrap_or_default(),
                reset_after: self.hits.back().map(until).unwrap_or_default(),
            })
        }
    }
}

/// Whole seconds to wait, rounded up and at least 1 (the headers carry integers).
pub fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// What tests and benchmarks compare with the minimum the limits allow.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<StatsInner>,
}

#[derive(Default, Serialize)]
struct EndpointStats {
    total: u64,
    by_status: BTreeMap<u16, u64>,
}

#[derive(Default)]
struct StatsInner {
    endpoints: BTreeMap<String, EndpointStats>,
    requests_total: u64,
    responses_429: u64,
    stock_requests_accepted: u64,
    stock_items_updated: u64,
    stock_items_rejected: u64,
    stock_items_ignored: u64,
    rejected_by_code: BTreeMap<String, u64>,
}

impl Stats {
    pub fn record(&self, endpoint: String, status: u16) {
        let mut s = lock(&self.inner);
        s.requests_total += 1;
        if status == 429 {
            s.responses_429 += 1;
        }
        let e = s.endpoints.entry(endpoint).or_default();
        e.total += 1;
        *e.by_status.entry(status).or_default() += 1;
    }

    /// A stock request the marketplace took, with how many items it applied.
    pub fn stock_accepted(&self, items_updated: u64) {
        let mut s = lock(&self.inner);
        s.stock_requests_accepted += 1;
        s.stock_items_updated += items_updated;
    }

    /// Items refused (per-item errors, or every item of a refused request), by error code.
    pub fn stock_rejected(&self, code: &str, items: u64) {
        if items == 0 {
            return;
        }
        let mut s = lock(&self.inner);
        s.stock_items_rejected += items;
        *s.rejected_by_code.entry(code.to_string()).or_default() += items;
    }

    /// Items the marketplace silently dropped (e.g. a misspelt field): invisible to the
    /// client, so only this counter reveals them.
    pub fn stock_ignored(&self, items: u64) {
        lock(&self.inner).stock_items_ignored += items;
    }

    pub fn snapshot(&self) -> Value {
        let s = lock(&self.inner);
        json!({
            "requests_total": s.requests_total,
            "responses_429": s.responses_429,
            "endpoints": s.endpoints,
            "stock": {
                "requests_accepted": s.stock_requests_accepted,
                "items_updated": s.stock_items_updated,
                "items_rejected": s.stock_items_rejected,
                "items_ignored": s.stock_items_ignored,
                "rejected_by_code": s.rejected_by_code,
            },
        })
    }

    pub fn clear(&self) {
        *lock(&self.inner) = StatsInner::default();
    }
}

/// Route middleware: counts every matched request by method and route pattern (the simulator
/// prefix stripped), with its status, so 429s show per endpoint.
pub async fn count_requests(State(stats): State<Arc<Stats>>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let path = ["/uzum", "/wildberries", "/ozon"]
        .iter()
        .find_map(|p| path.strip_prefix(p).filter(|rest| rest.starts_with('/')))
        .map(str::to_string)
        .unwrap_or(path);
    let endpoint = format!("{} {}", req.method(), path);
    let resp = next.run(req).await;
    stats.record(endpoint, resp.status().as_u16());
    resp
}

/// Apply a partial JSON object onto a config struct (unknown keys are refused by `T`).
pub fn merge_json<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: &Value,
) -> Result<T, String> {
    let mut base = serde_json::to_value(current).map_err(|e| e.to_string())?;
    match (base.as_object_mut(), patch) {
        (Some(b), Value::Object(p)) => {
            for (k, v) in p {
                b.insert(k.clone(), v.clone());
            }
        }
        _ => return Err("limits must be a JSON object".into()),
    }
    serde_json::from_value(base).map_err(|e| e.to_string())
}

/// Parse a control request body; an empty body reads as `{}`.
pub fn parse_control<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_value(json!({})).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

/// Query pairs in order, repeated keys kept (`shopIds=1&shopIds=2`); bad encoding reads as none.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// RFC 3339 with milliseconds, UTC (`2025-01-31T10:00:00.000Z`).
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Body of `POST /_control/<name>/clock`: `{advance_ms?, advance_secs?, freeze?}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    #[serde(default)]
    pub advance_ms: u64,
    #[serde(default)]
    pub advance_secs: u64,
    pub freeze: Option<bool>,
}

impl AdvanceClock {
    /// Apply to `clock` and describe the result.
    pub fn apply(&self, clock: &Clock) -> Value {
        if let Some(f) = self.freeze {
            clock.freeze(f);
        }
        let by = Duration::from_millis(self.advance_ms)
            .checked_add(Duration::from_secs(self.advance_secs))
            .unwrap_or(Duration::MAX);
        clock.advance(by);
        json!({
            "offset_ms": u64::try_from(clock.offset().as_millis()).unwrap_or(u64::MAX),
            "frozen": clock.is_frozen(),
            "now": rfc3339(clock.utc_now()),
        })
    }
}

/// Control error answer: `422 {"error": …}` like the common control API.
pub fn control_error(status: axum::http::StatusCode, msg: impl Into<String>) -> Response {
    use axum::response::IntoResponse;
    (status, axum::Json(json!({"error": msg.into()}))).into_response()
}

/// What the control routes every marketplace simulator shares need from it.
pub trait MarketplaceSim: Send + Sync + 'static {
    fn stats(&self) -> &Stats;
    fn clock(&self) -> &Clock;
}

/// `GET /_control/<name>/stats`.
pub async fn c_stats<S: MarketplaceSim>(State(sim): State<Arc<S>>) -> Response {
    use axum::response::IntoResponse;
    axum::Json(sim.stats().snapshot()).into_response()
}

/// `DELETE /_control/<name>/stats`.
pub async fn c_clear_stats<S: MarketplaceSim>(State(sim): State<Arc<S>>) -> Response {
    use axum::response::IntoResponse;
    sim.stats().clear();
    axum::http::StatusCode::NO_CONTENT.into_response()
}

/// `POST /_control/<name>/clock {advance_ms?, advance_secs?, freeze?}`.
pub async fn c_clock<S: MarketplaceSim>(
    State(sim): State<Arc<S>>,
    body: axum::body::Bytes,
) -> Response {
    use axum::response::IntoResponse;
    match parse_control::<AdvanceClock>(&body) {
        Ok(a) => axum::Json(a.apply(sim.clock())).into_response(),
        Err(e) => control_error(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20.0, 5.0, t0);
        for _ in 0..20 {
            assert!(b.try_take(t0, 1.0).is_ok());
        }
        let refused = b.try_take(t0, 1.0).unwrap_err();
        assert!((refused.retry_after.as_secs_f64() - 0.2).abs() < 1e-6);
        assert!((refused.reset_after.as_secs_f64() - 4.0).abs() < 1e-6);
        assert!(b.try_take(t0 + Duration::from_millis(200), 1.0).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(200), 1.0).is_err());
    }

    #[test]
    fn bucket_penalty_pushes_next_request_out() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20.0, 5.0, t0);
        b.try_take(t0, 1.0).unwrap();
        b.charge(t0, 28.0); // 19 - 28 = -9
        let refused = b.try_take(t0, 1.0).unwrap_err();
        assert!((refused.retry_after.as_secs_f64() - 2.0).abs() < 1e-6);
    }

    #[test]
    fn window_counts_requests_in_the_last_minute() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(80, Duration::from_secs(60));
        for i in 0..80 {
            assert!(w.try_hit(t0 + Duration::from_millis(i)).is_ok());
        }
        let refused = w.try_hit(t0 + Duration::from_secs(30)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        assert!(w.try_hit(t0 + Duration::from_secs(60)).is_ok());
        assert!(w.try_hit(t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn ceil_secs_rounds_up_to_at_least_one() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }
}
