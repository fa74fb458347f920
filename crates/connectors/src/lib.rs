//! One module per external system. Each keeps its wire format to itself (its request and
//! response types live beside it) and implements the hub's capability traits, so the rest of
//! Savdo never sees a provider's protocol.

pub mod aslbelgisi;
pub mod click;
pub mod fiscal_gateway;
pub mod fiscal_reconcile;
pub mod jowi_club;
pub mod loyalty_accrual;
pub mod marketplace;
pub mod marking_recheck;
pub mod marking_reconcile;
pub mod ozon;
pub mod payme;
mod reconcile;
pub mod uzum;
pub mod wildberries;
