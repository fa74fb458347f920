//! The relay: outbox rows to the bus, in order per tenant, marked published only after the bus
//! accepted them. Safe to run several (PostgreSQL) and to restart at any point.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use savdo_storage::{OutboxEvent, Storage};
use tokio::sync::watch;

use crate::Bus;

/// Events per `relay_batch`: large enough that the bus round trip per batch and the marking
/// transaction are amortised (SQLite pipelines it in chunks: read the next, publish one, mark
/// the previous), small enough to keep a batch's memory and a PostgreSQL transaction short.
pub const BATCH: u32 = 1024;

fn publisher(
    bus: Bus,
) -> impl for<'b> Fn(&'b [OutboxEvent]) -> BoxFuture<'b, Result<(), String>> + Send + Sync {
    move |evs: &[OutboxEvent]| -> BoxFuture<'_, Result<(), String>> {
        let bus = bus.clone();
        Box::pin(async move { bus.publish(evs).await })
    }
}

/// Move everything waiting now; returns how many events were published.
pub async fn drain(
    store: &Arc<dyn Storage>,
    bus: &Bus,
) -> Result<usize, savdo_storage::StorageError> {
    let mut total = 0;
    loop {
        let publish = publisher(bus.clone());
        let relayed = store.relay(BATCH, &publish).await?;
        let (n, more) = (relayed.published, relayed.more);
        total += n;
        if n > 0
            && let Bus::InProcess { published, feed } = bus
        {
            // In-process consumers read the outbox: wake them again now that the batch is
            // committed (publishing woke them before its rows were visible), with the batch
            // in memory for them.
            feed.push(relayed.numbered);
            published.notify_waiters();
        }
        metrics::counter!("savdo_relay_published_total").increment(n as u64);
        // A step that was not stopped by its limit took everything committed before it; what
        // commits later wakes the relay again (`run` listens from before this drain).
        if n == 0 || !more {
            return Ok(total);
        }
    }
}

/// Run until `shutdown` turns true: publish on every commit notification, and poll as a fallback
/// (another process may have written the outbox).
pub async fn run(store: Arc<dyn Storage>, bus: Bus, mut shutdown: watch::Receiver<bool>) {
    let notify = store.outbox_notify();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let waiting = notify.notified();
        match drain(&store, &bus).await {
            Ok(_) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, bus = bus.kind(), "relay could not publish; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        tokio::select! {
            _ = waiting => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => {}
        }
    }
}
