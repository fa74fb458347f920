//! Test support: a fresh database per test (SQLite always, PostgreSQL when
//! `SAVDO_TEST_DATABASE_URL` is set), a manual clock, and a local receiver.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use savdo_domain::clock::ManualClock;
use savdo_domain::tenant::Role;
use savdo_integrations::VaultHandle;
use savdo_storage::{Actor, Storage};
use savdo_testkit::{Backend, FreshDb};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run(false, super::$name).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::common::run(true, super::$name).await;
                }
            }
        )*
    };
}

pub struct Env {
    pub store: Arc<dyn Storage>,
    pub clock: Arc<ManualClock>,
    pub actor: Actor,
    /// A vault whose key file lives in `vault_dir` (so a test can rotate it as the CLI does).
    pub vault: Arc<VaultHandle>,
    pub vault_dir: Arc<tempfile::TempDir>,
    url: String,
    pg: bool,
}

impl Env {
    pub async fn new_actor(&self, name: &str) -> Actor {
        let t = self.store.create_tenant(name).await.expect("tenant");
        Actor {
            tenant_id: t.id,
            token_id: None,
            role: Role::Owner,
            store_id: None,
        }
    }

    /// The outbox rows of a tenant (type, data), straight from the table.
    pub async fn outbox(&self, tenant: Uuid) -> Vec<(String, Value)> {
        let sql = "SELECT type, data FROM outbox WHERE tenant_id = $1 ORDER BY seq";
        if self.pg {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let rows: Vec<(String, sqlx::types::Json<Value>)> = sqlx::query_as(sql)
                .bind(tenant)
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.into_iter().map(|(t, d)| (t, d.0)).collect()
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            let rows: Vec<(String, sqlx::types::Json<Value>)> = sqlx::query_as(sql)
                .bind(tenant)
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.into_iter().map(|(t, d)| (t, d.0)).collect()
        }
    }

    /// Every stored secret column of the webhooks table (all tenants), straight from the table.
    pub async fn secret_columns(&self) -> Vec<Option<String>> {
        let sql = "SELECT secret, prev_secret, secret_hint FROM webhooks ORDER BY id";
        let rows: Vec<(String, Option<String>, Option<String>)> = if self.pg {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_as(sql).fetch_all(&mut c).await.unwrap()
        };
        rows.into_iter()
            .flat_map(|(a, b, c)| [Some(a), b, c])
            .collect()
    }

    /// The bytes of the SQLite database file and its WAL (empty on PostgreSQL).
    pub fn sqlite_files(&self) -> Vec<u8> {
        let Some(path) = (!self.pg).then(|| self.url.trim_start_matches("sqlite://")) else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for p in [path.to_string(), format!("{path}-wal")] {
            if let Ok(b) = std::fs::read(&p) {
                all.extend_from_slice(&b);
            }
        }
        all
    }

    /// Run a statement on the database directly (to write a row as an older version did).
    pub async fn exec(&self, sql: &str, binds: &[&str], id: Uuid) {
        macro_rules! go {
            ($conn:ty) => {{
                let mut c = <$conn>::connect(&self.url).await.unwrap();
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).bind(id);
                for b in binds {
                    q = q.bind(*b);
                }
                q.execute(&mut c).await.unwrap();
            }};
        }
        if self.pg {
            go!(sqlx::PgConnection)
        } else {
            go!(sqlx::SqliteConnection)
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        use savdo_domain::clock::Clock;
        self.clock.now()
    }
}

pub async fn run<F, Fut>(pg: bool, f: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    savdo_webhooks::init_crypto();
    let backend = if pg {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let Some(db) = FreshDb::new(backend, "savdo_t").await else {
        return;
    };
    let url = db.url.clone();
    let store = db.store().await;
    let t = store.create_tenant("Test shop").await.expect("tenant");
    let vault_dir = tempfile::tempdir().expect("vault dir");
    let vault = VaultHandle::open(vault_dir.path()).expect("vault");
    let env = Env {
        store,
        vault: Arc::new(vault),
        vault_dir: Arc::new(vault_dir),
        // Whole microseconds, as the database stores them.
        clock: Arc::new(ManualClock::new(
            DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
        )),
        actor: Actor {
            tenant_id: t.id,
            token_id: None,
            role: Role::Owner,
            store_id: None,
        },
        url,
        pg,
    };
    let res = tokio::spawn(f(env)).await;
    db.drop_db().await;
    if let Err(e) = res {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A scripted answer: status, headers, body, and an optional delay.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay_ms: u64,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay_ms: 0,
        }
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<Received>>>,
    pub script: Arc<Mutex<VecDeque<Answer>>>,
    pub url: String,
}

impl Receiver {
    /// Answers 200 unless scripted otherwise.
    pub async fn start() -> Receiver {
        let mut r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        r.url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        r
    }

    pub fn push(&self, a: Answer) {
        self.script.lock().unwrap().push_back(a);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    r.got.lock().unwrap().push(Received { headers, body });
    let a = r
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::status(200));
    if a.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(a.delay_ms)).await;
    }
    let mut h = HeaderMap::new();
    for (k, v) in a.headers {
        h.insert(k, v.parse().unwrap());
    }
    (StatusCode::from_u16(a.status).unwrap(), h, a.body)
}
