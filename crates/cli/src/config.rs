//! Configuration: flags > environment > TOML file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// Options shared by every command that opens the database.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// TOML configuration file.
    #[arg(long, env = "SAVDO_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (the SQLite file and the key file live here).
    #[arg(long, env = "SAVDO_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` or `sqlite://…`; defaults to SQLite in the data directory.
    #[arg(long, env = "SAVDO_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub file_listen: Option<SocketAddr>,
    pub log_format: Option<String>,
}

pub fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
}

impl DbArgs {
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let file = match &self.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./savdo-data"));
        let database_url = match self.database_url.clone().or(file.database_url) {
            Some(u) => u,
            None => {
                std::fs::create_dir_all(&data_dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", data_dir.display()))?;
                format!("sqlite://{}", data_dir.join("savdo.db").display())
            }
        };
        Ok(Resolved {
            data_dir,
            database_url,
            file_listen: file.listen,
            log_format: file.log_format,
        })
    }
}
