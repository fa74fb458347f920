//! The gateway's operations, shared by the HTTP and gRPC faces.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::journal::{Job, JobBody, JobState, Journal, JournalError};
use crate::model::{
    DeviceInfo, Operation, OperationResult, Receipt, ReceiptResult, ShiftRequest, Status,
};
use crate::queue::{Device, Finished};
use crate::validate::{self, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request breaks receipt rules")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Conflict(id) => ApiError::Conflict(format!(
                "id {id} was already used for a different request; use a new id"
            )),
            JournalError::Invalid(f) => ApiError::Invalid(vec![f]),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub struct Gateway {
    pub(crate) journal: Journal,
    pub(crate) devices: BTreeMap<String, Arc<Device>>,
    pub(crate) finished: Arc<Finished>,
    pub(crate) answer_wait: Duration,
}

/// A receipt answer and whether it repeats an earlier call.
pub struct Answer<T> {
    pub result: T,
    pub repeat: bool,
}

fn status_of(job: &Job) -> Status {
    match job.state {
        JobState::Done => Status::Registered,
        JobState::Failed => Status::Failed,
        JobState::Pending | JobState::Sent => Status::Queued,
    }
}

pub fn receipt_result(job: &Job) -> ReceiptResult {
    let a = job.answer.as_ref();
    ReceiptResult {
        id: job.id.to_string(),
        device_id: job.device_id.clone(),
        kind: job.op,
        status: status_of(job),
        reason: job.reason.clone(),
        terminal_id: a.map(|a| a.terminal_id.clone()),
        receipt_no: a.map(|a| a.receipt_no),
        fiscal_sign: a.map(|a| a.fiscal_sign.clone()),
        date_time: a.map(|a| a.date_time.clone()),
        qr_url: a.map(|a| a.qr_url.clone()),
        shift_no: a.map(|a| a.shift_no),
        total: job.total(),
    }
}

pub fn operation_result(job: &Job) -> OperationResult {
    let a = job.answer.as_ref();
    OperationResult {
        id: job.id.to_string(),
        device_id: job.device_id.clone(),
        operation: job.op,
        status: status_of(job),
        reason: job.reason.clone(),
        shift_no: a.map(|a| a.shift_no),
        date_time: a.map(|a| a.date_time.clone()),
        totals: a.and_then(|a| a.totals.clone()),
    }
}

impl Gateway {
    fn device(&self, id: &str) -> Option<&Arc<Device>> {
        self.devices.get(id)
    }

    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, ApiError> {
        let mut out = Vec::with_capacity(self.devices.len());
        for id in self.devices.keys() {
            if let Some(d) = self.device_info(id).await? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Asks the device itself (bounded), and adds what the queue knows.
    pub async fn device_info(&self, id: &str) -> Result<Option<DeviceInfo>, ApiError> {
        let Some(dev) = self.device(id) else {
            return Ok(None);
        };
        let queued = self.journal.queued(id).await?;
        let health = dev.health();
        let wait = self.answer_wait.min(Duration::from_secs(3));
        let mut info = DeviceInfo {
            id: id.to_string(),
            driver: dev.driver.name().to_string(),
            queued,
            ..Default::default()
        };
        match tokio::time::timeout(wait, dev.driver.status()).await {
            Ok(Ok(s)) => {
                info.online = true;
                info.last_error = health.last_error.filter(|_| health.online);
                info.terminal_id = s.terminal_id;
                info.shift_open = s.shift_open;
                info.shift_no = s.shift_no;
                info.shift_opened_at = s.shift_opened_at;
                info.paper = s.paper;
            }
            Ok(Err(e)) => {
                info.last_error = Some(e.to_string());
            }
            Err(_) => info.last_error = Some("device did not answer in time".into()),
        }
        Ok(Some(info))
    }

    pub async fn register(
        &self,
        op: Operation,
        receipt: Receipt,
    ) -> Result<Answer<ReceiptResult>, ApiError> {
        validate::receipt(&receipt, op).map_err(ApiError::Invalid)?;
        if self.device(&receipt.device_id).is_none() {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "device_id",
                format!("no device {} is configured", receipt.device_id),
            )]));
        }
        let id = Uuid::parse_str(&receipt.id)
            .map_err(|_| ApiError::Invalid(vec![FieldError::new("id", "must be a UUID")]))?;
        let device_id = receipt.device_id.clone();
        let body = JobBody {
            cashier: receipt.cashier.clone(),
            receipt: Some(receipt),
        };
        let (job, repeat) = self.submit_and_wait(id, &device_id, op, body).await?;
        Ok(Answer {
            result: receipt_result(&job),
            repeat,
        })
    }

    pub async fn shift(
        &self,
        device_id: &str,
        op: Operation,
        req: ShiftRequest,
    ) -> Result<Answer<OperationResult>, ApiError> {
        if self.device(device_id).is_none() {
            return Err(ApiError::NotFound(format!(
                "no device {device_id} is configured"
            )));
        }
        let id = match req.id.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => {
                let mut errors = Vec::new();
                validate::parse_id("id", s, &mut errors).ok_or(ApiError::Invalid(errors))?
            }
            None => Uuid::now_v7(),
        };
        let body = JobBody {
            cashier: req.cashier.unwrap_or_default(),
            receipt: None,
        };
        let (job, repeat) = self.submit_and_wait(id, device_id, op, body).await?;
        Ok(Answer {
            result: operation_result(&job),
            repeat,
        })
    }

    pub async fn receipt(&self, id: &str) -> Result<ReceiptResult, ApiError> {
        let not_found = || ApiError::NotFound(format!("no receipt {id}"));
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        match self.journal.get(id).await? {
            Some(job) if job.op.is_receipt() => Ok(receipt_result(&job)),
            _ => Err(not_found()),
        }
    }

    /// Journals the job (commit before any device sees it), wakes the device's worker, and
    /// waits a bounded time for the outcome.
    async fn submit_and_wait(
        &self,
        id: Uuid,
        device_id: &str,
        op: Operation,
        body: JobBody,
    ) -> Result<(Job, bool), ApiError> {
        let done = self.finished.wait(id);
        let submitted = self.journal.submit(id, device_id, op, body).await;
        let submitted = match submitted {
            Ok(s) => s,
            Err(e) => {
                drop(done);
                self.finished.forget(id);
                return Err(e.into());
            }
        };
        let repeat = !matches!(submitted, crate::journal::Submitted::New(_));
        let job = submitted.job().clone();
        if job.device_id != device_id {
            drop(done);
            self.finished.forget(id);
            return Err(ApiError::Conflict(format!(
                "id {id} was already used on device {}",
                job.device_id
            )));
        }
        if submitted.needs_worker()
            && let Some(d) = self.device(device_id)
        {
            d.wake();
        }
        if matches!(job.state, JobState::Done | JobState::Failed) {
            drop(done);
            self.finished.forget(id);
            return Ok((job, repeat));
        }
        let deadline = tokio::time::Instant::now() + self.answer_wait;
        if let Ok(Ok(job)) = tokio::time::timeout_at(deadline, done).await {
            return Ok((job, repeat));
        }
        self.finished.forget(id);
        let job = self
            .journal
            .get(id)
            .await?
            .ok_or_else(|| ApiError::Internal("journaled job vanished".into()))?;
        Ok((job, repeat))
    }
}
