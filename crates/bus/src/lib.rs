//! Event delivery. Every state change writes its events into the outbox in its own
//! transaction; the [`relay`] moves them to a [`Bus`] in order per tenant; [`consumer`]s apply
//! each event once, whatever the bus redelivers.
//!
//! Two buses: in-process (the default: the outbox itself is the durable log consumers read,
//! woken by the relay, which also leaves what it published in a [`feed::Feed`] in memory) and NATS JetStream (stream `SAVDO_EVENTS`, subject
//! `savdo.<tenant>.<type>`, `Nats-Msg-Id` = event id, durable consumers) for several processes.

pub mod consumer;
pub mod feed;
pub mod nats;
pub mod relay;

use std::sync::Arc;

use savdo_domain::event::CloudEvent;
use savdo_storage::OutboxEvent;
use tokio::sync::Notify;

pub use consumer::{Consumer, ConsumerRunner, HandleError, RetryPolicy};
pub use feed::{Feed, Published};
pub use nats::NatsBus;

/// Where published events go.
#[derive(Clone)]
pub enum Bus {
    /// Consumers in this process read the published outbox (the recent part from `feed`);
    /// publishing wakes them.
    InProcess {
        published: Arc<Notify>,
        feed: Arc<Feed>,
    },
    Nats(Box<NatsBus>),
}

impl Bus {
    pub fn in_process() -> Bus {
        Bus::InProcess {
            published: Arc::new(Notify::new()),
            feed: Arc::new(Feed::default()),
        }
    }

    pub async fn nats(url: &str) -> anyhow::Result<Bus> {
        Ok(Bus::Nats(Box::new(NatsBus::connect(url).await?)))
    }

    /// Publish a batch; returns when every event is accepted (JetStream acks awaited).
    pub async fn publish(&self, events: &[OutboxEvent]) -> Result<(), String> {
        match self {
            Bus::InProcess { published, .. } => {
                published.notify_waiters();
                Ok(())
            }
            Bus::Nats(n) => n
                .publish(events)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::InProcess { .. } => "in-process",
            Bus::Nats(_) => "nats",
        }
    }
}

/// The CloudEvents envelope of an outbox row.
pub fn envelope(e: &OutboxEvent) -> CloudEvent {
    CloudEvent::new(e.id, e.tenant_id, &e.kind, e.time, e.data.clone())
}
