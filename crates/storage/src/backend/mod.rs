//! The two implementations of [`crate::Storage`].
//!
//! Both compile the same source (`shared.rs`) against their own concrete sqlx database type:
//! the SQL is portable (numbered parameters, `ON CONFLICT`, `RETURNING` work on both), and the
//! few places that differ check `DIALECT`. One text, two type-checked implementations, and one
//! behaviour suite that runs on both.

mod checkpoint;
pub mod group_commit;
pub mod postgres;
pub mod sqlite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(crate) fn ts(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
