//! Test support: a real server on port 0 over a fresh database (SQLite always, PostgreSQL when
//! `SAVDO_TEST_DATABASE_URL` is set), tenants with owner tokens, and HTTP helpers.

#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Once};

use reqwest::Method;
use reqwest::header::HeaderMap;
use savdo_api::AppState;
use savdo_domain::tenant::Role;
use savdo_storage::{Actor, NewToken, Storage};
use savdo_testkit::PgDb;
use serde_json::{Value, json};
use uuid::Uuid;

pub use savdo_testkit::PG_ENV;

/// Generates, for each named `async fn name(srv: Srv)`, a module `name` with a `sqlite` and a
/// `postgres` test.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$name).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::common::run($crate::common::Backend::Postgres, super::$name).await;
                }
            }
        )*
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server and an owner of one tenant.
#[derive(Clone)]
pub struct Srv {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Storage>,
    pub tenant: Uuid,
    pub token: String,
    pub backend: Backend,
}

/// What must be torn down after a test.
struct Guard {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgDb>,
}

fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Run `f` against a fresh server on `backend`; PostgreSQL is skipped (visibly) without the
/// environment variable and fails the test when configured but unreachable.
pub async fn run<F, Fut>(backend: Backend, f: F)
where
    F: FnOnce(Srv) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    if backend == Backend::Postgres && !std::env::var(PG_ENV).is_ok_and(|v| !v.is_empty()) {
        // Straight to the process's stderr, past the test harness's output capture.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIP postgres: {PG_ENV} is not set");
        return;
    }
    let (srv, mut guard) = start(backend).await;
    // Everything that can fail runs after the guard exists, so the database is dropped.
    let res = tokio::spawn(async move {
        srv.store.migrate().await.expect("migrate");
        let mut srv = srv;
        let (tenant, token) = srv.new_tenant("Test shop").await;
        srv.tenant = tenant;
        srv.token = token;
        f(srv).await
    })
    .await;
    if let Some(tx) = guard.shutdown.take() {
        let _ = tx.send(());
    }
    if let Some(h) = guard.server.take() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), h).await;
    }
    if let Some(pg) = guard.pg.take() {
        pg.drop_db().await;
    }
    if let Err(e) = res {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

async fn start(backend: Backend) -> (Srv, Guard) {
    init_crypto();
    let mut guard = Guard {
        shutdown: None,
        server: None,
        _dir: None,
        pg: None,
    };
    let store: Arc<dyn Storage> = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("savdo.db").display());
            guard._dir = Some(dir);
            savdo_storage::connect(&url).await.expect("open sqlite")
        }
        Backend::Postgres => {
            let admin = std::env::var(PG_ENV).expect("checked by run");
            let pg = PgDb::create_on(admin, "savdo_t").await;
            let url = pg.url();
            guard.pg = Some(pg);
            savdo_storage::connect(&url)
                .await
                .expect("open postgres test database")
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState::new(
        store.clone(),
        Arc::new(savdo_integrations::VaultHandle::new(
            savdo_hub::Vault::ephemeral().expect("vault"),
        )),
    );
    guard.server = Some(tokio::spawn(savdo_api::serve(listener, state, async {
        let _ = rx.await;
    })));
    guard.shutdown = Some(tx);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("client");
    let srv = Srv {
        base: format!("http://{addr}"),
        client,
        store,
        tenant: Uuid::nil(),
        token: String::new(),
        backend,
    };
    (srv, guard)
}

/// An HTTP answer, its body parsed as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
    /// Assert the status, printing the body on failure.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        &self.body
    }
    pub fn id(&self) -> Uuid {
        uuid(&self.body["id"])
    }
    /// The `field` names of a problem's `errors`.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
    /// Assert an RFC 9457 problem with this status (and, if given, naming `field`).
    #[track_caller]
    pub fn problem(&self, status: u16, field: Option<&str>) -> &Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "content-type {:?}, body {}",
            self.content_type(),
            self.text
        );
        assert_eq!(self.body["status"], json!(status), "{}", self.text);
        assert!(self.body["title"].is_string(), "{}", self.text);
        assert!(self.body["type"].is_string(), "{}", self.text);
        if let Some(f) = field {
            assert!(
                self.fields().iter().any(|x| x == f),
                "expected a problem naming {f:?}, got {}",
                self.text
            );
        }
        &self.body
    }
}

pub fn uuid(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap_or_else(|| panic!("not a uuid: {v}")))
        .unwrap_or_else(|_| panic!("not a uuid: {v}"))
}

/// Quantity as milli-units from the JSON number the API returns.
pub fn milli(v: &Value) -> i64 {
    let n = v.as_number().unwrap_or_else(|| panic!("not a number: {v}"));
    savdo_domain::Qty::from_json(n)
        .unwrap_or_else(|e| panic!("bad qty {v}: {e}"))
        .milli()
}

impl Srv {
    /// A new tenant and its owner token, through the storage trait (as `savdo tenant create`).
    pub async fn new_tenant(&self, name: &str) -> (Uuid, String) {
        let t = self.store.create_tenant(name).await.expect("tenant");
        let token = savdo_api::routes::tokens::generate_token();
        self.store
            .create_token(
                &Actor::system(t.id),
                &NewToken {
                    name: "owner".into(),
                    role: Role::Owner,
                    store_id: None,
                },
                &savdo_api::extract::hash_token(&token),
            )
            .await
            .expect("token");
        (t.id, token)
    }

    /// The same server, acting with another token.
    pub fn with_token(&self, token: &str) -> Srv {
        let mut s = self.clone();
        s.token = token.to_string();
        s
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        into_resp(rb.send().await.expect("request")).await
    }

    /// A request with a raw body and explicit headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .body(body);
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        into_resp(rb.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(&body)).await
    }
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(Method::POST, path, None).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(&body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    // ----- fixtures -----

    pub async fn create_store(&self, name: &str) -> Uuid {
        self.post(
            "/api/v1/stores",
            json!({"name": name, "address": "Tashkent"}),
        )
        .await
        .ok(201);
        let r = self.get("/api/v1/stores").await;
        let items = r.ok(200)["items"].as_array().unwrap().clone();
        uuid(
            &items
                .iter()
                .rev()
                .find(|s| s["name"] == json!(name))
                .expect("store listed")["id"],
        )
    }

    pub async fn create_terminal(&self, store: Uuid) -> Uuid {
        self.post(
            "/api/v1/terminals",
            json!({"store_id": store, "name": "Till 1"}),
        )
        .await
        .ok(201);
        let r = self
            .get(&format!("/api/v1/terminals?store_id={store}"))
            .await;
        uuid(&r.ok(200)["items"].as_array().unwrap().last().unwrap()["id"])
    }

    /// A store with one terminal.
    pub async fn shop(&self) -> (Uuid, Uuid) {
        let s = self
            .create_store(&format!("Store {}", Uuid::new_v4()))
            .await;
        let t = self.create_terminal(s).await;
        (s, t)
    }

    pub async fn create_product(&self, sku: &str, price: i64) -> Uuid {
        let r = self
            .post(
                "/api/v1/products",
                json!({"sku": sku, "name": format!("Product {sku}"), "price": price}),
            )
            .await;
        r.ok(201);
        r.id()
    }

    pub async fn supply(&self, store: Uuid, product: Uuid, qty: Value) {
        self.post(
            "/api/v1/stock/supplies",
            json!({"store_id": store, "lines": [{"product_id": product, "qty": qty}]}),
        )
        .await
        .ok(201);
    }

    /// `(on_hand, reserved, available)` in milli-units; zeros when there is no row.
    pub async fn level(&self, store: Uuid, product: Uuid) -> (i64, i64, i64) {
        let r = self
            .get(&format!(
                "/api/v1/stock?store_id={store}&product_id={product}"
            ))
            .await;
        match r.ok(200)["items"].as_array().unwrap().as_slice() {
            [] => (0, 0, 0),
            [l] => (
                milli(&l["on_hand"]),
                milli(&l["reserved"]),
                milli(&l["available"]),
            ),
            many => panic!("more than one level row: {many:?}"),
        }
    }

    pub async fn create_token(&self, role: &str, store: Option<Uuid>) -> (Uuid, String) {
        let mut b = json!({"name": format!("{role} token"), "role": role});
        if let Some(s) = store {
            b["store_id"] = json!(s);
        }
        let r = self.post("/api/v1/tokens", b).await;
        r.ok(201);
        (r.id(), r.body["token"].as_str().unwrap().to_string())
    }
}

/// A sale paid in cash for exactly its total, one line per `(product, qty, price)`.
pub fn sale(store: Uuid, terminal: Uuid, lines: &[(Uuid, Value, i64)]) -> Value {
    let mut total = 0i64;
    let ls: Vec<Value> = lines
        .iter()
        .map(|(p, q, price)| {
            let m = milli(q);
            total += savdo_domain::money::line_gross(*price, savdo_domain::Qty::from_milli(m))
                .expect("line amount");
            json!({"product_id": p, "qty": q, "price": price})
        })
        .collect();
    json!({
        "id": Uuid::now_v7(),
        "store_id": store,
        "terminal_id": terminal,
        "lines": ls,
        "payments": [{"method": "cash", "amount": total}],
    })
}

async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}
