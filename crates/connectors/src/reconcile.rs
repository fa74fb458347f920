//! The shape every periodic reconciliation pass shares: each round takes the receipts due (left
//! unsettled longer than `older_than`, at most `batch`), claims each in storage for `lease` (so
//! several processes on one PostgreSQL database never work on a receipt at once) and settles
//! the ones it claimed; rounds repeat every `every` until told to stop.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use savdo_domain::clock::Clock;
use savdo_storage::StorageError;
use tokio::sync::watch;

/// How often and how much a pass works.
pub(crate) struct Cadence {
    pub every: Duration,
    pub older_than: Duration,
    pub lease: Duration,
    pub batch: u32,
}

/// One kind of reconciliation: what is due, how it is claimed, what is done with it.
#[async_trait]
pub(crate) trait Pass: Send + Sync {
    type Item: Send + Sync;
    type Round: Default + Send;

    fn cadence(&self) -> Cadence;
    fn clock(&self) -> &dyn Clock;
    async fn due(
        &self,
        now: DateTime<Utc>,
        older_than: DateTime<Utc>,
        batch: u32,
    ) -> Result<Vec<Self::Item>, StorageError>;
    /// `false` when another worker holds it.
    async fn claim(
        &self,
        item: &Self::Item,
        now: DateTime<Utc>,
        lease: DateTime<Utc>,
    ) -> Result<bool, StorageError>;
    /// Work on one claimed item, counting what happened in `round`.
    async fn settle(&self, item: &Self::Item, round: &mut Self::Round) -> Result<(), StorageError>;
    /// Log a round that did something.
    fn report(round: &Self::Round);
    fn report_failure(e: &StorageError);
}

/// Rounds until `stop` turns true.
pub(crate) async fn run<P: Pass>(pass: &P, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match round(pass).await {
            Ok(r) => P::report(&r),
            Err(e) => P::report_failure(&e),
        }
        tokio::select! {
            _ = tokio::time::sleep(pass.cadence().every) => {}
            changed = stop.changed() => if changed.is_err() { return; },
        }
    }
}

/// One round: every due item (up to the batch) this worker manages to claim.
pub(crate) async fn round<P: Pass>(pass: &P) -> Result<P::Round, StorageError> {
    let cadence = pass.cadence();
    let now = pass.clock().now();
    let older_than = now - to_chrono(cadence.older_than);
    let lease = now + to_chrono(cadence.lease);
    let due = pass.due(now, older_than, cadence.batch).await?;
    let mut round = P::Round::default();
    for item in due {
        if !pass.claim(&item, now, lease).await? {
            continue;
        }
        pass.settle(&item, &mut round).await?;
    }
    Ok(round)
}

/// `first · 2^checks`, capped at `max`.
pub(crate) fn backoff(first: Duration, max: Duration, checks: u32) -> Duration {
    first.saturating_mul(1u32 << checks.min(20)).min(max)
}

/// A configured duration as chrono's; absurd ones are held to a year (no overflow on `now ±`).
pub(crate) fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d)
        .unwrap_or(chrono::Duration::days(365))
        .min(chrono::Duration::days(365))
}
