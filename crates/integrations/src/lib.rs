//! The integration hub's services over storage: credentials sealed by the vault (and re-sealed
//! on rotation), health checks through the connector registry, the exchange-log sink, sync jobs
//! that survive restarts, and inbound hooks verified before anything else.
//!
//! The API and the workers call these; connectors plug in through the hub's registry
//! (factories), [`jobs::SyncRegistry`] (sync handlers) and [`hooks::HookRegistry`] (hook
//! handlers).

pub mod hooks;
pub mod jobs;
pub mod resolver;
pub mod service;
pub mod sink;
pub mod vault;

pub use hooks::{
    DeliveryId, HookContext, HookHandler, HookRegistry, HookReject, HookReply, hmac_sha256,
    verify_hmac_sha256, verify_hmac_sha256_hex,
};
pub use jobs::{JobRunner, RunnerConfig, Step, SyncContext, SyncHandler, SyncRegistry};
pub use resolver::{ConnectorCache, ConnectorResolver, TenantMarkingCheck};
pub use service::{RotateReport, UNTESTED, check_health, mask_credentials, reencrypt_all};
pub use sink::StorageSink;
pub use vault::VaultHandle;
