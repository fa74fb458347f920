//! The `webhooks` consumer: every event becomes one delivery per matching, enabled subscription
//! of its tenant. Idempotent: a redelivered event finds its deliveries exist already.

use std::sync::Arc;

use async_trait::async_trait;
use savdo_bus::{Consumer, HandleError};
use savdo_domain::clock::{Clock, SystemClock};
use savdo_domain::event::CloudEvent;
use savdo_storage::Storage;

use crate::events::subscribed;

pub struct Dispatcher {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
}

impl Dispatcher {
    pub const NAME: &'static str = "webhooks";

    pub fn new(store: Arc<dyn Storage>) -> Self {
        Dispatcher {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    /// With the clock that stamps the deliveries' first due time.
    pub fn with_clock(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Self {
        Dispatcher { store, clock }
    }

    /// Create the deliveries for one event; returns how many were new.
    pub async fn dispatch(&self, event: &CloudEvent) -> Result<usize, HandleError> {
        let hooks = self
            .store
            .enabled_webhooks(event.tenantid)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        let ids: Vec<uuid::Uuid> = hooks
            .iter()
            .filter(|w| subscribed(&w.events, &event.kind))
            .map(|w| w.id)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let payload =
            serde_json::to_value(event).map_err(|e| HandleError::Permanent(e.to_string()))?;
        self.store
            .enqueue_deliveries(
                event.tenantid,
                &ids,
                event.id,
                &event.kind,
                &payload,
                self.clock.now(),
            )
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))
    }
}

#[async_trait]
impl Consumer for Dispatcher {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn accepts(&self, _event_type: &str) -> bool {
        true
    }

    async fn handle(&self, event: &CloudEvent, _attempt: u32) -> Result<(), HandleError> {
        let n = self.dispatch(event).await?;
        if n > 0 {
            tracing::debug!(event = %event.id, kind = %event.kind, deliveries = n, "webhook deliveries queued");
        }
        Ok(())
    }
}
