//! What every handler shares.

use std::sync::Arc;

use savdo_domain::clock::{Clock, SystemClock};
use savdo_hub::MarkingCheck;
use savdo_storage::Storage;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    /// Allow webhook URLs that resolve to loopback/private addresses (`SAVDO_WEBHOOKS_ALLOW_PRIVATE=1`).
    pub webhooks_allow_private: bool,
    /// The online marking check (Asl Belgisi) before a sale of marked goods; `None` skips it.
    pub marking: Option<Arc<dyn MarkingCheck>>,
    /// The longest a sale waits for the online marking check before the offline policy decides.
    pub marking_budget: std::time::Duration,
    /// The credential vault: integration credentials are sealed and opened here only.
    pub vault: Arc<savdo_integrations::VaultHandle>,
    /// Integration types (the catalog) and the factories of their connectors.
    pub registry: Arc<savdo_hub::Registry>,
    /// The outbound stack (breakers, rate limits, exchange log); `None` leaves connections untested.
    pub hub: Option<savdo_hub::HttpHub>,
    /// Inbound hook handlers by integration type.
    pub hooks: Arc<savdo_integrations::HookRegistry>,
    /// Sync handlers by (integration type, what).
    pub sync: Arc<savdo_integrations::SyncRegistry>,
    /// Client of the tills' fiscal gateways (fiscal shifts opened and closed with ours).
    pub fiscal: savdo_connectors::fiscal_gateway::FiscalClient,
    /// The tenants' loyalty (JOWi Club) connectors, built on `hub` on first use.
    pub loyalty_resolver: Arc<std::sync::OnceLock<Arc<savdo_integrations::ConnectorResolver>>>,
    /// Tokens verified in the last second (`Auth`), forgotten when deleted here.
    pub tokens: Arc<crate::token_cache::TokenCache>,
}

impl AppState {
    pub fn new(store: Arc<dyn Storage>, vault: Arc<savdo_integrations::VaultHandle>) -> Self {
        AppState {
            store,
            clock: Arc::new(SystemClock),
            webhooks_allow_private: false,
            marking: None,
            marking_budget: std::time::Duration::from_millis(1500),
            vault,
            registry: Arc::new(savdo_hub::Registry::builtin()),
            hub: None,
            hooks: Arc::new(savdo_integrations::HookRegistry::new()),
            sync: Arc::new(savdo_integrations::SyncRegistry::new()),
            fiscal: savdo_connectors::fiscal_gateway::FiscalClient::new(),
            loyalty_resolver: Arc::default(),
            tokens: Arc::default(),
        }
    }
}
