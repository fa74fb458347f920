//! From "this tenant's integration of this type" to a ready connector: find it, open its
//! credentials in the vault, build it through the registry on the shared HTTP stack, and keep
//! it while the integration is unchanged (so breakers and rate limits live across calls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use savdo_hub::{Connector, ConnectorError, HttpHub, Registry};
use savdo_storage::Storage;
use savdo_storage::integrations::{Integration, IntegrationStatus};
use uuid::Uuid;

use crate::VaultHandle;

/// Built connectors by integration id, with the `updated_at` they were built for.
type Cache = HashMap<Uuid, (DateTime<Utc>, Arc<dyn Connector>)>;

/// Connectors of integrations built through the registry on the shared HTTP stack, kept while
/// the integration is unchanged (so its rate limit and breaker live across calls).
pub struct ConnectorCache {
    vault: Arc<VaultHandle>,
    registry: Arc<Registry>,
    hub: HttpHub,
    cache: Mutex<Cache>,
}

impl ConnectorCache {
    pub fn new(vault: Arc<VaultHandle>, registry: Arc<Registry>, hub: HttpHub) -> Self {
        ConnectorCache {
            vault,
            registry,
            hub,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The connector of `i`: the one built before if `i` has not changed since, else a new one
    /// with its credentials opened in the vault.
    pub fn get(&self, i: &Integration) -> Result<Arc<dyn Connector>, ConnectorError> {
        if let Some((at, c)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i.id)
            && *at == i.updated_at
        {
            return Ok(c.clone());
        }
        let creds = self
            .vault
            .open_credentials(i.tenant_id, i.id, &i.credentials_sealed)
            .map_err(|e| ConnectorError::config(format!("cannot open the credentials: {e}")))?;
        let c = self.registry.build(
            &self.hub,
            &i.tenant_id.to_string(),
            &i.id.to_string(),
            &i.kind,
            &creds,
            &i.settings,
        )?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i.id, (i.updated_at, c.clone()));
        Ok(c)
    }
}

pub struct ConnectorResolver {
    store: Arc<dyn Storage>,
    registry: Arc<Registry>,
    connectors: ConnectorCache,
}

impl ConnectorResolver {
    pub fn new(
        store: Arc<dyn Storage>,
        vault: Arc<VaultHandle>,
        registry: Arc<Registry>,
        hub: HttpHub,
    ) -> Self {
        ConnectorResolver {
            store,
            connectors: ConnectorCache::new(vault, registry.clone(), hub),
            registry,
        }
    }

    /// The tenant's first enabled integration of `kind` as a connector; `Ok(None)` when the
    /// tenant has none (or none whose type has a connector).
    pub async fn for_tenant(
        &self,
        tenant: Uuid,
        kind: &str,
    ) -> Result<Option<Arc<dyn Connector>>, ConnectorError> {
        let list =
            self.store.list_integrations(tenant).await.map_err(|e| {
                ConnectorError::unavailable(format!("integrations unavailable: {e}"))
            })?;
        let Some(i) = list
            .into_iter()
            .find(|i| i.kind == kind && i.status != IntegrationStatus::Disabled)
        else {
            return Ok(None);
        };
        if !self.registry.has_factory(kind) {
            return Ok(None);
        }
        self.connectors.get(&i).map(Some)
    }
}

/// The online marking check for the till's receipt path: the tenant's `aslbelgisi` integration,
/// if it has one.
pub struct TenantMarkingCheck {
    resolver: Arc<ConnectorResolver>,
}

impl TenantMarkingCheck {
    pub fn new(resolver: Arc<ConnectorResolver>) -> Self {
        TenantMarkingCheck { resolver }
    }
}

#[async_trait::async_trait]
impl savdo_hub::MarkingCheck for TenantMarkingCheck {
    async fn check(
        &self,
        tenant: Uuid,
        codes: &[String],
    ) -> Result<Option<Vec<savdo_hub::connector::CodeCheck>>, ConnectorError> {
        let Some(c) = self.resolver.for_tenant(tenant, "aslbelgisi").await? else {
            return Ok(None);
        };
        let Some(m) = c.as_marking() else {
            return Ok(None);
        };
        m.check_codes(codes).await.map(Some)
    }
}
