//! Fiscal device drivers. Adding a brand means adding one module that implements
//! [`FiscalDriver`] and one arm in [`build`].

pub mod atol;
pub mod kkmserver;
pub mod virtual_fm;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::clock::Clock;
use crate::config::DriverConfig;
use crate::journal::Journal;
use crate::model::{DeviceAnswer, Operation, Receipt};

/// What a driver is asked to do: one journaled job.
#[derive(Debug, Clone)]
pub struct Command {
    /// The id the device knows this attempt by; a device that has seen it answers from memory.
    pub device_ref: Uuid,
    pub op: Operation,
    pub cashier: String,
    pub receipt: Option<Receipt>,
    /// Refunds: the fiscal data of the sale being returned, when it was registered.
    pub original: Option<DeviceAnswer>,
}

/// The device's final word on a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(DeviceAnswer),
    /// Refused by the device; the reason is worded for a cashier.
    Refused(String),
}

/// What a device says about a command it may or may not have received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The device never received it: sending it is safe.
    NotFound,
    InProgress,
    Finished(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    pub terminal_id: Option<String>,
    pub shift_open: bool,
    pub shift_no: Option<u32>,
    pub shift_opened_at: Option<String>,
    pub paper: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No answer (connection refused, timeout, 5xx): the command may or may not have run.
    #[error("device unreachable: {0}")]
    Unreachable(String),
    /// An answer we could not understand.
    #[error("unexpected answer from the device: {0}")]
    Protocol(String),
}

#[async_trait]
pub trait FiscalDriver: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn status(&self) -> Result<DeviceStatus, DriverError>;
    /// Runs the command. Must be idempotent on `device_ref`: a second call answers the first
    /// call's outcome without printing again.
    async fn execute(&self, cmd: &Command) -> Result<Outcome, DriverError>;
    /// Runs commands strictly in order; answers one result per command up to and including the
    /// first error (after which nothing more was sent). A driver may register the run at once.
    async fn execute_batch(&self, cmds: &[Command]) -> Vec<Result<Outcome, DriverError>> {
        let mut out = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let r = self.execute(cmd).await;
            let stop = r.is_err();
            out.push(r);
            if stop {
                break;
            }
        }
        out
    }
    /// Asks the device about a command sent earlier, without sending it.
    async fn lookup(&self, cmd: &Command) -> Result<Lookup, DriverError>;
}

pub fn build(
    cfg: &DriverConfig,
    journal: &Journal,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn FiscalDriver>, DriverError> {
    Ok(match cfg {
        DriverConfig::Virtual { terminal_id } => Arc::new(virtual_fm::VirtualFm::new(
            terminal_id.clone(),
            journal.clone(),
            clock,
        )),
        DriverConfig::Atol { url, timeout_ms } => Arc::new(atol::Atol::new(url, *timeout_ms)?),
        DriverConfig::Kkmserver {
            url,
            user,
            password,
            num_device,
            timeout_ms,
        } => Arc::new(kkmserver::KkmServer::new(
            url,
            user,
            password,
            *num_device,
            *timeout_ms,
        )?),
    })
}

/// Shared HTTP client settings for networked drivers.
pub(crate) fn http_client(timeout_ms: u64) -> Result<reqwest::Client, DriverError> {
    crate::install_tls_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms.max(100)))
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| DriverError::Protocol(format!("http client: {e}")))
}

/// Cashier-facing words for the refusals every brand has.
pub mod reasons {
    pub const NO_PAPER: &str = "the printer is out of paper: load paper and repeat";
    pub const SHIFT_OVER_24H: &str =
        "the shift is over 24 hours: close the shift (Z report) and open a new one";
    pub const SHIFT_CLOSED: &str = "no shift is open: open a shift first";
    pub const SHIFT_ALREADY_OPEN: &str = "a shift is already open";
}

/// Helpers for JSON wire formats that carry money as decimal numbers.
pub(crate) mod wire {
    use serde_json::Value;
    use serde_json::value::RawValue;

    use super::DriverError;
    use crate::amounts::{parse_sum, qty_decimal, sum_decimal};
    use crate::clock::tashkent;

    fn raw(text: String) -> Result<Box<RawValue>, DriverError> {
        RawValue::from_string(text).map_err(|e| DriverError::Protocol(format!("number: {e}")))
    }

    /// Tiyin as a JSON number of sum with two decimals, written from integers.
    pub fn money(tiyin: i64) -> Result<Box<RawValue>, DriverError> {
        raw(sum_decimal(tiyin))
    }

    /// Thousandths as a JSON number with three decimals.
    pub fn qty(milli: i64) -> Result<Box<RawValue>, DriverError> {
        raw(qty_decimal(milli))
    }

    /// A money value a device sent (number or string of sum) as tiyin.
    pub fn tiyin(v: Option<&Value>) -> Option<i64> {
        match v? {
            Value::Number(n) => parse_sum(&n.to_string()),
            Value::String(s) => parse_sum(s),
            _ => None,
        }
    }

    pub fn uint(v: Option<&Value>) -> Option<u64> {
        match v? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn text(v: Option<&Value>) -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A device's timestamp as `YYYYMMDDHHMMSS` Tashkent time: accepts that form, RFC 3339, and
    /// a local `YYYY-MM-DDTHH:MM:SS` (taken as Tashkent time).
    pub fn fiscal_date_time(s: &str) -> Option<String> {
        if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Some(s.to_string());
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Some(
                t.with_timezone(&tashkent())
                    .format("%Y%m%d%H%M%S")
                    .to_string(),
            );
        }
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
            .ok()
            .map(|t| t.format("%Y%m%d%H%M%S").to_string())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dates_and_money() {
            assert_eq!(
                fiscal_date_time("2026-03-01T09:05:07+05:00").as_deref(),
                Some("20260301090507")
            );
            assert_eq!(
                fiscal_date_time("2026-03-01T04:05:07Z").as_deref(),
                Some("20260301090507")
            );
            assert_eq!(
                fiscal_date_time("2026-03-01T09:05:07").as_deref(),
                Some("20260301090507")
            );
            assert_eq!(fiscal_date_time("yesterday"), None);
            assert_eq!(money(12_345).unwrap().get(), "123.45");
            let v: Value = serde_json::from_str(r#"{"a": 123.45, "b": "7.5"}"#).unwrap();
            assert_eq!(tiyin(v.get("a")), Some(12_345));
            assert_eq!(tiyin(v.get("b")), Some(750));
        }
    }
}
