//! SQLite: WAL, one writer connection (SQLite has one writer anyway; queueing in the pool is
//! cheaper than `SQLITE_BUSY` retries), several readers.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Dialect;
use crate::Result;

pub type Db = sqlx::Sqlite;
const DIALECT: Dialect = Dialect::Sqlite;
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "core",
    include_str!("../../migrations/sqlite/0001_core.sql"),
)];

#[derive(Clone)]
pub struct SqliteStore {
    write: sqlx::Pool<Db>,
    read: sqlx::Pool<Db>,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `url` (`sqlite://path` or a plain path).
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable across process crashes; only power loss can lose
            // the last transactions, which is SQLite's documented trade-off.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(false))
            .await?;
        Ok(SqliteStore { write, read })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Db>> {
        // IMMEDIATE takes the write lock up front, so a second process (a worker) waits on
        // busy_timeout instead of failing on a read-to-write upgrade.
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }
}

type Backend = SqliteStore;

include!("shared.rs");
