//! PostgreSQL: one pool; concurrent writers are serialised by row locks where it matters
//! (per-store receipt counters, stock rows, unique keys).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::Dialect;
use crate::Result;

pub type Db = sqlx::Postgres;
const DIALECT: Dialect = Dialect::Postgres;
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "core",
    include_str!("../../migrations/postgres/0001_core.sql"),
)];

#[derive(Clone)]
pub struct PgStore {
    write: sqlx::Pool<Db>,
    read: sqlx::Pool<Db>,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(PgStore {
            write: pool.clone(),
            read: pool,
        })
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Db>> {
        Ok(self.write.begin().await?)
    }
}

type Backend = PgStore;

include!("shared.rs");
