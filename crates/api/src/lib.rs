//! Savdo's HTTP layer: REST `/api/v1`, OpenAPI, metrics. Thin by design: parse, authorize,
//! call storage or a service, map errors.

pub mod console;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod order_import;
pub mod routes;
pub mod state;
pub mod token_cache;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, Problem};
pub use state::AppState;

use crate::routes::*;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    metrics::init();
    let api = Router::new()
        .route("/stores", post(stores::create).get(stores::list))
        .route("/stores/{id}", get(stores::get).patch(stores::patch))
        .route("/terminals", post(terminals::create).get(terminals::list))
        .route("/terminals/{id}", get(terminals::get))
        .route(
            "/terminals/{id}/fiscal",
            axum::routing::put(terminals::put_fiscal).delete(terminals::delete_fiscal),
        )
        .route("/terminals/{id}/shifts/open", post(terminals::open_shift))
        .route("/terminals/{id}/shifts/close", post(terminals::close_shift))
        .route("/products", post(products::create).get(products::list))
        .route("/products/bulk", post(products::bulk))
        .route(
            "/products/{id}",
            get(products::get)
                .patch(products::patch)
                .delete(products::delete),
        )
        .route("/customers", post(customers::create).get(customers::list))
        .route(
            "/customers/{id}",
            get(customers::get).patch(customers::patch),
        )
        .route("/stock", get(stock::levels))
        .route("/stock/movements", get(stock::movements))
        .route("/stock/supplies", post(stock::supply))
        .route("/stock/writeoffs", post(stock::writeoff))
        .route("/stock/counts", post(stock::count))
        .route("/stock/transfers", post(stock::transfer))
        .route("/receipts", post(receipts::create).get(receipts::list))
        .route("/receipts/batch", post(receipts::batch))
        .route("/receipts/{id}", get(receipts::get))
        .route("/receipts/{id}/fiscal-qr.svg", get(console::fiscal_qr))
        .route("/marking/check", post(marking::check))
        .route("/payments", post(payments::create))
        .route("/payments/{id}", get(payments::get))
        .route("/payments/{id}/cancel", post(payments::cancel))
        .route("/payments/{id}/qr.svg", get(payments::qr_svg))
        .route("/payments/{id}/qr.png", get(payments::qr_png))
        .route("/payments/{id}/events", get(payments::events))
        .route("/loyalty/customers", get(loyalty::lookup))
        .route("/loyalty/quote", post(loyalty::quote))
        .route("/loyalty/transactions", get(loyalty::transactions))
        .route("/invoices", post(invoices::create).get(invoices::list))
        .route("/invoices/import", post(invoice_import::import))
        .route("/invoices/{id}", get(invoices::get))
        .route("/invoices/{id}/reserve", post(invoices::reserve))
        .route("/invoices/{id}/ship", post(invoices::ship))
        .route("/invoices/{id}/cancel", post(invoices::cancel))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", axum::routing::delete(tokens::delete))
        .route("/settings", get(settings::get).patch(settings::patch))
        .route("/audit", get(audit::list))
        .route("/events", get(events::list))
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::patch)
                .delete(webhooks::delete),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(webhooks::retry),
        )
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/integrations/catalog", get(integrations::catalog))
        .route(
            "/integrations",
            post(integrations::create).get(integrations::list),
        )
        .route(
            "/integrations/{id}",
            get(integrations::get)
                .patch(integrations::patch)
                .delete(integrations::delete),
        )
        .route("/integrations/{id}/test", post(integrations::test))
        .route("/integrations/{id}/sync", post(integrations::sync))
        .route("/integrations/{id}/jobs", get(integrations::jobs))
        .route("/integrations/{id}/jobs/{job_id}", get(integrations::job))
        .route("/integrations/{id}/log", get(integrations::log))
        .route(
            "/integrations/{id}/mappings",
            get(marketplace::list).put(marketplace::put),
        )
        .route(
            "/integrations/{id}/mappings/unmapped-local",
            get(marketplace::unmapped_local),
        )
        .route("/integrations/{id}/orders", get(marketplace_orders::list))
        .route(
            "/integrations/{id}/orders/{external_id}/retry",
            post(marketplace_orders::retry),
        )
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::ApiDoc::openapi()) }),
        )
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::Conflict {
                message: "method not allowed on this resource".into(),
                field: None,
            }
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ));

    Router::new()
        .nest("/api/v1", api)
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi-docs.json", openapi::ApiDoc::openapi()))
        .route(
            "/hooks/{kind}/{id}",
            post(hooks::receive).get(payments::hook_not_post),
        )
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .merge(console::router())
        // Outside /api/v1 too, an unknown route is a problem response, not an empty 404.
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .layer(middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .with_state(state)
}

/// Serve until `shutdown` resolves, then finish in-flight requests (bounded).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "savdo listening");
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await?;
    // Give spawned work a moment; connections are already drained by axum.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
