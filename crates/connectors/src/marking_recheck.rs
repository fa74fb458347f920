//! The `marking-recheck` consumer: codes sold while the online check was unreachable (the
//! tenant's `marking_offline_policy` is `allow`) are checked again once the receipt's
//! `receipt.created` event comes by; codes the operator now refuses raise
//! `marking.check_failed`. While the service is still unreachable the event is retried with the
//! bus's backoff.
//! Once the consumer gives up, the periodic pass ([`crate::marking_reconcile`]) re-checks the
//! codes still waiting through [`MarkingRecheck::recheck`], the same way.

use std::sync::Arc;

use async_trait::async_trait;
use savdo_bus::consumer::{Consumer, HandleError};
use savdo_domain::event::CloudEvent;
use savdo_hub::MarkingCheck;
use savdo_hub::marking::{refusal, verdict_word};
use savdo_storage::Storage;
use savdo_storage::marking::{RecheckFailure, RecheckResult};
use uuid::Uuid;

pub const NAME: &str = "marking-recheck";

pub struct MarkingRecheck {
    store: Arc<dyn Storage>,
    check: Arc<dyn MarkingCheck>,
}

impl MarkingRecheck {
    pub fn new(store: Arc<dyn Storage>, check: Arc<dyn MarkingCheck>) -> Self {
        MarkingRecheck { store, check }
    }

    /// Re-check the pending codes of one receipt; `Ok(n)`: codes re-checked.
    pub async fn recheck(&self, tenant: Uuid, receipt_id: Uuid) -> Result<usize, HandleError> {
        let pending = self
            .store
            .pending_marking_checks(tenant, receipt_id)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        if pending.is_empty() {
            return Ok(0);
        }
        let codes: Vec<String> = pending.iter().map(|c| c.code.clone()).collect();
        let checks = match self.check.check(tenant, &codes).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(HandleError::Permanent(
                    "no marking integration is configured any more: the codes stay unchecked"
                        .into(),
                ));
            }
            Err(e) => {
                let message = format!("marking check still unavailable: {e}");
                return Err(match e.retry_after() {
                    Some(after) => HandleError::RetryAfter { message, after },
                    None => HandleError::Retry(message),
                });
            }
        };
        if checks.len() != pending.len() {
            return Err(HandleError::Retry(format!(
                "sent {} codes, got {} verdicts",
                pending.len(),
                checks.len()
            )));
        }
        let results: Vec<RecheckResult> = pending
            .iter()
            .zip(&checks)
            .map(|(p, c)| RecheckResult {
                label: p.label.clone(),
                failure: refusal(c).map(|reason| RecheckFailure {
                    verdict: verdict_word(c.verdict).to_owned(),
                    status: c.status.clone(),
                    reason,
                }),
            })
            .collect();
        self.store
            .finish_marking_recheck(tenant, receipt_id, &results)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        Ok(results.len())
    }
}

#[async_trait]
impl Consumer for MarkingRecheck {
    fn name(&self) -> &str {
        NAME
    }

    fn accepts(&self, event_type: &str) -> bool {
        event_type == "receipt.created"
    }

    /// Only receipts accepted offline carry a warning; the others have nothing pending.
    async fn wants(&self, event: &CloudEvent) -> bool {
        !event.data["warnings"]
            .as_array()
            .is_some_and(|w| w.is_empty())
    }

    async fn handle(&self, event: &CloudEvent, _attempt: u32) -> Result<(), HandleError> {
        // Only receipts accepted offline carry a warning; the others have nothing pending.
        if event.data["warnings"]
            .as_array()
            .is_some_and(|w| w.is_empty())
        {
            return Ok(());
        }
        let Some(id) = event.data["id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            return Err(HandleError::Permanent(
                "receipt.created without an id".into(),
            ));
        };
        self.recheck(event.tenantid, id).await.map(|_| ())
    }
}
