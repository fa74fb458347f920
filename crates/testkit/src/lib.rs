//! Test harness shared by the integration tests: a fresh, migrated database on SQLite (in a
//! temporary directory) or PostgreSQL (a uniquely named database created from
//! `SAVDO_TEST_DATABASE_URL`), and, with the `marketplace` feature, the marketplace simulators'
//! connections. Not published; used only as a dev-dependency.
//!
//! PostgreSQL tests run when `SAVDO_TEST_DATABASE_URL` is set and otherwise print a visible
//! `SKIP postgres: ...` line and return, so a missing database never passes silently unseen.

use std::sync::Arc;

use savdo_storage::Storage;
use sqlx::Connection;
use uuid::Uuid;

#[cfg(feature = "marketplace")]
pub mod marketplace;

/// A product as tests make them: no barcodes, VAT 12 %, sold by the piece, not marked, active.
pub fn product_fields(sku: &str, name: &str, price: i64) -> savdo_storage::ProductFields {
    savdo_storage::ProductFields {
        sku: sku.into(),
        name: name.into(),
        barcodes: Vec::new(),
        price,
        vat_percent: 12,
        mxik: None,
        package_code: None,
        unit: 1,
        marked: false,
        active: true,
    }
}

/// The variable naming the PostgreSQL server the tests may create databases on.
pub const PG_ENV: &str = "SAVDO_TEST_DATABASE_URL";

/// Which storage backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL from [`PG_ENV`], or `None` after printing a visible `SKIP` line.
pub fn pg_admin_url() -> Option<String> {
    let url = std::env::var(PG_ENV).ok().filter(|v| !v.is_empty());
    if url.is_none() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIP postgres: {PG_ENV} is not set");
    }
    url
}

/// The admin URL with another database name, keeping its query string.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// A uniquely named PostgreSQL database; dropped by [`PgDb::drop_db`] (or
/// [`PgDb::drop_db_blocking`] from a `Drop` impl), never implicitly.
#[derive(Debug, Clone)]
pub struct PgDb {
    pub admin: String,
    pub name: String,
}

impl PgDb {
    /// Create `<prefix>_<uuid>` on the server at `admin`. Panics when the server is unreachable:
    /// the variable being set means the tests must run.
    pub async fn create_on(admin: String, prefix: &str) -> PgDb {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut c)
            .await
            .expect("create test database");
        let _ = c.close().await;
        PgDb { admin, name }
    }

    /// Like [`PgDb::create_on`] with the server from [`PG_ENV`]; `None` (with a SKIP) when unset.
    pub async fn create(prefix: &str) -> Option<PgDb> {
        Some(Self::create_on(pg_admin_url()?, prefix).await)
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        with_db(&self.admin, &self.name)
    }

    /// Drop the database, closing whatever connections remain; errors are ignored.
    pub async fn drop_db(&self) {
        if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )))
            .execute(&mut c)
            .await;
        }
    }

    /// [`PgDb::drop_db`] for `Drop` impls, which run inside the test's runtime: a thread with
    /// its own.
    pub fn drop_db_blocking(self) {
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(self.drop_db());
        })
        .join();
    }
}

/// A SQLite database file in a temporary directory that is removed when this is dropped.
pub struct SqliteDir {
    pub dir: tempfile::TempDir,
}

impl SqliteDir {
    pub fn new() -> SqliteDir {
        SqliteDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The URL of `savdo.db` in the directory.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("savdo.db").display())
    }
}

impl Default for SqliteDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a fresh database lives; keep it for the test's duration and call
/// [`FreshDb::drop_db`] at the end (PostgreSQL databases are not dropped implicitly).
pub struct FreshDb {
    /// Opens the same database again (a restart).
    pub url: String,
    pub sqlite: Option<SqliteDir>,
    pub pg: Option<PgDb>,
}

impl FreshDb {
    /// A fresh empty database on `backend` (PostgreSQL named `<pg_prefix>_<uuid>`), or `None`
    /// with a visible SKIP when PostgreSQL is not configured.
    pub async fn new(backend: Backend, pg_prefix: &str) -> Option<FreshDb> {
        Some(match backend {
            Backend::Sqlite => {
                let dir = SqliteDir::new();
                FreshDb {
                    url: dir.url(),
                    sqlite: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let pg = PgDb::create(pg_prefix).await?;
                FreshDb {
                    url: pg.url(),
                    sqlite: None,
                    pg: Some(pg),
                }
            }
        })
    }

    /// Open and migrate the store.
    pub async fn store(&self) -> Arc<dyn Storage> {
        let store = savdo_storage::connect(&self.url)
            .await
            .expect("open database");
        store.migrate().await.expect("migrate");
        store
    }

    /// Drop the PostgreSQL database, if any.
    pub async fn drop_db(&self) {
        if let Some(pg) = &self.pg {
            pg.drop_db().await;
        }
    }
}

/// A fresh migrated store on `backend` and its [`FreshDb`], or `None` with a visible SKIP.
pub async fn fresh_store(backend: Backend, pg_prefix: &str) -> Option<(Arc<dyn Storage>, FreshDb)> {
    let db = FreshDb::new(backend, pg_prefix).await?;
    Some((db.store().await, db))
}
