//! The delivery worker: sends due deliveries, records every attempt, schedules retries like
//! Svix (immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each ±10 %), and disables
//! endpoints that have been failing for 5 days. All time comes from a [`Clock`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use savdo_domain::clock::Clock;
use savdo_integrations::VaultHandle;
use savdo_storage::Storage;
use savdo_storage::webhooks::{AttemptRecord, DueDelivery};
use tokio::sync::watch;

use crate::safety::{resolve_checked, validate_url};
use crate::secrets;
use crate::signing::signature_header;

/// Delay before attempt `n + 1` (index `n`); its length is the number of attempts.
pub const RETRY_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Rate limiting and timeouts back off at least this long.
pub const MIN_BACKOFF_SLOW: Duration = Duration::from_secs(60);
/// A `Retry-After` longer than this is capped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Response bodies are kept up to this many bytes.
pub const BODY_LIMIT: usize = 2048;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Deliver to loopback/private addresses too (tests, local setups).
    pub allow_private: bool,
    pub timeout: Duration,
    /// Deliveries claimed per round.
    pub batch: u32,
    /// Deliveries sent at the same time.
    pub concurrency: usize,
    /// Pause between rounds when nothing was due.
    pub poll_interval: Duration,
    /// Disable an endpoint failing continuously for this long.
    pub disable_after: chrono::Duration,
    /// Relative jitter on retry delays (0.1 = ±10 %).
    pub jitter: f64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            allow_private: false,
            timeout: Duration::from_secs(10),
            batch: 64,
            concurrency: 8,
            poll_interval: Duration::from_secs(1),
            disable_after: chrono::Duration::days(5),
            jitter: 0.1,
        }
    }
}

/// How an attempt failed, for the retry decision.
#[derive(Debug, Clone, Default)]
pub struct FailureKind {
    pub status: Option<u16>,
    pub timed_out: bool,
    pub retry_after: Option<Duration>,
}

/// The delay before the next attempt after `attempts` failed ones, or `None` when that was the
/// last attempt.
pub fn next_delay(attempts: u32, failure: &FailureKind, jitter: f64) -> Option<Duration> {
    let base = *RETRY_SCHEDULE.get(attempts as usize)?;
    let j = jitter.clamp(0.0, 0.5);
    let mut d = if j > 0.0 {
        base.mul_f64(rand::random_range(1.0 - j..=1.0 + j))
    } else {
        base
    };
    if let Some(ra) = failure.retry_after {
        d = d.max(ra.min(MAX_RETRY_AFTER));
    }
    if failure.status == Some(429) || failure.timed_out {
        d = d.max(MIN_BACKOFF_SLOW);
    }
    Some(d)
}

/// `Retry-After`: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (at - now).to_std().ok()
}

fn truncate(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_LIMIT)]).into_owned();
    // A cut through a multi-byte character leaves a replacement character; drop it.
    if bytes.len() > BODY_LIMIT {
        s.trim_end_matches('\u{fffd}').to_string()
    } else {
        s
    }
}

pub struct DeliveryWorker {
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
    /// Opens the sealed signing secrets; without it only rows not sealed yet can be signed.
    vault: Option<Arc<VaultHandle>>,
}

struct Sent {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    failure: FailureKind,
    latency_ms: Option<i64>,
}

impl DeliveryWorker {
    pub fn new(store: Arc<dyn Storage>, clock: Arc<dyn Clock>, cfg: WorkerConfig) -> Self {
        crate::init_crypto();
        DeliveryWorker {
            store,
            clock,
            cfg,
            vault: None,
        }
    }

    /// The vault that opens the signing secrets (every real process has one).
    pub fn with_vault(mut self, vault: Arc<VaultHandle>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// Run until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let n = self.run_due_once().await;
            if n >= self.cfg.batch as usize {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Send every delivery due now (one claimed batch); returns how many were attempted.
    pub async fn run_due_once(&self) -> usize {
        let now = self.clock.now();
        let lease = now
            + chrono::Duration::from_std(self.cfg.timeout + Duration::from_secs(60))
                .unwrap_or_default();
        let due = match self
            .store
            .claim_due_deliveries(now, lease, self.cfg.batch)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim webhook deliveries");
                return 0;
            }
        };
        let n = due.len();
        futures::stream::iter(due)
            .for_each_concurrent(self.cfg.concurrency.max(1), |d| async move {
                self.deliver(d).await;
            })
            .await;
        n
    }

    async fn deliver(&self, d: DueDelivery) {
        let attempt = d.delivery.attempts + 1;
        let sent = self.send(&d).await;
        let at = self.clock.now();
        let success = sent.status.is_some_and(|s| (200..300).contains(&s));
        let next = if success {
            None
        } else {
            next_delay(attempt, &sent.failure, self.cfg.jitter)
                .map(|d| at + chrono::Duration::from_std(d).unwrap_or_default())
        };
        tracing::info!(
            webhook = %d.delivery.webhook_id,
            delivery = %d.delivery.id,
            event_type = %d.delivery.event_type,
            attempt,
            status = ?sent.status,
            latency_ms = ?sent.latency_ms,
            error = ?sent.error,
            body = %sent.body.as_deref().unwrap_or("").chars().take(200).collect::<String>(),
            success,
            dead = !success && next.is_none(),
            "webhook delivery attempt"
        );
        let rec = AttemptRecord {
            delivery_id: d.delivery.id,
            success,
            response_code: sent.status,
            latency_ms: sent.latency_ms,
            response_body: sent.body,
            error: sent.error,
            next_attempt_at: next,
            at,
            disable_after: self.cfg.disable_after,
        };
        if let Err(e) = self.store.record_attempt(&rec).await {
            tracing::warn!(delivery = %d.delivery.id, error = %e, "could not record a webhook attempt");
        }
    }

    async fn send(&self, d: &DueDelivery) -> Sent {
        let fail = |error: String, failure: FailureKind| Sent {
            status: None,
            body: None,
            error: Some(error),
            failure,
            latency_ms: None,
        };
        let url = match validate_url(&d.url) {
            Ok(u) => u,
            Err(e) => return fail(format!("url {e}"), FailureKind::default()),
        };
        // Resolve and check now, then connect to exactly the checked addresses.
        let (host, addrs) = match resolve_checked(&url, self.cfg.allow_private).await {
            Ok(r) => r,
            Err(e) => return fail(format!("refused: url {e}"), FailureKind::default()),
        };
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.cfg.timeout)
            .no_proxy()
            .resolve_to_addrs(&host, &addrs)
            .build()
        {
            Ok(c) => c,
            Err(e) => return fail(format!("client: {e}"), FailureKind::default()),
        };
        let body = match serde_json::to_vec(&d.payload) {
            Ok(b) => b,
            Err(e) => return fail(format!("payload: {e}"), FailureKind::default()),
        };
        let now = self.clock.now();
        let mut keys = Vec::new();
        for stored in d.secrets.signing(now) {
            match secrets::open(
                self.vault.as_deref(),
                d.tenant_id,
                d.delivery.webhook_id,
                stored,
            ) {
                Ok(k) => keys.push(k),
                Err(e) => {
                    return fail(
                        format!("signing secret cannot be opened: {e}"),
                        FailureKind::default(),
                    );
                }
            }
        }
        let keys: Vec<&str> = keys.iter().map(|k| k.expose()).collect();
        let timestamp = now.timestamp();
        // Stable across retries: the event id, which is also the CloudEvent's `id`.
        let msg_id = d.delivery.event_id.to_string();
        let signature = signature_header(&keys, &msg_id, timestamp, &body);
        let started = Instant::now();
        let resp = client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("Savdo-Webhooks/1"))
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let timed_out = e.is_timeout();
                let mut s = fail(
                    if timed_out {
                        format!("timed out after {:?}", self.cfg.timeout)
                    } else {
                        format!("request failed: {}", error_chain(&e))
                    },
                    FailureKind {
                        timed_out,
                        ..Default::default()
                    },
                );
                s.latency_ms = Some(started.elapsed().as_millis() as i64);
                return s;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        let mut buf = Vec::new();
        let mut timed_out = false;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    buf.extend_from_slice(&c);
                    if buf.len() > BODY_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    timed_out = e.is_timeout();
                    break;
                }
            }
        }
        let latency_ms = Some(started.elapsed().as_millis() as i64);
        let ok = (200..300).contains(&status);
        Sent {
            status: Some(status),
            body: Some(truncate(&buf)),
            error: (!ok).then(|| format!("HTTP {status}")),
            failure: FailureKind {
                status: Some(status),
                timed_out,
                retry_after,
            },
            latency_ms,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_without_jitter() {
        let f = FailureKind::default();
        let got: Vec<_> = (1..=8).map(|a| next_delay(a, &f, 0.0)).collect();
        assert_eq!(got[0], Some(Duration::from_secs(5)));
        assert_eq!(got[1], Some(Duration::from_secs(300)));
        assert_eq!(got[6], Some(Duration::from_secs(36000)));
        assert_eq!(got[7], None, "8 attempts, then dead");
    }

    #[test]
    fn slow_failures_back_off_a_minute() {
        let f = FailureKind {
            status: Some(429),
            ..Default::default()
        };
        assert_eq!(next_delay(1, &f, 0.0), Some(Duration::from_secs(60)));
        let t = FailureKind {
            timed_out: true,
            ..Default::default()
        };
        assert_eq!(next_delay(1, &t, 0.1), Some(Duration::from_secs(60)));
        let ra = FailureKind {
            status: Some(503),
            retry_after: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        assert_eq!(next_delay(1, &ra, 0.0), Some(Duration::from_secs(120)));
        // A shorter Retry-After does not shorten the schedule.
        assert_eq!(next_delay(2, &ra, 0.0), Some(Duration::from_secs(300)));
    }

    #[test]
    fn retry_after_formats() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn bodies_are_truncated() {
        let long = "я".repeat(3000);
        let t = truncate(long.as_bytes());
        assert!(t.len() <= BODY_LIMIT);
        assert!(t.chars().all(|c| c == 'я'));
    }
}
