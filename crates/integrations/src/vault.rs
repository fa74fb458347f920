//! The vault as running processes hold it: reloaded when another process (`savdo vault rotate`)
//! changed the keyring, so values sealed under a new key decrypt here without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use savdo_hub::vault::{KEY_FILE_NAME, KeySource};
use savdo_hub::{Vault, VaultError, aad_for};
use serde_json::Value;
use uuid::Uuid;

pub struct VaultHandle {
    current: RwLock<Arc<Vault>>,
    /// Where the keyring came from, to reload it (`None`: an in-memory vault).
    data_dir: Option<PathBuf>,
    /// The key file's modification time when last loaded.
    loaded: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for VaultHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VaultHandle").field(&self.current()).finish()
    }
}

impl VaultHandle {
    /// A fixed keyring (tests, an in-memory vault).
    pub fn new(vault: Vault) -> Self {
        VaultHandle {
            current: RwLock::new(Arc::new(vault)),
            data_dir: None,
            loaded: Mutex::new(None),
        }
    }

    /// `SAVDO_MASTER_KEY` or the key file in `data_dir` (created on first start), reloaded when
    /// it changes.
    pub fn open(data_dir: &Path) -> Result<Self, VaultError> {
        let vault = Vault::open(data_dir)?;
        let from_file = vault.source() == KeySource::File;
        let h = VaultHandle {
            current: RwLock::new(Arc::new(vault)),
            data_dir: Some(data_dir.to_owned()),
            loaded: Mutex::new(None),
        };
        if from_file {
            *h.loaded.lock().unwrap_or_else(|e| e.into_inner()) = h.key_file_mtime();
        }
        Ok(h)
    }

    pub fn current(&self) -> Arc<Vault> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Use another keyring from now on (after rotating in this process).
    pub fn replace(&self, vault: Vault) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(vault);
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = self.key_file_mtime();
    }

    fn key_file_mtime(&self) -> Option<SystemTime> {
        let dir = self.data_dir.as_ref()?;
        std::fs::metadata(dir.join(KEY_FILE_NAME))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Load the keyring again from where it came from.
    pub fn reload(&self) -> Result<(), VaultError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        let vault = Vault::open(dir)?;
        self.replace(vault);
        tracing::info!(
            key_id = self.current().active_key_id(),
            "vault keyring reloaded"
        );
        Ok(())
    }

    /// Reload when the key file changed since it was loaded (a rotation elsewhere).
    fn refresh(&self) {
        let Some(seen) = *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        if self.key_file_mtime().is_some_and(|now| now != seen)
            && let Err(e) = self.reload()
        {
            tracing::warn!(error = %e, "vault keyring changed but could not be reloaded");
        }
    }

    /// Seal an integration's credentials document, bound to its tenant and id.
    pub fn seal_credentials(
        &self,
        tenant: Uuid,
        id: Uuid,
        credentials: &Value,
    ) -> Result<String, VaultError> {
        self.refresh();
        self.current()
            .encrypt_json(credentials, &aad_for(&tenant.to_string(), &id.to_string()))
    }

    /// Open an integration's credentials; an unknown key id reloads the keyring once.
    pub fn open_credentials(
        &self,
        tenant: Uuid,
        id: Uuid,
        sealed: &str,
    ) -> Result<Value, VaultError> {
        let aad = aad_for(&tenant.to_string(), &id.to_string());
        match self.current().decrypt_json(sealed, &aad) {
            Err(VaultError::UnknownKey(_)) if self.data_dir.is_some() => {
                self.reload()?;
                self.current().decrypt_json(sealed, &aad)
            }
            other => other,
        }
    }

    /// Seal a short text secret under `aad` (the caller's binding to its owner, distinct from
    /// integrations': e.g. a webhook's signing secret).
    pub fn seal_text(&self, aad: &[u8], text: &str) -> Result<String, VaultError> {
        self.refresh();
        self.current().encrypt_bytes(text.as_bytes(), aad)
    }

    /// Open a text sealed by [`seal_text`](Self::seal_text); an unknown key id reloads the
    /// keyring once.
    pub fn open_text(&self, aad: &[u8], sealed: &str) -> Result<savdo_hub::Secret, VaultError> {
        match self.current().decrypt(sealed, aad) {
            Err(VaultError::UnknownKey(_)) if self.data_dir.is_some() => {
                self.reload()?;
                self.current().decrypt(sealed, aad)
            }
            other => other,
        }
    }
}
