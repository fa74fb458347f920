//! The gateway's TOML configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub grpc_listen: Option<SocketAddr>,
    /// Where the journal (SQLite) lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How long an API call waits for its device before answering `queued`.
    #[serde(default = "default_answer_wait_ms")]
    pub answer_wait_ms: u64,
    /// Backoff between attempts on an unreachable device: doubles from `retry_initial_ms`.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeviceConfig {
    pub id: String,
    #[serde(flatten)]
    pub driver: DriverConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum DriverConfig {
    /// The software fiscal module; counters live in the journal database.
    Virtual { terminal_id: String },
    /// ATOL web server (JSON tasks), e.g. `http://127.0.0.1:16732`.
    Atol {
        url: String,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
    /// KKMServer, e.g. `http://127.0.0.1:5893`.
    Kkmserver {
        url: String,
        #[serde(default = "default_kkm_user")]
        user: String,
        #[serde(default)]
        password: String,
        #[serde(default)]
        num_device: u32,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
}

impl DriverConfig {
    pub fn name(&self) -> &'static str {
        match self {
            DriverConfig::Virtual { .. } => "virtual",
            DriverConfig::Atol { .. } => "atol",
            DriverConfig::Kkmserver { .. } => "kkmserver",
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8070))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./fiscal-data")
}
fn default_answer_wait_ms() -> u64 {
    10_000
}
fn default_retry_initial_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_kkm_user() -> String {
    "Admin".into()
}

impl Default for Config {
    /// One virtual device, so `savdo-fiscal` without a file is usable at once.
    fn default() -> Self {
        Config {
            listen: default_listen(),
            grpc_listen: None,
            data_dir: default_data_dir(),
            answer_wait_ms: default_answer_wait_ms(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            devices: vec![DeviceConfig {
                id: "virtual-1".into(),
                driver: DriverConfig::Virtual {
                    terminal_id: "UZ000000000001".into(),
                },
            }],
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.check()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if self.devices.is_empty() {
            return Err(ConfigError::Invalid("no [[devices]] configured".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.devices {
            if d.id.trim().is_empty() {
                return Err(ConfigError::Invalid("a device has an empty id".into()));
            }
            if !seen.insert(d.id.as_str()) {
                return Err(ConfigError::Invalid(format!("device id {} repeats", d.id)));
            }
            if let DriverConfig::Virtual { terminal_id } = &d.driver
                && terminal_id.trim().is_empty()
            {
                return Err(ConfigError::Invalid(format!(
                    "device {}: terminal_id is required",
                    d.id
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_drivers() {
        let c = Config::from_toml(
            r#"
            listen = "127.0.0.1:9000"
            grpc_listen = "127.0.0.1:9001"
            data_dir = "journal"
            [[devices]]
            id = "v"
            driver = "virtual"
            terminal_id = "UZ1"
            [[devices]]
            id = "a"
            driver = "atol"
            url = "http://127.0.0.1:16732"
            [[devices]]
            id = "k"
            driver = "kkmserver"
            url = "http://127.0.0.1:5893"
            password = "x"
            num_device = 2
            "#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.grpc_listen.map(|a| a.port()), Some(9001));
        assert_eq!(c.devices.len(), 3);
        match &c.devices[2].driver {
            DriverConfig::Kkmserver {
                user, num_device, ..
            } => {
                assert_eq!(user, "Admin");
                assert_eq!(*num_device, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_duplicates_and_unknown_drivers() {
        let dup = "[[devices]]\nid='a'\ndriver='virtual'\nterminal_id='x'\n[[devices]]\nid='a'\ndriver='virtual'\nterminal_id='y'\n";
        assert!(Config::from_toml(dup).is_err());
        let unknown = "[[devices]]\nid='a'\ndriver='epson'\n";
        assert!(Config::from_toml(unknown).is_err());
    }
}
