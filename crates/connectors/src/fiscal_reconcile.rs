//! The fiscal reconciliation pass: receipts left `pending` or `queued` for a while are asked
//! about on their till's gateway, whatever happened to their events.
//!
//! The `fiscal` consumer retries queued and unreachable receipts without end, but an event can
//! still be lost to it (dead-lettered by an older policy, or by hand). Every few minutes this
//! pass takes the receipts unsettled for longer than [`ReconcileConfig::older_than`] (storage
//! keeps that list beside the receipt's fiscal state) and, for each:
//! - `GET /v1/receipts/{id}`: `registered` or `queued` is stored as the consumer stores it
//!   ([`FiscalConsumer::store_answer`]), so `receipt.fiscalized` is emitted once, whoever
//!   learns it first;
//! - unknown to the gateway (404: our request never reached it) or refused by the device: the
//!   same receipt is sent again ([`FiscalConsumer::register`]); the gateway is idempotent by
//!   receipt id, so this never registers twice;
//! - gateway unreachable: nothing is written; checked again later with capped backoff.
//!
//! Each receipt is claimed in storage before the gateway is asked, so several processes
//! sharing a PostgreSQL database check a receipt once per round between them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use savdo_domain::clock::{Clock, SystemClock};
use savdo_storage::fiscal::{FiscalStatus, UnsettledReceipt};
use savdo_storage::{Storage, StorageError};
use tokio::sync::watch;

use crate::fiscal_gateway::{
    FiscalClient, FiscalConsumer, GatewayError, GatewayStatus, Registration, stored_fiscal,
};
use crate::reconcile::{self, Cadence, Pass, to_chrono};

/// When and how much the pass checks.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Pause between rounds.
    pub every: Duration,
    /// A receipt is checked once it has been unsettled this long (the consumer has it before).
    pub older_than: Duration,
    /// Receipts checked per round at most.
    pub batch: u32,
    /// Wait before checking a receipt again after a check came to nothing; doubles each time.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a claimed receipt belongs to the worker checking it.
    pub lease: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            every: Duration::from_secs(60),
            older_than: Duration::from_secs(15 * 60),
            batch: 100,
            first_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(300),
        }
    }
}

impl ReconcileConfig {
    /// `first_backoff · 2^checks`, capped.
    pub fn backoff(&self, checks: u32) -> Duration {
        reconcile::backoff(self.first_backoff, self.max_backoff, checks)
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Receipts claimed and checked.
    pub checked: usize,
    /// Of those, registered now.
    pub registered: usize,
    /// Of those, refused (stored `failed` with the reason).
    pub failed: usize,
    /// Of those, still unsettled: checked again later.
    pub later: usize,
}

pub struct FiscalReconcile {
    store: Arc<dyn Storage>,
    fiscal: FiscalConsumer,
    clock: Arc<dyn Clock>,
    config: ReconcileConfig,
}

impl FiscalReconcile {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        Self::with(
            store,
            FiscalClient::new(),
            Arc::new(SystemClock),
            ReconcileConfig::default(),
        )
    }

    pub fn with(
        store: Arc<dyn Storage>,
        client: FiscalClient,
        clock: Arc<dyn Clock>,
        config: ReconcileConfig,
    ) -> Self {
        FiscalReconcile {
            fiscal: FiscalConsumer::with(store.clone(), client, clock.clone()),
            store,
            clock,
            config,
        }
    }

    /// Rounds until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        reconcile::run(&self, stop).await
    }

    /// One round: every due receipt (up to the batch) this worker manages to claim.
    pub async fn run_once(&self) -> Result<Round, StorageError> {
        reconcile::round(self).await
    }

    /// Check one claimed receipt; `None` when there was nothing to ask (settled meanwhile, or
    /// its till has no fiscal device any more).
    async fn check(&self, item: &UnsettledReceipt) -> Result<Option<Registration>, StorageError> {
        let (tenant, id) = (item.tenant_id, item.receipt_id);
        let receipt = match self.store.get_receipt(tenant, id).await {
            Ok(r) => r,
            Err(StorageError::NotFound(_)) => {
                self.store.fiscal_check_done(tenant, id).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let unsettled = stored_fiscal(&receipt)
            .is_some_and(|f| matches!(f.status, FiscalStatus::Pending | FiscalStatus::Queued));
        let device = match unsettled {
            true => {
                self.store
                    .terminal_fiscal(tenant, receipt.terminal_id)
                    .await?
            }
            false => None,
        };
        let Some(device) = device else {
            if unsettled {
                tracing::warn!(receipt = %id, "the till has no fiscal device any more: the receipt stays unregistered");
            }
            self.store.fiscal_check_done(tenant, id).await?;
            return Ok(None);
        };
        let outcome = match self.fiscal.client().receipt(&device.gateway_url, id).await {
            Ok(r) if matches!(r.status, GatewayStatus::Registered | GatewayStatus::Queued) => {
                self.fiscal.store_answer(tenant, id, Ok(r)).await?
            }
            // Never reached the gateway, or refused by the device: send it again, same id.
            Ok(_) | Err(GatewayError::Refused { status: 404, .. }) => {
                self.fiscal.register(tenant, &receipt, &device).await?
            }
            // Nothing learnt: leave the stored state as it is (a `queued` stays queued).
            Err(GatewayError::Unreachable(msg)) => Registration::Unreachable(msg),
            Err(GatewayError::Refused { message, .. }) => Registration::Unreachable(message),
        };
        match &outcome {
            Registration::Queued => {
                self.later(item, "queued on the fiscal gateway").await?;
            }
            Registration::Unreachable(msg) => {
                self.later(item, &format!("fiscal gateway unreachable: {msg}"))
                    .await?;
            }
            Registration::Registered => {
                tracing::info!(receipt = %id, "receipt fiscalized by reconciliation");
                self.store.fiscal_check_done(tenant, id).await?;
            }
            Registration::DeviceRefused(reason)
            | Registration::Refused {
                message: reason, ..
            } => {
                tracing::warn!(receipt = %id, reason = %reason, "fiscal registration refused");
                self.store.fiscal_check_done(tenant, id).await?;
            }
        }
        Ok(Some(outcome))
    }

    async fn later(&self, item: &UnsettledReceipt, why: &str) -> Result<(), StorageError> {
        let next = self.clock.now() + to_chrono(self.config.backoff(item.checks));
        self.store
            .fiscal_check_later(item.tenant_id, item.receipt_id, next, why)
            .await
    }
}

#[async_trait]
impl Pass for FiscalReconcile {
    type Item = UnsettledReceipt;
    type Round = Round;

    fn cadence(&self) -> Cadence {
        Cadence {
            every: self.config.every,
            older_than: self.config.older_than,
            lease: self.config.lease,
            batch: self.config.batch,
        }
    }

    fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    async fn due(
        &self,
        now: DateTime<Utc>,
        older_than: DateTime<Utc>,
        batch: u32,
    ) -> Result<Vec<UnsettledReceipt>, StorageError> {
        self.store.fiscal_unsettled(now, older_than, batch).await
    }

    async fn claim(
        &self,
        item: &UnsettledReceipt,
        now: DateTime<Utc>,
        lease: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        self.store
            .claim_fiscal_check(item.tenant_id, item.receipt_id, now, lease)
            .await
    }

    async fn settle(&self, item: &UnsettledReceipt, round: &mut Round) -> Result<(), StorageError> {
        round.checked += 1;
        match self.check(item).await? {
            Some(Registration::Registered) => round.registered += 1,
            Some(Registration::DeviceRefused(_) | Registration::Refused { .. }) => {
                round.failed += 1
            }
            Some(Registration::Queued) | Some(Registration::Unreachable(_)) => round.later += 1,
            None => {}
        }
        Ok(())
    }

    fn report(r: &Round) {
        if r.checked > 0 {
            tracing::info!(
                checked = r.checked,
                registered = r.registered,
                failed = r.failed,
                later = r.later,
                "fiscal reconciliation round"
            );
        }
    }

    fn report_failure(e: &StorageError) {
        tracing::warn!(error = %e, "fiscal reconciliation round failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let c = ReconcileConfig::default();
        assert_eq!(c.backoff(0), Duration::from_secs(60));
        assert_eq!(c.backoff(1), Duration::from_secs(120));
        assert_eq!(c.backoff(3), Duration::from_secs(480));
        assert_eq!(c.backoff(4), Duration::from_secs(900));
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(900));
    }
}
