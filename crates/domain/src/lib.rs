//! Pure types and rules of Savdo. No database, no HTTP, no runtime.

pub mod barcode;
pub mod clock;
pub mod event;
pub mod ids;
pub mod marking;
pub mod money;
pub mod mxik;
pub mod phone;
pub mod qty;
pub mod receipt;
pub mod tenant;

pub use qty::Qty;
