//! Pure types and rules of Savdo. No database, no HTTP, no runtime.

pub mod barcode;
pub mod marking;
