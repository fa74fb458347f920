//! The `webhooks` consumer: every event becomes one delivery per matching, enabled subscription
//! of its tenant. Idempotent: a redelivered event finds its deliveries exist already.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use async_trait::async_trait;
use savdo_bus::{Consumer, HandleError};
use savdo_domain::clock::{Clock, SystemClock};
use savdo_domain::event::CloudEvent;
use savdo_storage::Storage;
use savdo_storage::webhooks::EventDeliveries;

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
        self.dispatch_to(&hooks, event).await
    }

    async fn dispatch_to(
        &self,
        hooks: &[savdo_storage::webhooks::Webhook],
        event: &CloudEvent,
    ) -> Result<usize, HandleError> {
        let Some(deliveries) = deliveries_for(hooks, event)? else {
            return Ok(0);
        };
        self.store
            .enqueue_deliveries_many(&[deliveries], self.clock.now())
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))
    }
}

/// The deliveries `event` makes among `hooks` (its tenant's enabled subscriptions); `None` when
/// no subscription wants it.
fn deliveries_for(
    hooks: &[savdo_storage::webhooks::Webhook],
    event: &CloudEvent,
) -> Result<Option<EventDeliveries>, HandleError> {
    let webhook_ids: Vec<uuid::Uuid> = hooks
        .iter()
        .filter(|w| subscribed(&w.events, &event.kind))
        .map(|w| w.id)
        .collect();
    if webhook_ids.is_empty() {
        return Ok(None);
    }
    let payload = serde_json::to_value(event).map_err(|e| HandleError::Permanent(e.to_string()))?;
    Ok(Some(EventDeliveries {
        tenant: event.tenantid,
        webhook_ids,
        event_id: event.id,
        event_type: event.kind.clone(),
        payload,
    }))
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

    /// Deliveries are keyed by (subscription, event), so a redelivered event changes nothing:
    /// the runner may skip the inbox, and an event no subscription wants costs no write.
    fn batched(&self) -> bool {
        true
    }

    async fn handle_batch(&self, events: &[&CloudEvent]) -> Result<(), HandleError> {
        // Each tenant's subscriptions read once per batch, and the batch's deliveries written
        // in one transaction (one commit per event kept this consumer behind the tills).
        let mut hooks: HashMap<uuid::Uuid, Vec<savdo_storage::webhooks::Webhook>> = HashMap::new();
        let mut wanted = Vec::new();
        for event in events {
            let tenant_hooks = match hooks.entry(event.tenantid) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(v) => v.insert(
                    self.store
                        .enabled_webhooks(event.tenantid)
                        .await
                        .map_err(|e| HandleError::Retry(e.to_string()))?,
                ),
            };
            wanted.extend(deliveries_for(tenant_hooks, event)?);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        self.store
            .enqueue_deliveries_many(&wanted, self.clock.now())
            .await
            .map(drop)
            .map_err(|e| HandleError::Retry(e.to_string()))
    }
}
