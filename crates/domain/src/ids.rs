//! Identifiers: UUIDv7 everywhere, because time-ordered keys keep B-tree inserts cheap.

use uuid::Uuid;

pub fn new_id() -> Uuid {
    Uuid::now_v7()
}
