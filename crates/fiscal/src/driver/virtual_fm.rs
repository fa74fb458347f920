//! A software fiscal module: counters and shift state persist in the journal database, every
//! document is remembered by its device ref (so a repeat answers from memory), and the fiscal
//! sign is a deterministic 12-digit HMAC of the receipt's data.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{Command, DeviceStatus, DriverError, FiscalDriver, Lookup, Outcome, reasons};
use crate::clock::{Clock, fiscal_time};
use crate::model::{DeviceAnswer, Operation, ShiftTotals, qr_url};

/// A shift must be closed within this many hours of opening.
const SHIFT_HOURS: i64 = 24;

pub struct VirtualFm {
    terminal_id: String,
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    Done(DeviceAnswer),
    Refused(String),
}

impl From<Stored> for Outcome {
    fn from(s: Stored) -> Self {
        match s {
            Stored::Done(a) => Outcome::Done(a),
            Stored::Refused(r) => Outcome::Refused(r),
        }
    }
}

struct FmState {
    receipt_count: i64,
    shift_no: i64,
    shift_open: bool,
    shift_opened_at: Option<DateTime<Utc>>,
    sales: i64,
    refunds: i64,
    receipts: i64,
}

fn db(e: sqlx::Error) -> DriverError {
    DriverError::Unreachable(format!("fiscal module storage: {e}"))
}

/// 12 decimal digits from an HMAC-SHA256 over the receipt's fiscal data, keyed per terminal.
pub fn fiscal_sign(
    terminal_id: &str,
    receipt_no: u64,
    date_time: &str,
    kind: &str,
    total: i64,
) -> String {
    let key = format!("savdo-virtual-fm/{terminal_id}");
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => return "0".repeat(12),
    };
    mac.update(format!("{terminal_id}|{receipt_no}|{date_time}|{kind}|{total}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    format!("{:012}", u64::from_be_bytes(first) % 1_000_000_000_000)
}

impl VirtualFm {
    pub fn new(terminal_id: String, pool: SqlitePool, clock: Arc<dyn Clock>) -> Self {
        Self {
            terminal_id,
            pool,
            clock,
        }
    }

    async fn load(&self, conn: &mut sqlx::SqliteConnection) -> Result<FmState, DriverError> {
        sqlx::query("INSERT OR IGNORE INTO virtual_fm (terminal_id) VALUES (?)")
            .bind(&self.terminal_id)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let row = sqlx::query(
            "SELECT receipt_count, shift_no, shift_open, shift_opened_at, shift_sales, \
             shift_refunds, shift_receipts FROM virtual_fm WHERE terminal_id = ?",
        )
        .bind(&self.terminal_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        let opened: Option<String> = row.try_get("shift_opened_at").map_err(db)?;
        Ok(FmState {
            receipt_count: row.try_get("receipt_count").map_err(db)?,
            shift_no: row.try_get("shift_no").map_err(db)?,
            shift_open: row.try_get::<i64, _>("shift_open").map_err(db)? != 0,
            shift_opened_at: opened
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc)),
            sales: row.try_get("shift_sales").map_err(db)?,
            refunds: row.try_get("shift_refunds").map_err(db)?,
            receipts: row.try_get("shift_receipts").map_err(db)?,
        })
    }

    async fn save(
        &self,
        conn: &mut sqlx::SqliteConnection,
        s: &FmState,
    ) -> Result<(), DriverError> {
        sqlx::query(
            "UPDATE virtual_fm SET receipt_count = ?, shift_no = ?, shift_open = ?, \
             shift_opened_at = ?, shift_sales = ?, shift_refunds = ?, shift_receipts = ? \
             WHERE terminal_id = ?",
        )
        .bind(s.receipt_count)
        .bind(s.shift_no)
        .bind(i64::from(s.shift_open))
        .bind(s.shift_opened_at.map(|t| t.to_rfc3339()))
        .bind(s.sales)
        .bind(s.refunds)
        .bind(s.receipts)
        .bind(&self.terminal_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn stored(
        &self,
        conn: &mut sqlx::SqliteConnection,
        cmd: &Command,
    ) -> Result<Option<Outcome>, DriverError> {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT outcome FROM virtual_docs WHERE terminal_id = ? AND device_ref = ?",
        )
        .bind(&self.terminal_id)
        .bind(cmd.device_ref.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        row.map(|s| {
            serde_json::from_str::<Stored>(&s)
                .map(Outcome::from)
                .map_err(|e| DriverError::Protocol(format!("stored document: {e}")))
        })
        .transpose()
    }

    fn shift_expired(&self, s: &FmState, now: DateTime<Utc>) -> bool {
        s.shift_open
            && s.shift_opened_at
                .is_some_and(|t| now - t >= chrono::Duration::hours(SHIFT_HOURS))
    }

    /// Applies the shift rules and advances the counters; a refusal leaves them untouched.
    fn apply(&self, s: &mut FmState, cmd: &Command, now: DateTime<Utc>) -> Stored {
        let date_time = fiscal_time(now);
        let shift_no = u32::try_from(s.shift_no).unwrap_or(u32::MAX);
        let totals = |s: &FmState| ShiftTotals {
            sales_total: s.sales,
            refunds_total: s.refunds,
            receipts: u32::try_from(s.receipts).unwrap_or(u32::MAX),
        };
        match cmd.op {
            Operation::OpenShift => {
                if s.shift_open {
                    return Stored::Refused(reasons::SHIFT_ALREADY_OPEN.into());
                }
                s.shift_no += 1;
                s.shift_open = true;
                s.shift_opened_at = Some(now);
                s.sales = 0;
                s.refunds = 0;
                s.receipts = 0;
                Stored::Done(DeviceAnswer {
                    terminal_id: self.terminal_id.clone(),
                    date_time,
                    shift_no: u32::try_from(s.shift_no).unwrap_or(u32::MAX),
                    ..Default::default()
                })
            }
            Operation::CloseShift | Operation::XReport => {
                if !s.shift_open {
                    return Stored::Refused(reasons::SHIFT_CLOSED.into());
                }
                if cmd.op == Operation::CloseShift {
                    s.shift_open = false;
                }
                Stored::Done(DeviceAnswer {
                    terminal_id: self.terminal_id.clone(),
                    date_time,
                    shift_no,
                    totals: Some(totals(s)),
                    ..Default::default()
                })
            }
            Operation::Sale | Operation::Refund => {
                if !s.shift_open {
                    return Stored::Refused(reasons::SHIFT_CLOSED.into());
                }
                if self.shift_expired(s, now) {
                    return Stored::Refused(reasons::SHIFT_OVER_24H.into());
                }
                let total = cmd.receipt.as_ref().map_or(0, |r| r.total);
                s.receipt_count += 1;
                s.receipts += 1;
                if cmd.op == Operation::Sale {
                    s.sales = s.sales.saturating_add(total);
                } else {
                    s.refunds = s.refunds.saturating_add(total);
                }
                let receipt_no = u64::try_from(s.receipt_count).unwrap_or(0);
                let sign = fiscal_sign(
                    &self.terminal_id,
                    receipt_no,
                    &date_time,
                    cmd.op.as_str(),
                    total,
                );
                Stored::Done(DeviceAnswer {
                    terminal_id: self.terminal_id.clone(),
                    receipt_no,
                    qr_url: qr_url(&self.terminal_id, receipt_no, &date_time, &sign),
                    fiscal_sign: sign,
                    date_time,
                    shift_no,
                    totals: None,
                })
            }
        }
    }
}

#[async_trait]
impl FiscalDriver for VirtualFm {
    fn name(&self) -> &'static str {
        "virtual"
    }

    async fn status(&self) -> Result<DeviceStatus, DriverError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let s = self.load(&mut tx).await?;
        tx.commit().await.map_err(db)?;
        Ok(DeviceStatus {
            terminal_id: Some(self.terminal_id.clone()),
            shift_open: s.shift_open,
            shift_no: u32::try_from(s.shift_no).ok().filter(|n| *n > 0),
            shift_opened_at: s.shift_opened_at.filter(|_| s.shift_open).map(fiscal_time),
            paper: true,
        })
    }

    async fn execute(&self, cmd: &Command) -> Result<Outcome, DriverError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(done) = self.stored(&mut tx, cmd).await? {
            return Ok(done);
        }
        let mut state = self.load(&mut tx).await?;
        let stored = self.apply(&mut state, cmd, self.clock.now());
        self.save(&mut tx, &state).await?;
        let json = serde_json::to_string(&stored)
            .map_err(|e| DriverError::Protocol(format!("document: {e}")))?;
        sqlx::query("INSERT INTO virtual_docs (terminal_id, device_ref, outcome) VALUES (?, ?, ?)")
            .bind(&self.terminal_id)
            .bind(cmd.device_ref.to_string())
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored.into())
    }

    async fn lookup(&self, cmd: &Command) -> Result<Lookup, DriverError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        Ok(match self.stored(&mut conn, cmd).await? {
            Some(o) => Lookup::Finished(o),
            None => Lookup::NotFound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiscal_sign_is_twelve_deterministic_digits() {
        let a = fiscal_sign("UZ170703100189", 7, "20260101120000", "sale", 150_000);
        let b = fiscal_sign("UZ170703100189", 7, "20260101120000", "sale", 150_000);
        let c = fiscal_sign("UZ170703100189", 8, "20260101120000", "sale", 150_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|d| d.is_ascii_digit()));
    }
}
