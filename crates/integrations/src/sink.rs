//! The exchange log: every outbound attempt the hub makes, already redacted, into
//! `integration_log`. Recording never waits on the database: exchanges go through a bounded
//! queue to one writer task that inserts them in batches and keeps the newest
//! [`DEFAULT_KEEP`] per integration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use savdo_hub::{Exchange, ExchangeSink};
use savdo_storage::Storage;
use savdo_storage::integrations::LogEntry;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Entries kept per integration.
pub const DEFAULT_KEEP: u32 = 10_000;
const QUEUE: usize = 4096;
const BATCH: usize = 256;

enum Msg {
    Entry(Box<LogEntry>),
    Flush(oneshot::Sender<()>),
}

pub struct StorageSink {
    tx: mpsc::Sender<Msg>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for StorageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSink")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl StorageSink {
    /// Start the writer task (needs a Tokio runtime). It ends when the sink is dropped.
    pub fn spawn(store: Arc<dyn Storage>, keep: u32) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(store, rx, keep));
        Arc::new(StorageSink {
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// Exchanges dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until everything recorded so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn entry(e: Exchange) -> Option<LogEntry> {
    Some(LogEntry {
        id: Uuid::nil(),
        tenant_id: Uuid::parse_str(&e.tenant_id).ok()?,
        integration_id: Uuid::parse_str(&e.integration_id).ok()?,
        operation: e.operation,
        started_at: e.started_at,
        attempt: e.attempt,
        method: e.method,
        url: e.url,
        status: e.status,
        latency_ms: e.latency_ms,
        error: e.error,
        request_headers: e.request_headers,
        request_body: e.request_body,
        response_body: e.response_body,
    })
}

#[async_trait]
impl ExchangeSink for StorageSink {
    async fn record(&self, exchange: Exchange) {
        // Exchanges of clients not tied to a stored integration have nowhere to go.
        let Some(e) = entry(exchange) else {
            return;
        };
        if self.tx.try_send(Msg::Entry(Box::new(e))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "integration log queue full: exchanges dropped");
            }
        }
    }
}

async fn write_loop(store: Arc<dyn Storage>, mut rx: mpsc::Receiver<Msg>, keep: u32) {
    let mut buf = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Entry(e) => buf.push(*e),
                Msg::Flush(w) => waiters.push(w),
            }
            if buf.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if let Err(e) = store.append_log(&buf, keep).await {
                tracing::warn!(error = %e, entries = buf.len(), "could not write the integration log");
            }
            buf.clear();
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}
