//! Health checks, masking and re-sealing after a key rotation.

use std::sync::Arc;
use std::time::Instant;

use savdo_hub::{HttpHub, Registry, Vault, aad_for, mask};
use savdo_storage::Storage;
use savdo_storage::integrations::Integration;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::vault::VaultHandle;

/// The health message of an integration whose type has no connector yet.
pub const UNTESTED: &str = "untested: connector not available";

/// Every credential value masked (`"****abcd"` at most): what answers show.
pub fn mask_credentials(credentials: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = credentials.as_object() {
        for (k, v) in m {
            let shown = match v {
                Value::Null => Value::Null,
                Value::String(s) => Value::String(mask(s)),
                _ => Value::String("****".to_owned()),
            };
            out.insert(k.clone(), shown);
        }
    }
    Value::Object(out)
}

/// Run the connector's `test_connection` (when its type has a factory and a hub is given) and
/// store the result as the integration's health. Without a connector the health says
/// [`UNTESTED`] and the status is left alone.
pub async fn check_health(
    store: &Arc<dyn Storage>,
    vault: &VaultHandle,
    registry: &Registry,
    hub: Option<&HttpHub>,
    integration: &Integration,
) -> savdo_storage::Result<Integration> {
    let now = chrono::Utc::now();
    let hub = match hub {
        Some(h) if registry.has_factory(&integration.kind) => h,
        _ => {
            let health = json!({ "status": "untested", "checked_at": now, "message": UNTESTED });
            let failing =
                integration.status == savdo_storage::integrations::IntegrationStatus::Failing;
            return store
                .record_health(integration.tenant_id, integration.id, &health, failing)
                .await;
        }
    };
    let started = Instant::now();
    let outcome = match vault.open_credentials(
        integration.tenant_id,
        integration.id,
        &integration.credentials_sealed,
    ) {
        Err(e) => Err(format!("credentials cannot be opened: {e}")),
        Ok(creds) => match registry.build(
            hub,
            &integration.tenant_id.to_string(),
            &integration.id.to_string(),
            &integration.kind,
            &creds,
            &integration.settings,
        ) {
            Err(e) => Err(e.to_string()),
            Ok(connector) => connector.test_connection().await.map_err(|e| e.to_string()),
        },
    };
    let (health, failing) = match outcome {
        Ok(h) => {
            let down = h.status == savdo_hub::HealthStatus::Down;
            (serde_json::to_value(&h).unwrap_or(Value::Null), down)
        }
        Err(message) => (
            json!({
                "status": "down",
                "checked_at": now,
                "latency_ms": started.elapsed().as_millis() as u64,
                "message": message,
            }),
            true,
        ),
    };
    if failing {
        tracing::warn!(integration = %integration.id, kind = %integration.kind, "integration health check failed");
    }
    store
        .record_health(integration.tenant_id, integration.id, &health, failing)
        .await
}

/// What re-sealing did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotateReport {
    pub active_key: String,
    pub checked: u64,
    pub reencrypted: u64,
    /// Changed by someone else meanwhile (sealed under the active key by them).
    pub skipped: u64,
    /// Could not be decrypted with any key of the ring: integration ids.
    pub failed: Vec<Uuid>,
}

/// Re-seal every integration's credentials that are not under the vault's active key, in
/// batches of `batch`. Old keys stay in the ring, so servers keep working throughout.
pub async fn reencrypt_all(
    store: &Arc<dyn Storage>,
    vault: &Vault,
    batch: u32,
) -> savdo_storage::Result<RotateReport> {
    let mut report = RotateReport {
        active_key: vault.active_key_id().to_owned(),
        ..RotateReport::default()
    };
    let mut after = None;
    loop {
        let rows = store.sealed_credentials_batch(after, batch).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some(last.1);
        for (tenant, id, sealed) in rows {
            report.checked += 1;
            if !vault.needs_reencrypt(&sealed) {
                continue;
            }
            let aad = aad_for(&tenant.to_string(), &id.to_string());
            match vault.reencrypt(&sealed, &aad) {
                Ok(new) => {
                    if store
                        .swap_sealed_credentials(tenant, id, &sealed, &new)
                        .await?
                    {
                        report.reencrypted += 1;
                    } else {
                        report.skipped += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(integration = %id, error = %e, "credentials could not be re-sealed");
                    report.failed.push(id);
                }
            }
        }
    }
    Ok(report)
}
