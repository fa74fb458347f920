//! Every way a request can be wrong is a problem+json answer, never a 500.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::common::{Srv, sale};

const JSON: Option<&str> = Some("application/json");

async fn malformed_requests(srv: Srv) {
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;

    // Malformed JSON: 400.
    for body in [
        "{",
        "{\"name\": }",
        "not json",
        "{\"name\": \"x\"} trailing",
        "",
    ] {
        let r = srv
            .raw(Method::POST, "/api/v1/stores", JSON, body, &[])
            .await;
        r.problem(400, None);
    }
    // Wrong content type: 415.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = srv
            .raw(Method::POST, "/api/v1/stores", ct, r#"{"name":"x"}"#, &[])
            .await;
        r.problem(415, None);
    }
    // `+json` media types and parameters are fine.
    srv.raw(
        Method::POST,
        "/api/v1/stores",
        Some("application/json; charset=utf-8"),
        r#"{"name":"x"}"#,
        &[],
    )
    .await
    .ok(201);
    // Over 1 MiB: 413 (with and without an Idempotency-Key).
    let big = format!(r#"{{"name": "{}"}}"#, "a".repeat(1024 * 1024 + 10));
    srv.raw(Method::POST, "/api/v1/stores", JSON, big.clone(), &[])
        .await
        .problem(413, None);
    srv.raw(
        Method::POST,
        "/api/v1/stores",
        JSON,
        big,
        &[("idempotency-key", "big")],
    )
    .await
    .problem(413, None);

    // Wrong types, huge numbers, unknown and missing fields: 422 naming the field.
    let cases = vec![
        (
            "/api/v1/products",
            json!({"sku": "a", "name": "b", "price": 1e30}),
            "price",
        ),
        (
            "/api/v1/products",
            json!({"sku": "a", "name": "b", "price": 1e300}),
            "price",
        ),
        (
            "/api/v1/products",
            json!({"sku": ["a"], "name": "b", "price": 1}),
            "sku",
        ),
        (
            "/api/v1/products",
            json!({"sku": "a", "name": "b", "price": null}),
            "price",
        ),
        (
            "/api/v1/products",
            json!({"sku": "a", "name": "b", "price": 1, "marked": 1}),
            "marked",
        ),
        (
            "/api/v1/products",
            json!({"sku": "a", "name": "b", "price": 1, "unit": 1e10}),
            "unit",
        ),
        (
            "/api/v1/stores",
            json!({"name": "x", "extra": true}),
            "extra",
        ),
        ("/api/v1/stores", json!({}), "name"),
        ("/api/v1/stores", json!([]), ""),
        ("/api/v1/customers", json!({"name": {"first": "A"}}), "name"),
        (
            "/api/v1/terminals",
            json!({"store_id": 42, "name": "x"}),
            "store_id",
        ),
    ];
    for (path, body, field) in cases {
        let r = srv.post(path, body.clone()).await;
        assert_eq!(r.status, 422, "{path} {body} -> {}", r.text);
        if field.is_empty() {
            r.problem(422, None);
        } else {
            r.problem(422, Some(field));
        }
    }
    // The same in raw text, where JSON numbers can be larger than any type.
    let raw_cases = [
        (
            "/api/v1/products",
            r#"{"sku": "a", "name": "b", "price": 99999999999999999999}"#.to_string(),
            "price",
        ),
        (
            "/api/v1/products",
            r#"{"sku": "a", "name": "b", "price": -99999999999999999999}"#.to_string(),
            "price",
        ),
        (
            "/api/v1/products",
            r#"{"sku": "a", "name": "b", "price": 1, "vat_percent": 99999999999999999999}"#
                .to_string(),
            "vat_percent",
        ),
        (
            "/api/v1/receipts",
            {
                let mut b = sale(store, term, &[(p, json!(1), 1000)]);
                b["lines"][0]["qty"] = json!("QTY");
                b.to_string().replace("\"QTY\"", "99999999999999999999")
            },
            "lines[0].qty",
        ),
        (
            "/api/v1/receipts",
            {
                let mut b = sale(store, term, &[(p, json!(1), 1000)]);
                b["payments"][0]["amount"] = json!("AMT");
                b.to_string().replace("\"AMT\"", "1e30")
            },
            "payments[0].amount",
        ),
        (
            "/api/v1/receipts",
            {
                let mut b = sale(store, term, &[(p, json!(1), 1000)]);
                b["lines"][0]["price"] = json!("PR");
                b.to_string().replace("\"PR\"", "99999999999999999999")
            },
            "lines[0].price",
        ),
    ];
    for (path, body, field) in raw_cases {
        let r = srv.raw(Method::POST, path, JSON, body.clone(), &[]).await;
        assert_eq!(r.status, 422, "{body} -> {}", r.text);
        r.problem(422, Some(field));
    }
    // Amounts that fit an i64 but overflow the line math are still a 422.
    let mut b = sale(store, term, &[(p, json!(1), 1000)]);
    b["lines"][0]["price"] = json!(i64::MAX);
    b["lines"][0]["qty"] = json!(1_000_000);
    srv.post("/api/v1/receipts", b)
        .await
        .problem(422, Some("lines[0].price"));
    let mut b = sale(store, term, &[(p, json!(1), 1000)]);
    b["payments"] =
        json!([{"method": "cash", "amount": i64::MAX}, {"method": "card", "amount": i64::MAX}]);
    srv.post("/api/v1/receipts", b)
        .await
        .problem(422, Some("payments"));
    let mut b = sale(store, term, &[(p, json!(1), 1000)]);
    b["lines"][0]["qty"] = json!(1e-300);
    srv.post("/api/v1/receipts", b)
        .await
        .problem(422, Some("lines[0].qty"));

    // Non-UUID path ids and unknown routes: 404; wrong method: a problem too.
    for path in [
        "/api/v1/stores/1",
        "/api/v1/products/abc",
        "/api/v1/customers/..",
        "/api/v1/receipts/00000000-0000-0000-0000",
        "/api/v1/invoices/zzz",
        "/api/v1/nothing/here",
        "/api/v2/stores",
    ] {
        let r = srv.get(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        r.problem(404, None);
    }
    srv.post_empty("/api/v1/invoices/zzz/ship")
        .await
        .problem(404, None);
    srv.patch("/api/v1/products/abc", json!({"price": 1}))
        .await
        .problem(404, None);
    let r = srv.delete("/api/v1/stores").await;
    assert!(r.status >= 400 && r.status < 500, "{}", r.text);
    assert!(r.content_type().starts_with("application/problem+json"));
    // Query strings with the wrong types.
    srv.get("/api/v1/receipts?from=yesterday")
        .await
        .problem(422, Some("from"));
    srv.get("/api/v1/events?after=-5")
        .await
        .problem(422, Some("after"));
    srv.get("/api/v1/products?limit=99999999999999999999")
        .await
        .problem(422, Some("limit"));
}

backend_tests!(malformed_requests);
