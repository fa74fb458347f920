//! Linking a marketplace's catalogue to our products: the "products" sync job pulls the
//! catalogue page by page into `marketplace_items` and links unmapped items by barcode (exactly
//! one active product of the tenant with one of the item's barcodes; several: left unmapped
//! with the reason). Manual links, set through the mappings API, are never replaced. A new
//! link schedules the item's stock push.

use std::sync::Arc;

use async_trait::async_trait;
use savdo_domain::clock::Clock;
use savdo_hub::ConnectorError;
use savdo_hub::connector::MarketplaceItem;
use savdo_integrations::{Step, SyncContext, SyncHandler, SyncRegistry};
use savdo_storage::Storage;
use savdo_storage::marketplace::CatalogItem;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::stock_push::{KINDS, PriceResync, PushEngine, StockResync, connector_for_job};

fn catalog_item(i: MarketplaceItem) -> CatalogItem {
    CatalogItem {
        external_id: i.external_id,
        product_ext_id: i.product_id,
        title: i.title,
        barcodes: i
            .barcodes
            .into_iter()
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect(),
        price: i.price,
        remote_stock: i.stock,
    }
}

/// The "products" sync job.
pub struct ProductsSync {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    wake: Option<Arc<Notify>>,
}

impl ProductsSync {
    pub fn new(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Self {
        ProductsSync {
            store,
            clock,
            wake: None,
        }
    }

    /// Woken when new links schedule pushes.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }
}

#[async_trait]
impl SyncHandler for ProductsSync {
    async fn step(
        &self,
        ctx: &SyncContext,
        cursor: Option<&Value>,
    ) -> Result<Step, ConnectorError> {
        let i = &ctx.integration;
        let conn = connector_for_job(ctx)?;
        let mc = conn
            .as_marketplace()
            .ok_or_else(|| ConnectorError::config(format!("{} is not a marketplace", i.kind)))?;
        let page_cursor = cursor.and_then(|c| c["next"].as_str());
        let page = mc.list_catalog(page_cursor).await?;
        let items: Vec<CatalogItem> = page.items.into_iter().map(catalog_item).collect();
        let outcome = self
            .store
            .upsert_catalog(i.tenant_id, i.id, &items, self.clock.now())
            .await
            .map_err(|e| ConnectorError::unavailable(format!("storage: {e}")))?;
        if !outcome.mapped.is_empty()
            && let Some(w) = &self.wake
        {
            w.notify_one();
        }
        // Ambiguous barcodes need a person; an item we simply do not sell is not an error.
        let errors = outcome
            .unmapped
            .iter()
            .filter(|(_, reason)| reason.starts_with("ambiguous"))
            .map(|(id, reason)| json!({"item": id, "code": "ambiguous_barcode", "message": reason}))
            .collect();
        tracing::info!(integration = %i.id, items = items.len(), mapped = outcome.mapped.len(), "marketplace catalogue page stored");
        Ok(Step {
            processed: i64::try_from(items.len()).unwrap_or(i64::MAX),
            total: None,
            cursor: page.next.as_ref().map(|n| json!({ "next": n })),
            errors,
            finished: page.next.is_none(),
        })
    }
}

/// Register the "products", "stock" and "prices" jobs of every marketplace type.
pub fn register_sync(
    registry: &mut SyncRegistry,
    engine: Arc<PushEngine>,
    wake: Option<Arc<Notify>>,
) {
    let mut products = ProductsSync::new(engine.store().clone(), engine.clock().clone());
    if let Some(w) = wake {
        products = products.with_wake(w);
    }
    let products = Arc::new(products);
    let stock = Arc::new(StockResync::new(engine.clone()));
    let prices = Arc::new(PriceResync::new(engine.store().clone()));
    for kind in KINDS {
        registry.register(kind, "products", products.clone());
        registry.register(kind, "stock", stock.clone());
        if *kind == "uzum" {
            registry.register(kind, "prices", prices.clone());
        }
    }
}
