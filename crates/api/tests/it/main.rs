//! The retail core, end to end: a real server over HTTP, on SQLite and (when
//! `SAVDO_TEST_DATABASE_URL` is set) PostgreSQL.

// Money is written as sums and tiyin: `11_200_00` is 11 200.00 UZS.
#![allow(clippy::inconsistent_digit_grouping)]

mod common;

mod customers;
mod fiscal;
mod invoices;
mod isolation;
mod loyalty;
mod marking;
mod problems;
mod products;
mod receipts;
mod stock;
mod stock_model;
mod stores;
mod system;
mod tokens;
