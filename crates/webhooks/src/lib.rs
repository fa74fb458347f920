//! Outbound webhooks, following Standard Webhooks: `whsec_` secrets, `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers, CloudEvents JSON bodies.
//!
//! * [`Dispatcher`]: a bus consumer (`webhooks`) that turns each event into one delivery per
//!   matching, enabled subscription of its tenant (idempotent per (webhook, event)).
//! * [`DeliveryWorker`]: sends due deliveries with a Svix-like retry schedule, refuses private
//!   targets (checked again at delivery time, and the checked address is the one connected to),
//!   and disables endpoints failing for 5 days.
//!
//! The signing secret is a credential: sealed by the credential vault at rest ([`secrets`]),
//! never logged and never put in an event.

pub mod dispatcher;
pub mod events;
pub mod safety;
pub mod secrets;
pub mod signing;
pub mod worker;

pub use dispatcher::Dispatcher;
pub use events::{KNOWN_EVENT_TYPES, pattern_matches, subscribed, validate_pattern};
pub use safety::{UrlError, check_url, is_forbidden_ip, resolve_checked, validate_url};
pub use secrets::{ResealReport, reseal_all, seal_at_start};
pub use signing::{Secret, generate_secret, sign, signature_header};
pub use worker::{DeliveryWorker, RETRY_SCHEDULE, WorkerConfig, next_delay};

/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// Install rustls' ring provider (once) before any client is built.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
