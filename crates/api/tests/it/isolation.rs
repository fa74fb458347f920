//! Tenant isolation: tenant B's owner walks every route with tenant A's ids.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Srv, sale, uuid};

async fn tenant_isolation(a: Srv) {
    // Tenant A's world.
    let (store, term) = a.shop().await;
    let store2 = a.create_store("A second").await;
    let p = a.create_product("A-SKU", 1000).await;
    a.supply(store, p, json!(5)).await;
    let cust = a
        .post(
            "/api/v1/customers",
            json!({"name": "A customer", "phone": "901112233"}),
        )
        .await
        .id();
    let shift = a
        .post_empty(&format!("/api/v1/terminals/{term}/shifts/open"))
        .await;
    shift.ok(201);
    let rc = a
        .post(
            "/api/v1/receipts",
            sale(store, term, &[(p, json!(1), 1000)]),
        )
        .await;
    let receipt = rc.ok(201).clone();
    let inv = a
        .post(
            "/api/v1/invoices",
            json!({"store_id": store, "external_ref": "EXT-1", "lines": [{"product_id": p, "qty": 1}]}),
        )
        .await
        .id();
    let (tok_id, _) = a.create_token("cashier", Some(store)).await;

    // Tenant B.
    let (_, tok_b) = a.new_tenant("B").await;
    let b = a.with_token(&tok_b);
    let (b_store, b_term) = b.shop().await;

    let not_found = [
        b.get(&format!("/api/v1/stores/{store}")).await,
        b.patch(&format!("/api/v1/stores/{store}"), json!({"name": "mine"}))
            .await,
        b.get(&format!("/api/v1/terminals/{term}")).await,
        b.post_empty(&format!("/api/v1/terminals/{term}/shifts/open"))
            .await,
        b.post_empty(&format!("/api/v1/terminals/{term}/shifts/close"))
            .await,
        b.get(&format!("/api/v1/products/{p}")).await,
        b.patch(&format!("/api/v1/products/{p}"), json!({"price": 1}))
            .await,
        b.delete(&format!("/api/v1/products/{p}")).await,
        b.get(&format!("/api/v1/customers/{cust}")).await,
        b.patch(
            &format!("/api/v1/customers/{cust}"),
            json!({"name": "mine"}),
        )
        .await,
        b.get(&format!(
            "/api/v1/receipts/{}",
            receipt["id"].as_str().unwrap()
        ))
        .await,
        b.get(&format!("/api/v1/invoices/{inv}")).await,
        b.post_empty(&format!("/api/v1/invoices/{inv}/reserve"))
            .await,
        b.post_empty(&format!("/api/v1/invoices/{inv}/ship")).await,
        b.post_empty(&format!("/api/v1/invoices/{inv}/cancel"))
            .await,
        b.delete(&format!("/api/v1/tokens/{tok_id}")).await,
    ];
    for r in &not_found {
        r.problem(404, None);
        assert!(
            !r.text.contains("A-SKU") && !r.text.contains("A customer"),
            "{}",
            r.text
        );
    }

    // Lists are empty of A's data.
    let empty_lists = [
        format!("/api/v1/stock?store_id={store}"),
        format!("/api/v1/stock?product_id={p}"),
        format!("/api/v1/stock/movements?store_id={store}"),
        format!("/api/v1/receipts?store_id={store}"),
        format!("/api/v1/terminals?store_id={store}"),
        format!("/api/v1/invoices?store_id={store}"),
        "/api/v1/invoices?external_ref=EXT-1".to_string(),
        "/api/v1/products?sku=A-SKU".to_string(),
        "/api/v1/customers?phone=901112233".to_string(),
        "/api/v1/receipts".to_string(),
        "/api/v1/invoices".to_string(),
        "/api/v1/products".to_string(),
        "/api/v1/customers".to_string(),
    ];
    for path in &empty_lists {
        let r = b.get(path).await;
        assert_eq!(
            r.ok(200)["items"].as_array().unwrap().len(),
            0,
            "{path}: {}",
            r.text
        );
    }
    let r = b.get("/api/v1/stores").await;
    let ids: Vec<Value> = r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(b_store)]);
    let r = b.get("/api/v1/terminals").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    let r = b.get("/api/v1/tokens").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    assert!(!r.text.contains(&tok_id.to_string()));
    let r = b.get("/api/v1/audit?limit=500").await;
    assert!(!r.ok(200).to_string().contains(&store.to_string()));
    let r = b.get("/api/v1/events?limit=500").await;
    assert!(!r.ok(200).to_string().contains(&p.to_string()));
    let r = b.get("/api/v1/stock/movements").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 0);

    // A's ids inside B's writes are unknown to B.
    let r = b
        .post(
            "/api/v1/receipts",
            sale(b_store, b_term, &[(p, json!(1), 1000)]),
        )
        .await;
    r.problem(422, Some("lines[0].product_id"));
    assert!(r.text.contains("no such product"), "{}", r.text);
    b.post(
        "/api/v1/receipts",
        sale(store, term, &[(p, json!(1), 1000)]),
    )
    .await
    .problem(422, Some("store_id"));
    let b_p = b.create_product("B-SKU", 1000).await;
    let mut with_cust = sale(b_store, b_term, &[(b_p, json!(1), 1000)]);
    with_cust["customer_id"] = json!(cust);
    b.post("/api/v1/receipts", with_cust)
        .await
        .problem(422, Some("customer_id"));
    let mut b_refund = sale(b_store, b_term, &[(b_p, json!(1), 1000)]);
    b_refund["type"] = json!("refund");
    b_refund["refund_of"] = receipt["id"].clone();
    b.post("/api/v1/receipts", b_refund)
        .await
        .problem(422, Some("refund_of"));
    // The same receipt id in another tenant is another receipt, not a replay of A's.
    let mut same_id = sale(b_store, b_term, &[(b_p, json!(1), 1000)]);
    same_id["id"] = receipt["id"].clone();
    let r = b.post("/api/v1/receipts", same_id).await;
    assert_eq!(r.ok(201)["store_id"], json!(b_store));
    b.post(
        "/api/v1/terminals",
        json!({"store_id": store, "name": "sneaky"}),
    )
    .await
    .problem(422, Some("store_id"));
    b.post(
        "/api/v1/stock/supplies",
        json!({"store_id": store, "lines": [{"product_id": b_p, "qty": 1}]}),
    )
    .await
    .problem(422, Some("store_id"));
    b.post(
        "/api/v1/stock/supplies",
        json!({"store_id": b_store, "lines": [{"product_id": p, "qty": 1}]}),
    )
    .await
    .problem(422, Some("lines[0].product_id"));
    b.post(
        "/api/v1/stock/transfers",
        json!({"store_id": b_store, "to_store_id": store2, "lines": [{"product_id": b_p, "qty": 1}]}),
    )
    .await
    .problem(422, Some("to_store_id"));
    b.post(
        "/api/v1/invoices",
        json!({"store_id": b_store, "lines": [{"product_id": p, "qty": 1}]}),
    )
    .await
    .problem(422, Some("lines[0].product_id"));
    // External refs are per tenant: B's EXT-1 is a new invoice.
    let r = b
        .post(
            "/api/v1/invoices",
            json!({"store_id": b_store, "external_ref": "EXT-1", "lines": [{"product_id": b_p, "qty": 1}]}),
        )
        .await;
    assert_ne!(r.ok(201)["id"], json!(inv));
    b.post(
        "/api/v1/tokens",
        json!({"name": "x", "role": "cashier", "store_id": store}),
    )
    .await
    .problem(422, Some("store_id"));
    // SKUs are per tenant.
    b.create_product("A-SKU", 5).await;

    // A's data is untouched by all of that.
    assert_ne!(
        a.get(&format!("/api/v1/stores/{store}")).await.ok(200)["name"],
        "mine"
    );
    assert_eq!(
        a.get(&format!("/api/v1/products/{p}")).await.ok(200)["price"],
        1000
    );
    assert_eq!(
        a.get(&format!("/api/v1/invoices/{inv}")).await.ok(200)["status"],
        "draft"
    );
    let t = a.get(&format!("/api/v1/terminals/{term}")).await;
    assert!(t.ok(200)["open_shift"].is_object(), "A's shift still open");
    assert_eq!(a.level(store, p).await.0, 4_000);
    let g = a
        .get(&format!("/api/v1/receipts/{}", uuid(&receipt["id"])))
        .await;
    assert_eq!(g.ok(200), &receipt);
    let r = a.get("/api/v1/tokens").await;
    assert!(r.ok(200).to_string().contains(&tok_id.to_string()));
}

backend_tests!(tenant_isolation);
