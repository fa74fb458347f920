//! Outgoing invoices: draft -> reserved -> shipped, cancellation, external_ref uniqueness.

use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

async fn invoice_lifecycle(srv: Srv) {
    let (store, _) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let q = srv.create_product("Q", 300).await;
    srv.supply(store, p, json!(10)).await;
    let cust = srv
        .post("/api/v1/customers", json!({"name": "Buyer"}))
        .await
        .id();

    let r = srv
        .post(
            "/api/v1/invoices",
            json!({"store_id": store, "customer_id": cust, "channel": "phone", "note": "call first",
                   "lines": [{"product_id": p, "qty": 4}, {"product_id": q, "qty": 0.5, "price": 200}]}),
        )
        .await;
    let inv = r.ok(201).clone();
    let id = uuid(&inv["id"]);
    assert_eq!(inv["status"], "draft");
    assert_eq!(inv["total"], 4000 + 100);
    assert_eq!(
        inv["lines"][0]["price"], 1000,
        "the product's price by default"
    );
    assert_eq!(inv["lines"][1]["amount"], 100);
    assert_eq!(
        srv.level(store, p).await,
        (10_000, 0, 10_000),
        "a draft holds nothing"
    );

    let r = srv
        .post_empty(&format!("/api/v1/invoices/{id}/reserve"))
        .await;
    assert_eq!(r.ok(200)["status"], "reserved");
    assert_eq!(srv.level(store, p).await, (10_000, 4_000, 6_000));
    srv.post_empty(&format!("/api/v1/invoices/{id}/reserve"))
        .await
        .problem(409, Some("status"));

    let r = srv.post_empty(&format!("/api/v1/invoices/{id}/ship")).await;
    assert_eq!(r.ok(200)["status"], "shipped");
    assert_eq!(srv.level(store, p).await, (6_000, 0, 6_000));
    for a in ["reserve", "ship", "cancel"] {
        srv.post_empty(&format!("/api/v1/invoices/{id}/{a}"))
            .await
            .problem(409, Some("status"));
    }
    let r = srv
        .get(&format!("/api/v1/stock/movements?product_id={p}"))
        .await;
    let ms = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(ms.len(), 2, "supply and shipment");
    assert_eq!(ms[1]["doc_type"], "invoice");
    assert_eq!(ms[1]["doc_id"], json!(id));

    // Reserved then cancelled: the reservation is released, on hand untouched.
    let r = srv
        .post(
            "/api/v1/invoices",
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 2.5}], "reserve": true}),
        )
        .await;
    let inv2 = r.ok(201).clone();
    assert_eq!(inv2["status"], "reserved");
    assert_eq!(srv.level(store, p).await, (6_000, 2_500, 3_500));
    let r = srv
        .post_empty(&format!(
            "/api/v1/invoices/{}/cancel",
            inv2["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.ok(200)["status"], "cancelled");
    assert_eq!(srv.level(store, p).await, (6_000, 0, 6_000));
    // Draft shipped directly, draft cancelled.
    let d = srv
        .post(
            "/api/v1/invoices",
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1}]}),
        )
        .await
        .id();
    srv.post_empty(&format!("/api/v1/invoices/{d}/ship"))
        .await
        .ok(200);
    assert_eq!(srv.level(store, p).await, (5_000, 0, 5_000));
    let d = srv
        .post(
            "/api/v1/invoices",
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1}]}),
        )
        .await
        .id();
    srv.post_empty(&format!("/api/v1/invoices/{d}/cancel"))
        .await
        .ok(200);
    assert_eq!(srv.level(store, p).await, (5_000, 0, 5_000));

    // Filters.
    let r = srv.get("/api/v1/invoices?status=shipped").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 2);
    let r = srv.get("/api/v1/invoices?status=cancelled").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 2);
    let r = srv
        .get(&format!("/api/v1/invoices?store_id={store}&limit=1"))
        .await;
    assert!(r.ok(200)["next_cursor"].is_string());
    srv.get("/api/v1/invoices?status=lost")
        .await
        .problem(422, Some("status"));
    let g = srv.get(&format!("/api/v1/invoices/{id}")).await;
    assert_eq!(g.ok(200)["status"], "shipped");
    srv.get(&format!("/api/v1/invoices/{}", Uuid::now_v7()))
        .await
        .problem(404, None);
    srv.post_empty(&format!("/api/v1/invoices/{}/ship", Uuid::now_v7()))
        .await
        .problem(404, None);
}

async fn invoice_external_ref(srv: Srv) {
    let (store, _) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let body = json!({"store_id": store, "channel": "uzum", "external_ref": "UZ-1001",
                      "lines": [{"product_id": p, "qty": 1}], "reserve": true});
    let a = srv.post("/api/v1/invoices", body.clone()).await;
    a.ok(201);
    let b = srv.post("/api/v1/invoices", body.clone()).await;
    b.ok(200);
    assert_eq!(
        a.body, b.body,
        "the second import returns the first invoice"
    );
    // Even with other content, the reference wins.
    let mut other = body.clone();
    other["lines"][0]["qty"] = json!(5);
    let c = srv.post("/api/v1/invoices", other).await;
    assert_eq!(c.ok(200)["id"], a.body["id"]);
    assert_eq!(srv.level(store, p).await.1, 1_000, "reserved once");
    let r = srv.get("/api/v1/invoices?external_ref=UZ-1001").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);

    // Concurrent imports of one order: one invoice.
    let mut body2 = body.clone();
    body2["external_ref"] = json!("UZ-2002");
    let futs = (0..8).map(|_| {
        let s = srv.clone();
        let b = body2.clone();
        async move { s.post("/api/v1/invoices", b).await }
    });
    let rs = futures::future::join_all(futs).await;
    let created = rs.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        created,
        1,
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(rs.iter().all(|r| r.status == 201 || r.status == 200));
    let ids: std::collections::HashSet<String> =
        rs.iter().map(|r| r.body["id"].to_string()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(srv.level(store, p).await.1, 2_000);
}

async fn invoice_bad_inputs(srv: Srv) {
    let (store, _) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let ghost = Uuid::now_v7();
    let cases = [
        (json!({"store_id": store, "lines": []}), "lines"),
        (
            json!({"store_id": ghost, "lines": [{"product_id": p, "qty": 1}]}),
            "store_id",
        ),
        (
            json!({"store_id": store, "lines": [{"product_id": ghost, "qty": 1}]}),
            "lines[0].product_id",
        ),
        (
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 0}]}),
            "lines[0].qty",
        ),
        (
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 0.0001}]}),
            "lines[0].qty",
        ),
        (
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1, "price": -1}]}),
            "lines[0].price",
        ),
        (
            json!({"store_id": store, "customer_id": ghost, "lines": [{"product_id": p, "qty": 1}]}),
            "customer_id",
        ),
        (
            json!({"store_id": store, "external_ref": " ", "lines": [{"product_id": p, "qty": 1}]}),
            "external_ref",
        ),
        (
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1}], "reserve": "yes"}),
            "reserve",
        ),
        (
            json!({"store_id": store, "lines": [{"product_id": p, "qty": 1}], "urgent": true}),
            "urgent",
        ),
        (json!({"lines": [{"product_id": p, "qty": 1}]}), "store_id"),
    ];
    for (body, field) in cases {
        let r = srv.post("/api/v1/invoices", body.clone()).await;
        assert_eq!(r.status, 422, "{body} -> {}", r.text);
        r.problem(422, Some(field));
    }
    let r = srv.get("/api/v1/invoices").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 0);
}

backend_tests!(invoice_lifecycle, invoice_external_ref, invoice_bad_inputs);
