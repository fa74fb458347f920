//! From "this tenant's integration of this type" to a ready connector: find it, open its
//! credentials in the vault, build it through the registry on the shared HTTP stack, and keep
//! it while the integration is unchanged (so breakers and rate limits live across calls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use savdo_hub::{Connector, ConnectorError, HttpHub, Registry};
use savdo_storage::Storage;
use savdo_storage::integrations::IntegrationStatus;
use uuid::Uuid;

use crate::VaultHandle;

type CacheKey = (Uuid, DateTime<Utc>);
type Cache = HashMap<Uuid, (CacheKey, Arc<dyn Connector>)>;

pub struct ConnectorResolver {
    store: Arc<dyn Storage>,
    vault: Arc<VaultHandle>,
    registry: Arc<Registry>,
    hub: HttpHub,
    cache: Mutex<Cache>,
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
            vault,
            registry,
            hub,
            cache: Mutex::new(HashMap::new()),
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
        let key = (i.id, i.updated_at);
        if let Some((k, c)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i.id)
            && *k == key
        {
            return Ok(Some(c.clone()));
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
            .insert(i.id, (key, c.clone()));
        Ok(Some(c))
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
