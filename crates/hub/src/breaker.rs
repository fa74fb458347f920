//! Circuit breaker: after N consecutive failures stop calling a provider for a cool-down, then
//! let one probe through; its outcome closes the circuit or opens it again.
//!
//! Time comes from a [`Clock`] so tests move it by hand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use savdo_domain::clock::Clock;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before one probe.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// What the health display shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    /// Code of the last failure (`timeout`, `unavailable`…), never a message with data in it.
    pub last_failure: Option<String>,
}

#[derive(Debug)]
struct Inner {
    policy: BreakerPolicy,
    state: BreakerState,
    failures: u32,
    opened_at: Option<DateTime<Utc>>,
    probe_in_flight: bool,
    last_failure: Option<String>,
}

#[derive(Clone)]
pub struct Breaker {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Breaker").field(&self.snapshot()).finish()
    }
}

/// Permission for one call. Dropping it without an outcome (the caller was cancelled) frees the
/// half-open probe slot, so a cancelled probe cannot wedge the circuit.
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: Breaker,
    probe: bool,
    done: bool,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, clock: Arc<dyn Clock>) -> Self {
        Breaker {
            inner: Arc::new(Mutex::new(Inner {
                policy,
                state: BreakerState::Closed,
                failures: 0,
                opened_at: None,
                probe_in_flight: false,
                last_failure: None,
            })),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_policy(&self, policy: BreakerPolicy) {
        self.lock().policy = policy;
    }

    /// `Err(retry_after)` when the call must fail at once.
    pub fn acquire(&self) -> Result<BreakerPermit, Option<Duration>> {
        let now = self.clock.now();
        let mut g = self.lock();
        let probe = match g.state {
            BreakerState::Closed => false,
            BreakerState::Open => {
                let opened = g.opened_at.unwrap_or(now);
                let cool =
                    chrono::Duration::from_std(g.policy.cool_down).unwrap_or(chrono::Duration::MAX);
                let ready_at = opened
                    .checked_add_signed(cool)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if now < ready_at {
                    return Err((ready_at - now).to_std().ok());
                }
                g.state = BreakerState::HalfOpen;
                g.probe_in_flight = true;
                true
            }
            BreakerState::HalfOpen => {
                if g.probe_in_flight {
                    return Err(None);
                }
                g.probe_in_flight = true;
                true
            }
        };
        drop(g);
        Ok(BreakerPermit {
            breaker: self.clone(),
            probe,
            done: false,
        })
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let g = self.lock();
        BreakerSnapshot {
            state: g.state,
            consecutive_failures: g.failures,
            opened_at: g.opened_at,
            last_failure: g.last_failure.clone(),
        }
    }

    /// Close the circuit by hand (the owner fixed the credentials and wants to try now).
    pub fn reset(&self) {
        let mut g = self.lock();
        g.state = BreakerState::Closed;
        g.failures = 0;
        g.opened_at = None;
        g.probe_in_flight = false;
    }

    fn record(&self, probe: bool, failure: Option<&str>) {
        let now = self.clock.now();
        let mut g = self.lock();
        if probe {
            g.probe_in_flight = false;
        }
        match failure {
            None => {
                // A late success from a call admitted before the circuit opened says little;
                // only the probe may close an open circuit.
                if g.state == BreakerState::Closed || probe {
                    g.state = BreakerState::Closed;
                    g.failures = 0;
                    g.opened_at = None;
                }
            }
            Some(code) => {
                g.failures = g.failures.saturating_add(1);
                g.last_failure = Some(code.to_owned());
                let trip = probe
                    || (g.state == BreakerState::Closed
                        && g.failures >= g.policy.failure_threshold.max(1));
                if trip {
                    g.state = BreakerState::Open;
                    g.opened_at = Some(now);
                }
            }
        }
    }
}

impl BreakerPermit {
    pub fn is_probe(&self) -> bool {
        self.probe
    }
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.probe, None);
    }
    /// `code` is a short failure class for the health display.
    pub fn failure(mut self, code: &str) {
        self.done = true;
        self.breaker.record(self.probe, Some(code));
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.lock().probe_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use savdo_domain::clock::ManualClock;

    fn setup() -> (Arc<ManualClock>, Breaker) {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let b = Breaker::new(
            BreakerPolicy {
                failure_threshold: 3,
                cool_down: Duration::from_secs(10),
            },
            clock.clone(),
        );
        (clock, b)
    }

    #[test]
    fn opens_probes_and_closes() {
        let (clock, b) = setup();
        for _ in 0..3 {
            b.acquire().map(|p| p.failure("timeout")).ok();
        }
        assert_eq!(b.snapshot().state, BreakerState::Open);
        assert_eq!(b.acquire().err(), Some(Some(Duration::from_secs(10))));
        clock.advance(chrono::Duration::seconds(10));
        let probe = b.acquire().ok();
        assert!(probe.as_ref().is_some_and(BreakerPermit::is_probe));
        assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
        // Only one probe at a time.
        assert_eq!(b.acquire().err(), Some(None));
        if let Some(p) = probe {
            p.success();
        }
        let s = b.snapshot();
        assert_eq!(
            (s.state, s.consecutive_failures, s.opened_at),
            (BreakerState::Closed, 0, None)
        );
    }

    #[test]
    fn failed_probe_reopens_and_dropped_probe_frees_slot() {
        let (clock, b) = setup();
        for _ in 0..3 {
            b.acquire().map(|p| p.failure("unavailable")).ok();
        }
        clock.advance(chrono::Duration::seconds(11));
        drop(b.acquire());
        // The cancelled probe left the slot free.
        let probe = b.acquire();
        assert!(probe.is_ok());
        probe.map(|p| p.failure("unavailable")).ok();
        let s = b.snapshot();
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.opened_at, Some(clock.now()));
        assert!(b.acquire().is_err());
    }

    #[test]
    fn success_resets_the_count() {
        let (_clock, b) = setup();
        b.acquire().map(|p| p.failure("timeout")).ok();
        b.acquire().map(|p| p.failure("timeout")).ok();
        b.acquire().map(BreakerPermit::success).ok();
        b.acquire().map(|p| p.failure("timeout")).ok();
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 1);
    }
}
