//! Retries with exponential backoff on a clock the test moves, and dead letters.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use savdo_bus::consumer::{Consumer, HandleError, Outcome};
use savdo_bus::{Bus, ConsumerRunner, RetryPolicy, relay};
use savdo_domain::clock::ManualClock;
use savdo_domain::event::CloudEvent;
use savdo_storage::{InboxEntry, OutboxEvent, Storage};

use crate::backend_tests;
use crate::common::{Behaviour, Db, Recorder, products, shop};

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_secs(10),
        max: Duration::from_secs(25),
    }
}

/// The bounds `RetryPolicy::delay(attempt)` must stay in: the capped exponential ±25 %.
fn bounds(p: &RetryPolicy, attempt: u32) -> (chrono::Duration, chrono::Duration) {
    let exp = p.base.as_secs_f64() * 2f64.powi(attempt as i32 - 1);
    let d = exp.min(p.max.as_secs_f64());
    (
        chrono::Duration::milliseconds((d * 750.0).floor() as i64),
        chrono::Duration::milliseconds((d * 1250.0).ceil() as i64),
    )
}

async fn entry(store: &Arc<dyn Storage>, consumer: &str, ev: &OutboxEvent) -> InboxEntry {
    store
        .inbox_entries(consumer, None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_id == ev.id)
        .expect("an inbox entry")
}

pub(crate) struct Setup {
    pub store: Arc<dyn Storage>,
    pub clock: Arc<ManualClock>,
    pub runner: ConsumerRunner,
    pub events: Vec<OutboxEvent>,
    t0: DateTime<Utc>,
}

/// A shop with `n` product events published, and a runner on a test clock.
pub(crate) async fn setup(db: &Db, n: usize) -> Setup {
    let store = db.store.clone();
    let shop = shop(&store, "Retry shop").await;
    products(&store, &shop, "P", n).await;
    relay::drain(&store, &Bus::in_process()).await.unwrap();
    let events = store.published_after(0, 100).await.unwrap();
    let t0 = DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(ManualClock::new(t0));
    let mut runner = ConsumerRunner::new(store.clone(), clock.clone());
    runner.policy = policy();
    Setup {
        store,
        clock,
        runner,
        events,
        t0,
    }
}

backend_tests!(retried_with_backoff_until_it_succeeds);

async fn retried_with_backoff_until_it_succeeds(db: &Db) {
    let s = setup(db, 1).await;
    let ev = &s.events[0];
    let c = Recorder::new("flaky", Behaviour::FailTimes(2));
    let p = policy();

    assert_eq!(s.runner.poll_outbox(c.as_ref()).await.unwrap(), 1);
    let e = entry(&s.store, "flaky", ev).await;
    assert_eq!((e.status.as_str(), e.attempts), ("retry", 1));
    assert!(e.last_error.as_deref().unwrap().contains("attempt 1"));
    assert!(e.event.is_some(), "the event is kept for the retry");
    let at1 = e.next_attempt_at.unwrap();
    let (lo, hi) = bounds(&p, 1);
    assert!(
        at1 >= s.t0 + lo && at1 <= s.t0 + hi,
        "first retry at {at1}, expected within [{lo}, {hi}] of {}",
        s.t0
    );

    // Not due yet: nothing happens, whatever the real time is.
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 0);
    s.clock.set(at1 - chrono::Duration::milliseconds(1));
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 0);
    assert_eq!(c.calls_for(ev.id), [1]);

    s.clock.set(at1);
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 1);
    let e = entry(&s.store, "flaky", ev).await;
    assert_eq!((e.status.as_str(), e.attempts), ("retry", 2));
    let at2 = e.next_attempt_at.unwrap();
    let (lo, hi) = bounds(&p, 2);
    assert!(
        at2 >= at1 + lo && at2 <= at1 + hi,
        "second retry {} after the first, expected within [{lo}, {hi}]",
        at2 - at1
    );

    s.clock.set(at2);
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 1);
    let e = entry(&s.store, "flaky", ev).await;
    assert_eq!((e.status.as_str(), e.attempts), ("done", 3));
    assert_eq!(e.next_attempt_at, None);
    assert_eq!(c.calls_for(ev.id), [1, 2, 3]);
    assert_eq!(*c.applied.lock().unwrap(), [(ev.id, 3)]);

    // Done is final: neither the retry scan nor a redelivery applies it again.
    s.clock.advance(chrono::Duration::days(1));
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 0);
    assert_eq!(
        s.runner.process(c.as_ref(), ev).await.unwrap(),
        Outcome::Skipped
    );
    assert_eq!(c.calls_for(ev.id), [1, 2, 3]);
}

backend_tests!(dead_after_max_attempts_and_never_retried);

async fn dead_after_max_attempts_and_never_retried(db: &Db) {
    let s = setup(db, 2).await;
    let c = Recorder::new("down", Behaviour::AlwaysRetry);
    let p = policy();
    assert_eq!(s.runner.poll_outbox(c.as_ref()).await.unwrap(), 2);

    let mut prev = s.t0;
    for attempt in 1..p.max_attempts {
        for ev in &s.events {
            let e = entry(&s.store, "down", ev).await;
            assert_eq!((e.status.as_str(), e.attempts), ("retry", attempt));
        }
        // Both are due after the longest possible delay of this attempt.
        let (_, hi) = bounds(&p, attempt);
        let latest = s
            .store
            .inbox_entries("down", Some("retry"), 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.next_attempt_at.unwrap())
            .max()
            .unwrap();
        assert!(latest <= prev + hi);
        s.clock.set(latest);
        prev = latest;
        assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 2);
    }
    for ev in &s.events {
        let e = entry(&s.store, "down", ev).await;
        assert_eq!(
            (e.status.as_str(), e.attempts),
            ("dead", p.max_attempts),
            "dead-lettered after {} attempts",
            p.max_attempts
        );
        assert_eq!(e.next_attempt_at, None);
        assert!(e.last_error.is_some());
        assert_eq!(c.calls_for(ev.id), (1..=p.max_attempts).collect::<Vec<_>>());
    }
    let counts = s.store.inbox_counts("down").await.unwrap();
    assert_eq!(counts, [("dead".to_string(), 2)]);

    s.clock.advance(chrono::Duration::days(30));
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 0);
    for ev in &s.events {
        assert_eq!(
            s.runner.process(c.as_ref(), ev).await.unwrap(),
            Outcome::Skipped
        );
        assert_eq!(c.calls_for(ev.id).len() as u32, p.max_attempts);
    }
}

backend_tests!(permanent_errors_go_straight_to_dead);

async fn permanent_errors_go_straight_to_dead(db: &Db) {
    let s = setup(db, 1).await;
    let ev = &s.events[0];
    let c = Recorder::new("strict", Behaviour::Permanent);
    assert_eq!(
        s.runner.process(c.as_ref(), ev).await.unwrap(),
        Outcome::Dead
    );
    let e = entry(&s.store, "strict", ev).await;
    assert_eq!((e.status.as_str(), e.attempts), ("dead", 1));
    assert_eq!(e.last_error.as_deref(), Some("invalid for us"));
    s.clock.advance(chrono::Duration::days(1));
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 0);
    assert_eq!(
        s.runner.process(c.as_ref(), ev).await.unwrap(),
        Outcome::Skipped
    );
    assert_eq!(c.calls_for(ev.id), [1]);
}

backend_tests!(retry_after_is_respected);

async fn retry_after_is_respected(db: &Db) {
    let s = setup(db, 1).await;
    let ev = &s.events[0];
    let c = Recorder::new("limited", Behaviour::RetryAfter(Duration::from_secs(300)));
    assert_eq!(
        s.runner.process(c.as_ref(), ev).await.unwrap(),
        Outcome::Retrying
    );
    let at = entry(&s.store, "limited", ev)
        .await
        .next_attempt_at
        .unwrap();
    assert_eq!(at, s.t0 + chrono::Duration::seconds(300));
    s.clock.set(at - chrono::Duration::seconds(1));
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 0);
    s.clock.set(at);
    assert_eq!(s.runner.retry_due(c.as_ref()).await.unwrap(), 1);
    assert_eq!(c.calls_for(ev.id), [1, 2]);
}

backend_tests!(inbox_is_per_consumer);

/// Two consumers of the same events have separate inboxes: one failing does not hold back the
/// other, and one finishing does not mark the other done.
async fn inbox_is_per_consumer(db: &Db) {
    let s = setup(db, 3).await;
    let ok = Recorder::new("ok", Behaviour::Succeed);
    let bad = Recorder::new("bad", Behaviour::AlwaysRetry);
    assert_eq!(s.runner.poll_outbox(ok.as_ref()).await.unwrap(), 3);
    assert_eq!(s.runner.poll_outbox(bad.as_ref()).await.unwrap(), 3);
    assert_eq!(
        s.store.inbox_counts("ok").await.unwrap(),
        [("done".to_string(), 3)]
    );
    assert_eq!(
        s.store.inbox_counts("bad").await.unwrap(),
        [("retry".to_string(), 3)]
    );
}

#[test]
fn delay_is_exponential_within_jitter_and_capped() {
    let p = RetryPolicy {
        max_attempts: 12,
        base: Duration::from_secs(2),
        max: Duration::from_secs(3600),
    };
    for attempt in 1..=15u32 {
        let nominal = (2.0 * 2f64.powi(attempt as i32 - 1)).min(3600.0);
        let mut lo = f64::MAX;
        let mut hi = 0f64;
        for _ in 0..300 {
            let d = p.delay(attempt).as_secs_f64();
            assert!(
                d >= nominal * 0.75 - 1e-9 && d <= nominal * 1.25 + 1e-9,
                "attempt {attempt}: {d}s outside ±25 % of {nominal}s"
            );
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(hi > lo, "attempt {attempt}: no jitter");
    }
    // Huge attempt numbers neither overflow nor exceed the cap (plus jitter).
    for attempt in [0, 21, 32, 1000, u32::MAX] {
        let d = p.delay(attempt);
        assert!(d <= Duration::from_secs(4500), "attempt {attempt}: {d:?}");
    }
    // The default policy: 2 s, 4 s, 8 s, … .
    let d = RetryPolicy::default();
    assert_eq!(d.base, Duration::from_secs(2));
    let first = d.delay(1).as_secs_f64();
    assert!((1.5..=2.5).contains(&first), "{first}");
}

backend_tests!(two_workers_retrying_the_same_due_event_apply_it_once);

/// Every worker process runs a retry scan per consumer: two scans finding the same due entry
/// must not both apply it.
async fn two_workers_retrying_the_same_due_event_apply_it_once(db: &Db) {
    let s = setup(db, 3).await;
    let c = Recorder::new("shared", Behaviour::FailTimes(1));
    assert_eq!(s.runner.poll_outbox(c.as_ref()).await.unwrap(), 3);
    s.clock.advance(chrono::Duration::days(1));
    let (a, b) = tokio::join!(
        s.runner.retry_due(c.as_ref()),
        s.runner.retry_due(c.as_ref())
    );
    let _ = (a.unwrap(), b.unwrap());
    for ev in &s.events {
        assert_eq!(c.calls_for(ev.id), [1, 2], "event {}", ev.id);
    }
    let ids: Vec<_> = s.events.iter().map(|e| e.id).collect();
    c.assert_applied_once(&ids);
}

/// A consumer with its own retry policy around a [`Recorder`].
struct OwnPolicy {
    inner: Arc<Recorder>,
    policy: RetryPolicy,
}

#[async_trait::async_trait]
impl Consumer for OwnPolicy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn accepts(&self, event_type: &str) -> bool {
        self.inner.accepts(event_type)
    }
    async fn handle(&self, event: &CloudEvent, attempt: u32) -> Result<(), HandleError> {
        self.inner.handle(event, attempt).await
    }
    fn retry_policy(&self) -> Option<RetryPolicy> {
        Some(self.policy.clone())
    }
}

backend_tests!(a_consumer_policy_retrying_until_done_never_dead_letters);

/// The runner gives up after 4 attempts; a consumer whose effect must land keeps retrying
/// retryable failures long past that, its delays capped, and applies the event once.
async fn a_consumer_policy_retrying_until_done_never_dead_letters(db: &Db) {
    let s = setup(db, 1).await;
    let ev = &s.events[0];
    let own = RetryPolicy::until_done(Duration::from_secs(10), Duration::from_secs(60));
    let c = OwnPolicy {
        inner: Recorder::new("must_land", Behaviour::FailTimes(40)),
        policy: own.clone(),
    };
    assert!(40 > s.runner.policy.max_attempts);
    assert_eq!(s.runner.process(&c, ev).await.unwrap(), Outcome::Retrying);
    let mut prev = s.t0;
    for attempt in 1..=40u32 {
        let e = entry(&s.store, "must_land", ev).await;
        assert_eq!((e.status.as_str(), e.attempts), ("retry", attempt));
        let at = e.next_attempt_at.expect("never dead-lettered");
        let (lo, hi) = bounds(&own, attempt);
        assert!(
            at >= prev + lo && at <= prev + hi,
            "attempt {attempt}: next in {}, expected within [{lo}, {hi}]",
            at - prev
        );
        assert!(at - prev <= chrono::Duration::seconds(75), "capped");
        s.clock.set(at);
        prev = at;
        assert_eq!(s.runner.retry_due(&c).await.unwrap(), 1);
    }
    let e = entry(&s.store, "must_land", ev).await;
    assert_eq!((e.status.as_str(), e.attempts), ("done", 41));
    assert_eq!(*c.inner.applied.lock().unwrap(), [(ev.id, 41)]);
    s.clock.advance(chrono::Duration::days(1));
    assert_eq!(s.runner.retry_due(&c).await.unwrap(), 0);
    assert_eq!(s.runner.process(&c, ev).await.unwrap(), Outcome::Skipped);
    assert_eq!(c.inner.calls_for(ev.id).len(), 41);
}

backend_tests!(a_consumer_policy_retrying_until_done_still_dead_letters_refusals);

async fn a_consumer_policy_retrying_until_done_still_dead_letters_refusals(db: &Db) {
    let s = setup(db, 1).await;
    let ev = &s.events[0];
    let c = OwnPolicy {
        inner: Recorder::new("refused", Behaviour::Permanent),
        policy: RetryPolicy::until_done(Duration::from_secs(10), Duration::from_secs(60)),
    };
    assert_eq!(s.runner.process(&c, ev).await.unwrap(), Outcome::Dead);
    let e = entry(&s.store, "refused", ev).await;
    assert_eq!((e.status.as_str(), e.attempts), ("dead", 1));
    assert_eq!(e.last_error.as_deref(), Some("invalid for us"));
}

#[test]
fn the_default_consumer_policy_is_the_runners() {
    let c = Recorder::new("plain", Behaviour::Succeed);
    assert!(c.retry_policy().is_none());
    let p = RetryPolicy::until_done(Duration::from_secs(2), Duration::from_secs(600));
    assert!(!p.gives_up_after(1_000_000));
    assert!(p.delay(1_000_000) <= Duration::from_secs(750));
    assert!(RetryPolicy::default().gives_up_after(12));
    assert!(!RetryPolicy::default().gives_up_after(11));
}
