//! Savdo storage: one [`Storage`] trait, implemented for SQLite (the embedded default) and
//! PostgreSQL (scale-out). Every method is scoped by tenant; every state change that others
//! care about writes its events into the outbox in the same transaction.

pub mod backend;
pub mod bus;
pub mod error;
pub mod fiscal;
pub mod integrations;
pub mod loyalty;
pub mod marketplace;
pub mod marketplace_orders;
pub mod marking;
pub mod model;
pub mod payments;
pub mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use savdo_domain::tenant::TenantSettings;
use serde_json::Value;
use uuid::Uuid;

pub use backend::Dialect;
pub use backend::postgres::PgStore;
pub use backend::sqlite::SqliteStore;
pub use bus::{EventStore, InboxEntry, InboxState, PublishFn, Relayed};
pub use error::{FieldError, Result, StorageError};
pub use fiscal::FiscalStore;
pub use integrations::IntegrationStore;
pub use loyalty::LoyaltyStore;
pub use marketplace::MarketplaceStore;
pub use marketplace_orders::MarketplaceOrderStore;
pub use marking::{MarkingPrecheck, MarkingStore, OnlineCheck};
pub use model::*;
pub use payments::PaymentStore;
pub use webhooks::WebhookStore;

/// A page of results: items and the id to continue after, if there may be more.
pub type Paged<T> = (Vec<T>, Option<Uuid>);

#[async_trait]
pub trait Storage:
    EventStore
    + WebhookStore
    + MarkingStore
    + IntegrationStore
    + FiscalStore
    + PaymentStore
    + LoyaltyStore
    + MarketplaceStore
    + MarketplaceOrderStore
    + Send
    + Sync
    + 'static
{
    fn dialect(&self) -> Dialect;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // Tenants and tokens
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;
    async fn settings(&self, tenant: Uuid) -> Result<TenantSettings>;
    /// Merge `patch` (a JSON object) into the settings; unknown keys and wrong types are refused.
    async fn update_settings(&self, actor: &Actor, patch: &Value) -> Result<TenantSettings>;
    async fn create_token(&self, actor: &Actor, new: &NewToken, hash: &[u8]) -> Result<TokenInfo>;
    async fn list_tokens(&self, tenant: Uuid) -> Result<Vec<TokenInfo>>;
    async fn delete_token(&self, actor: &Actor, id: Uuid) -> Result<()>;
    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenInfo>>;

    // Stores, terminals, shifts
    async fn create_store(&self, actor: &Actor, name: &str, address: Option<&str>)
    -> Result<Store>;
    async fn list_stores(&self, tenant: Uuid) -> Result<Vec<Store>>;
    async fn get_store(&self, tenant: Uuid, id: Uuid) -> Result<Store>;
    async fn update_store(&self, actor: &Actor, id: Uuid, patch: &StorePatch) -> Result<Store>;
    async fn create_terminal(&self, actor: &Actor, store_id: Uuid, name: &str) -> Result<Terminal>;
    async fn list_terminals(&self, tenant: Uuid, store_id: Option<Uuid>) -> Result<Vec<Terminal>>;
    async fn get_terminal(&self, tenant: Uuid, id: Uuid) -> Result<Terminal>;
    async fn open_shift(&self, actor: &Actor, terminal_id: Uuid) -> Result<Shift>;
    async fn close_shift(&self, actor: &Actor, terminal_id: Uuid) -> Result<Shift>;

    // Catalogue
    async fn create_product(&self, actor: &Actor, f: &ProductFields) -> Result<Product>;
    async fn update_product(&self, actor: &Actor, id: Uuid, f: &ProductFields) -> Result<Product>;
    async fn delete_product(&self, actor: &Actor, id: Uuid) -> Result<()>;
    async fn get_product(&self, tenant: Uuid, id: Uuid) -> Result<Product>;
    async fn list_products(&self, tenant: Uuid, f: &ProductFilter) -> Result<Paged<Product>>;
    /// Insert or update by SKU, all or nothing.
    async fn bulk_upsert_products(
        &self,
        actor: &Actor,
        items: &[ProductFields],
    ) -> Result<BulkResult>;

    // Customers
    async fn create_customer(&self, actor: &Actor, f: &CustomerFields) -> Result<Customer>;
    async fn update_customer(
        &self,
        actor: &Actor,
        id: Uuid,
        f: &CustomerFields,
    ) -> Result<Customer>;
    async fn get_customer(&self, tenant: Uuid, id: Uuid) -> Result<Customer>;
    async fn list_customers(&self, tenant: Uuid, f: &CustomerFilter) -> Result<Paged<Customer>>;

    // Stock
    async fn stock(
        &self,
        tenant: Uuid,
        store_id: Option<Uuid>,
        product_id: Option<Uuid>,
    ) -> Result<Vec<StockLevel>>;
    async fn movements(
        &self,
        tenant: Uuid,
        store_id: Option<Uuid>,
        product_id: Option<Uuid>,
    ) -> Result<Vec<Movement>>;
    async fn create_stock_doc(&self, actor: &Actor, doc: &NewStockDoc) -> Result<StockDoc>;

    // Receipts
    /// Record a receipt, idempotent by `(tenant, input.id)` and `request_hash`.
    async fn submit_receipt(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
    ) -> Result<ReceiptOutcome>;
    async fn get_receipt(&self, tenant: Uuid, id: Uuid) -> Result<Receipt>;
    async fn list_receipts(&self, tenant: Uuid, f: &ReceiptFilter) -> Result<Paged<Receipt>>;

    // Outgoing invoices
    /// Create an invoice; with an `external_ref` that exists already, the existing one and `false`.
    async fn create_invoice(&self, actor: &Actor, inv: &NewInvoice) -> Result<(Invoice, bool)>;
    async fn get_invoice(&self, tenant: Uuid, id: Uuid) -> Result<Invoice>;
    async fn list_invoices(&self, tenant: Uuid, f: &InvoiceFilter) -> Result<Paged<Invoice>>;
    async fn invoice_action(
        &self,
        actor: &Actor,
        id: Uuid,
        action: InvoiceAction,
    ) -> Result<Invoice>;

    // Audit
    async fn audit_log(
        &self,
        tenant: Uuid,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Paged<AuditEntry>>;

    // Idempotency-Key
    async fn idem_begin(&self, tenant: Uuid, key: &str, request_hash: &str) -> Result<IdemState>;
    async fn idem_finish(&self, tenant: Uuid, key: &str, status: u16, body: &[u8]) -> Result<()>;
    async fn idem_abort(&self, tenant: Uuid, key: &str) -> Result<()>;

    // Events
    /// The tenant's published events after publishing sequence `after` (`seq` is that
    /// sequence here), in order, optionally of some types only. Ordering by publishing rather
    /// than insertion means a client paging with the last `seq` never misses a late commit.
    async fn events(
        &self,
        tenant: Uuid,
        after: i64,
        types: &[String],
        limit: u32,
    ) -> Result<Vec<OutboxEvent>>;
    /// Woken after every commit, so the relay does not have to poll tightly.
    fn outbox_notify(&self) -> std::sync::Arc<tokio::sync::Notify>;
}

/// Open the storage a URL names: `postgres://…` or `sqlite://…` (or a plain file path).
pub async fn connect(url: &str) -> Result<Arc<dyn Storage>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let url = if url.starts_with("sqlite:") {
            url.to_string()
        } else {
            format!("sqlite://{url}")
        };
        Ok(Arc::new(SqliteStore::connect(&url).await?))
    }
}
