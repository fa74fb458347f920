//! The marketplace connectors against the Uzum, Wildberries and Ozon simulators: a registry
//! with the three connectors, and an integration of a kind connected to a running sandbox with
//! its catalogue links made by the "products" sync, run step by step.

pub mod orders;

use std::sync::Arc;
use std::time::Duration;

use savdo_connectors::marketplace::mapping::ProductsSync;
use savdo_domain::clock::SystemClock;
use savdo_hub::{Credentials, HttpHub, RateLimit, Registry};
use savdo_integrations::{SyncContext, SyncHandler, VaultHandle};
use savdo_storage::integrations::{Integration, IntegrationStatus, NewIntegration};
use savdo_storage::{Actor, Storage};
use serde_json::{Value, json};
use uuid::Uuid;

/// The built-in registry with the three marketplace connectors. Uzum (about 1/s) and Ozon
/// (80/min for stocks) run at `rate` requests a second here, the simulators' limits raised to
/// match.
pub fn registry(rate: u32) -> Registry {
    let mut registry = Registry::builtin();
    for kind in ["uzum", "ozon"] {
        let mut d = registry.descriptor(kind).expect("builtin kind").clone();
        let limit = RateLimit {
            requests: rate,
            per: Duration::from_secs(1),
            burst: 1,
            max_wait: Duration::from_secs(30),
        };
        d.http.rate_limit = Some(limit);
        // Ozon's 80 a minute is its stock endpoint's own limit.
        for route in &mut d.http.route_limits {
            route.limit = limit;
        }
        registry.add_type(d);
    }
    savdo_connectors::uzum::register(&mut registry);
    savdo_connectors::wildberries::register(&mut registry);
    savdo_connectors::ozon::register(&mut registry);
    registry
}

/// The simulator's default credentials for `kind` and settings pointing at the sandbox at
/// `sandbox_url`.
pub fn connection(kind: &str, sandbox_url: &str) -> (Value, Value) {
    let base = sandbox_url;
    match kind {
        "uzum" => (
            json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}),
            json!({"shop_id": "1", "base_url": format!("{base}/uzum/api/seller-openapi")}),
        ),
        "wildberries" => (
            json!({"token": savdo_sandbox::wildberries::DEFAULT_TOKEN}),
            json!({"warehouse_id": "1", "base_url": format!("{base}/wildberries")}),
        ),
        "ozon" => (
            json!({"client_id": savdo_sandbox::ozon::DEFAULT_CLIENT_ID,
                   "api_key": savdo_sandbox::ozon::DEFAULT_API_KEY}),
            json!({"warehouse_id": "1", "base_url": format!("{base}/ozon")}),
        ),
        other => panic!("not a marketplace kind: {other}"),
    }
}

/// POST `body` to the simulator control API `/_control/<kind>/<path>` of the sandbox at
/// `sandbox_url`; its JSON answer, which must be a success.
pub async fn control_post(
    http: &reqwest::Client,
    sandbox_url: &str,
    kind: &str,
    path: &str,
    body: Value,
) -> Value {
    let r = http
        .post(format!("{sandbox_url}/_control/{kind}/{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{kind} {path}: {status} {v}");
    v
}

/// GET `/_control/<kind>/<path>` of the sandbox at `sandbox_url` as JSON.
pub async fn control_get(
    http: &reqwest::Client,
    sandbox_url: &str,
    kind: &str,
    path: &str,
) -> Value {
    http.get(format!("{sandbox_url}/_control/{kind}/{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What connecting an integration needs.
pub struct Env<'a> {
    pub store: &'a Arc<dyn Storage>,
    pub registry: &'a Arc<Registry>,
    pub hub: &'a HttpHub,
    pub vault: &'a Arc<VaultHandle>,
    pub sandbox_url: String,
    pub tenant: Uuid,
}

impl Env<'_> {
    /// Connect an active integration of `kind` serving `store_id` and run its "products" sync.
    pub async fn integration(&self, kind: &str, store_id: Uuid, auto_confirm: bool) -> Integration {
        let (credentials, mut settings) = connection(kind, &self.sandbox_url);
        settings["store_ids"] = json!([store_id.to_string()]);
        settings["auto_confirm"] = json!(auto_confirm);
        let id = Uuid::now_v7();
        let sealed = self
            .vault
            .seal_credentials(self.tenant, id, &credentials)
            .unwrap();
        let i = self
            .store
            .create_integration(
                &Actor::system(self.tenant),
                &NewIntegration {
                    id,
                    kind: kind.into(),
                    name: format!("{kind} shop"),
                    status: IntegrationStatus::Active,
                    settings,
                    credentials_sealed: sealed,
                },
            )
            .await
            .unwrap();
        self.products_sync(&i, &credentials).await;
        i
    }

    /// Run the "products" sync of `i` to the end.
    pub async fn products_sync(&self, i: &Integration, credentials: &Value) {
        let sync = ProductsSync::new(self.store.clone(), Arc::new(SystemClock));
        let ctx = SyncContext {
            store: self.store.clone(),
            integration: i.clone(),
            credentials: Credentials::from_value(credentials.clone()).unwrap(),
            job_id: Uuid::now_v7(),
            what: "products".into(),
            registry: self.registry.clone(),
            hub: Some(self.hub.clone()),
        };
        let mut cursor: Option<Value> = None;
        loop {
            let step = sync
                .step(&ctx, cursor.as_ref())
                .await
                .expect("products sync");
            if step.finished {
                break;
            }
            cursor = step.cursor;
        }
    }
}
