//! The webhook API over HTTP (SQLite; the storage behaviour is covered on both backends in the
//! savdo-webhooks tests): creation and masking, validation, roles, tenant isolation, rotation,
//! the test endpoint and re-queueing.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use savdo_api::AppState;
use savdo_domain::clock::{Clock, ManualClock};
use savdo_domain::tenant::Role;
use savdo_storage::{Actor, NewToken, Storage};
use savdo_webhooks::{DeliveryWorker, WorkerConfig};
use serde_json::{Value, json};

struct T {
    base: String,
    http: reqwest::Client,
    store: Arc<dyn Storage>,
    clock: Arc<ManualClock>,
    vault: Arc<savdo_integrations::VaultHandle>,
    _dir: tempfile::TempDir,
}

async fn token(store: &Arc<dyn Storage>, tenant: uuid::Uuid, role: Role) -> String {
    let actor = Actor {
        tenant_id: tenant,
        token_id: None,
        role: Role::Owner,
        store_id: None,
    };
    let t = format!("svd_test_{}", uuid::Uuid::new_v4().simple());
    store
        .create_token(
            &actor,
            &NewToken {
                name: "t".into(),
                role,
                store_id: None,
            },
            &savdo_api::extract::hash_token(&t),
        )
        .await
        .unwrap();
    t
}

async fn start(allow_private: bool) -> T {
    savdo_webhooks::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("savdo.db").display());
    let store = savdo_storage::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
    ));
    let vault = Arc::new(savdo_integrations::VaultHandle::new(
        savdo_hub::Vault::ephemeral().unwrap(),
    ));
    let mut state = AppState::new(store.clone(), vault.clone());
    state.clock = clock.clone();
    state.webhooks_allow_private = allow_private;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(savdo_api::serve(listener, state, std::future::pending()));
    T {
        base,
        http: reqwest::Client::new(),
        store,
        clock,
        vault,
        _dir: dir,
    }
}

impl T {
    async fn call(
        &self,
        tok: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rq = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(tok);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.unwrap();
        let s = r.status().as_u16();
        let text = r.text().await.unwrap();
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
    fn worker(&self) -> DeliveryWorker {
        DeliveryWorker::new(
            self.store.clone(),
            self.clock.clone(),
            WorkerConfig {
                allow_private: true,
                ..Default::default()
            },
        )
        .with_vault(self.vault.clone())
    }
}

type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver(status: Arc<Mutex<u16>>) -> (String, Got) {
    let got: Got = Default::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, b: Bytes| {
            let (g, status) = (g.clone(), status.clone());
            async move {
                g.lock().unwrap().push((h, b));
                StatusCode::from_u16(*status.lock().unwrap()).unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

fn field(body: &Value) -> String {
    body["errors"][0]["field"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

use reqwest::Method as M;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_masking_validation_roles_and_isolation() {
    let t = start(true).await;
    let tenant = t.store.create_tenant("A").await.unwrap().id;
    let owner = token(&t.store, tenant, Role::Owner).await;
    let manager = token(&t.store, tenant, Role::Manager).await;
    let cashier = token(&t.store, tenant, Role::Cashier).await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["receipt.created", "stock.*"], "description": "ERP"});

    let (s, w) = t
        .call(&manager, M::POST, "/webhooks", Some(body.clone()))
        .await;
    assert_eq!(s, 201, "{w}");
    let secret = w["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        savdo_webhooks::Secret::parse(&secret).unwrap().key().len(),
        32
    );
    assert_eq!(w["enabled"], true);
    assert_eq!(w["events"], json!(["receipt.created", "stock.*"]));
    for k in ["id", "url", "description", "created_at"] {
        assert!(w.get(k).is_some(), "{k}");
    }
    let id = w["id"].as_str().unwrap().to_string();
    let masked = format!("whsec_****{}", &secret[secret.len() - 4..]);

    let (s, g) = t
        .call(&owner, M::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!((s, g["secret"].as_str().unwrap()), (200, masked.as_str()));
    let (s, l) = t.call(&owner, M::GET, "/webhooks", None).await;
    assert_eq!(s, 200);
    assert_eq!(l["items"][0]["secret"], masked);
    assert!(!l.to_string().contains(&secret[6..]));

    let (s, _) = t.call(&cashier, M::GET, "/webhooks", None).await;
    assert_eq!(s, 403);
    let (s, _) = t
        .call(&cashier, M::POST, "/webhooks", Some(body.clone()))
        .await;
    assert_eq!(s, 403);

    for (b, f) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": []}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["receipt.exploded"]}),
            "events[0]",
        ),
        (json!({"url": "http://127.0.0.1:9/x"}), "events"),
    ] {
        let (s, p) = t.call(&owner, M::POST, "/webhooks", Some(b.clone())).await;
        assert_eq!((s, field(&p)), (422, f.to_string()), "{b} -> {p}");
    }

    let (s, p) = t
        .call(
            &owner,
            M::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"events": ["*"], "description": null, "enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (
            p["events"].clone(),
            p["description"].clone(),
            p["enabled"].clone()
        ),
        (json!(["*"]), Value::Null, json!(false))
    );
    let (s, p) = t
        .call(
            &owner,
            M::PATCH,
            &format!("/webhooks/{id}"),
            Some(json!({"url": "gopher://x"})),
        )
        .await;
    assert_eq!((s, field(&p)), (422, "url".to_string()));

    // Another tenant sees nothing and can touch nothing.
    let other = t.store.create_tenant("B").await.unwrap().id;
    let stranger = token(&t.store, other, Role::Owner).await;
    for (m, path) in [
        (M::GET, format!("/webhooks/{id}")),
        (M::PATCH, format!("/webhooks/{id}")),
        (M::DELETE, format!("/webhooks/{id}")),
        (M::POST, format!("/webhooks/{id}/rotate-secret")),
        (M::GET, format!("/webhooks/{id}/deliveries")),
        (M::POST, format!("/webhooks/{id}/test")),
        (M::POST, format!("/webhooks/{id}/deliveries/{id}/retry")),
    ] {
        let b = (m == M::PATCH).then(|| json!({"enabled": true}));
        let (s, _) = t.call(&stranger, m.clone(), &path, b).await;
        assert_eq!(s, 404, "{m} {path}");
    }
    let (_, l) = t.call(&stranger, M::GET, "/webhooks", None).await;
    assert_eq!(l["items"], json!([]));

    let (s, _) = t
        .call(&owner, M::DELETE, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = t
        .call(&owner, M::GET, &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_urls_refused_when_not_allowed() {
    let t = start(false).await;
    let tenant = t.store.create_tenant("A").await.unwrap().id;
    let owner = token(&t.store, tenant, Role::Owner).await;
    for u in [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://10.0.0.5/x",
        "http://192.168.1.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x",
        "http://[::1]/x",
        "http://[fd00:ec2::254]/x",
        "http://0.0.0.0/x",
    ] {
        let (s, p) = t
            .call(
                &owner,
                M::POST,
                "/webhooks",
                Some(json!({"url": u, "events": ["*"]})),
            )
            .await;
        assert_eq!((s, field(&p)), (422, "url".to_string()), "{u}: {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_endpoint_rotation_and_retry() {
    let t = start(true).await;
    let tenant = t.store.create_tenant("A").await.unwrap().id;
    let owner = token(&t.store, tenant, Role::Owner).await;
    let status = Arc::new(Mutex::new(500u16));
    let (url, got) = receiver(status.clone()).await;
    let (_, w) = t
        .call(
            &owner,
            M::POST,
            "/webhooks",
            Some(json!({"url": url, "events": ["receipt.created"]})),
        )
        .await;
    let id = w["id"].as_str().unwrap().to_string();
    let old = w["secret"].as_str().unwrap().to_string();

    // Rotation: a new secret in full, the old one still signs for 24 hours.
    let (s, r) = t
        .call(
            &owner,
            M::POST,
            &format!("/webhooks/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let new = r["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    // Both secrets are sealed at rest: neither is in the database file or its WAL.
    let mut file = std::fs::read(t._dir.path().join("savdo.db")).unwrap();
    file.extend(std::fs::read(t._dir.path().join("savdo.db-wal")).unwrap_or_default());
    for s in [&old, &new, &"whsec_".to_string()] {
        let b = s.trim_start_matches("whsec_");
        let b = if b.is_empty() { "whsec_" } else { b };
        assert!(!file.windows(b.len()).any(|w| w == b.as_bytes()), "{b:.8}");
    }

    let (s, d) = t
        .call(&owner, M::POST, &format!("/webhooks/{id}/test"), None)
        .await;
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["event_type"], "webhook.test");
    assert_eq!(d["status"], "pending");
    let did = d["id"].as_str().unwrap().to_string();
    assert_eq!(t.worker().run_due_once().await, 1);
    {
        let g = got.lock().unwrap();
        assert_eq!(g.len(), 1);
        let (h, b) = &g[0];
        let ce: Value = serde_json::from_slice(b).unwrap();
        assert_eq!(ce["type"], "webhook.test");
        let msg = h["webhook-id"].to_str().unwrap();
        let ts: i64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        let sigs: Vec<&str> = h["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .collect();
        let sign =
            |s: &str| savdo_webhooks::sign(&savdo_webhooks::Secret::parse(s).unwrap(), msg, ts, b);
        assert_eq!(sigs, vec![sign(&new), sign(&old)]);
    }
    let (s, l) = t
        .call(&owner, M::GET, &format!("/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(s, 200);
    let d = &l["items"][0];
    assert_eq!(
        (
            d["status"].as_str(),
            d["attempts"].as_u64(),
            d["response_code"].as_u64()
        ),
        (Some("failed"), Some(1), Some(500))
    );
    for k in [
        "event_id",
        "latency_ms",
        "response_body",
        "last_error",
        "next_attempt_at",
        "created_at",
        "updated_at",
    ] {
        assert!(d.get(k).is_some(), "{k}");
    }

    // Retry re-queues now; the receiver is fixed, so it succeeds.
    *status.lock().unwrap() = 204;
    let (s, d) = t
        .call(
            &owner,
            M::POST,
            &format!("/webhooks/{id}/deliveries/{did}/retry"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{d}");
    assert_eq!(d["status"], "pending");
    assert_eq!(t.worker().run_due_once().await, 1);
    let (_, l) = t
        .call(&owner, M::GET, &format!("/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(l["items"][0]["status"], "succeeded");
    assert_eq!(l["items"][0]["attempts"], 2);
    let (s, _) = t
        .call(
            &owner,
            M::POST,
            &format!("/webhooks/{id}/deliveries/{}/retry", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // A day later only the new secret signs.
    t.clock.advance(chrono::Duration::hours(25));
    let _ = t
        .call(&owner, M::POST, &format!("/webhooks/{id}/test"), None)
        .await;
    assert_eq!(t.worker().run_due_once().await, 1);
    let g = got.lock().unwrap();
    let (h, _) = g.last().unwrap();
    assert_eq!(
        h["webhook-signature"].to_str().unwrap().split(' ').count(),
        1
    );
    assert_eq!(
        h["webhook-timestamp"].to_str().unwrap(),
        t.clock.now().timestamp().to_string()
    );
}
