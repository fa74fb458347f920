//! Asl Belgisi (national marking, a mirror of the Russian "True API") simulator
//! (`protocols/aslbelgisi.md`): a registry of marking codes, the online check a till runs
//! before a sale, and the token-based API.
//!
//! Decisions the protocol file leaves open ([assumed]):
//! - `codes/check` authenticates with `X-API-KEY` (default `demo-aslbelgisi-key`); a missing or
//!   unknown key is HTTP 401. More than 100 codes, or none, is HTTP 400. Errors are
//!   `{code: <http status>, description}`; success is `{code: 0, description: "ok", ...}`.
//! - Per code: `errorCode` 0 fine, 1 the code cannot be parsed (or its GTIN check digit is
//!   wrong), 2 not in the registry. `verified` is true when the code was found and carried its
//!   crypto tail (AI 92/93, or the tobacco 8-char tail); the sandbox cannot check E-IMZO/GS1
//!   crypto, so any tail counts. `realizable` = found, INTRODUCED, not blocked, not expired.
//!   `utilised` = the code was applied to a unit (any status but EMITTED). `sold` = RETIRED.
//! - `auth/simpleSignIn` stands in for E-IMZO: the "signature" (`data`) must be the base64 of
//!   the challenge from `auth/key`. Challenges are single-use and live 5 minutes; tokens 10 h.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

use crate::common::{Simulator, SystemState, header};

pub const DEMO_API_KEY: &str = "demo-aslbelgisi-key";
const MAX_CODES: usize = 100;
const CHALLENGE_TTL: Duration = Duration::from_secs(300);
const TOKEN_TTL: Duration = Duration::from_secs(10 * 3600);
const GS: char = '\u{1d}';
const STATUSES: [&str; 6] = [
    "EMITTED",
    "APPLIED",
    "INTRODUCED",
    "WRITTEN_OFF",
    "RETIRED",
    "WITHDRAWN",
];

/// What a scanned code identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub gtin: String,
    pub serial: String,
    /// Whether the crypto tail (AI 92/93, or the tobacco check) came with it.
    pub has_tail: bool,
}

impl Parsed {
    pub fn cis(&self) -> String {
        format!("{}{}", self.gtin, self.serial)
    }
}

/// GS1 mod-10 check of a GTIN-14.
pub fn gtin_ok(gtin: &str) -> bool {
    if gtin.len() != 14 || !gtin.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let d: Vec<u32> = gtin.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum: u32 = d[..13]
        .iter()
        .enumerate()
        .map(|(i, x)| if i % 2 == 0 { x * 3 } else { *x })
        .sum();
    (10 - sum % 10) % 10 == d[13]
}

/// Scanners deliver GS in several disguises; make it `\x1d` and drop a symbology prefix.
fn normalise(raw: &str) -> String {
    let s = raw.trim_matches(|c: char| c == '\r' || c == '\n');
    let s = s
        .strip_prefix("]d2")
        .or_else(|| s.strip_prefix("]C1"))
        .unwrap_or(s);
    s.replace("<GS>", "\u{1d}")
        .replace("\\x1d", "\u{1d}")
        .replace("\\u001d", "\u{1d}")
        .replace(' ', "\u{1d}")
        .trim_start_matches(GS)
        .to_string()
}

/// Parse a scanned code: GS1 element string (`01` GTIN `21` serial GS `91`.. GS `92`..), the
/// tobacco pack form (GTIN-14 + 7-char serial + 8-char tail), or a bare CIS (GTIN + serial).
/// `known` resolves an element string whose GS separators were lost, by trying serial lengths.
pub fn parse_code(raw: &str, known: &dyn Fn(&str) -> bool) -> Option<Parsed> {
    let s = normalise(raw);
    if s.is_empty()
        || s.chars()
            .any(|c| c != GS && (c.is_control() || !c.is_ascii()))
    {
        return None;
    }
    if let Some(rest) = s.strip_prefix("01")
        && rest.len() > 16
        && rest.as_bytes()[..14].iter().all(u8::is_ascii_digit)
        && &rest[14..16] == "21"
    {
        let gtin = rest[..14].to_string();
        let after = &rest[16..];
        if let Some((serial, tail)) = after.split_once(GS) {
            if serial.is_empty() || serial.len() > 20 {
                return None;
            }
            let has_tail = tail
                .split(GS)
                .any(|f| f.starts_with("92") || f.starts_with("93"));
            return Some(Parsed {
                gtin,
                serial: serial.to_string(),
                has_tail,
            });
        }
        // No GS: the serial either ends the code, or lost its separator before `91`/`92`/`93`.
        for len in 1..=after.len().min(20) {
            let (serial, tail) = after.split_at(len);
            let cis = format!("{gtin}{serial}");
            if (tail.is_empty() || tail.starts_with('9')) && known(&cis) {
                return Some(Parsed {
                    gtin,
                    serial: serial.to_string(),
                    has_tail: tail.contains("92") || tail.contains("93"),
                });
            }
        }
        if after.len() <= 20 {
            return Some(Parsed {
                gtin,
                serial: after.to_string(),
                has_tail: false,
            });
        }
        return None;
    }
    if s.contains(GS) || s.len() < 15 || !s.as_bytes()[..14].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let gtin = s[..14].to_string();
    match s.len() {
        // Tobacco pack: 7-char serial and the 8-char check.
        29 => Some(Parsed {
            gtin,
            serial: s[14..21].to_string(),
            has_tail: true,
        }),
        // A bare CIS, as printed on a receipt (serials run 6..=20 chars).
        20..=34 => Some(Parsed {
            gtin,
            serial: s[14..].to_string(),
            has_tail: false,
        }),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct CodeRec {
    gtin: String,
    status: String,
    blocked: bool,
    expire_date: Option<chrono::NaiveDate>,
}

struct Inner {
    api_keys: HashSet<String>,
    codes: HashMap<String, CodeRec>,
    challenges: HashMap<String, (String, Instant)>,
    tokens: HashMap<String, Instant>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            api_keys: HashSet::from([DEMO_API_KEY.to_string()]),
            codes: HashMap::new(),
            challenges: HashMap::new(),
            tokens: HashMap::new(),
        }
    }
}

#[derive(Default)]
pub struct AslBelgisi {
    state: SystemState,
    inner: Mutex<Inner>,
}

impl AslBelgisi {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fail(status: StatusCode, description: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": status.as_u16(), "description": description.into()})),
    )
        .into_response()
}

fn parse_status(s: &str) -> Result<String, String> {
    let up = s.trim().to_ascii_uppercase();
    if STATUSES.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(format!("status {s} must be one of {}", STATUSES.join(", ")))
    }
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s).map(|d| d.date_naive()))
        .map_err(|_| format!("expire_date {s} must be YYYY-MM-DD or RFC 3339"))
}

impl Simulator for AslBelgisi {
    fn name(&self) -> &'static str {
        "aslbelgisi"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/api/v4/true-api/codes/check", post(codes_check))
            .route("/api/v3/true-api/auth/key", get(auth_key))
            .route("/api/v3/true-api/auth/simpleSignIn", post(sign_in))
            .route("/api/v3/true-api/cises/info", post(cises_info))
            .with_state(self)
    }
    fn reset(&self) {
        *self.lock() = Inner::default();
    }
    /// `{"api_keys": [..], "codes": [{"cis" (GTIN-14 + serial, or a full scanned code),
    /// "status", "blocked", "expire_date"}]}`.
    fn seed(&self, data: Value) -> Result<Value, String> {
        let mut inner = self.lock();
        let mut keys = 0;
        if let Some(list) = data.get("api_keys") {
            for k in list.as_array().ok_or("api_keys must be an array")? {
                let k = k
                    .as_str()
                    .filter(|k| !k.is_empty())
                    .ok_or("api_keys must be non-empty strings")?;
                inner.api_keys.insert(k.to_string());
                keys += 1;
            }
        }
        let mut parsed = Vec::new();
        if let Some(list) = data.get("codes") {
            for c in list.as_array().ok_or("codes must be an array")? {
                let raw = c
                    .get("cis")
                    .and_then(Value::as_str)
                    .ok_or("codes[].cis is required")?;
                let p = parse_code(raw, &|_| false)
                    .ok_or_else(|| format!("cannot parse code {raw:?}"))?;
                if !gtin_ok(&p.gtin) {
                    return Err(format!("GTIN {} of {raw:?} fails its check digit", p.gtin));
                }
                let status = parse_status(
                    c.get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("INTRODUCED"),
                )?;
                let expire_date = match c.get("expire_date").and_then(Value::as_str) {
                    Some(d) => Some(parse_date(d)?),
                    None => None,
                };
                let blocked = c.get("blocked").and_then(Value::as_bool).unwrap_or(false);
                parsed.push((
                    p.cis(),
                    CodeRec {
                        gtin: p.gtin,
                        status,
                        blocked,
                        expire_date,
                    },
                ));
            }
        }
        let cises: Vec<String> = parsed.iter().map(|(c, _)| c.clone()).collect();
        inner.codes.extend(parsed);
        Ok(json!({"api_keys": keys, "codes": cises}))
    }
    fn control(self: Arc<Self>) -> Router {
        Router::new()
            .route("/status", post(ctl_status))
            .route("/codes", get(ctl_codes))
            .with_state(self)
    }
    fn state(&self) -> &SystemState {
        &self.state
    }
}

fn check_one(inner: &Inner, raw: &str) -> Value {
    let today = chrono::Utc::now().date_naive();
    let parsed = parse_code(raw, &|cis| inner.codes.contains_key(cis));
    let Some(p) = parsed.filter(|p| gtin_ok(&p.gtin)) else {
        return json!({"cis": raw, "valid": false, "found": false, "verified": false,
                      "realizable": false, "utilised": false, "isBlocked": false,
                      "sold": false, "expireDate": null, "gtin": null, "errorCode": 1,
                      "message": "the code cannot be parsed as a marking code"});
    };
    let cis = p.cis();
    match inner.codes.get(&cis) {
        None => json!({"cis": cis, "valid": true, "found": false, "verified": false,
                       "realizable": false, "utilised": false, "isBlocked": false,
                       "sold": false, "expireDate": null, "gtin": p.gtin, "errorCode": 2,
                       "message": "the code is not in the registry"}),
        Some(r) => {
            let expired = r.expire_date.is_some_and(|d| d < today);
            let realizable = r.status == "INTRODUCED" && !r.blocked && !expired;
            let message = if r.blocked {
                "the code is blocked".to_string()
            } else if expired {
                "the product has expired".to_string()
            } else if realizable {
                "ok".to_string()
            } else {
                format!("the code is {}", r.status)
            };
            json!({"cis": cis, "valid": true, "found": true, "verified": p.has_tail,
                   "realizable": realizable, "utilised": r.status != "EMITTED",
                   "isBlocked": r.blocked, "sold": r.status == "RETIRED",
                   "expireDate": r.expire_date.map(|d| d.to_string()), "gtin": r.gtin,
                   "status": r.status, "errorCode": 0, "message": message})
        }
    }
}

async fn codes_check(
    State(sim): State<Arc<AslBelgisi>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inner = sim.lock();
    match header(&headers, "x-api-key") {
        Some(k) if inner.api_keys.contains(k) => {}
        Some(_) => return fail(StatusCode::UNAUTHORIZED, "unknown X-API-KEY"),
        None => return fail(StatusCode::UNAUTHORIZED, "X-API-KEY is required"),
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let Some(codes) = body.get("codes").and_then(Value::as_array) else {
        return fail(StatusCode::BAD_REQUEST, "codes must be an array of strings");
    };
    if codes.is_empty() || codes.len() > MAX_CODES {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("codes must hold 1..={MAX_CODES} codes, not {}", codes.len()),
        );
    }
    let mut out = Vec::with_capacity(codes.len());
    for c in codes {
        let Some(c) = c.as_str() else {
            return fail(StatusCode::BAD_REQUEST, "codes must be strings");
        };
        out.push(check_one(&inner, c));
    }
    Json(json!({"code": 0, "description": "ok", "codes": out,
                "reqId": uuid::Uuid::now_v7().to_string(),
                "reqTimestamp": chrono::Utc::now().timestamp_millis()}))
    .into_response()
}

async fn auth_key(State(sim): State<Arc<AslBelgisi>>) -> Json<Value> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let data: String = hex::encode(rand::random::<[u8; 15]>()).to_ascii_uppercase();
    let mut inner = sim.lock();
    let now = Instant::now();
    inner.challenges.retain(|_, (_, exp)| *exp > now);
    inner
        .challenges
        .insert(uuid.clone(), (data.clone(), now + CHALLENGE_TTL));
    Json(json!({"uuid": uuid, "data": data}))
}

async fn sign_in(State(sim): State<Arc<AslBelgisi>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let (Some(uuid), Some(signed)) = (
        body.get("uuid").and_then(Value::as_str),
        body.get("data").and_then(Value::as_str),
    ) else {
        return fail(StatusCode::BAD_REQUEST, "uuid and data are required");
    };
    let mut inner = sim.lock();
    // Single use, whatever the outcome, like a real challenge.
    let Some((challenge, exp)) = inner.challenges.remove(uuid) else {
        return fail(StatusCode::UNAUTHORIZED, "unknown or used uuid");
    };
    if exp <= Instant::now() {
        return fail(StatusCode::UNAUTHORIZED, "the challenge expired");
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(signed.trim());
    if decoded.ok().as_deref() != Some(challenge.as_bytes()) {
        return fail(
            StatusCode::UNAUTHORIZED,
            "the signature does not match the challenge",
        );
    }
    let token = format!("ab.{}", hex::encode(rand::random::<[u8; 24]>()));
    inner
        .tokens
        .insert(token.clone(), Instant::now() + TOKEN_TTL);
    Json(json!({"token": token})).into_response()
}

async fn cises_info(
    State(sim): State<Arc<AslBelgisi>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inner = sim.lock();
    let token = header(&headers, "authorization").and_then(|a| a.strip_prefix("Bearer "));
    match token.and_then(|t| inner.tokens.get(t.trim())) {
        Some(exp) if *exp > Instant::now() => {}
        Some(_) => return fail(StatusCode::UNAUTHORIZED, "the token expired"),
        None => {
            return fail(
                StatusCode::UNAUTHORIZED,
                "a Bearer token from simpleSignIn is required",
            );
        }
    }
    let codes: Vec<String> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON array of codes",
            );
        }
    };
    if codes.is_empty() || codes.len() > MAX_CODES {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("send 1..={MAX_CODES} codes"),
        );
    }
    let out: Vec<Value> = codes
        .iter()
        .map(|raw| {
            let p = parse_code(raw, &|cis| inner.codes.contains_key(cis));
            match p
                .as_ref()
                .and_then(|p| inner.codes.get(&p.cis()).map(|r| (p, r)))
            {
                Some((p, r)) => json!({"cisInfo": {
                    "requestedCis": raw, "cis": p.cis(), "gtin": r.gtin, "status": r.status,
                    "isBlocked": r.blocked, "packageType": "UNIT",
                    "expirationDate": r.expire_date.map(|d| d.to_string()),
                }}),
                None => json!({"cisInfo": {"requestedCis": raw},
                               "errorMessage": "the code is not in the registry"}),
            }
        })
        .collect();
    Json(Value::Array(out)).into_response()
}

async fn ctl_status(State(sim): State<Arc<AslBelgisi>>, body: Bytes) -> Response {
    let ctl_err = |s: StatusCode, m: String| (s, Json(json!({"error": m}))).into_response();
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let mut inner = sim.lock();
    let Some(raw) = body.get("cis").and_then(Value::as_str) else {
        return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, "cis is required".into());
    };
    let Some(cis) = parse_code(raw, &|c| inner.codes.contains_key(c)).map(|p| p.cis()) else {
        return ctl_err(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot parse {raw:?}"),
        );
    };
    let status = match body.get("status").and_then(Value::as_str).map(parse_status) {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return ctl_err(StatusCode::UNPROCESSABLE_ENTITY, e),
        None => None,
    };
    let Some(rec) = inner.codes.get_mut(&cis) else {
        return ctl_err(
            StatusCode::NOT_FOUND,
            format!("{cis} is not in the registry"),
        );
    };
    if let Some(s) = status {
        rec.status = s;
    }
    if let Some(b) = body.get("blocked").and_then(Value::as_bool) {
        rec.blocked = b;
    }
    Json(json!({"cis": cis, "status": rec.status, "blocked": rec.blocked})).into_response()
}

async fn ctl_codes(State(sim): State<Arc<AslBelgisi>>) -> Json<Value> {
    let inner = sim.lock();
    let mut list: Vec<Value> = inner
        .codes
        .iter()
        .map(|(cis, r)| {
            json!({"cis": cis, "gtin": r.gtin, "status": r.status, "blocked": r.blocked,
                   "expire_date": r.expire_date.map(|d| d.to_string())})
        })
        .collect();
    list.sort_by(|a, b| a["cis"].as_str().cmp(&b["cis"].as_str()));
    Json(json!({"count": list.len(), "codes": list}))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn check_digit() {
        assert!(gtin_ok("04780101164394"));
        assert!(!gtin_ok("04780101164395"));
        assert!(!gtin_ok("0478010116439"));
    }

    #[test]
    fn tobacco_vector() {
        let p = parse_code("04780101164394TF&csaNNW1kK0tL", NONE).unwrap();
        assert_eq!(p.gtin, "04780101164394");
        assert_eq!(p.serial, "TF&csaN");
        assert!(p.has_tail);
        assert_eq!(p.cis(), "04780101164394TF&csaN");
    }

    #[test]
    fn datamatrix_vector() {
        let tail = "A".repeat(44);
        let raw = format!("0104780101164394215Wq&x<7\u{1d}91EE06\u{1d}92{tail}");
        let p = parse_code(&raw, NONE).unwrap();
        assert_eq!(p.gtin, "04780101164394");
        assert_eq!(p.serial, "5Wq&x<7");
        assert!(p.has_tail);
        assert_eq!(p.cis(), "047801011643945Wq&x<7");
        // The same code with GS written out, or lost, still resolves.
        let shown = raw.replace('\u{1d}', "<GS>");
        assert_eq!(parse_code(&shown, NONE).unwrap().cis(), p.cis());
        let lost = raw.replace('\u{1d}', "");
        let known = |c: &str| c == "047801011643945Wq&x<7";
        assert_eq!(parse_code(&lost, &known).unwrap().cis(), p.cis());
    }

    #[test]
    fn bare_cis_and_garbage() {
        let p = parse_code("047801011643945Wq&x<7", NONE).unwrap();
        assert_eq!(p.serial, "5Wq&x<7");
        assert!(!p.has_tail);
        assert!(parse_code("hello", NONE).is_none());
        assert!(parse_code("", NONE).is_none());
        assert!(parse_code("0104780101164394", NONE).is_none());
    }
}
