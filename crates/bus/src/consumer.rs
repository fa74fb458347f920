//! Consumers: each event applied once per consumer, whatever the bus redelivers.
//!
//! The inbox (consumer, event id) records every event a consumer has started, finished or
//! given up on. A failed event is parked with its next attempt time (exponential backoff with
//! jitter) and the consumer moves on; after `max_attempts` it is dead-lettered. A consumer may
//! bring its own [`RetryPolicy`] (one whose effect must land retries without end). Consumers that
//! call outside services get the attempt number and must use the event id as the provider's
//! idempotency key, so a crash between the call and the inbox update is harmless.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use savdo_domain::clock::Clock;
use savdo_domain::event::CloudEvent;
use savdo_storage::{InboxState, OutboxEvent, Storage, StorageError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{Bus, Feed, Published, envelope};

/// How often at most an in-process consumer saves its position (and when it stops).
pub const SAVE_POSITION_EVERY: Duration = Duration::from_secs(1);
/// How often an idle in-process consumer looks at the outbox (and saves a position not saved).
const IDLE_TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Try again later (network error, 5xx, provider down).
    #[error("{0}")]
    Retry(String),
    /// Try again, not before `after` (a provider's `Retry-After`).
    #[error("{message}")]
    RetryAfter { message: String, after: Duration },
    /// Retrying cannot help (the event is invalid for this consumer).
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Stable name: the durable position, the inbox key and the metrics label.
    fn name(&self) -> &str;
    fn accepts(&self, event_type: &str) -> bool;
    /// Apply one event. `attempt` starts at 1.
    async fn handle(&self, event: &CloudEvent, attempt: u32) -> Result<(), HandleError>;
    /// How this consumer's failures are retried; `None` (the default) is the runner's policy.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }
    /// Whether applying an event twice is the same as once, so the runner may hand it every
    /// accepted event of a read at once through [`Consumer::handle_batch`] without inbox rows
    /// (marking items due, say). A batch that fails is retried one event at a time through the
    /// inbox, so failures still park and dead-letter per event.
    fn batched(&self) -> bool {
        false
    }
    /// Whether this accepted event needs anything from this consumer; an event it would do
    /// nothing with is skipped without inbox rows. It may read, never change anything.
    async fn wants(&self, _event: &CloudEvent) -> bool {
        true
    }
    /// [`Consumer::wants`] for several accepted events, in their order; a consumer whose answer
    /// takes a read can read once for all of them.
    async fn wanted(&self, events: &[&CloudEvent]) -> Vec<bool> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(self.wants(e).await);
        }
        out
    }
    /// How many of this consumer's events may be applied at once (each through its own inbox
    /// row, as one by one). More than one only for a consumer whose events do not depend on
    /// each other's order and whose work is mostly waiting on an outside service: catching up
    /// after an outage then takes a round trip per `concurrency` events, not per event.
    fn concurrency(&self) -> usize {
        1
    }
    /// Apply several events at once (only called when [`Consumer::batched`]).
    async fn handle_batch(&self, events: &[&CloudEvent]) -> Result<(), HandleError> {
        for e in events {
            self.handle(e, 1).await?;
        }
        Ok(())
    }
}

/// Run `attempts`, at most `concurrency` at a time (in order when 1), to the end: an error does
/// not cancel the others mid-way; the first error is returned after all have finished.
async fn all_of<F>(attempts: Vec<F>, concurrency: usize) -> Result<(), StorageError>
where
    F: std::future::Future<Output = Result<(), StorageError>>,
{
    if concurrency <= 1 {
        // One by one, as before: the events after a failing one wait for the next read.
        for a in attempts {
            a.await?;
        }
        return Ok(());
    }
    let mut first = None;
    let mut running = futures::stream::iter(attempts).buffer_unordered(concurrency);
    while let Some(r) = running.next().await {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Due retries taken by one scan of a consumer's inbox.
const RETRY_SCAN: usize = 100;

/// How long a claimed retry belongs to the worker attempting it; after a crash the event is
/// due again when this runs out.
pub const RETRY_LEASE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 12,
            base: Duration::from_secs(2),
            max: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Never dead-letters a retryable failure (`Retry`, `RetryAfter`): for effects that must
    /// land, such as points earned. Backoff from `base`, capped at `max`; `Permanent` failures
    /// are still dead-lettered with their reason.
    pub fn until_done(base: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: u32::MAX,
            base,
            max,
        }
    }

    /// Whether a failure at `attempt` may still be retried.
    pub fn gives_up_after(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }

    /// `base · 2^(attempt−1)`, capped, with ±25 % jitter so retries of many events spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let d = exp.min(self.max);
        let jitter = rand::random_range(0.75..1.25);
        d.mul_f64(jitter)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Skipped,
    Retrying,
    Dead,
}

#[derive(Clone)]
pub struct ConsumerRunner {
    pub store: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    pub policy: RetryPolicy,
}

impl ConsumerRunner {
    pub fn new(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> Self {
        ConsumerRunner {
            store,
            clock,
            policy: RetryPolicy::default(),
        }
    }

    /// Deliver one event to one consumer through its inbox.
    pub async fn process(
        &self,
        c: &dyn Consumer,
        e: &OutboxEvent,
    ) -> Result<Outcome, StorageError> {
        if !c.accepts(&e.kind) {
            return Ok(Outcome::Skipped);
        }
        let event = envelope(e);
        if !c.wants(&event).await {
            return Ok(Outcome::Skipped);
        }
        self.begin_attempt(c, e, &event).await
    }

    async fn begin_published(&self, c: &dyn Consumer, p: &Published) -> Result<(), StorageError> {
        self.begin_attempt(c, &p.row(), &p.event).await.map(|_| ())
    }

    async fn retry_one(
        &self,
        c: &dyn Consumer,
        e: &OutboxEvent,
        attempt: u32,
    ) -> Result<(), StorageError> {
        self.attempt(c, e, &envelope(e), attempt).await.map(|_| ())
    }

    /// Record the event in the inbox and attempt it, unless it is done or dead already.
    async fn begin_attempt(
        &self,
        c: &dyn Consumer,
        e: &OutboxEvent,
        event: &CloudEvent,
    ) -> Result<Outcome, StorageError> {
        let attempt = match self.store.inbox_begin(c.name(), e).await? {
            InboxState::Done | InboxState::Dead => return Ok(Outcome::Skipped),
            InboxState::New => 1,
            InboxState::Retry { attempts } => attempts + 1,
        };
        self.attempt(c, e, event, attempt).await
    }

    async fn attempt(
        &self,
        c: &dyn Consumer,
        e: &OutboxEvent,
        event: &CloudEvent,
        attempt: u32,
    ) -> Result<Outcome, StorageError> {
        let name = c.name().to_string();
        metrics::counter!("savdo_consumer_attempts_total", "consumer" => name.clone()).increment(1);
        let result = c.handle(event, attempt).await;
        let outcome = match result {
            Ok(()) => {
                self.store.inbox_done(&name, e.id).await?;
                Outcome::Applied
            }
            Err(err) => {
                metrics::counter!("savdo_consumer_failures_total", "consumer" => name.clone())
                    .increment(1);
                let policy = c.retry_policy();
                let policy = policy.as_ref().unwrap_or(&self.policy);
                let next = match &err {
                    HandleError::Permanent(_) => None,
                    _ if policy.gives_up_after(attempt) => None,
                    HandleError::Retry(_) => Some(policy.delay(attempt)),
                    HandleError::RetryAfter { after, .. } => {
                        Some((*after).max(policy.delay(attempt)))
                    }
                };
                let at = next
                    .map(|d| self.clock.now() + chrono::Duration::from_std(d).unwrap_or_default());
                tracing::warn!(consumer = %name, event = %e.id, attempt, error = %err, dead = at.is_none(), "consumer failed");
                self.store
                    .inbox_fail(&name, e.id, &err.to_string(), at)
                    .await?;
                if at.is_some() {
                    Outcome::Retrying
                } else {
                    Outcome::Dead
                }
            }
        };
        metrics::counter!("savdo_consumer_events_total", "consumer" => name, "outcome" => format!("{outcome:?}")).increment(1);
        Ok(outcome)
    }

    /// Deliver several events to one consumer: those it accepts and wants, at once when it is
    /// [`Consumer::batched`] (one call, no inbox rows), else (or when the batch fails) one by
    /// one through the inbox.
    pub async fn deliver(
        &self,
        c: &dyn Consumer,
        events: &[Arc<Published>],
    ) -> Result<(), StorageError> {
        let accepted: Vec<&Published> = events
            .iter()
            .map(|p| &**p)
            .filter(|p| c.accepts(&p.event.kind))
            .collect();
        if accepted.is_empty() {
            return Ok(());
        }
        let envelopes: Vec<&CloudEvent> = accepted.iter().map(|p| &p.event).collect();
        let answers = c.wanted(&envelopes).await;
        // An answer missing from a short list counts as wanted: never drop an event unasked.
        let wanted: Vec<&Published> = accepted
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| answers.get(i).copied().unwrap_or(true).then_some(p))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if c.batched() {
            let envelopes: Vec<&CloudEvent> = wanted.iter().map(|p| &p.event).collect();
            let name = c.name().to_string();
            match c.handle_batch(&envelopes).await {
                Ok(()) => {
                    metrics::counter!("savdo_consumer_events_total", "consumer" => name, "outcome" => "Applied")
                        .increment(envelopes.len() as u64);
                    return Ok(());
                }
                Err(err) => {
                    tracing::info!(consumer = %name, events = envelopes.len(), error = %err, "batch failed; applying one by one");
                }
            }
        }
        let attempts: Vec<_> = wanted
            .into_iter()
            .map(|p| self.begin_published(c, p))
            .collect();
        all_of(attempts, c.concurrency()).await
    }

    /// Attempt every parked event whose time has come; returns how many were attempted.
    /// Each is claimed first, so several workers scanning at once attempt it once.
    pub async fn retry_due(&self, c: &dyn Consumer) -> Result<usize, StorageError> {
        let now = self.clock.now();
        let due = self
            .store
            .inbox_due(c.name(), now, RETRY_SCAN as u32)
            .await?;
        let lease = now + chrono::Duration::from_std(RETRY_LEASE).unwrap_or_default();
        // Claimed a round at a time, just before its attempts, so a lease never runs out
        // while its event waits behind others.
        let concurrency = c.concurrency().max(1);
        let mut n = 0;
        for round in due.chunks(concurrency) {
            let ids: Vec<Uuid> = round.iter().map(|(e, _)| e.id).collect();
            let taken = self
                .store
                .inbox_claim_many(c.name(), &ids, now, lease)
                .await?;
            let claimed: Vec<(&OutboxEvent, u32)> = round
                .iter()
                .filter(|(e, _)| taken.contains(&e.id))
                .map(|(e, attempts)| (e, *attempts))
                .collect();
            n += claimed.len();
            let attempts: Vec<_> = claimed
                .into_iter()
                .map(|(e, attempts)| self.retry_one(c, e, attempts + 1))
                .collect();
            all_of(attempts, concurrency).await?;
        }
        Ok(n)
    }

    /// Everything published since this consumer's position (in-process bus); returns how many
    /// events were read.
    pub async fn poll_outbox(&self, c: &dyn Consumer) -> Result<usize, StorageError> {
        let pos = self.store.consumer_position(c.name()).await?;
        let (n, last) = self.poll_from(c, pos, None, true).await?;
        if n > 0 {
            self.save_position(c, last).await?;
        }
        Ok(n)
    }

    /// Deliver what was published after `pos` (from `feed` when it holds what follows `pos`,
    /// else from the outbox if `read_outbox`); returns how many events were read and the
    /// position after them (`pos` when there were none).
    async fn poll_from(
        &self,
        c: &dyn Consumer,
        pos: i64,
        feed: Option<&Feed>,
        read_outbox: bool,
    ) -> Result<(usize, i64), StorageError> {
        const READ: usize = 256;
        let mut events = feed.map(|f| f.after(pos, READ)).unwrap_or_default();
        if events.is_empty() && read_outbox {
            events = self
                .store
                .published_after(pos, READ as u32)
                .await?
                .into_iter()
                .map(|e| Arc::new(Published::new(e)))
                .collect();
        }
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok((0, pos));
        };
        self.deliver(c, &events).await?;
        Ok((events.len(), last))
    }

    async fn save_position(&self, c: &dyn Consumer, pos: i64) -> Result<(), StorageError> {
        self.store.save_consumer_position(c.name(), pos).await?;
        let head = self.store.last_pub_seq().await.unwrap_or(pos);
        metrics::gauge!("savdo_consumer_lag", "consumer" => c.name().to_string())
            .set((head - pos) as f64);
        Ok(())
    }

    /// Run every consumer until `shutdown` turns true.
    pub fn spawn(
        &self,
        bus: Bus,
        consumers: Vec<Arc<dyn Consumer>>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        for c in consumers {
            let (r, b, s) = (self.clone(), bus.clone(), shutdown.clone());
            let c2 = c.clone();
            handles.push(tokio::spawn(async move { r.feed(b, c2, s).await }));
            let (r, s) = (self.clone(), shutdown.clone());
            handles.push(tokio::spawn(async move { r.retries(c, s).await }));
        }
        handles
    }

    async fn retries(&self, c: Arc<dyn Consumer>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.retry_due(c.as_ref()).await {
                // A full scan: more are due (events parked through an outage), go on at once.
                Ok(n) if n >= RETRY_SCAN => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(consumer = c.name(), error = %e, "retry scan failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn feed(&self, bus: Bus, c: Arc<dyn Consumer>, mut shutdown: watch::Receiver<bool>) {
        match bus {
            Bus::InProcess { published, feed } => {
                self.feed_in_process(&published, &feed, c.as_ref(), &mut shutdown)
                    .await
            }
            Bus::Nats(nats) => loop {
                if *shutdown.borrow() {
                    return;
                }
                if let Err(e) = self.nats_round(&nats, c.as_ref(), &mut shutdown).await {
                    tracing::warn!(consumer = c.name(), error = %e, "NATS consumer error; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            },
        }
    }

    /// The in-process feed holds its position in memory: it reads the saved one once and saves
    /// it at most every [`SAVE_POSITION_EVERY`] (and when stopping), so that consumers do not
    /// add a commit each per relay round to the tills' (on SQLite, to the one writer). The
    /// saved position is where a restart begins: events after it are delivered again, which
    /// consumers absorb by event id (inbox, or idempotent effects).
    ///
    /// Woken by this process's relay, a consumer reads the feed; it reads the outbox when the
    /// feed cannot serve it (it is behind the feed, or the feed has a gap where another
    /// process's relay numbered events) and on the idle tick, which also finds events numbered
    /// elsewhere while the feed is quiet.
    async fn feed_in_process(
        &self,
        published: &tokio::sync::Notify,
        feed: &Feed,
        c: &dyn Consumer,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let mut pos: Option<i64> = None;
        let mut saved: Option<i64> = None;
        let mut saved_at: Option<tokio::time::Instant> = None;
        let mut tick = true;
        loop {
            let stopping = *shutdown.borrow();
            let woken = published.notified();
            let mut busy = false;
            let loaded = match pos {
                Some(p) => Ok(p),
                None => self.store.consumer_position(c.name()).await,
            };
            match loaded {
                Ok(p) => {
                    if pos.is_none() {
                        (pos, saved) = (Some(p), Some(p));
                    }
                    let read_outbox = tick || feed.last().is_some_and(|last| last > p);
                    if !stopping {
                        match self.poll_from(c, p, Some(feed), read_outbox).await {
                            Ok((n, last)) => {
                                pos = Some(last);
                                busy = n > 0;
                            }
                            Err(e) => {
                                tracing::warn!(consumer = c.name(), error = %e, "consumer could not read events")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(consumer = c.name(), error = %e, "consumer could not read its position")
                }
            }
            let due = stopping || saved_at.is_none_or(|t| t.elapsed() >= SAVE_POSITION_EVERY);
            if let Some(p) = pos
                && due
                && saved != Some(p)
            {
                match self.save_position(c, p).await {
                    Ok(()) => {
                        saved = Some(p);
                        saved_at = Some(tokio::time::Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(consumer = c.name(), error = %e, "consumer could not save its position")
                    }
                }
            }
            if stopping {
                return;
            }
            if busy {
                continue;
            }
            tick = tokio::select! {
                _ = woken => false,
                _ = tokio::time::sleep(IDLE_TICK) => true,
                _ = shutdown.changed() => false,
            };
        }
    }

    async fn nats_round(
        &self,
        nats: &crate::NatsBus,
        c: &dyn Consumer,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let durable = nats.durable(c.name()).await?;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let mut batch = durable
                .fetch()
                .max_messages(256)
                .expires(Duration::from_millis(500))
                .messages()
                .await?;
            let mut ended = false;
            while !ended {
                let Some(first) = batch.next().await else {
                    break;
                };
                let mut msgs = vec![first.map_err(|e| anyhow::anyhow!("{e}"))?];
                if c.batched() {
                    // Whatever has already arrived goes in one call; never wait for more.
                    while msgs.len() < 256 {
                        match batch.next().now_or_never() {
                            Some(Some(m)) => msgs.push(m.map_err(|e| anyhow::anyhow!("{e}"))?),
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                }
                let mut events: Vec<Arc<Published>> = Vec::with_capacity(msgs.len());
                for msg in &msgs {
                    let ev: CloudEvent = match serde_json::from_slice(&msg.payload) {
                        Ok(ev) => ev,
                        Err(e) => {
                            // Not ours to understand: acknowledged below so it does not block
                            // the stream.
                            tracing::warn!(consumer = c.name(), error = %e, "skipping a malformed message");
                            continue;
                        }
                    };
                    let seq = msg.info().map(|i| i.stream_sequence as i64).unwrap_or(0);
                    events.push(Arc::new(Published { seq, event: ev }));
                }
                // Acknowledge only after the inbox recorded the outcome; a storage error leaves
                // the messages to be redelivered.
                self.deliver(c, &events).await?;
                for msg in msgs {
                    msg.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            if let Ok(pending) = durable.clone().info().await.map(|i| i.num_pending) {
                metrics::gauge!("savdo_consumer_lag", "consumer" => c.name().to_string())
                    .set(pending as f64);
            }
        }
    }
}
