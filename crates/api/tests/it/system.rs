//! Health, readiness, metrics, OpenAPI, docs, request ids, unknown routes.

use reqwest::Method;
use serde_json::Value;

use crate::backend_tests;
use crate::common::Srv;

/// Every (method, path) the router serves, as the OpenAPI document must name it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/api/v1/stores"),
    ("get", "/api/v1/stores"),
    ("get", "/api/v1/stores/{id}"),
    ("patch", "/api/v1/stores/{id}"),
    ("post", "/api/v1/terminals"),
    ("get", "/api/v1/terminals"),
    ("get", "/api/v1/terminals/{id}"),
    ("post", "/api/v1/terminals/{id}/shifts/open"),
    ("post", "/api/v1/terminals/{id}/shifts/close"),
    ("post", "/api/v1/products"),
    ("get", "/api/v1/products"),
    ("post", "/api/v1/products/bulk"),
    ("get", "/api/v1/products/{id}"),
    ("patch", "/api/v1/products/{id}"),
    ("delete", "/api/v1/products/{id}"),
    ("post", "/api/v1/customers"),
    ("get", "/api/v1/customers"),
    ("get", "/api/v1/customers/{id}"),
    ("patch", "/api/v1/customers/{id}"),
    ("get", "/api/v1/stock"),
    ("get", "/api/v1/stock/movements"),
    ("post", "/api/v1/stock/supplies"),
    ("post", "/api/v1/stock/writeoffs"),
    ("post", "/api/v1/stock/counts"),
    ("post", "/api/v1/stock/transfers"),
    ("post", "/api/v1/receipts"),
    ("get", "/api/v1/receipts"),
    ("post", "/api/v1/receipts/batch"),
    ("get", "/api/v1/receipts/{id}"),
    ("post", "/api/v1/invoices"),
    ("get", "/api/v1/invoices"),
    ("get", "/api/v1/invoices/{id}"),
    ("post", "/api/v1/invoices/{id}/reserve"),
    ("post", "/api/v1/invoices/{id}/ship"),
    ("post", "/api/v1/invoices/{id}/cancel"),
    ("post", "/api/v1/tokens"),
    ("get", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/api/v1/settings"),
    ("patch", "/api/v1/settings"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/events"),
];

async fn health_ready_metrics(srv: Srv) {
    let r = srv.get("/healthz").await;
    assert_eq!(r.ok(200)["status"], "ok");
    let r = srv.get("/readyz").await;
    assert_eq!(r.ok(200)["status"], "ready");
    // One API call so the counter certainly exists.
    srv.get("/api/v1/stores").await.ok(200);
    let r = srv.get("/metrics").await;
    r.ok(200);
    assert!(r.content_type().starts_with("text/plain"), "{r:?}");
    assert!(
        r.text.contains("savdo_http_requests_total"),
        "metrics: {}",
        r.text
    );
}

async fn openapi_lists_every_route(srv: Srv) {
    let r = srv.get("/api/v1/openapi.json").await;
    let doc = r.ok(200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "openapi version {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    for (method, path) in ROUTES {
        if paths.get(*path).and_then(|p| p.get(*method)).is_none() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "not in the OpenAPI document: {missing:?}"
    );
    // The document is reachable without a token (the docs page loads it).
    let anon = srv.with_token("");
    let r = anon
        .client
        .get(format!("{}/api/v1/openapi-docs.json", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn docs_page(srv: Srv) {
    let r = srv
        .client
        .get(format!("{}/docs/", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.to_lowercase().contains("swagger"), "{text}");
}

async fn request_id_on_every_response(srv: Srv) {
    let anon = srv.with_token("not-a-token");
    let cases = [
        srv.get("/healthz").await,
        srv.get("/api/v1/stores").await,
        srv.get("/api/v1/nope").await,
        srv.get("/totally/unknown").await,
        anon.get("/api/v1/stores").await,
        srv.post("/api/v1/stores", serde_json::json!({})).await,
    ];
    for r in &cases {
        let id = r.header("x-request-id").unwrap_or("");
        assert!(!id.is_empty(), "no x-request-id on {} {}", r.status, r.text);
    }
    // A caller's id is kept.
    let r = srv
        .raw(
            Method::GET,
            "/healthz",
            None,
            "",
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
}

async fn unknown_routes_and_auth(srv: Srv) {
    srv.get("/api/v1/nope").await.problem(404, None);
    srv.get("/api/v1/stores/not-a-uuid")
        .await
        .problem(404, None);
    srv.get("/api/v1/products/123").await.problem(404, None);
    srv.post_empty("/api/v1/terminals/xyz/shifts/open")
        .await
        .problem(404, None);
    srv.delete("/api/v1/tokens/%20").await.problem(404, None);
    // Without or with a wrong token: 401 problem with a Bearer challenge.
    let r = srv
        .client
        .get(format!("{}/api/v1/stores", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let r = srv.with_token("svd_wrong").get("/api/v1/stores").await;
    r.problem(401, None);
    let body: &Value = &r.body;
    assert!(body["detail"].is_string());
}

backend_tests!(
    health_ready_metrics,
    openapi_lists_every_route,
    docs_page,
    request_id_on_every_response,
    unknown_routes_and_auth,
);
