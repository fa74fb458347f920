//! Time as the gateway sees it; tests move a manual clock to age shifts past 24 hours.

use std::sync::Mutex;

use chrono::{DateTime, FixedOffset, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Uzbekistan keeps UTC+5 all year.
pub fn tashkent() -> FixedOffset {
    FixedOffset::east_opt(5 * 3600).expect("UTC+5 is a valid offset")
}

/// `YYYYMMDDHHMMSS` in Tashkent time, the format of fiscal data and the QR link.
pub fn fiscal_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&tashkent())
        .format("%Y%m%d%H%M%S")
        .to_string()
}
