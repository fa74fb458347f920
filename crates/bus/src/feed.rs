//! What the in-process relay has just published, kept in memory for this process's consumers.
//!
//! Every in-process consumer reads every published event. Read back from the outbox, each event
//! would be fetched and its JSON parsed once per consumer, on the same few SQLite reader
//! threads the tills' requests need. The relay has the events in hand when it numbers them, so
//! it leaves them here, parsed once and shared; a consumer reads the database only when it is
//! behind what the feed still holds, or past its end (another process's relay, a restart).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use savdo_domain::event::CloudEvent;
use savdo_storage::OutboxEvent;

/// Events the feed keeps: a few hundred milliseconds of a busy chain's events, a few MiB.
pub const KEEP: usize = 4096;

/// An event as consumers get it: its envelope, built once, and its publishing sequence.
#[derive(Debug)]
pub struct Published {
    /// The publishing sequence (in-process) or the stream sequence (NATS).
    pub seq: i64,
    pub event: CloudEvent,
}

impl Published {
    pub fn new(e: OutboxEvent) -> Published {
        Published {
            seq: e.seq,
            event: CloudEvent::new(e.id, e.tenant_id, &e.kind, e.time, e.data),
        }
    }

    /// The outbox row again, for the inbox (which keeps the event for retries).
    pub fn row(&self) -> OutboxEvent {
        let e = &self.event;
        OutboxEvent {
            seq: self.seq,
            id: e.id,
            tenant_id: e.tenantid,
            kind: e.kind.clone(),
            data: e.data.clone(),
            time: e.time,
        }
    }
}

/// The most recent published events, ascending by publishing sequence.
#[derive(Default)]
pub struct Feed {
    events: Mutex<VecDeque<Arc<Published>>>,
}

impl Feed {
    /// Keep events the relay just numbered (ascending, committed). A run that does not follow
    /// what is kept (a second relay in this process) replaces it.
    pub fn push(&self, numbered: Vec<OutboxEvent>) {
        let Some(first) = numbered.first().map(|e| e.seq) else {
            return;
        };
        let mut events = self.lock();
        if events.back().is_some_and(|last| last.seq >= first) {
            events.clear();
        }
        events.extend(numbered.into_iter().map(|e| Arc::new(Published::new(e))));
        let excess = events.len().saturating_sub(KEEP);
        events.drain(..excess);
    }

    /// Up to `limit` events from publishing sequence `pos + 1` on, without a gap: what reading
    /// the outbox after `pos` would return, or nothing when the feed cannot tell (it does not
    /// hold `pos + 1`: the database decides).
    pub fn after(&self, pos: i64, limit: usize) -> Vec<Arc<Published>> {
        let events = self.lock();
        let start = events.partition_point(|e| e.seq <= pos);
        events
            .range(start..)
            .zip(pos + 1..)
            .take(limit)
            .take_while(|(e, next)| e.seq == *next)
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// The last publishing sequence held, if any.
    pub fn last(&self) -> Option<i64> {
        self.lock().back().map(|e| e.seq)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Published>>> {
        // Nothing can be left half-done under this lock: a panic elsewhere does not matter.
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64) -> OutboxEvent {
        OutboxEvent {
            seq,
            id: uuid::Uuid::now_v7(),
            tenant_id: uuid::Uuid::nil(),
            kind: "stock.changed".into(),
            data: serde_json::json!({"n": seq}),
            time: chrono::Utc::now(),
        }
    }

    fn seqs(v: &[Arc<Published>]) -> Vec<i64> {
        v.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn serves_only_a_run_that_starts_right_after_the_position() {
        let feed = Feed::default();
        feed.push((5..=9).map(ev).collect());
        assert_eq!(seqs(&feed.after(4, 100)), vec![5, 6, 7, 8, 9]);
        assert_eq!(seqs(&feed.after(6, 2)), vec![7, 8]);
        // Behind the feed, or at or past its end: the database decides.
        assert!(feed.after(3, 100).is_empty());
        assert!(feed.after(9, 100).is_empty());
        assert!(feed.after(20, 100).is_empty());
        assert_eq!(feed.last(), Some(9));
        assert_eq!(Feed::default().last(), None);
    }

    #[test]
    fn stops_at_a_gap() {
        // 10 was numbered by another process's relay: only the outbox has it.
        let feed = Feed::default();
        feed.push((5..=9).map(ev).collect());
        feed.push((11..=12).map(ev).collect());
        assert_eq!(seqs(&feed.after(4, 100)), vec![5, 6, 7, 8, 9]);
        assert!(feed.after(9, 100).is_empty());
        assert_eq!(seqs(&feed.after(10, 100)), vec![11, 12]);
    }

    #[test]
    fn keeps_the_latest_and_restarts_on_a_run_out_of_order() {
        let feed = Feed::default();
        feed.push((1..=KEEP as i64 + 10).map(ev).collect());
        assert!(feed.after(0, 10).is_empty(), "the oldest were dropped");
        assert_eq!(seqs(&feed.after(10, 1)), vec![11]);
        feed.push((3..=4).map(ev).collect());
        assert_eq!(seqs(&feed.after(2, 100)), vec![3, 4]);
        assert!(feed.after(10, 1).is_empty());
    }

    #[test]
    fn the_row_is_the_event_again() {
        let e = ev(42);
        let p = Published::new(e.clone());
        let row = p.row();
        assert_eq!(
            (
                row.seq,
                row.id,
                row.tenant_id,
                &row.kind,
                &row.data,
                row.time
            ),
            (e.seq, e.id, e.tenant_id, &e.kind, &e.data, e.time)
        );
    }
}
