//! The marketplace orders API over HTTP, on SQLite and (with `SAVDO_TEST_DATABASE_URL`)
//! PostgreSQL, with orders imported from the Uzum simulator by the real poller: the list with
//! its state filter and cursor paging, the retry of an order that needs attention once its item
//! is mapped, problems naming the field, roles, tenant isolation and the OpenAPI entries. The
//! import itself is tested in `crates/connectors/tests/marketplace_orders.rs`.
//!
//! The catalogue links come from the stock half's "products" sync handler, run step by step.

use savdo_api::AppState;
use savdo_domain::tenant::Role;
use savdo_storage::{Actor, InvoiceStatus, NewToken};
use savdo_testkit::marketplace::orders::{CHOY, NON, SUV, World, product};
use serde_json::{Value, json};
use uuid::Uuid;

savdo_testkit::orders_backend_tests!(orders_api);

// ----------------------------------------------------------------------------- API

struct Api {
    base: String,
    client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Api {
    async fn start(w: &World) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(w.store.clone(), w.vault.clone());
        tokio::spawn(savdo_api::serve(listener, state, async {
            let _ = rx.await;
        }));
        Api {
            base: format!("http://{addr}/api/v1"),
            client: reqwest::Client::new(),
            shutdown: Some(tx),
        }
    }

    async fn send(&self, method: reqwest::Method, token: &str, path: &str) -> (u16, Value) {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert!(
                ct.starts_with("application/problem+json"),
                "{status} {ct} {body}"
            );
        }
        (status, body)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn token(w: &World, tenant: Uuid, role: Role) -> String {
    let token = savdo_api::routes::tokens::generate_token();
    w.store
        .create_token(
            &Actor::system(tenant),
            &NewToken {
                name: "t".into(),
                role,
                store_id: None,
            },
            &savdo_api::extract::hash_token(&token),
        )
        .await
        .unwrap();
    token
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn orders_api(w: &World) {
    use reqwest::Method;
    let api = Api::start(w).await;
    let owner = token(w, w.tenant, Role::Owner).await;
    let uzum = w.integration("uzum", false).await;
    let u1 = w.order("uzum", &[(CHOY, 1)]).await;
    let u2 = w.order("uzum", &[(SUV, 1)]).await;
    let u3 = w.order("uzum", &[(NON, 1)]).await;
    let poller = w.poller();
    w.poll(&poller).await;

    let path = format!("/integrations/{}/orders", uzum.id);
    let (s, all) = api.send(Method::GET, &owner, &path).await;
    assert_eq!(s, 200, "{all}");
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    for id in [&u1, &u2, &u3] {
        assert!(ids.contains(&id.as_str()));
    }
    let (_, attention) = api
        .send(
            Method::GET,
            &owner,
            &format!("{path}?state=needs_attention"),
        )
        .await;
    let items = attention["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["external_id"], u2.as_str());
    assert_eq!(items[0]["type"], "uzum");
    assert!(items[0]["reason"].as_str().unwrap().contains(SUV));
    assert!(items[0].get("tenant_id").is_none());
    // Cursor paging.
    let (_, p1) = api
        .send(Method::GET, &owner, &format!("{path}?limit=2"))
        .await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let next = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = api
        .send(
            Method::GET,
            &owner,
            &format!("{path}?limit=2&cursor={next}"),
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert!(p2["next_cursor"].is_null());
    // Bad input names the field.
    let (s, b) = api
        .send(Method::GET, &owner, &format!("{path}?state=lost"))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(fields(&b), vec!["state"]);
    let (s, b) = api
        .send(Method::GET, &owner, &format!("{path}?cursor=nope"))
        .await;
    assert_eq!((s, fields(&b)), (422, vec!["cursor".to_owned()]));
    let (s, b) = api
        .send(Method::GET, &owner, &format!("{path}?limit=0"))
        .await;
    assert_eq!((s, fields(&b)), (422, vec!["limit".to_owned()]));

    // Retry: still unmapped -> still needs attention; mapped -> imported; then 409.
    let retry = format!("{path}/{u2}/retry");
    let (s, b) = api.send(Method::POST, &owner, &retry).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "needs_attention");
    let suv = w
        .store
        .create_product(&w.actor(), &product("SUV", "Suv 1.5 l", SUV, 600_000))
        .await
        .unwrap();
    w.supply_product(suv.id, 3).await;
    w.products_sync(&uzum, &json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}))
        .await;
    let (s, b) = api.send(Method::POST, &owner, &retry).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "imported");
    assert_eq!(b["reason"], Value::Null);
    let inv = w.invoice_of("uzum", &u2).await;
    assert_eq!(b["invoice_id"], inv.id.to_string());
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    let (s, b) = api.send(Method::POST, &owner, &retry).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["errors"][0]["field"], "state", "{b}");
    let (s, _) = api
        .send(Method::POST, &owner, &format!("{path}/999999/retry"))
        .await;
    assert_eq!(s, 404);
    // The poller then finds it imported: nothing twice.
    w.poll(&poller).await;
    assert_eq!(w.events("marketplace.order_imported").await.len(), 3);

    // Roles and tenants.
    let cashier = token(w, w.tenant, Role::Cashier).await;
    let (s, _) = api.send(Method::GET, &cashier, &path).await;
    assert_eq!(s, 403);
    let other = w.store.create_tenant("Other shop").await.unwrap().id;
    let stranger = token(w, other, Role::Owner).await;
    let (s, _) = api.send(Method::GET, &stranger, &path).await;
    assert_eq!(s, 404);
    let (s, _) = api.send(Method::POST, &stranger, &retry).await;
    assert_eq!(s, 404);
    let (s, _) = api
        .send(
            Method::GET,
            &owner,
            &format!("/integrations/{}/orders", Uuid::now_v7()),
        )
        .await;
    assert_eq!(s, 404);
    // The OpenAPI document lists both routes.
    let (s, doc) = api.send(Method::GET, &owner, "/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/integrations/{id}/orders"]["get"].is_object());
    assert!(
        doc["paths"]["/api/v1/integrations/{id}/orders/{external_id}/retry"]["post"].is_object()
    );
}
