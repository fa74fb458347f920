//! Scrubbing secrets out of what the integration log keeps.
//!
//! Three layers, because each alone misses something: sensitive JSON/form keys are replaced
//! whatever their value, sensitive headers are masked, and finally every known secret value of
//! the integration is replaced wherever it still appears (an echoed token, a key inside a URL).

use serde_json::Value;

use crate::secret::{Secret, mask};

pub const REDACTED: &str = "****";
/// What the log keeps of one body.
pub const MAX_LOGGED_BODY: usize = 4096;
/// Shorter values would be replaced all over unrelated text (a secret "1" would eat digits).
const MIN_SCRUB_LEN: usize = 4;

/// Keys whose value is a secret, compared lowercased with `_` and `-` removed.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "secret",
    "key",
    "token",
    "sig",
    "sign",
    "signature",
    "signstring",
    "authorization",
    "auth",
    "xauth",
    "apikey",
    "xapikey",
    "clientsecret",
    "secretkey",
    "apisecret",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "webhooksecret",
    "privatekey",
    "cookie",
    "setcookie",
];
/// Key endings that are secrets too (`merchant_secret`, `session_token`, `partner_api_key`).
const SECRET_SUFFIXES: &[&str] = &["secret", "token", "password", "apikey", "signature"];

fn normalize(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a JSON, form or query key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = normalize(key);
    SECRET_KEYS.contains(&k.as_str()) || SECRET_SUFFIXES.iter().any(|s| k.ends_with(s))
}

/// Whether a header carries credentials.
pub fn is_secret_header(name: &str) -> bool {
    let n = normalize(name);
    matches!(
        n.as_str(),
        "authorization"
            | "proxyauthorization"
            | "xapikey"
            | "apikey"
            | "auth"
            | "xauth"
            | "cookie"
            | "setcookie"
    ) || SECRET_SUFFIXES.iter().any(|s| n.ends_with(s))
}

/// Replace the values of secret keys anywhere in a JSON document.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        // A JSON document inside a string (an echoed request, an envelope's payload).
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
            if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                redact_json(&mut inner);
                if let Ok(text) = serde_json::to_string(&inner) {
                    *s = text;
                }
            }
        }
        _ => {}
    }
}

/// Replace every occurrence of a known secret (and its URL-encoded form).
pub fn scrub(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        let raw = s.expose();
        if raw.len() < MIN_SCRUB_LEN {
            continue;
        }
        if out.contains(raw) {
            out = out.replace(raw, REDACTED);
        }
        let encoded: String = serde_urlencoded::to_string([("", raw)])
            .unwrap_or_default()
            .trim_start_matches('=')
            .to_owned();
        if encoded != raw && encoded.len() >= MIN_SCRUB_LEN && out.contains(&encoded) {
            out = out.replace(&encoded, REDACTED);
        }
    }
    out
}

/// A header value for the log.
pub fn redact_header(name: &str, value: &str, secrets: &[Secret]) -> String {
    if is_secret_header(name) {
        mask(value)
    } else {
        scrub(value, secrets)
    }
}

fn redact_pairs(text: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text).ok()?;
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| {
            if is_secret_key(&k) {
                (k, REDACTED.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    serde_urlencoded::to_string(&pairs).ok()
}

/// A URL for the log: query values of secret keys replaced, known secrets scrubbed (a token in
/// a path segment included).
pub fn redact_url(url: &str, secrets: &[Secret]) -> String {
    let redacted = match url.split_once('?') {
        Some((base, query)) => match redact_pairs(query) {
            Some(q) => format!("{base}?{q}"),
            None => format!("{base}?{REDACTED}"),
        },
        None => url.to_owned(),
    };
    scrub(&redacted, secrets)
}

/// A body for the log: redacted as JSON or a form when it parses as one, scrubbed of known
/// secrets, truncated to [`MAX_LOGGED_BODY`] bytes.
pub fn redact_body(body: &[u8], content_type: Option<&str>, secrets: &[Secret]) -> String {
    if body.is_empty() {
        return String::new();
    }
    // Scrub before parsing too: decoding can change how a secret is spelled ('+' in a form).
    let text = scrub(&String::from_utf8_lossy(body), secrets);
    let ct = content_type.unwrap_or_default().to_ascii_lowercase();
    let structured = if let Ok(mut v) = serde_json::from_str::<Value>(&text) {
        redact_json(&mut v);
        serde_json::to_string(&v).ok()
    } else if ct.contains("x-www-form-urlencoded") {
        redact_pairs(&text)
    } else {
        None
    };
    let scrubbed = scrub(structured.as_deref().unwrap_or(&text), secrets);
    truncate(scrubbed, MAX_LOGGED_BODY)
}

/// Cut to at most `max` bytes on a character boundary, saying how much was dropped.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("…[{dropped} more bytes]"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys() {
        let mut v = serde_json::json!({
            "api_key": "abc", "Client-Secret": "s", "items": [{"token": "t", "name": "Non"}],
            "access_token": "x", "token_url": "https://a/oauth/token", "sign_string": "md5",
            "amount": 100, "password": null, "echo": "{\"secret_key\":\"zz\"}"
        });
        redact_json(&mut v);
        assert_eq!(v["api_key"], "****");
        assert_eq!(v["Client-Secret"], "****");
        assert_eq!(v["items"][0]["token"], "****");
        assert_eq!(v["items"][0]["name"], "Non");
        assert_eq!(v["access_token"], "****");
        assert_eq!(v["token_url"], "https://a/oauth/token");
        assert_eq!(v["sign_string"], "****");
        assert_eq!(v["amount"], 100);
        assert_eq!(v["echo"], "{\"secret_key\":\"****\"}");
    }

    #[test]
    fn urls_forms_and_known_values() {
        let secrets = [Secret::new("s3cr3t/+value")];
        let u = redact_url(
            "https://h/p/s3cr3t%2F%2Bvalue?api_key=abc&sig=0f&page=2",
            &secrets,
        );
        assert_eq!(u, "https://h/p/****?api_key=****&sig=****&page=2");
        let b = redact_body(
            b"service_id=1&secret_key=zz&note=s3cr3t/+value",
            Some("application/x-www-form-urlencoded"),
            &secrets,
        );
        assert!(!b.contains("zz") && !b.contains("s3cr3t"), "{b}");
        assert!(b.contains("service_id=1"));
        let t = redact_body(b"plain s3cr3t/+value text", Some("text/plain"), &secrets);
        assert_eq!(t, "plain **** text");
    }

    #[test]
    fn headers_and_truncation() {
        assert_eq!(
            redact_header("Authorization", "Bearer abcdefghijklmnop", &[]),
            "****mnop"
        );
        assert_eq!(redact_header("X-API-KEY", "short", &[]), "****");
        assert_eq!(redact_header("Client-Id", "42", &[]), "42");
        let long = "я".repeat(3000);
        let t = truncate(long, MAX_LOGGED_BODY);
        assert!(t.len() < MAX_LOGGED_BODY + 40);
        assert!(t.ends_with("more bytes]"));
    }
}
