//! What every simulator shares: fault injection, the call log, and the control API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One simulated external system.
pub trait Simulator: Send + Sync + 'static {
    /// The prefix it is served under and its name in the control API, e.g. `"jowi-club"`.
    fn name(&self) -> &'static str;
    /// The provider's own endpoints, mounted under `/<name>`.
    fn router(self: Arc<Self>) -> Router;
    /// Forget all data (the common state — faults and calls — is reset by the caller).
    fn reset(&self);
    /// Load data; each simulator documents the JSON shape it takes.
    fn seed(&self, data: Value) -> Result<Value, String>;
    /// Extra control routes, mounted under `/_control/<name>` (e.g. `pay`, `ledger`).
    fn control(self: Arc<Self>) -> Router {
        Router::new()
    }
    /// Faults and the call log of this system.
    fn state(&self) -> &SystemState;
}

/// Faults a test or a person injects through `POST /_control/<system>/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every answer.
    pub latency_ms: u64,
    /// Share (0..=1) of requests answered with `status` instead of the real answer.
    pub error_rate: f64,
    /// Status for injected errors (default 500).
    pub status: Option<u16>,
    /// Refuse everything: the connection is answered 503 at once (`down: true`), or held until
    /// the client gives up (`down: "blackhole"`).
    pub down: DownMode,
    /// Requests per second allowed on top of the protocol's own limits; beyond it 429.
    pub rate_limit: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DownMode {
    #[default]
    Up,
    Refuse,
    Blackhole,
}

impl Serialize for DownMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DownMode::Up => s.serialize_bool(false),
            DownMode::Refuse => s.serialize_bool(true),
            DownMode::Blackhole => s.serialize_str("blackhole"),
        }
    }
}

impl<'de> Deserialize<'de> for DownMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(false) | Value::Null => Ok(DownMode::Up),
            Value::Bool(true) => Ok(DownMode::Refuse),
            Value::String(s) if s == "refuse" => Ok(DownMode::Refuse),
            Value::String(s) if s == "blackhole" => Ok(DownMode::Blackhole),
            other => Err(serde::de::Error::custom(format!(
                "down must be true, false, \"refuse\" or \"blackhole\", not {other}"
            ))),
        }
    }
}

/// A request the simulator received, as `GET /_control/<system>/calls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub status: u16,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Per-system common state.
#[derive(Default)]
pub struct SystemState {
    faults: Mutex<Faults>,
    calls: Mutex<Vec<Call>>,
    limiter: Mutex<Option<(Instant, f64)>>,
}

impl SystemState {
    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap().clone()
    }
    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
        *self.limiter.lock().unwrap() = None;
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    pub fn reset(&self) {
        *self.faults.lock().unwrap() = Faults::default();
        self.calls.lock().unwrap().clear();
        *self.limiter.lock().unwrap() = None;
    }
    fn record(&self, call: Call) {
        let mut calls = self.calls.lock().unwrap();
        // Bounded so a long demo or a benchmark does not grow without end.
        if calls.len() >= 100_000 {
            calls.drain(..10_000);
        }
        calls.push(call);
    }
    /// Token bucket for the injected `rate_limit` (burst = one second's worth).
    fn take_token(&self, per_sec: u32) -> bool {
        let mut l = self.limiter.lock().unwrap();
        let now = Instant::now();
        let cap = per_sec.max(1) as f64;
        let (last, tokens) = l.get_or_insert((now, cap));
        let refill = now.duration_since(*last).as_secs_f64() * cap;
        *tokens = (*tokens + refill).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

const MAX_LOGGED_BODY: usize = 64 * 1024;

async fn faults_and_log(
    State(sim): State<Arc<dyn Simulator>>,
    req: Request,
    next: Next,
) -> Response {
    let st = sim.state();
    let faults = st.faults();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut call = Call {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LOGGED_BODY)]).into_owned(),
        status: 0,
        at: chrono::Utc::now(),
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let resp = match faults.down {
        DownMode::Blackhole => {
            // Hold the request far longer than any client timeout.
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        DownMode::Refuse => (StatusCode::SERVICE_UNAVAILABLE, "simulated outage").into_response(),
        DownMode::Up => {
            if let Some(rps) = faults.rate_limit
                && !st.take_token(rps)
            {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "rate limited (injected)",
                )
                    .into_response()
            } else if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
                let status = StatusCode::from_u16(faults.status.unwrap_or(500))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, "injected fault").into_response()
            } else {
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
        }
    };
    call.status = resp.status().as_u16();
    st.record(call);
    resp
}

#[derive(Deserialize)]
struct CallsQuery {
    #[serde(default)]
    path: Option<String>,
}

/// Build the router for a set of simulators: protocol routes and the control API.
pub fn build_router(sims: Vec<Arc<dyn Simulator>>) -> Router {
    let by_name: HashMap<&'static str, Arc<dyn Simulator>> =
        sims.iter().map(|s| (s.name(), s.clone())).collect();
    let mut app = Router::new()
        .route("/", get(index))
        .route(
            "/_control/{system}/faults",
            post(set_faults).get(get_faults),
        )
        .route("/_control/{system}/reset", post(reset))
        .route("/_control/{system}/seed", post(seed))
        .route("/_control/{system}/calls", get(calls).delete(clear_calls))
        .with_state(Arc::new(by_name));
    for sim in sims {
        let name = sim.name();
        let proto = sim
            .clone()
            .router()
            .layer(middleware::from_fn_with_state(sim.clone(), faults_and_log));
        app = app
            .nest(&format!("/{name}"), proto)
            .nest(&format!("/_control/{name}"), sim.clone().control());
    }
    app
}

type Sims = Arc<HashMap<&'static str, Arc<dyn Simulator>>>;

async fn index(State(sims): State<Sims>) -> Json<Value> {
    let mut names: Vec<_> = sims.keys().copied().collect();
    names.sort();
    Json(json!({"service": "savdo-sandbox", "systems": names}))
}

fn find(sims: &Sims, system: &str) -> Result<Arc<dyn Simulator>, Box<Response>> {
    sims.get(system).cloned().ok_or_else(|| {
        Box::new(
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": format!("unknown system {system}")})),
            )
                .into_response(),
        )
    })
}

async fn set_faults(State(sims): State<Sims>, Path(system): Path<String>, body: Bytes) -> Response {
    let sim = match find(&sims, &system) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            sim.state().set_faults(f.clone());
            Json(json!({"faults": f})).into_response()
        }
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn get_faults(State(sims): State<Sims>, Path(system): Path<String>) -> Response {
    match find(&sims, &system) {
        Ok(s) => Json(json!({"faults": s.state().faults()})).into_response(),
        Err(r) => *r,
    }
}

async fn reset(State(sims): State<Sims>, Path(system): Path<String>) -> Response {
    match find(&sims, &system) {
        Ok(s) => {
            s.state().reset();
            s.reset();
            Json(json!({"reset": system})).into_response()
        }
        Err(r) => *r,
    }
}

async fn seed(State(sims): State<Sims>, Path(system): Path<String>, body: Bytes) -> Response {
    let sim = match find(&sims, &system) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let data: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    match sim.seed(data) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": e}))).into_response(),
    }
}

async fn calls(
    State(sims): State<Sims>,
    Path(system): Path<String>,
    axum::extract::Query(q): axum::extract::Query<CallsQuery>,
) -> Response {
    match find(&sims, &system) {
        Ok(s) => {
            let calls: Vec<Call> = s
                .state()
                .calls()
                .into_iter()
                .filter(|c| q.path.as_deref().is_none_or(|p| c.path.contains(p)))
                .collect();
            Json(json!({"count": calls.len(), "calls": calls})).into_response()
        }
        Err(r) => *r,
    }
}

async fn clear_calls(State(sims): State<Sims>, Path(system): Path<String>) -> Response {
    match find(&sims, &system) {
        Ok(s) => {
            s.state().calls.lock().unwrap().clear();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => *r,
    }
}

/// Helper for simulators: the header's value as a string, if present and ASCII.
pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Helper for simulators: `true` when `m` is the expected method (for readable 405s).
pub fn is(m: &Method, expected: Method) -> bool {
    *m == expected
}
