//! Standard Webhooks signatures: `v1,<base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))>`,
//! where the key is the base64-decoded part of a `whsec_<base64>` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A decoded signing key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl Secret {
    /// Parse `whsec_<base64>` (the prefix is optional, as in the reference libraries).
    pub fn parse(s: &str) -> Option<Secret> {
        let b64 = s.strip_prefix(PREFIX).unwrap_or(s);
        let key = STANDARD.decode(b64).ok()?;
        (!key.is_empty()).then_some(Secret(key))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

/// A new secret: `whsec_` and the base64 of 32 random bytes from the OS generator.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// One signature, `v1,<base64>`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.key())
        .expect("HMAC accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret, space-separated (during a
/// rotation both the new and the previous secret sign). Secrets that do not parse are skipped.
pub fn signature_header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| Secret::parse(s))
        .map(|k| sign(&k, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_vector() {
        let secret = Secret::parse("whsec_c2F2ZG8tdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==").unwrap();
        let sig = sign(
            &secret,
            "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            1674087231,
            br#"{"type":"receipt.created"}"#,
        );
        assert_eq!(sig, "v1,S7IYsl6mO8+9yNR3Xi7P+9BJFVzbmtH5A0rl+zQJX8U=");
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(Secret::parse(&s).unwrap().key().len(), 32);
        assert_ne!(s, generate_secret());
        assert_eq!(format!("{:?}", Secret::parse(&s).unwrap()), "Secret(****)");
    }

    #[test]
    fn header_has_one_signature_per_secret() {
        let (a, b) = (generate_secret(), generate_secret());
        let h = signature_header(&[&a, &b], "id", 1, b"{}");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&Secret::parse(&a).unwrap(), "id", 1, b"{}"));
        assert_eq!(parts[1], sign(&Secret::parse(&b).unwrap(), "id", 1, b"{}"));
    }
}
