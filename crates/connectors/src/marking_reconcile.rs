//! The marking re-check pass: codes sold while Asl Belgisi was unreachable whose re-check is
//! still outstanding are re-checked periodically, whatever happened to the `marking-recheck`
//! consumer's event (it gives up after its attempts when the service stays down).
//!
//! Each round takes the receipts whose codes have waited longer than
//! [`MarkingReconcileConfig::older_than`] (at most [`MarkingReconcileConfig::batch`]), claims
//! each in storage (so several processes on one PostgreSQL database never check a receipt at
//! once) and re-checks it the way the consumer does ([`MarkingRecheck::recheck`]), in the
//! receipt's tenant. Storage records a code's verdict only while it is still pending and raises
//! `marking.check_failed` in the same transaction, so whichever of the two gets there first, a
//! refused code is reported once. While the service is still down the receipt backs off
//! (capped).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use savdo_bus::consumer::HandleError;
use savdo_domain::clock::{Clock, SystemClock};
use savdo_hub::MarkingCheck;
use savdo_storage::marking::PendingRecheck;
use savdo_storage::{Storage, StorageError};
use tokio::sync::watch;

use crate::marking_recheck::MarkingRecheck;
use crate::reconcile::{self, Cadence, Pass, to_chrono};

/// When and how much the pass re-checks.
#[derive(Debug, Clone)]
pub struct MarkingReconcileConfig {
    /// Pause between rounds.
    pub every: Duration,
    /// Codes are taken once they have waited this long (the consumer has them before).
    pub older_than: Duration,
    /// Receipts re-checked per round at most.
    pub batch: u32,
    /// Wait before trying a receipt again while the service is down; doubles each time.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a claimed receipt belongs to the worker re-checking it.
    pub lease: Duration,
}

impl Default for MarkingReconcileConfig {
    fn default() -> Self {
        MarkingReconcileConfig {
            every: Duration::from_secs(60),
            older_than: Duration::from_secs(15 * 60),
            batch: 50,
            first_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(300),
        }
    }
}

impl MarkingReconcileConfig {
    /// `first_backoff · 2^checks`, capped.
    pub fn backoff(&self, checks: u32) -> Duration {
        reconcile::backoff(self.first_backoff, self.max_backoff, checks)
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecheckRound {
    /// Receipts claimed.
    pub receipts: usize,
    /// Codes re-checked (their verdict is stored).
    pub codes: usize,
    /// Receipts whose re-check could not be made yet.
    pub later: usize,
}

pub struct MarkingReconcile {
    store: Arc<dyn Storage>,
    recheck: MarkingRecheck,
    clock: Arc<dyn Clock>,
    config: MarkingReconcileConfig,
}

impl MarkingReconcile {
    pub fn new(store: Arc<dyn Storage>, check: Arc<dyn MarkingCheck>) -> Self {
        Self::with(
            store,
            check,
            Arc::new(SystemClock),
            MarkingReconcileConfig::default(),
        )
    }

    pub fn with(
        store: Arc<dyn Storage>,
        check: Arc<dyn MarkingCheck>,
        clock: Arc<dyn Clock>,
        config: MarkingReconcileConfig,
    ) -> Self {
        MarkingReconcile {
            recheck: MarkingRecheck::new(store.clone(), check),
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
    pub async fn run_once(&self) -> Result<RecheckRound, StorageError> {
        reconcile::round(self).await
    }

    async fn later(&self, item: &PendingRecheck, e: &HandleError) -> Result<(), StorageError> {
        let wait = match e {
            HandleError::Retry(_) => self.config.backoff(item.checks),
            HandleError::RetryAfter { after, .. } => (*after).max(self.config.backoff(item.checks)),
            // No marking integration any more: look again now and then, in case it returns.
            HandleError::Permanent(_) => self.config.max_backoff,
        };
        tracing::warn!(receipt = %item.receipt_id, error = %e, "marking re-check not made yet");
        let next = self.clock.now() + to_chrono(wait);
        self.store
            .marking_recheck_later(item.tenant_id, item.receipt_id, next, &e.to_string())
            .await
    }
}

#[async_trait]
impl Pass for MarkingReconcile {
    type Item = PendingRecheck;
    type Round = RecheckRound;

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
    ) -> Result<Vec<PendingRecheck>, StorageError> {
        self.store
            .marking_rechecks_due(now, older_than, batch)
            .await
    }

    async fn claim(
        &self,
        item: &PendingRecheck,
        now: DateTime<Utc>,
        lease: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        self.store
            .claim_marking_recheck(item.tenant_id, item.receipt_id, now, lease)
            .await
    }

    async fn settle(
        &self,
        item: &PendingRecheck,
        round: &mut RecheckRound,
    ) -> Result<(), StorageError> {
        round.receipts += 1;
        match self.recheck.recheck(item.tenant_id, item.receipt_id).await {
            Ok(n) => {
                round.codes += n;
                self.store
                    .marking_recheck_done(item.tenant_id, item.receipt_id)
                    .await?;
            }
            Err(e) => {
                round.later += 1;
                self.later(item, &e).await?;
            }
        }
        Ok(())
    }

    fn report(r: &RecheckRound) {
        if r.receipts > 0 {
            tracing::info!(
                receipts = r.receipts,
                codes = r.codes,
                later = r.later,
                "marking re-check round"
            );
        }
    }

    fn report_failure(e: &StorageError) {
        tracing::warn!(error = %e, "marking re-check round failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let c = MarkingReconcileConfig::default();
        assert_eq!(c.backoff(0), Duration::from_secs(60));
        assert_eq!(c.backoff(2), Duration::from_secs(240));
        assert_eq!(c.backoff(9), Duration::from_secs(900));
    }
}
