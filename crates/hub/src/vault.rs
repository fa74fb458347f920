//! Credential vault: AES-256-GCM under a master keyring.
//!
//! A ciphertext reads `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id lets keys
//! rotate without downtime: [`Vault::rotate`] adds a new active key and keeps the old ones for
//! decryption, and [`Vault::reencrypt`] moves a stored value to the active key at leisure.
//!
//! Every encryption takes associated data (see [`aad_for`]) that binds the ciphertext to its
//! owner, so a value copied into another tenant's or integration's row does not decrypt.
//!
//! The keyring comes from `SAVDO_MASTER_KEY` (base64 of 32 bytes; a comma-separated list puts
//! the active key first and older keys after it) or from a key file in the data directory,
//! created with mode 0600 on first start. Errors never carry key or plaintext material.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::Secret;

pub const MASTER_KEY_ENV: &str = "SAVDO_MASTER_KEY";
/// Name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "vault.keys";

const FORMAT: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Prefix of the associated data actually authenticated: the caller's AAD is appended, so a
/// ciphertext made by another program with the same key and AAD does not decrypt here.
const AAD_DOMAIN: &[u8] = b"savdo-vault/v1\0";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{MASTER_KEY_ENV} must be base64 of exactly 32 bytes ({0})")]
    BadMasterKey(&'static str),
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("not a vault ciphertext")]
    Malformed,
    #[error("unknown key id {0}: the keyring no longer holds the key this value was sealed with")]
    UnknownKey(String),
    /// Wrong key, wrong associated data, or the value was altered: deliberately one error.
    #[error("decryption failed: wrong key or owner, or the value was altered")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
    #[error("decrypted value is not the expected JSON document")]
    NotJson,
    #[error("the operating system's random number generator failed")]
    Rng,
    #[error("the keyring comes from {MASTER_KEY_ENV}: rotate by prepending a new key to it")]
    ReadOnlyKeyring,
}

/// The associated data that binds a stored credential to its row.
pub fn aad_for(tenant_id: &str, integration_id: &str) -> Vec<u8> {
    format!("integration:{tenant_id}:{integration_id}").into_bytes()
}

struct VaultKey {
    id: String,
    /// Kept to persist the keyring; zeroed on drop.
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
    created_at: Option<String>,
}

impl VaultKey {
    fn new(bytes: [u8; KEY_LEN], created_at: Option<String>) -> Self {
        let bytes = Zeroizing::new(bytes);
        let key = Key::<Aes256Gcm>::from(*bytes);
        VaultKey {
            id: key_id(&bytes),
            cipher: Aes256Gcm::new(&key),
            bytes,
            created_at,
        }
    }

    fn generate() -> Result<Self, VaultError> {
        let mut key = Key::<Aes256Gcm>::try_generate().map_err(|_| VaultError::Rng)?;
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(key.as_slice());
        zeroize::Zeroize::zeroize(key.as_mut_slice());
        let key = VaultKey::new(
            bytes,
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }
}

/// A short public fingerprint of a key: the same key gets the same id from the file or the
/// environment, and 32 bits of a hash reveal nothing useful about a 256-bit key.
fn key_id(bytes: &[u8; KEY_LEN]) -> String {
    let mut h = Sha256::new();
    h.update(b"savdo-vault-key-id\0");
    h.update(bytes);
    let digest = h.finalize();
    let mut id = String::from("k");
    for b in &digest[..4] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File,
    Memory,
}

/// The keyring: the first key is active, the others only decrypt.
pub struct Vault {
    keys: Vec<VaultKey>,
    source: KeySource,
    path: Option<PathBuf>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("active", &self.active_key_id())
            .field("keys", &self.key_ids())
            .field("source", &self.source)
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    active: String,
    keys: Vec<KeyFileEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyFileEntry {
    id: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

impl Drop for KeyFileEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

fn decode_key(b64: &str) -> Result<[u8; KEY_LEN], &'static str> {
    let raw = Zeroizing::new(
        B64.decode(b64.trim())
            .map_err(|_| "not valid base64 (standard alphabet)")?,
    );
    if raw.len() != KEY_LEN {
        return Err("decodes to the wrong length");
    }
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&raw);
    Ok(out)
}

impl Vault {
    /// The keyring from `SAVDO_MASTER_KEY` when set, else the key file in `data_dir` (created on
    /// first start).
    pub fn open(data_dir: &Path) -> Result<Vault, VaultError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => Vault::from_master_key(&v),
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                Vault::open_file(&data_dir.join(KEY_FILE_NAME))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(VaultError::BadMasterKey("not valid UTF-8"))
            }
        }
    }

    /// Keys from the value of `SAVDO_MASTER_KEY`: base64 keys separated by commas, active first.
    pub fn from_master_key(value: &str) -> Result<Vault, VaultError> {
        let mut keys = Vec::new();
        for part in value.split(',') {
            if part.trim().is_empty() {
                return Err(VaultError::BadMasterKey("empty key in the list"));
            }
            let key = VaultKey::new(decode_key(part).map_err(VaultError::BadMasterKey)?, None);
            if !keys.iter().any(|k: &VaultKey| k.id == key.id) {
                keys.push(key);
            }
        }
        Ok(Vault {
            keys,
            source: KeySource::Env,
            path: None,
        })
    }

    /// A keyring with one fresh key that lives only in memory (tests, demos).
    pub fn ephemeral() -> Result<Vault, VaultError> {
        Ok(Vault {
            keys: vec![VaultKey::generate()?],
            source: KeySource::Memory,
            path: None,
        })
    }

    /// Load the key file, or create it (mode 0600) with one fresh key when it does not exist.
    pub fn open_file(path: &Path) -> Result<Vault, VaultError> {
        match std::fs::read(path) {
            Ok(raw) => Vault::parse_file(path, &Zeroizing::new(raw)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let vault = Vault {
                    keys: vec![VaultKey::generate()?],
                    source: KeySource::File,
                    path: Some(path.to_owned()),
                };
                // Two processes starting at once: the first link wins, the other reads it.
                match vault.persist(false) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), key_id = vault.active_key_id(), "created vault key file");
                        Ok(vault)
                    }
                    Err(_) if path.exists() => Vault::open_file(path),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(file_err(path, e)),
        }
    }

    fn parse_file(path: &Path, raw: &[u8]) -> Result<Vault, VaultError> {
        let bad = |reason: &str| VaultError::KeyFile {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        warn_if_loose(path);
        let file: KeyFile =
            serde_json::from_slice(raw).map_err(|_| bad("not a vault key file (JSON)"))?;
        if file.version != 1 {
            return Err(bad("unsupported version"));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in &file.keys {
            let bytes =
                decode_key(&entry.key).map_err(|r| bad(&format!("key {}: {r}", entry.id)))?;
            let key = VaultKey::new(bytes, entry.created_at.clone());
            if key.id != entry.id {
                return Err(bad(&format!("key {} does not match its id", entry.id)));
            }
            keys.push(key);
        }
        let Some(pos) = keys.iter().position(|k| k.id == file.active) else {
            return Err(bad("the active key is not in the file"));
        };
        let active = keys.remove(pos);
        keys.insert(0, active);
        Ok(Vault {
            keys,
            source: KeySource::File,
            path: Some(path.to_owned()),
        })
    }

    pub fn source(&self) -> KeySource {
        self.source
    }

    pub fn active_key_id(&self) -> &str {
        self.keys.first().map(|k| k.id.as_str()).unwrap_or_default()
    }

    /// Active first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn encrypt(&self, secret: &Secret, aad: &[u8]) -> Result<String, VaultError> {
        self.encrypt_bytes(secret.expose().as_bytes(), aad)
    }

    /// Seal a JSON document (an integration's credentials).
    pub fn encrypt_json(
        &self,
        value: &serde_json::Value,
        aad: &[u8],
    ) -> Result<String, VaultError> {
        let plain = Zeroizing::new(serde_json::to_vec(value).map_err(|_| VaultError::Encrypt)?);
        self.encrypt_bytes(&plain, aad)
    }

    pub fn encrypt_bytes(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, VaultError> {
        let key = self.keys.first().ok_or(VaultError::Encrypt)?;
        // A fresh random 96-bit nonce from the OS for every message: never a counter that a
        // restored backup or a second process could repeat.
        let nonce = Nonce::try_generate().map_err(|_| VaultError::Rng)?;
        let full_aad = full_aad(&key.id, aad);
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &full_aad,
                },
            )
            .map_err(|_| VaultError::Encrypt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(nonce.as_slice());
        blob.extend_from_slice(&sealed);
        Ok(format!("{FORMAT}:{}:{}", key.id, B64.encode(blob)))
    }

    pub fn decrypt(&self, sealed: &str, aad: &[u8]) -> Result<Secret, VaultError> {
        let plain = self.decrypt_bytes(sealed, aad)?;
        let text = std::str::from_utf8(&plain).map_err(|_| VaultError::NotUtf8)?;
        Ok(Secret::new(text))
    }

    pub fn decrypt_json(&self, sealed: &str, aad: &[u8]) -> Result<serde_json::Value, VaultError> {
        let plain = self.decrypt_bytes(sealed, aad)?;
        serde_json::from_slice(&plain).map_err(|_| VaultError::NotJson)
    }

    pub fn decrypt_bytes(
        &self,
        sealed: &str,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let (key_id, blob) = parse_sealed(sealed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| VaultError::UnknownKey(key_id.to_owned()))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(VaultError::Malformed);
        }
        let (nonce, body) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| VaultError::Malformed)?;
        let full_aad = full_aad(&key.id, aad);
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: body,
                    aad: &full_aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Decrypt)
    }

    /// True when `sealed` is under an older key (or is not a vault value at all).
    pub fn needs_reencrypt(&self, sealed: &str) -> bool {
        match parse_sealed(sealed) {
            Ok((key_id, _)) => key_id != self.active_key_id(),
            Err(_) => true,
        }
    }

    /// Decrypt under whichever key sealed it and seal again under the active key.
    pub fn reencrypt(&self, sealed: &str, aad: &[u8]) -> Result<String, VaultError> {
        let plain = self.decrypt_bytes(sealed, aad)?;
        self.encrypt_bytes(&plain, aad)
    }

    /// Make a fresh key active, keep the old ones for decryption, and persist the keyring
    /// atomically. Processes that loaded the old ring must reload before they see new values.
    pub fn rotate(&mut self) -> Result<String, VaultError> {
        if self.source == KeySource::Env {
            return Err(VaultError::ReadOnlyKeyring);
        }
        let key = VaultKey::generate()?;
        let id = key.id.clone();
        self.keys.insert(0, key);
        if self.source == KeySource::File
            && let Err(e) = self.persist(true)
        {
            self.keys.remove(0);
            return Err(e);
        }
        Ok(id)
    }

    /// Drop a key that no stored value uses any more. The active key cannot be retired.
    pub fn retire(&mut self, key_id: &str) -> Result<bool, VaultError> {
        if self.source == KeySource::Env {
            return Err(VaultError::ReadOnlyKeyring);
        }
        let Some(pos) = self.keys.iter().skip(1).position(|k| k.id == key_id) else {
            return Ok(false);
        };
        let removed = self.keys.remove(pos + 1);
        if self.source == KeySource::File
            && let Err(e) = self.persist(true)
        {
            self.keys.insert(pos + 1, removed);
            return Err(e);
        }
        Ok(true)
    }

    /// Write temp (0600) + fsync + rename (or link when `replace` is false, so an existing file
    /// is never overwritten on first start).
    fn persist(&self, replace: bool) -> Result<(), VaultError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = KeyFile {
            version: 1,
            active: self.active_key_id().to_owned(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyFileEntry {
                    id: k.id.clone(),
                    key: B64.encode(*k.bytes),
                    created_at: k.created_at.clone(),
                })
                .collect(),
        };
        let body = Zeroizing::new(
            serde_json::to_vec_pretty(&file)
                .map_err(|e| file_err(path, std::io::Error::other(e)))?,
        );
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
        let tmp = path.with_extension(format!("tmp.{}", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            let mut f = create_private(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            if replace {
                std::fs::rename(&tmp, path)
            } else {
                std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
            }
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(file_err(path, e));
        }
        if let Some(dir) = dir
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn full_aad(key_id: &str, aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(AAD_DOMAIN.len() + key_id.len() + 1 + aad.len());
    v.extend_from_slice(AAD_DOMAIN);
    v.extend_from_slice(key_id.as_bytes());
    v.push(0);
    v.extend_from_slice(aad);
    v
}

fn parse_sealed(sealed: &str) -> Result<(&str, Vec<u8>), VaultError> {
    let mut parts = sealed.splitn(3, ':');
    let (Some(FORMAT), Some(key_id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(VaultError::Malformed);
    };
    if key_id.is_empty() || !key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(VaultError::Malformed);
    }
    let blob = B64.decode(b64).map_err(|_| VaultError::Malformed)?;
    Ok((key_id, blob))
}

fn file_err(path: &Path, e: std::io::Error) -> VaultError {
    VaultError::KeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_loose(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "vault key file is readable by group or others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_loose(_path: &Path) {}
