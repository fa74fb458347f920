//! Inbound hooks: `POST /hooks/<type>/<integration id>`.
//!
//! [`receive`] loads the integration (unknown, wrong type or disabled: a neutral 404), lets the
//! type's [`HookHandler`] verify the provider's authentication before anything else (a failure
//! stores and changes nothing and is answered in the provider's format), records the raw
//! delivery in the inbox deduplicated by the provider's delivery id (a duplicate is answered
//! with the stored result and not applied again), and only then handles it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use savdo_hub::Credentials;
use savdo_storage::Storage;
use savdo_storage::integrations::{HookInsert, Integration, IntegrationStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use uuid::Uuid;

use crate::vault::VaultHandle;

/// A delivery still `received` this long after it arrived is taken over by a retry (the process
/// handling it died).
const STALE_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// The provider's id of one delivery (Payme's transaction + method, Click's click_trans_id…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryId(pub String);

/// Why a delivery was refused before anything happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookReject {
    /// Missing or wrong signature, Basic auth or HMAC.
    Unauthenticated(String),
    /// Authenticated, but not a delivery we can take (no id, bad JSON).
    Malformed(String),
}

/// An answer in the provider's own format. Stored with the delivery so a duplicate gets the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// The answer reports a passing failure of ours (storage, a timeout): not stored, so the
    /// provider's retry of the delivery is handled afresh.
    #[serde(skip, default)]
    pub transient: bool,
}

impl HookReply {
    pub fn json(status: u16, body: &Value) -> Self {
        HookReply {
            status,
            content_type: "application/json".to_owned(),
            body: body.to_string(),
            transient: false,
        }
    }

    /// Mark the answer as a passing failure of ours (see [`HookReply::transient`]).
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// The same for every unknown, mismatched or disabled integration: says nothing about which.
    pub fn not_found() -> Self {
        HookReply::json(404, &json!({ "error": "not_found" }))
    }

    pub fn unavailable() -> Self {
        HookReply::json(503, &json!({ "error": "unavailable" })).transient()
    }
}

/// What `handle` gets: the verified delivery and the integration it is for.
pub struct HookContext<'a> {
    pub store: &'a Arc<dyn Storage>,
    pub integration: &'a Integration,
    pub credentials: &'a Credentials,
    pub delivery: &'a DeliveryId,
    /// The inbox row of this delivery.
    pub inbox_id: Uuid,
    pub headers: &'a HeaderMap,
    pub now: DateTime<Utc>,
}

/// One provider's inbound protocol.
#[async_trait]
pub trait HookHandler: Send + Sync {
    /// Check the provider's authentication in constant time (see [`verify_hmac_sha256`]) and
    /// name the delivery. Runs before anything is stored.
    fn verify(
        &self,
        integration: &Integration,
        credentials: &Credentials,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DeliveryId, HookReject>;

    /// The provider-format answer to a refused delivery.
    fn rejected(&self, why: &HookReject) -> HookReply;

    /// Apply a verified, first-seen delivery and answer it. Called once per delivery id.
    async fn handle(&self, ctx: &HookContext<'_>, body: &[u8]) -> HookReply;

    /// The answer while the same delivery is still being handled elsewhere (the provider retries).
    fn busy(&self) -> HookReply {
        HookReply::unavailable()
    }

    /// Request headers worth keeping with the raw delivery (never credentials).
    fn kept_headers(&self) -> &'static [&'static str] {
        &["content-type", "user-agent", "x-request-id"]
    }
}

/// Hook handlers by integration type.
#[derive(Clone, Default)]
pub struct HookRegistry {
    handlers: BTreeMap<String, Arc<dyn HookHandler>>,
}

impl std::fmt::Debug for HookRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl HookRegistry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, kind: &str, handler: Arc<dyn HookHandler>) {
        self.handlers.insert(kind.to_owned(), handler);
    }
    pub fn get(&self, kind: &str) -> Option<Arc<dyn HookHandler>> {
        self.handlers.get(kind).cloned()
    }
}

fn kept(headers: &HeaderMap, names: &[&str]) -> Value {
    let mut m = Map::new();
    for name in names {
        if savdo_hub::redact::is_secret_header(name) {
            continue;
        }
        if let Some(v) = headers.get(*name).and_then(|v| v.to_str().ok()) {
            m.insert(
                (*name).to_owned(),
                Value::String(v.chars().take(500).collect()),
            );
        }
    }
    Value::Object(m)
}

/// Take one inbound delivery from start to answer.
#[allow(clippy::too_many_arguments)]
pub async fn receive(
    store: &Arc<dyn Storage>,
    vault: &VaultHandle,
    hooks: &HookRegistry,
    kind: &str,
    integration_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> HookReply {
    let Some(handler) = hooks.get(kind) else {
        return HookReply::not_found();
    };
    let Ok(id) = Uuid::parse_str(integration_id) else {
        return HookReply::not_found();
    };
    let integration = match store.integration_for_hook(kind, id).await {
        Ok(Some(i)) if i.status != IntegrationStatus::Disabled => i,
        Ok(_) => return HookReply::not_found(),
        Err(e) => {
            tracing::error!(error = %e, "inbound hook: storage error");
            return HookReply::unavailable();
        }
    };
    let credentials = match vault
        .open_credentials(
            integration.tenant_id,
            integration.id,
            &integration.credentials_sealed,
        )
        .map_err(|e| e.to_string())
        .and_then(|v| Credentials::from_value(v).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(integration = %id, error = %e, "inbound hook: credentials cannot be opened");
            return HookReply::unavailable();
        }
    };
    let delivery = match handler.verify(&integration, &credentials, headers, body) {
        Ok(d) => d,
        Err(why) => {
            // Never the body or the headers: they may carry a forged or leaked signature.
            tracing::warn!(integration = %id, kind, reason = ?why, "inbound hook refused");
            return handler.rejected(&why);
        }
    };
    let inbox_id = match store
        .insert_hook(
            integration.tenant_id,
            integration.id,
            &delivery.0,
            body,
            &kept(headers, handler.kept_headers()),
            now,
        )
        .await
    {
        Ok(HookInsert::New(inbox_id)) => inbox_id,
        Ok(HookInsert::Duplicate(d)) => {
            if let Some(r) = d
                .result
                .and_then(|r| serde_json::from_value::<HookReply>(r).ok())
            {
                tracing::info!(integration = %id, delivery = %delivery.0, "duplicate hook delivery answered from the inbox");
                return r;
            }
            match store.retake_hook(d.id, now - STALE_AFTER, now).await {
                Ok(true) => d.id,
                Ok(false) => return handler.busy(),
                Err(e) => {
                    tracing::error!(error = %e, "inbound hook: storage error");
                    return HookReply::unavailable();
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "inbound hook: storage error");
            return HookReply::unavailable();
        }
    };
    let ctx = HookContext {
        store,
        integration: &integration,
        credentials: &credentials,
        delivery: &delivery,
        inbox_id,
        headers,
        now,
    };
    let reply = handler.handle(&ctx, body).await;
    // A passing failure (our storage, a timeout): the provider will retry, and that retry must
    // be handled afresh, not answered with the stored failure.
    let outcome = if reply.transient || reply.status >= 500 {
        store.release_hook(inbox_id).await
    } else {
        let stored = serde_json::to_value(&reply).unwrap_or(Value::Null);
        store.finish_hook(inbox_id, &stored).await
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "inbound hook: could not store the result");
    }
    reply
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Whether `signature` is the HMAC-SHA256 of `message` under `key`, compared in constant time.
pub fn verify_hmac_sha256(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.verify_slice(signature).is_ok()
}

/// [`verify_hmac_sha256`] with the signature in hex (either case); not hex is a mismatch.
pub fn verify_hmac_sha256_hex(key: &[u8], message: &[u8], signature_hex: &str) -> bool {
    match hex::decode(signature_hex.trim()) {
        Ok(sig) => verify_hmac_sha256(key, message, &sig),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_round_trip() {
        let sig = hmac_sha256(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(sig),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let text = b"The quick brown fox jumps over the lazy dog";
        assert!(verify_hmac_sha256(b"key", text, &sig));
        assert!(verify_hmac_sha256_hex(
            b"key",
            text,
            &hex::encode(sig).to_uppercase()
        ));
        assert!(!verify_hmac_sha256(b"key", b"other", &sig));
        assert!(!verify_hmac_sha256(b"key", text, &sig[..31]));
        assert!(!verify_hmac_sha256_hex(b"key", text, "zz"));
    }
}
