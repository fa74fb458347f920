//! Tokens and roles, store-bound cashiers, the audit log.

use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, sale, uuid};

async fn tokens_and_roles(srv: Srv) {
    let (store, term) = srv.shop().await;
    let (other_store, other_term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;

    let (cashier_id, cashier_tok) = srv.create_token("cashier", None).await;
    let (_, manager_tok) = srv.create_token("manager", None).await;
    let (bound_id, bound_tok) = srv.create_token("cashier", Some(store)).await;
    let cashier = srv.with_token(&cashier_tok);
    let manager = srv.with_token(&manager_tok);
    let bound = srv.with_token(&bound_tok);

    // The list never shows secrets or hashes.
    let r = srv.get("/api/v1/tokens").await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "owner + 3");
    assert!(!r.text.contains(&cashier_tok));
    assert!(
        items
            .iter()
            .all(|t| t.get("token").is_none() && t.get("token_hash").is_none())
    );
    let b = items.iter().find(|t| t["id"] == json!(bound_id)).unwrap();
    assert_eq!(b["store_id"], json!(store));
    assert_eq!(b["role"], "cashier");

    // Owner-only routes refuse cashiers and managers with 403.
    for who in [&cashier, &manager] {
        who.get("/api/v1/tokens").await.problem(403, None);
        who.post("/api/v1/tokens", json!({"name": "x", "role": "owner"}))
            .await
            .problem(403, None);
        who.delete(&format!("/api/v1/tokens/{cashier_id}"))
            .await
            .problem(403, None);
        who.patch("/api/v1/settings", json!({"require_open_shift": true}))
            .await
            .problem(403, None);
        who.get("/api/v1/audit").await.problem(403, None);
    }
    // Back-office routes refuse cashiers; managers may.
    cashier
        .post("/api/v1/stores", json!({"name": "Nope"}))
        .await
        .problem(403, None);
    cashier
        .post(
            "/api/v1/products",
            json!({"sku": "C", "name": "C", "price": 1}),
        )
        .await
        .problem(403, None);
    cashier
        .patch(&format!("/api/v1/products/{p}"), json!({"price": 1}))
        .await
        .problem(403, None);
    cashier
        .delete(&format!("/api/v1/products/{p}"))
        .await
        .problem(403, None);
    cashier
        .post(
            "/api/v1/stock/supplies",
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1}]}),
        )
        .await
        .problem(403, None);
    cashier
        .get("/api/v1/stock/movements")
        .await
        .problem(403, None);
    cashier
        .post(
            "/api/v1/invoices",
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1}]}),
        )
        .await
        .problem(403, None);
    manager
        .post(
            "/api/v1/products",
            json!({"sku": "M", "name": "M", "price": 1}),
        )
        .await
        .ok(201);
    // Cashiers sell and read the catalogue.
    cashier.get("/api/v1/products").await.ok(200);
    cashier.get("/api/v1/settings").await.ok(200);
    let r = cashier
        .post(
            "/api/v1/receipts",
            sale(other_store, other_term, &[(p, json!(1), 1000)]),
        )
        .await;
    assert_eq!(r.ok(201)["cashier_token_id"], json!(cashier_id));

    // A store-bound cashier sells in its store only.
    bound
        .post(
            "/api/v1/receipts",
            sale(store, term, &[(p, json!(1), 1000)]),
        )
        .await
        .ok(201);
    let r = bound
        .post(
            "/api/v1/receipts",
            sale(other_store, other_term, &[(p, json!(1), 1000)]),
        )
        .await;
    r.problem(422, Some("store_id"));
    bound
        .post_empty(&format!("/api/v1/terminals/{other_term}/shifts/open"))
        .await
        .problem(403, None);
    bound
        .post_empty(&format!("/api/v1/terminals/{term}/shifts/open"))
        .await
        .ok(201);
    bound
        .get(&format!("/api/v1/receipts?store_id={other_store}"))
        .await
        .problem(403, None);
    let r = bound.get("/api/v1/receipts").await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "a bound cashier sees its store's receipts");
    assert_eq!(items[0]["store_id"], json!(store));

    // Bad token requests.
    srv.post("/api/v1/tokens", json!({"name": "x", "role": "god"}))
        .await
        .problem(422, Some("role"));
    srv.post(
        "/api/v1/tokens",
        json!({"name": "x", "role": "manager", "store_id": store}),
    )
    .await
    .problem(422, Some("store_id"));
    srv.post(
        "/api/v1/tokens",
        json!({"name": "x", "role": "cashier", "store_id": Uuid::now_v7()}),
    )
    .await
    .problem(422, Some("store_id"));
    srv.post("/api/v1/tokens", json!({"name": "", "role": "cashier"}))
        .await
        .problem(422, Some("name"));

    // A deleted token is refused at once.
    assert_eq!(
        srv.delete(&format!("/api/v1/tokens/{cashier_id}"))
            .await
            .status,
        204
    );
    cashier.get("/api/v1/products").await.problem(401, None);
    srv.delete(&format!("/api/v1/tokens/{cashier_id}"))
        .await
        .problem(404, None);
    srv.delete(&format!("/api/v1/tokens/{}", Uuid::now_v7()))
        .await
        .problem(404, None);
    // A new owner token works like the first one.
    let (_, owner2) = srv.create_token("owner", None).await;
    srv.with_token(&owner2).get("/api/v1/tokens").await.ok(200);
}

async fn audit_log(srv: Srv) {
    let store = srv.create_store("Audited").await;
    let p = srv.create_product("A1", 100).await;
    srv.patch(&format!("/api/v1/products/{p}"), json!({"price": 200}))
        .await
        .ok(200);
    srv.patch("/api/v1/settings", json!({"forbid_negative_stock": true}))
        .await
        .ok(200);
    let (tok_id, _) = srv.create_token("cashier", Some(store)).await;
    srv.delete(&format!("/api/v1/tokens/{tok_id}")).await;
    srv.delete(&format!("/api/v1/products/{p}")).await;

    let r = srv.get("/api/v1/audit?limit=500").await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    let has = |action: &str, entity: &str, id: Option<String>| {
        items.iter().any(|e| {
            e["action"] == action
                && e["entity"] == entity
                && id.as_ref().is_none_or(|i| e["entity_id"] == json!(i))
        })
    };
    assert!(has("create", "store", Some(store.to_string())), "{items:?}");
    assert!(has("create", "product", Some(p.to_string())));
    assert!(has("update", "product", Some(p.to_string())));
    assert!(has("delete", "product", Some(p.to_string())));
    assert!(has("update", "settings", None));
    assert!(has("create", "token", Some(tok_id.to_string())));
    assert!(has("delete", "token", Some(tok_id.to_string())));
    let settings = items.iter().find(|e| e["entity"] == "settings").unwrap();
    assert_eq!(settings["details"]["forbid_negative_stock"], true);
    // Changes made through the API name the token that made them.
    let owner_token_id = {
        let r = srv.get("/api/v1/tokens").await;
        uuid(&r.ok(200)["items"][0]["id"])
    };
    assert!(
        items
            .iter()
            .filter(|e| e["entity"] == "product")
            .all(|e| e["token_id"] == json!(owner_token_id))
    );
    // Paginated.
    let r = srv.get("/api/v1/audit?limit=2").await;
    let b = r.ok(200).clone();
    assert_eq!(b["items"].as_array().unwrap().len(), 2);
    let next = b["next_cursor"].as_str().unwrap();
    let r = srv
        .get(&format!("/api/v1/audit?limit=2&cursor={next}"))
        .await;
    assert_ne!(r.ok(200)["items"][0]["id"], b["items"][0]["id"]);
}

/// The server remembers a verified token for a moment; a token deleted behind its back (by
/// another server on the same database) is refused once that moment is over.
async fn a_token_deleted_elsewhere_is_refused_within_the_ttl(srv: Srv) {
    use savdo_api::token_cache::TTL;
    use std::time::{Duration, Instant};

    let (id, tok) = srv.create_token("cashier", None).await;
    let cashier = srv.with_token(&tok);
    cashier.get("/api/v1/products").await.ok(200);
    srv.store
        .delete_token(&savdo_storage::Actor::system(srv.tenant), id)
        .await
        .expect("delete through the store");
    let deleted = Instant::now();
    loop {
        let r = cashier.get("/api/v1/products").await;
        if r.status == 401 {
            break;
        }
        r.ok(200);
        assert!(
            deleted.elapsed() < TTL + Duration::from_secs(2),
            "a deleted token still accepted {:?} after its deletion",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

backend_tests!(
    tokens_and_roles,
    audit_log,
    a_token_deleted_elsewhere_is_refused_within_the_ttl
);
