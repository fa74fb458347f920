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
use sqlx::sqlite::SqliteConnection;

use super::{Command, DeviceStatus, DriverError, FiscalDriver, Lookup, Outcome, reasons};
use crate::clock::{Clock, fiscal_time};
use crate::journal::{Journal, JournalError};
use crate::model::{DeviceAnswer, Operation, ShiftTotals, qr_url};

/// A shift must be closed within this many hours of opening.
const SHIFT_HOURS: i64 = 24;

pub struct VirtualFm {
    fm: Arc<Fm>,
    journal: Journal,
}

/// What a write on the journal's connection needs of the module.
struct Fm {
    terminal_id: String,
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

impl FmState {
    fn new() -> Self {
        FmState {
            receipt_count: 0,
            shift_no: 0,
            shift_open: false,
            shift_opened_at: None,
            sales: 0,
            refunds: 0,
            receipts: 0,
        }
    }
}

fn db(e: JournalError) -> DriverError {
    match e {
        JournalError::Corrupt(what) => DriverError::Protocol(format!("stored document: {what}")),
        e => DriverError::Unreachable(format!("fiscal module storage: {e}")),
    }
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
    /// The module keeps its counters and documents in the journal's database, written through
    /// the journal's writer (so its commits are grouped with the journal's).
    pub fn new(terminal_id: String, journal: Journal, clock: Arc<dyn Clock>) -> Self {
        Self {
            fm: Arc::new(Fm { terminal_id, clock }),
            journal,
        }
    }
}

impl Fm {
    async fn read(&self, conn: &mut SqliteConnection) -> Result<Option<FmState>, JournalError> {
        let Some(row) = sqlx::query(
            "SELECT receipt_count, shift_no, shift_open, shift_opened_at, shift_sales, \
             shift_refunds, shift_receipts FROM virtual_fm WHERE terminal_id = ?",
        )
        .bind(&self.terminal_id)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let opened: Option<String> = row.try_get("shift_opened_at")?;
        Ok(Some(FmState {
            receipt_count: row.try_get("receipt_count")?,
            shift_no: row.try_get("shift_no")?,
            shift_open: row.try_get::<i64, _>("shift_open")? != 0,
            shift_opened_at: opened
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc)),
            sales: row.try_get("shift_sales")?,
            refunds: row.try_get("shift_refunds")?,
            receipts: row.try_get("shift_receipts")?,
        }))
    }

    async fn save(&self, conn: &mut SqliteConnection, s: &FmState) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO virtual_fm (terminal_id, receipt_count, shift_no, shift_open, \
             shift_opened_at, shift_sales, shift_refunds, shift_receipts) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(terminal_id) DO UPDATE SET receipt_count = excluded.receipt_count, \
             shift_no = excluded.shift_no, shift_open = excluded.shift_open, \
             shift_opened_at = excluded.shift_opened_at, shift_sales = excluded.shift_sales, \
             shift_refunds = excluded.shift_refunds, shift_receipts = excluded.shift_receipts",
        )
        .bind(&self.terminal_id)
        .bind(s.receipt_count)
        .bind(s.shift_no)
        .bind(i64::from(s.shift_open))
        .bind(s.shift_opened_at.map(|t| t.to_rfc3339()))
        .bind(s.sales)
        .bind(s.refunds)
        .bind(s.receipts)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn stored(
        &self,
        conn: &mut SqliteConnection,
        cmd: &Command,
    ) -> Result<Option<Outcome>, JournalError> {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT outcome FROM virtual_docs WHERE terminal_id = ? AND device_ref = ?",
        )
        .bind(&self.terminal_id)
        .bind(cmd.device_ref.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|s| {
            serde_json::from_str::<Stored>(&s)
                .map(Outcome::from)
                .map_err(|e| JournalError::Corrupt(e.to_string()))
        })
        .transpose()
    }

    /// Registers the commands in order in one write: a command seen before answers from
    /// memory, the rest advance the counters. All or nothing is kept.
    async fn register(
        &self,
        conn: &mut SqliteConnection,
        cmds: &[Command],
    ) -> Result<Vec<Outcome>, JournalError> {
        let mut state = self.read(conn).await?.unwrap_or_else(FmState::new);
        let mut changed = false;
        let mut out = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            if let Some(done) = self.stored(conn, cmd).await? {
                out.push(done);
                continue;
            }
            let stored = self.apply(&mut state, cmd, self.clock.now());
            let json =
                serde_json::to_string(&stored).map_err(|e| JournalError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO virtual_docs (terminal_id, device_ref, outcome) VALUES (?, ?, ?)",
            )
            .bind(&self.terminal_id)
            .bind(cmd.device_ref.to_string())
            .bind(json)
            .execute(&mut *conn)
            .await?;
            changed = true;
            out.push(stored.into());
        }
        if changed {
            self.save(conn, &state).await?;
        }
        Ok(out)
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
        let mut conn = self
            .journal
            .pool()
            .acquire()
            .await
            .map_err(|e| db(e.into()))?;
        let s = self
            .fm
            .read(&mut conn)
            .await
            .map_err(db)?
            .unwrap_or_else(FmState::new);
        Ok(DeviceStatus {
            terminal_id: Some(self.fm.terminal_id.clone()),
            shift_open: s.shift_open,
            shift_no: u32::try_from(s.shift_no).ok().filter(|n| *n > 0),
            shift_opened_at: s.shift_opened_at.filter(|_| s.shift_open).map(fiscal_time),
            paper: true,
        })
    }

    async fn execute(&self, cmd: &Command) -> Result<Outcome, DriverError> {
        self.execute_batch(std::slice::from_ref(cmd))
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(DriverError::Protocol("no outcome".into())))
    }

    /// One storage commit for the whole run of commands (grouped with other journal writes).
    async fn execute_batch(&self, cmds: &[Command]) -> Vec<Result<Outcome, DriverError>> {
        let fm = self.fm.clone();
        let cmds = cmds.to_vec();
        match self
            .journal
            .write(move |conn| Box::pin(async move { fm.register(conn, &cmds).await }))
            .await
        {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(db(e))],
        }
    }

    async fn lookup(&self, cmd: &Command) -> Result<Lookup, DriverError> {
        let mut conn = self
            .journal
            .pool()
            .acquire()
            .await
            .map_err(|e| db(e.into()))?;
        Ok(match self.fm.stored(&mut conn, cmd).await.map_err(db)? {
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
