//! The integration hub over HTTP, on SQLite and (with `SAVDO_TEST_DATABASE_URL`) PostgreSQL:
//! credentials never in plaintext (database, logs, answers, events), vault rotation, the
//! breaker/retries/rate limit through the hub as the health shows them, inbound hooks (refused
//! unauthenticated, applied once), sync jobs resuming after a restart, roles, tenant isolation
//! and the catalog. A sample connector, hook handler and sync handler exist only here.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::HeaderMap;
use chrono::Utc;
use savdo_api::AppState;
use savdo_domain::clock::ManualClock;
use savdo_domain::tenant::Role;
use savdo_hub::registry::HttpDefaults;
use savdo_hub::{
    BreakerPolicy, Capability, Connector, ConnectorError, Credentials, FieldSpec, Health,
    HttpClient, HttpHub, HttpRequest, RateLimit, Registry, RetryPolicy, Secret, TypeDescriptor,
    Vault,
};
use savdo_integrations::{
    DeliveryId, HookContext, HookHandler, HookRegistry, HookReject, HookReply, JobRunner,
    RunnerConfig, Step, StorageSink, SyncContext, SyncHandler, SyncRegistry, VaultHandle,
};
use savdo_storage::integrations::{Integration, JobStatus};
use savdo_storage::{Actor, NewToken, Storage};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

const KIND: &str = "echo_test";

// ----------------------------------------------------------------------------- log capture

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything any test in this binary logged, at every level.
fn logs() -> &'static LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    static INIT: Once = Once::new();
    let buf = BUF.get_or_init(|| LogBuf(Arc::new(Mutex::new(Vec::new()))));
    INIT.call_once(|| {
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    buf
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

// ----------------------------------------------------------------------------- fake provider

/// The provider the sample connector calls: answers `status` to `GET /ping`, echoing the bearer
/// token back in its body (the log must still not show it).
#[derive(Clone, Default)]
struct Provider {
    status: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

async fn start_provider() -> (Provider, String) {
    let p = Provider::default();
    p.status.store(200, Ordering::SeqCst);
    let st = p.clone();
    let app = axum::Router::new().route(
        "/ping",
        axum::routing::get(move |headers: HeaderMap| {
            let st = st.clone();
            async move {
                st.calls.fetch_add(1, Ordering::SeqCst);
                st.arrivals.lock().unwrap().push(Instant::now());
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let code = st.status.load(Ordering::SeqCst);
                (
                    axum::http::StatusCode::from_u16(code).unwrap(),
                    [("content-type", "application/json")],
                    json!({ "pong": true, "you_sent": auth }).to_string(),
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (p, base)
}

// ----------------------------------------------------------------------------- sample connector

struct EchoConnector {
    http: HttpClient,
    base: String,
    key: Secret,
}

#[async_trait]
impl Connector for EchoConnector {
    fn kind(&self) -> &'static str {
        KIND
    }
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        let started = Instant::now();
        self.http
            .send(
                HttpRequest::get(format!("{}/ping", self.base))
                    .bearer(&self.key)
                    .operation("ping"),
            )
            .await?
            .error_for_status()?;
        Ok(Health::ok(
            Utc::now(),
            Some(started.elapsed().as_millis() as u64),
        ))
    }
}

fn echo_type() -> TypeDescriptor {
    TypeDescriptor {
        kind: KIND.into(),
        name: "Echo (tests)".into(),
        capabilities: vec![Capability::InboundHooks],
        credential_fields: vec![
            FieldSpec::string("account").required(),
            FieldSpec::secret("api_key"),
            FieldSpec::secret("hook_secret").optional(),
        ],
        settings_fields: vec![FieldSpec::url("base_url").required()],
        http: HttpDefaults {
            timeout: Duration::from_secs(5),
            timeout_setting: None,
            rate_limit: Some(RateLimit {
                requests: 10,
                per: Duration::from_secs(1),
                burst: 1,
                max_wait: Duration::from_secs(30),
            }),
            route_limits: Vec::new(),
            retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            },
            breaker: BreakerPolicy {
                failure_threshold: 3,
                cool_down: Duration::from_secs(30),
            },
        },
    }
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.add_type(echo_type());
    r.register(KIND, |ctx| {
        let base = ctx
            .settings
            .get("base_url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let key = ctx.credentials.require_secret("api_key")?;
        Ok(Arc::new(EchoConnector {
            http: ctx.http,
            base,
            key,
        }) as Arc<dyn Connector>)
    })
    .unwrap();
    r
}

// ----------------------------------------------------------------------------- sample hook handler

/// `x-signature: hex(HMAC-SHA256(hook_secret, body))`, delivery id = the body's `id`.
struct EchoHooks {
    applied: Arc<AtomicUsize>,
    /// Passing failures answered so far to deliveries that ask for them (`fail_times`).
    failed: AtomicUsize,
}

#[async_trait]
impl HookHandler for EchoHooks {
    fn verify(
        &self,
        _integration: &Integration,
        credentials: &Credentials,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DeliveryId, HookReject> {
        let secret = credentials
            .get_str("hook_secret")
            .ok_or_else(|| HookReject::Unauthenticated("no hook secret configured".into()))?;
        let sig = headers
            .get("x-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| HookReject::Unauthenticated("no signature".into()))?;
        if !savdo_integrations::verify_hmac_sha256_hex(secret.as_bytes(), body, sig) {
            return Err(HookReject::Unauthenticated("bad signature".into()));
        }
        let v: Value =
            serde_json::from_slice(body).map_err(|_| HookReject::Malformed("not JSON".into()))?;
        v["id"]
            .as_str()
            .map(|s| DeliveryId(s.to_owned()))
            .ok_or_else(|| HookReject::Malformed("no id".into()))
    }

    fn rejected(&self, why: &HookReject) -> HookReply {
        let (status, code) = match why {
            HookReject::Unauthenticated(_) => (401, "unauthenticated"),
            HookReject::Malformed(_) => (400, "malformed"),
        };
        HookReply::json(status, &json!({ "echo_error": code }))
    }

    async fn handle(&self, ctx: &HookContext<'_>, body: &[u8]) -> HookReply {
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        let fail_times = v["fail_times"].as_u64().unwrap_or(0) as usize;
        if self.failed.load(Ordering::SeqCst) < fail_times {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return HookReply::unavailable();
        }
        let n = self.applied.fetch_add(1, Ordering::SeqCst) + 1;
        HookReply::json(
            200,
            &json!({ "echo_ok": true, "delivery": ctx.delivery.0, "applied": n }),
        )
    }
}

// ----------------------------------------------------------------------------- sample sync handler

/// Ten items, one per step; counts how often each item was processed.
struct Items {
    seen: Arc<Mutex<HashMap<i64, u32>>>,
}

#[async_trait]
impl SyncHandler for Items {
    async fn step(
        &self,
        _ctx: &SyncContext,
        cursor: Option<&Value>,
    ) -> Result<Step, ConnectorError> {
        let next = cursor.and_then(|c| c["next"].as_i64()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(40)).await;
        *self.seen.lock().unwrap().entry(next).or_default() += 1;
        let mut errors = Vec::new();
        if next == 4 {
            errors.push(json!({ "item": next, "code": "rejected", "message": "item 4 refused" }));
        }
        Ok(Step {
            processed: 1,
            total: Some(10),
            cursor: Some(json!({ "next": next + 1 })),
            errors,
            finished: next + 1 >= 10,
        })
    }
}

// ----------------------------------------------------------------------------- harness

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Env {
    base: String,
    http: reqwest::Client,
    store: Arc<dyn Storage>,
    backend: Backend,
    tenant: Uuid,
    token: String,
    data_dir: tempfile::TempDir,
    db_url: String,
    vault: Arc<VaultHandle>,
    hub: HttpHub,
    sink: Arc<StorageSink>,
    clock: Arc<ManualClock>,
    provider: Provider,
    provider_url: String,
    applied: Arc<AtomicUsize>,
    seen: Arc<Mutex<HashMap<i64, u32>>>,
    registry: Arc<Registry>,
    sync: Arc<SyncRegistry>,
    pg: Option<savdo_testkit::PgDb>,
}

async fn token_for(store: &Arc<dyn Storage>, tenant: Uuid, role: Role) -> String {
    let t = savdo_api::routes::tokens::generate_token();
    store
        .create_token(
            &Actor::system(tenant),
            &NewToken {
                name: format!("{} token", role.as_str()),
                role,
                store_id: None,
            },
            &savdo_api::extract::hash_token(&t),
        )
        .await
        .unwrap();
    t
}

async fn start(backend: Backend) -> Option<Env> {
    logs();
    let data_dir = tempfile::tempdir().unwrap();
    let mut pg = None;
    let db_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", data_dir.path().join("savdo.db").display()),
        Backend::Postgres => {
            let db = savdo_testkit::PgDb::create("savdo_t").await?;
            let url = db.url();
            pg = Some(db);
            url
        }
    };
    let store = savdo_storage::connect(&db_url)
        .await
        .expect("open database");
    store.migrate().await.expect("migrate");
    let tenant = store.create_tenant("Test shop").await.unwrap().id;
    let token = token_for(&store, tenant, Role::Owner).await;
    // The key file lives in the data directory, as `savdo serve` keeps it.
    let vault = Arc::new(VaultHandle::open(data_dir.path()).expect("vault"));
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let sink = StorageSink::spawn(store.clone(), 10_000);
    let hub = HttpHub::new(clock.clone(), sink.clone()).unwrap();
    let registry = Arc::new(registry());
    let applied = Arc::new(AtomicUsize::new(0));
    let mut hooks = HookRegistry::new();
    hooks.register(
        KIND,
        Arc::new(EchoHooks {
            applied: applied.clone(),
            failed: AtomicUsize::new(0),
        }),
    );
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let mut sync = SyncRegistry::new();
    sync.register(KIND, "items", Arc::new(Items { seen: seen.clone() }));
    let sync = Arc::new(sync);
    let mut state = AppState::new(store.clone(), vault.clone());
    state.registry = registry.clone();
    state.hub = Some(hub.clone());
    state.hooks = Arc::new(hooks);
    state.sync = sync.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(savdo_api::serve(listener, state, std::future::pending()));
    let (provider, provider_url) = start_provider().await;
    Some(Env {
        base,
        http: reqwest::Client::new(),
        store,
        backend,
        tenant,
        token,
        data_dir,
        db_url,
        vault,
        hub,
        sink,
        clock,
        provider,
        provider_url,
        applied,
        seen,
        registry,
        sync,
        pg,
    })
}

async fn finish(env: Env) {
    if let Some(pg) = &env.pg {
        drop(env.store);
        pg.drop_db().await;
    }
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    if let Some(env) = super::start(super::Backend::Sqlite).await {
                        let env = super::$name(env).await;
                        super::finish(env).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(env) = super::start(super::Backend::Postgres).await {
                        let env = super::$name(env).await;
                        super::finish(env).await;
                    }
                }
            }
        )*
    };
}

backend_tests!(
    credentials_never_in_plaintext,
    validation_and_patch_merge,
    catalog_roles_and_isolation,
    breaker_retries_and_rate_limit,
    vault_rotation_keeps_everything_decryptable,
    hooks_verified_and_applied_once,
    sync_job_resumes_after_restart,
);

struct R {
    status: u16,
    text: String,
    body: Value,
}

impl Env {
    async fn call(&self, tok: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> R {
        let mut rq = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(tok);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        R { status, text, body }
    }
    async fn get(&self, path: &str) -> R {
        self.call(&self.token, reqwest::Method::GET, path, None)
            .await
    }
    async fn post(&self, path: &str, body: Value) -> R {
        self.call(&self.token, reqwest::Method::POST, path, Some(body))
            .await
    }
    async fn patch(&self, path: &str, body: Value) -> R {
        self.call(&self.token, reqwest::Method::PATCH, path, Some(body))
            .await
    }

    /// A new echo integration; `secret` is its api key.
    async fn create(&self, secret: &str, hook_secret: &str, test: bool) -> R {
        self.post(
            "/api/v1/integrations",
            json!({
                "type": KIND,
                "name": "Echo",
                "credentials": {"account": "acc-1", "api_key": secret, "hook_secret": hook_secret},
                "settings": {"base_url": self.provider_url},
                "test": test,
            }),
        )
        .await
    }

    async fn hook(&self, path: &str, body: &str, sig: Option<&str>) -> R {
        let mut rq = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(s) = sig {
            rq = rq.header("x-signature", s);
        }
        let r = rq.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        R { status, text, body }
    }

    /// Whether `needle` appears anywhere in the database: the SQLite files' bytes, or every
    /// text, JSON and binary column of every PostgreSQL table.
    async fn db_contains(&self, needle: &str) -> bool {
        match self.backend {
            Backend::Sqlite => {
                // Checkpoint so nothing hides from a reader of the files... and read the WAL too.
                let mut found = false;
                for entry in std::fs::read_dir(self.data_dir.path()).unwrap() {
                    let path = entry.unwrap().path();
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    if name.starts_with("savdo.db") {
                        let bytes = std::fs::read(&path).unwrap();
                        found |= bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                    }
                }
                found
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db_url).await.unwrap();
                let cols: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'json', 'bytea', 'character varying')",
                )
                .fetch_all(&mut c)
                .await
                .unwrap();
                assert!(cols.len() > 10, "columns found: {cols:?}");
                for (t, col, ty) in cols {
                    let cond = if ty == "bytea" {
                        format!("position(convert_to($1, 'UTF8') in \"{col}\") > 0")
                    } else {
                        format!("strpos(\"{col}\"::text, $1) > 0")
                    };
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) FROM \"{t}\" WHERE {cond}"
                    )))
                    .bind(needle)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                    if n > 0 {
                        return true;
                    }
                }
                false
            }
        }
    }

    /// `(type, data)` of every outbox event of this tenant.
    async fn outbox(&self) -> Vec<(String, String)> {
        let sql = "SELECT type, CAST(data AS TEXT) FROM outbox WHERE tenant_id = $1 ORDER BY seq";
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.db_url).await.unwrap();
                sqlx::query_as(sql)
                    .bind(self.tenant)
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db_url).await.unwrap();
                sqlx::query_as(sql)
                    .bind(self.tenant)
                    .fetch_all(&mut c)
                    .await
                    .unwrap()
            }
        }
    }

    async fn sealed(&self, id: Uuid) -> String {
        self.store
            .get_integration(self.tenant, id)
            .await
            .unwrap()
            .credentials_sealed
    }
}

fn id_of(r: &R) -> Uuid {
    Uuid::parse_str(
        r.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {}", r.text)),
    )
    .unwrap()
}

fn sig(secret: &str, body: &str) -> String {
    hex::encode(savdo_integrations::hmac_sha256(
        secret.as_bytes(),
        body.as_bytes(),
    ))
}

// ----------------------------------------------------------------------------- tests

async fn credentials_never_in_plaintext(env: Env) -> Env {
    let secret = format!("sk_live_{}", Uuid::new_v4().simple());
    let hook_secret = format!("hk_{}", Uuid::new_v4().simple());
    let tail = &secret[secret.len() - 4..];
    let r = env.create(&secret, &hook_secret, true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = id_of(&r);
    assert_eq!(r.body["type"], KIND);
    assert_eq!(r.body["credentials"]["api_key"], format!("****{tail}"));
    assert_eq!(r.body["health"]["status"], "ok", "{}", r.text);
    assert_eq!(r.body["health"]["breaker"]["state"], "closed", "{}", r.text);
    let mut answers = vec![r.text];
    answers.push(env.get("/api/v1/integrations").await.text);
    answers.push(env.get(&format!("/api/v1/integrations/{id}")).await.text);
    answers.push(
        env.patch(
            &format!("/api/v1/integrations/{id}"),
            json!({"name": "Echo 2"}),
        )
        .await
        .text,
    );
    answers.push(
        env.post(&format!("/api/v1/integrations/{id}/test"), json!({}))
            .await
            .text,
    );
    env.sink.flush().await;
    let log = env.get(&format!("/api/v1/integrations/{id}/log")).await;
    assert_eq!(log.status, 200, "{}", log.text);
    let entries = log.body["items"].as_array().unwrap();
    assert!(entries.len() >= 2, "{}", log.text);
    assert_eq!(entries[0]["operation"], "ping");
    assert_eq!(entries[0]["status"], 200);
    answers.push(log.text.clone());
    for a in &answers {
        assert!(
            !a.contains(&secret) && !a.contains(&hook_secret),
            "leaked in {a}"
        );
    }
    // The provider echoed the token: the log keeps the exchange, not the secret.
    assert!(log.text.contains("you_sent"), "{}", log.text);
    // Stored: only ciphertext, bound to the row.
    assert!(env.sealed(id).await.starts_with("v1:k"));
    assert!(!env.db_contains(&secret).await, "api key in the database");
    assert!(
        !env.db_contains(&hook_secret).await,
        "hook secret in the database"
    );
    assert!(
        !env.db_contains("acc-1").await,
        "credential values are all sealed"
    );
    // The search itself works: the (plaintext) name is found.
    assert!(env.db_contains("Echo 2").await);
    // Events.
    let events = env.outbox().await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"integration.created"), "{kinds:?}");
    assert!(kinds.contains(&"integration.updated"), "{kinds:?}");
    for (_, data) in &events {
        assert!(
            !data.contains(&secret) && !data.contains(&hook_secret),
            "{data}"
        );
    }
    // Logs.
    let logs = logged();
    assert!(!logs.is_empty());
    assert!(!logs.contains(&secret) && !logs.contains(&hook_secret));
    // Deleting takes the row and its log with it, and says so in an event.
    let d = env
        .call(
            &env.token,
            reqwest::Method::DELETE,
            &format!("/api/v1/integrations/{id}"),
            None,
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert_eq!(
        env.get(&format!("/api/v1/integrations/{id}")).await.status,
        404
    );
    assert!(
        env.outbox()
            .await
            .iter()
            .any(|(k, _)| k == "integration.deleted")
    );
    env
}

async fn validation_and_patch_merge(env: Env) -> Env {
    let bad = env
        .post(
            "/api/v1/integrations",
            json!({"type": KIND, "name": "x", "credentials": {"api_key": 5, "nope": "1"}, "settings": {}}),
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text);
    let fields: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in [
        "credentials.account",
        "credentials.api_key",
        "credentials.nope",
        "settings.base_url",
    ] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    let unknown = env
        .post(
            "/api/v1/integrations",
            json!({"type": "nonesuch", "name": "x", "credentials": {}}),
        )
        .await;
    assert_eq!(unknown.status, 422);
    assert_eq!(unknown.body["errors"][0]["field"], "type");
    // A type without a connector yet is stored, with its health saying so.
    let payme = env
        .post(
            "/api/v1/integrations",
            json!({"type": "payme", "name": "Payme", "credentials": {"merchant_id": "m1", "key": "payme-key-123456"}}),
        )
        .await;
    assert_eq!(payme.status, 201, "{}", payme.text);
    assert_eq!(payme.body["health"]["status"], "untested");
    assert_eq!(
        payme.body["health"]["message"],
        savdo_integrations::UNTESTED
    );

    let r = env
        .create("first-api-key-000001", "hook-secret-0001", false)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["health"].is_null(), "{}", r.text);
    let id = id_of(&r);
    let before = env.sealed(id).await;
    // Replace one credential: the others keep their stored values.
    let p = env
        .patch(
            &format!("/api/v1/integrations/{id}"),
            json!({"credentials": {"api_key": "second-api-key-0002"}}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["credentials"]["api_key"], "****0002");
    assert_ne!(env.sealed(id).await, before);
    let i = env.store.get_integration(env.tenant, id).await.unwrap();
    let creds = env
        .vault
        .open_credentials(env.tenant, id, &i.credentials_sealed)
        .unwrap();
    assert_eq!(
        creds,
        json!({"account": "acc-1", "api_key": "second-api-key-0002", "hook_secret": "hook-secret-0001"})
    );
    // Settings are validated again; a bad patch changes nothing.
    let p = env
        .patch(
            &format!("/api/v1/integrations/{id}"),
            json!({"settings": {"base_url": "ftp://x"}}),
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.text);
    assert_eq!(p.body["errors"][0]["field"], "settings.base_url");
    let p = env
        .patch(
            &format!("/api/v1/integrations/{id}"),
            json!({"credentials": {"account": null}}),
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.text);
    assert_eq!(p.body["errors"][0]["field"], "credentials.account");
    let p = env
        .patch(
            &format!("/api/v1/integrations/{id}"),
            json!({"status": "failing"}),
        )
        .await;
    assert_eq!(p.status, 422);
    let p = env
        .patch(
            &format!("/api/v1/integrations/{id}"),
            json!({"status": "disabled"}),
        )
        .await;
    assert_eq!(p.body["status"], "disabled", "{}", p.text);
    env
}

async fn catalog_roles_and_isolation(env: Env) -> Env {
    let c = env.get("/api/v1/integrations/catalog").await;
    assert_eq!(c.status, 200, "{}", c.text);
    let items = c.body.as_array().expect("catalog is an array");
    let payme = items.iter().find(|t| t["type"] == "payme").expect("payme");
    assert_eq!(payme["name"], "Payme");
    assert!(
        payme["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("payments"))
    );
    for f in payme["credential_fields"].as_array().unwrap() {
        assert!(f["name"].is_string() && f["type"].is_string(), "{f}");
        assert!(
            f["required"].is_boolean() && f["secret"].is_boolean(),
            "{f}"
        );
    }
    assert!(
        payme["credential_fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "key" && f["secret"] == true)
    );
    assert!(payme["settings_fields"].is_array());
    for kind in [
        "jowi_club",
        "click",
        "uzum",
        "wildberries",
        "ozon",
        "aslbelgisi",
    ] {
        assert!(items.iter().any(|t| t["type"] == kind), "{kind}");
    }

    let r = env
        .create("isolated-api-key-01", "hook-secret-iso1", false)
        .await;
    let id = id_of(&r);
    let job = env
        .post(
            &format!("/api/v1/integrations/{id}/sync"),
            json!({"what": "items"}),
        )
        .await;
    assert_eq!(job.status, 202, "{}", job.text);
    let job_id = job.body["id"].as_str().unwrap().to_owned();

    // Cashier: 403 everywhere; manager: allowed.
    let cashier = token_for(&env.store, env.tenant, Role::Cashier).await;
    let manager = token_for(&env.store, env.tenant, Role::Manager).await;
    use reqwest::Method as M;
    let routes: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, "/api/v1/integrations/catalog".into(), None),
        (M::GET, "/api/v1/integrations".into(), None),
        (
            M::POST,
            "/api/v1/integrations".into(),
            Some(json!({"type": KIND, "name": "x", "credentials": {}})),
        ),
        (M::GET, format!("/api/v1/integrations/{id}"), None),
        (
            M::PATCH,
            format!("/api/v1/integrations/{id}"),
            Some(json!({"name": "y"})),
        ),
        (M::POST, format!("/api/v1/integrations/{id}/test"), None),
        (
            M::POST,
            format!("/api/v1/integrations/{id}/sync"),
            Some(json!({"what": "items"})),
        ),
        (M::GET, format!("/api/v1/integrations/{id}/jobs"), None),
        (
            M::GET,
            format!("/api/v1/integrations/{id}/jobs/{job_id}"),
            None,
        ),
        (M::GET, format!("/api/v1/integrations/{id}/log"), None),
        (M::DELETE, format!("/api/v1/integrations/{id}"), None),
    ];
    for (m, path, body) in &routes {
        let r = env.call(&cashier, m.clone(), path, body.clone()).await;
        assert_eq!(r.status, 403, "cashier {m} {path}: {}", r.text);
    }
    let r = env
        .call(
            &manager,
            M::GET,
            &format!("/api/v1/integrations/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Another tenant sees nothing and touches nothing.
    let other = env.store.create_tenant("Other").await.unwrap().id;
    let other_tok = token_for(&env.store, other, Role::Owner).await;
    let list = env
        .call(&other_tok, M::GET, "/api/v1/integrations", None)
        .await;
    assert_eq!(list.body["items"], json!([]), "{}", list.text);
    for (m, path, body) in routes.iter().skip(3) {
        let r = env.call(&other_tok, m.clone(), path, body.clone()).await;
        assert_eq!(r.status, 404, "other tenant {m} {path}: {}", r.text);
    }
    // Still there, unchanged.
    let r = env.get(&format!("/api/v1/integrations/{id}")).await;
    assert_eq!(r.body["name"], "Echo", "{}", r.text);
    assert_eq!(
        env.get(&format!("/api/v1/integrations/{id}/jobs"))
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Unknown `what`.
    let w = env
        .post(
            &format!("/api/v1/integrations/{id}/sync"),
            json!({"what": "everything"}),
        )
        .await;
    assert_eq!(w.status, 422);
    assert_eq!(w.body["errors"][0]["field"], "what");
    env
}

async fn breaker_retries_and_rate_limit(env: Env) -> Env {
    let p = &env.provider;
    // Retryable failures: three attempts per call, until the breaker opens.
    let r = env
        .create("breaker-api-key-01", "hook-secret-brk1", false)
        .await;
    let id = id_of(&r);
    p.status.store(503, Ordering::SeqCst);
    p.calls.store(0, Ordering::SeqCst);
    let t = env
        .post(&format!("/api/v1/integrations/{id}/test"), json!({}))
        .await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.body["health"]["status"], "down", "{}", t.text);
    assert_eq!(t.body["status"], "failing");
    assert_eq!(p.calls.load(Ordering::SeqCst), 3, "503 is retried");
    assert_eq!(t.body["health"]["breaker"]["state"], "open", "{}", t.text);
    assert!(
        env.outbox()
            .await
            .iter()
            .any(|(k, _)| k == "integration.failed")
    );
    // Open: no call reaches the provider.
    let t = env
        .post(&format!("/api/v1/integrations/{id}/test"), json!({}))
        .await;
    assert_eq!(p.calls.load(Ordering::SeqCst), 3);
    assert!(
        t.body["health"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit open"),
        "{}",
        t.text
    );
    // After the cool-down one probe goes through; it succeeds and closes the circuit.
    p.status.store(200, Ordering::SeqCst);
    env.clock.advance(chrono::Duration::seconds(31));
    let t = env
        .post(&format!("/api/v1/integrations/{id}/test"), json!({}))
        .await;
    assert_eq!(t.body["health"]["status"], "ok", "{}", t.text);
    assert_eq!(t.body["health"]["breaker"]["state"], "closed", "{}", t.text);
    assert_eq!(t.body["status"], "active");
    assert_eq!(p.calls.load(Ordering::SeqCst), 4);
    // The log shows the failed attempts; filters and pages work.
    env.sink.flush().await;
    let errs = env
        .get(&format!("/api/v1/integrations/{id}/log?status=error"))
        .await;
    assert_eq!(
        errs.body["items"].as_array().unwrap().len(),
        3,
        "{}",
        errs.text
    );
    let c503 = env
        .get(&format!("/api/v1/integrations/{id}/log?status=503&limit=2"))
        .await;
    assert_eq!(c503.body["items"].as_array().unwrap().len(), 2);
    let next = c503.body["next_cursor"]
        .as_str()
        .expect("next page")
        .to_owned();
    let rest = env
        .get(&format!(
            "/api/v1/integrations/{id}/log?status=503&limit=2&cursor={next}"
        ))
        .await;
    assert_eq!(
        rest.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        rest.text
    );
    let oks = env
        .get(&format!("/api/v1/integrations/{id}/log?status=ok"))
        .await;
    assert_eq!(oks.body["items"].as_array().unwrap().len(), 1);
    let future = (Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = env
        .get(&format!("/api/v1/integrations/{id}/log?since={future}"))
        .await;
    assert_eq!(none.body["items"], json!([]), "{}", none.text);
    assert_eq!(
        env.get(&format!("/api/v1/integrations/{id}/log?status=maybe"))
            .await
            .status,
        422
    );

    // Not retryable: credentials refused, one attempt.
    let r = env
        .create("refused-api-key-01", "hook-secret-ref1", false)
        .await;
    let id2 = id_of(&r);
    p.status.store(401, Ordering::SeqCst);
    p.calls.store(0, Ordering::SeqCst);
    let t = env
        .post(&format!("/api/v1/integrations/{id2}/test"), json!({}))
        .await;
    assert_eq!(p.calls.load(Ordering::SeqCst), 1, "401 is not retried");
    assert!(
        t.body["health"]["message"]
            .as_str()
            .unwrap()
            .contains("credentials refused"),
        "{}",
        t.text
    );

    // Rate limit under concurrency: 10/s, burst 1, shared by every client of the integration.
    let r = env
        .create("limited-api-key-01", "hook-secret-lim1", false)
        .await;
    let id3 = id_of(&r);
    p.status.store(200, Ordering::SeqCst);
    p.arrivals.lock().unwrap().clear();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = env.http.clone();
        let url = format!("{}/api/v1/integrations/{id3}/test", env.base);
        let tok = env.token.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let arrivals = p.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 8);
    let span = arrivals
        .iter()
        .max()
        .unwrap()
        .duration_since(*arrivals.iter().min().unwrap());
    assert!(
        span >= Duration::from_millis(600),
        "8 calls at 10/s took only {span:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    env
}

async fn vault_rotation_keeps_everything_decryptable(env: Env) -> Env {
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = env
            .create(
                &format!("rotate-api-key-{n:04}"),
                &format!("hook-secret-{n:04}"),
                false,
            )
            .await;
        ids.push(id_of(&r));
    }
    let old_key = env.vault.current().active_key_id().to_owned();
    for id in &ids {
        assert!(env.sealed(*id).await.starts_with(&format!("v1:{old_key}:")));
    }
    // What `savdo vault rotate` does: a new active key in the key file, then re-seal in batches.
    let mut vault = Vault::open(env.data_dir.path()).unwrap();
    let new_key = vault.rotate().unwrap();
    assert_ne!(new_key, old_key);
    let report = savdo_integrations::reencrypt_all(&env.store, &vault, 2)
        .await
        .unwrap();
    assert_eq!(report.active_key, new_key);
    assert_eq!(report.checked, 5);
    assert_eq!(report.reencrypted, 5);
    assert!(report.failed.is_empty());
    for (n, id) in ids.iter().enumerate() {
        let sealed = env.sealed(*id).await;
        assert!(sealed.starts_with(&format!("v1:{new_key}:")), "{sealed}");
        let creds = vault
            .decrypt_json(
                &sealed,
                &savdo_hub::aad_for(&env.tenant.to_string(), &id.to_string()),
            )
            .unwrap();
        assert_eq!(creds["api_key"], format!("rotate-api-key-{n:04}"));
    }
    // Running again finds nothing to do.
    let again = savdo_integrations::reencrypt_all(&env.store, &vault, 2)
        .await
        .unwrap();
    assert_eq!(again.reencrypted, 0);
    // The running server (loaded before the rotation) still reads and writes everything.
    let g = env.get(&format!("/api/v1/integrations/{}", ids[0])).await;
    assert_eq!(g.body["credentials"]["api_key"], "****0000", "{}", g.text);
    let p = env
        .patch(
            &format!("/api/v1/integrations/{}", ids[1]),
            json!({"credentials": {"api_key": "after-rotation-key-9"}}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(
        env.sealed(ids[1])
            .await
            .starts_with(&format!("v1:{new_key}:"))
    );
    let t = env
        .post(&format!("/api/v1/integrations/{}/test", ids[2]), json!({}))
        .await;
    assert_eq!(t.body["health"]["status"], "ok", "{}", t.text);
    // Old key kept for decryption.
    assert!(vault.key_ids().contains(&old_key.as_str()));
    env
}

async fn hooks_verified_and_applied_once(env: Env) -> Env {
    let hook_secret = "hook-secret-for-tests-1";
    let r = env.create("hooks-api-key-0001", hook_secret, false).await;
    let id = id_of(&r);
    let path = format!("/hooks/{KIND}/{id}");
    let body = json!({"id": "dlv-1", "amount": 100}).to_string();

    // Unauthenticated: refused in the provider's format, nothing stored or applied.
    for s in [None, Some("00"), Some(sig("wrong-secret", &body).as_str())] {
        let r = env.hook(&path, &body, s).await;
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.body, json!({"echo_error": "unauthenticated"}));
    }
    // Signed over another body.
    let r = env.hook(&path, &body, Some(&sig(hook_secret, "{}"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(env.applied.load(Ordering::SeqCst), 0);
    assert!(
        env.store
            .list_hooks(env.tenant, id, 50)
            .await
            .unwrap()
            .is_empty()
    );

    // Verified: applied once, a duplicate answered the same from the inbox.
    let s = sig(hook_secret, &body);
    let first = env.hook(&path, &body, Some(&s)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.body["applied"], 1);
    let dup = env.hook(&path, &body, Some(&s)).await;
    assert_eq!(dup.status, 200);
    assert_eq!(dup.text, first.text);
    assert_eq!(env.applied.load(Ordering::SeqCst), 1);
    let inbox = env.store.list_hooks(env.tenant, id, 50).await.unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].delivery_id, "dlv-1");
    assert_eq!(inbox[0].status, "handled");
    // Concurrent duplicates of a new delivery: still applied once.
    let body2 = json!({"id": "dlv-2"}).to_string();
    let s2 = sig(hook_secret, &body2);
    let (a, b) = tokio::join!(
        env.hook(&path, &body2, Some(&s2)),
        env.hook(&path, &body2, Some(&s2))
    );
    assert!(
        a.status == 200 || b.status == 200,
        "{} / {}",
        a.text,
        b.text
    );
    assert_eq!(env.applied.load(Ordering::SeqCst), 2);

    // A passing failure of ours is not remembered: the provider's retry is handled afresh,
    // applied once, and only then replayed.
    let body_t = json!({"id": "dlv-t", "fail_times": 2}).to_string();
    let st = sig(hook_secret, &body_t);
    for _ in 0..2 {
        let r = env.hook(&path, &body_t, Some(&st)).await;
        assert_eq!(r.status, 503, "{}", r.text);
    }
    let ok = env.hook(&path, &body_t, Some(&st)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["applied"], 3);
    let again = env.hook(&path, &body_t, Some(&st)).await;
    assert_eq!(again.text, ok.text);
    assert_eq!(env.applied.load(Ordering::SeqCst), 3);

    // Unknown, mismatched or disabled: the same neutral 404.
    let neutral = json!({"error": "not_found"});
    for p in [
        format!("/hooks/{KIND}/{}", Uuid::now_v7()),
        format!("/hooks/{KIND}/not-a-uuid"),
        format!("/hooks/payme/{id}"),
        format!("/hooks/nonesuch/{id}"),
    ] {
        let r = env.hook(&p, &body, Some(&s)).await;
        assert_eq!(r.status, 404, "{p}: {}", r.text);
        assert_eq!(r.body, neutral);
    }
    env.patch(
        &format!("/api/v1/integrations/{id}"),
        json!({"status": "disabled"}),
    )
    .await;
    let r = env
        .hook(
            &path,
            &json!({"id": "dlv-3"}).to_string(),
            Some(&sig(hook_secret, &json!({"id": "dlv-3"}).to_string())),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, neutral);
    assert_eq!(env.applied.load(Ordering::SeqCst), 3);
    assert!(!logged().contains(hook_secret));
    env
}

async fn sync_job_resumes_after_restart(env: Env) -> Env {
    let r = env
        .create("sync-api-key-00001", "hook-secret-syn1", false)
        .await;
    let id = id_of(&r);
    let job = env
        .post(
            &format!("/api/v1/integrations/{id}/sync"),
            json!({"what": "items"}),
        )
        .await;
    assert_eq!(job.status, 202, "{}", job.text);
    assert_eq!(job.body["status"], "queued");
    assert_eq!(job.body["done"], 0);
    let job_id = Uuid::parse_str(job.body["id"].as_str().unwrap()).unwrap();
    let config = RunnerConfig {
        lease: Duration::from_secs(30),
        idle: Duration::from_millis(20),
        max_step_failures: 3,
        retry_delay: Duration::from_millis(10),
    };
    let runner = |config: RunnerConfig| {
        JobRunner::new(
            env.store.clone(),
            env.vault.clone(),
            env.registry.clone(),
            Some(env.hub.clone()),
            env.sync.clone(),
        )
        .with_config(config)
    };
    // First runner: stopped mid-job.
    let (stop1, rx1) = tokio::sync::watch::channel(false);
    let h1 = tokio::spawn(runner(config.clone()).run(rx1));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = env.store.get_job(env.tenant, id, job_id).await.unwrap();
        if j.done >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "job made no progress: {j:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop1.send(true).unwrap();
    h1.await.unwrap();
    let mid = env
        .get(&format!("/api/v1/integrations/{id}/jobs/{job_id}"))
        .await;
    assert_eq!(mid.body["status"], "running", "{}", mid.text);
    let done_mid = mid.body["done"].as_i64().unwrap();
    assert!((3..10).contains(&done_mid), "{}", mid.text);
    assert_eq!(mid.body["cursor"]["next"], done_mid);
    assert_eq!(mid.body["total"], 10);

    // A new runner (a restarted process) continues from the cursor.
    let (stop2, rx2) = tokio::sync::watch::channel(false);
    let h2 = tokio::spawn(runner(config).run(rx2));
    let deadline = Instant::now() + Duration::from_secs(20);
    let finished = loop {
        let j = env.store.get_job(env.tenant, id, job_id).await.unwrap();
        if j.status != JobStatus::Running && j.status != JobStatus::Queued {
            break j;
        }
        assert!(Instant::now() < deadline, "job did not finish: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop2.send(true).unwrap();
    h2.await.unwrap();
    assert_eq!(finished.status, JobStatus::Succeeded);
    assert_eq!(finished.done, 10);
    assert!(finished.finished_at.is_some());
    assert_eq!(finished.errors.len(), 1, "{:?}", finished.errors);
    assert_eq!(finished.errors[0]["item"], 4);
    let seen = env.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(
        seen.values().all(|n| *n == 1),
        "an item was processed twice: {seen:?}"
    );
    let list = env.get(&format!("/api/v1/integrations/{id}/jobs")).await;
    assert_eq!(
        list.body["items"][0]["status"], "succeeded",
        "{}",
        list.text
    );
    env
}
