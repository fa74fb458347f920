//! The OpenAPI 3.1 document of the whole public API.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Savdo API", description = "Retail back office and point-of-sale API for Uzbekistan. Money is integer tiyin; quantities are exact decimals with at most 3 places."),
    paths(
        system::healthz, system::readyz, system::metrics,
        stores::create, stores::list, stores::get, stores::patch,
        terminals::create, terminals::list, terminals::get, terminals::open_shift, terminals::close_shift, terminals::put_fiscal, terminals::delete_fiscal,
        products::create, products::list, products::get, products::patch, products::delete, products::bulk,
        customers::create, customers::list, customers::get, customers::patch,
        stock::levels, stock::movements, stock::supply, stock::writeoff, stock::count, stock::transfer,
        receipts::create, receipts::batch, receipts::get, receipts::list,
        marking::check,
        payments::create, payments::get, payments::cancel, payments::qr_svg, payments::qr_png, payments::events,
        loyalty::lookup, loyalty::quote, loyalty::transactions,
        invoices::create, invoices::list, invoices::get, invoices::reserve, invoices::ship, invoices::cancel,
        invoice_import::import,
        tokens::create, tokens::list, tokens::delete,
        settings::get, settings::patch,
        audit::list,
        events::list,
        integrations::catalog, integrations::create, integrations::list, integrations::get, integrations::patch, integrations::delete, integrations::test, integrations::sync, integrations::jobs, integrations::job, integrations::log,
        marketplace::list, marketplace::put, marketplace::unmapped_local,
        marketplace_orders::list, marketplace_orders::retry,
        hooks::receive,
        webhooks::create, webhooks::list, webhooks::get, webhooks::patch, webhooks::delete, webhooks::rotate_secret, webhooks::deliveries, webhooks::retry, webhooks::test,
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
