//! What Savdo does with the marketplace connectors (`uzum`, `wildberries`, `ozon`): link their
//! catalogues to our products, keep their stock equal to our available stock within each
//! provider's limits, and turn their orders into outgoing invoices exactly once.

pub mod mapping;
pub mod orders;
pub mod stock_push;
