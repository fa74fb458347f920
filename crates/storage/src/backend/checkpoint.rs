//! SQLite checkpoints off the writer's path.
//!
//! In WAL mode the connection whose commit pushes the log past `wal_autocheckpoint` pages copies
//! the log back into the database file inside that commit. Here that is the one writer
//! connection, so every few hundred receipts one batch of tills waited for the copy. A task with
//! a connection of its own checkpoints instead (`PASSIVE`: it never blocks the writer or the
//! readers, and copies what no reader still needs); the writer's own threshold is raised, not
//! removed, so the log stays bounded should this task fall behind.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// How often the task checkpoints: often, so that each copy is small (every 200 ms the copies
/// were large enough to lengthen the tail of the tills' latency).
pub const EVERY: Duration = Duration::from_millis(50);
/// The writer's own threshold, in pages (SQLite's default is 1,000): reached only when the task
/// falls behind.
pub const WRITER_THRESHOLD_PAGES: u32 = 10_000;

/// Held by every clone of the store; the task stops when the last one is dropped.
pub(crate) struct Alive;

/// Start checkpointing the database of `opts` while `alive` lives.
pub(crate) fn start(opts: SqliteConnectOptions) -> Arc<Alive> {
    let alive = Arc::new(Alive);
    let weak: Weak<Alive> = Arc::downgrade(&alive);
    tokio::spawn(async move {
        let mut conn = None;
        loop {
            tokio::time::sleep(EVERY).await;
            if weak.strong_count() == 0 {
                return;
            }
            if conn.is_none() {
                match opts.connect().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "checkpoint connection failed");
                        continue;
                    }
                }
            }
            if let Some(c) = conn.as_mut()
                && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&mut *c)
                    .await
            {
                tracing::warn!(error = %e, "checkpoint failed");
                conn = None;
            }
        }
    });
    alive
}
