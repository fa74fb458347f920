//! A consumer that allows several events in flight (`Consumer::concurrency`) gets them at once,
//! both from a read and from the retry scan, each still once through its inbox row.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use savdo_bus::consumer::{Consumer, HandleError};
use savdo_domain::clock::Clock;
use savdo_domain::event::CloudEvent;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::Db;

/// Each call waits at a barrier of `width`: it gets through only when `width` calls are in
/// flight together. Fails every event's first `fail_first` attempts after the barrier.
struct Together {
    width: usize,
    barrier: Barrier,
    fail_first: u32,
    calls: Mutex<Vec<(Uuid, u32)>>,
}

impl Together {
    fn new(width: usize, fail_first: u32) -> Arc<Self> {
        Arc::new(Together {
            width,
            barrier: Barrier::new(width),
            fail_first,
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Consumer for Together {
    fn name(&self) -> &str {
        "together"
    }
    fn accepts(&self, _event_type: &str) -> bool {
        true
    }
    fn concurrency(&self) -> usize {
        self.width
    }
    async fn handle(&self, event: &CloudEvent, attempt: u32) -> Result<(), HandleError> {
        self.calls.lock().unwrap().push((event.id, attempt));
        if tokio::time::timeout(Duration::from_secs(10), self.barrier.wait())
            .await
            .is_err()
        {
            return Err(HandleError::Permanent("alone at the barrier".into()));
        }
        if attempt <= self.fail_first {
            return Err(HandleError::Retry(format!("down (attempt {attempt})")));
        }
        Ok(())
    }
}

backend_tests!(events_are_applied_concurrency_at_a_time);

async fn events_are_applied_concurrency_at_a_time(db: &Db) {
    let setup = crate::retries::setup(db, 8).await;
    let (store, runner) = (&setup.store, &setup.runner);
    let events = &setup.events;
    assert_eq!(events.len(), 8);

    // A read of 8 events, 4 at a time: every call meets three others at the barrier (one by
    // one, the first would wait alone and fail permanently).
    let c = Together::new(4, 1);
    assert_eq!(runner.poll_outbox(c.as_ref()).await.unwrap(), 8);
    let entries = store.inbox_entries("together", None, 100).await.unwrap();
    assert_eq!(entries.len(), 8);
    assert!(
        entries
            .iter()
            .all(|e| e.status == "retry" && e.attempts == 1),
        "{entries:?}"
    );

    // The retry scan, when they are due: again 4 at a time, each applied once.
    setup.clock.advance(chrono::Duration::hours(1));
    assert_eq!(runner.retry_due(c.as_ref()).await.unwrap(), 8);
    let entries = store.inbox_entries("together", None, 100).await.unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.status == "done" && e.attempts == 2),
        "{entries:?}"
    );
    let mut calls = c.calls.lock().unwrap().clone();
    calls.sort();
    let mut want: Vec<(Uuid, u32)> = events.iter().flat_map(|e| [(e.id, 1), (e.id, 2)]).collect();
    want.sort();
    assert_eq!(calls, want, "each event attempted once per round");
    assert_eq!(runner.retry_due(c.as_ref()).await.unwrap(), 0);
}

backend_tests!(a_round_of_due_retries_is_claimed_once);

/// Two workers claiming the same round of due retries: each event goes to one of them, and an
/// event not due yet to neither.
async fn a_round_of_due_retries_is_claimed_once(db: &Db) {
    let setup = crate::retries::setup(db, 3).await;
    let (store, runner) = (&setup.store, &setup.runner);
    let c = Together::new(1, 1);
    assert_eq!(runner.poll_outbox(c.as_ref()).await.unwrap(), 3);
    let ids: Vec<Uuid> = setup.events.iter().map(|e| e.id).collect();
    let now = setup.clock.now();
    let lease = now + chrono::Duration::minutes(5);
    // Not due yet (parked with backoff): nothing taken.
    let early = store
        .inbox_claim_many("together", &ids, now, lease)
        .await
        .unwrap();
    assert!(early.is_empty(), "{early:?}");

    let later = now + chrono::Duration::hours(1);
    let lease = later + chrono::Duration::minutes(5);
    let first = store
        .inbox_claim_many("together", &ids, later, lease)
        .await
        .unwrap();
    let second = store
        .inbox_claim_many("together", &ids, later, lease)
        .await
        .unwrap();
    let mut first_sorted = first.clone();
    first_sorted.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(first_sorted, want);
    assert!(second.is_empty(), "{second:?}");
    assert!(
        store
            .inbox_claim_many("together", &[], later, lease)
            .await
            .unwrap()
            .is_empty()
    );
}
