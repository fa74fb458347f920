//! Signing secrets at rest: sealed by the credential vault (AES-256-GCM, key id stored with each
//! value), bound to their tenant and webhook so a sealed value copied to another row does not
//! open. Storage keeps the sealed value and the last four characters for the mask.
//!
//! Rows written before sealing existed hold the secret as issued (`whsec_…`). `savdo serve`,
//! `savdo worker` and `savdo demo` seal them at start, before serving or delivering
//! ([`reseal_all`]); `savdo vault rotate` runs the same pass, which also re-seals values under
//! older keys with the active one. Until a row is sealed the delivery worker still signs with it.

use std::sync::Arc;

use savdo_hub::{Secret, Vault, VaultError};
use savdo_integrations::VaultHandle;
use savdo_storage::Storage;
use savdo_storage::webhooks::{SealedSecret, StoredSecrets, is_plaintext_secret, secret_hint};
use uuid::Uuid;

use crate::signing::generate_secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is sealed but this process has no credential vault")]
    NoVault,
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// The associated data binding a sealed secret to its webhook (never an integration's).
pub fn aad(tenant: Uuid, webhook: Uuid) -> Vec<u8> {
    format!("webhook:{tenant}:{webhook}").into_bytes()
}

/// Seal `secret` for storage.
pub fn seal(
    vault: &VaultHandle,
    tenant: Uuid,
    webhook: Uuid,
    secret: &str,
) -> Result<SealedSecret, VaultError> {
    Ok(SealedSecret {
        sealed: vault.seal_text(&aad(tenant, webhook), secret)?,
        hint: secret_hint(secret),
    })
}

/// A fresh secret for a webhook: the value in full (shown once) and what storage keeps.
pub fn issue(
    vault: &VaultHandle,
    tenant: Uuid,
    webhook: Uuid,
) -> Result<(Secret, SealedSecret), VaultError> {
    let secret = Secret::new(generate_secret());
    let sealed = seal(vault, tenant, webhook, secret.expose())?;
    Ok((secret, sealed))
}

/// Open a stored secret; a row not sealed yet gives its value as stored.
pub fn open(
    vault: Option<&VaultHandle>,
    tenant: Uuid,
    webhook: Uuid,
    stored: &str,
) -> Result<Secret, SecretError> {
    if is_plaintext_secret(stored) {
        return Ok(Secret::new(stored));
    }
    let vault = vault.ok_or(SecretError::NoVault)?;
    Ok(vault.open_text(&aad(tenant, webhook), stored)?)
}

/// What a re-sealing pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResealReport {
    pub active_key: String,
    pub checked: u64,
    /// Rows whose secrets were sealed (from plaintext) or re-sealed under the active key.
    pub resealed: u64,
    /// Changed meanwhile (a rotation of the secret): sealed under the active key by it.
    pub skipped: u64,
    /// Could not be opened with any key of the ring: webhook ids.
    pub failed: Vec<Uuid>,
}

/// The value to store instead of `stored`, when it is plaintext or under an older key.
fn reseal_one(vault: &Vault, aad: &[u8], stored: &str) -> Result<Option<String>, VaultError> {
    if is_plaintext_secret(stored) {
        return vault.encrypt_bytes(stored.as_bytes(), aad).map(Some);
    }
    if vault.needs_reencrypt(stored) {
        return vault.reencrypt(stored, aad).map(Some);
    }
    Ok(None)
}

/// Seal every webhook secret still stored as issued and re-seal those under an older key with
/// the vault's active key, `batch` rows at a time. Values never change, so deliveries keep
/// verifying throughout; old keys stay in the ring until retired.
pub async fn reseal_all(
    store: &Arc<dyn Storage>,
    vault: &Vault,
    batch: u32,
) -> savdo_storage::Result<ResealReport> {
    let mut report = ResealReport {
        active_key: vault.active_key_id().to_owned(),
        ..ResealReport::default()
    };
    let mut after = None;
    loop {
        let rows = store.webhook_secrets_batch(after, batch).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = Some(last.id);
        for row in rows {
            report.checked += 1;
            match reseal_row(vault, &row) {
                Ok(None) => {}
                Ok(Some((secret, prev, hint))) => {
                    let prev = prev.as_deref().or(row.prev_secret.as_deref());
                    if store
                        .swap_webhook_secrets(&row, &secret, prev, hint.as_deref())
                        .await?
                    {
                        report.resealed += 1;
                    } else {
                        report.skipped += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(webhook = %row.id, error = %e, "webhook secret could not be re-sealed");
                    report.failed.push(row.id);
                }
            }
        }
    }
    Ok(report)
}

type Resealed = (String, Option<String>, Option<String>);

fn reseal_row(vault: &Vault, row: &StoredSecrets) -> Result<Option<Resealed>, VaultError> {
    let aad = aad(row.tenant_id, row.id);
    let current = reseal_one(vault, &aad, &row.secret)?;
    let prev = match &row.prev_secret {
        Some(p) => reseal_one(vault, &aad, p)?,
        None => None,
    };
    if current.is_none() && prev.is_none() {
        return Ok(None);
    }
    // The hint of a row from before sealing, in case the migration could not take it.
    let hint = is_plaintext_secret(&row.secret).then(|| secret_hint(&row.secret));
    Ok(Some((
        current.unwrap_or_else(|| row.secret.clone()),
        prev,
        hint,
    )))
}

/// The start-up pass of `serve`, `worker` and `demo`: rows from before sealing get sealed.
pub async fn seal_at_start(
    store: &Arc<dyn Storage>,
    vault: &VaultHandle,
) -> savdo_storage::Result<ResealReport> {
    let report = reseal_all(store, &vault.current(), 100).await?;
    if report.resealed > 0 || !report.failed.is_empty() {
        tracing::info!(
            resealed = report.resealed,
            failed = report.failed.len(),
            "webhook signing secrets sealed with the credential vault"
        );
    }
    Ok(report)
}
