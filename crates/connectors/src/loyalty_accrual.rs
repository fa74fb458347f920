//! The `loyalty` consumer: after a receipt is committed, sends the accrual (JOWi Club's
//! "commit sale", keyed by our receipt id) for a customer linked to the tenant's loyalty
//! integration, and the refund for a refund receipt (keyed by the refund receipt id,
//! proportional per line). Retried until the provider accepts: a receipt made while JOWi was
//! down earns its points when it is back, exactly once (the provider answers a repeated key
//! with its first answer, so a lost answer is retried safely). Every call goes to the loyalty
//! journal; `loyalty.accrued` / `loyalty.redeemed` / `loyalty.refunded` are emitted. Points
//! spent for a receipt that was refused after the spending come back on `loyalty.void_requested`
//! (`loyalty.voided`).
//!
//! A sale is accrued from its event: the receipt's `loyalty` record names JOWi's customer and
//! the points spent at the till (with that commit's answer, so it is not sent again). The
//! consumer's retry policy never gives up on JOWi being unavailable (backoff capped at
//! [`MAX_BACKOFF`]); a refusal is dead-lettered with JOWi's reason.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use savdo_bus::consumer::{Consumer, HandleError, RetryPolicy};
use savdo_domain::event::CloudEvent;
use savdo_hub::ConnectorError;
use savdo_hub::connector::{CommitSale, LoyaltyLine, LoyaltyProvider, LoyaltyRefund};
use savdo_integrations::ConnectorResolver;
use savdo_storage::Storage;
use savdo_storage::loyalty::JournalEntry;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::jowi_club::KIND;

pub const NAME: &str = "loyalty";
/// The journal's kind for points given back after their receipt was refused (the API writes the
/// request, this consumer the call).
pub const VOID: &str = "void";
/// A refund met a sale JOWi does not know yet (its accrual still waits): retry this often.
const REFUND_WAITS_FOR_SALE: u32 = 20;
/// Calls to JOWi in flight at once.
pub const CONCURRENCY: usize = 8;
/// The first retry of an unavailable JOWi comes after about this long, then doubles…
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// …up to this: once JOWi is back, a waiting accrual lands within this (± jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What [`LoyaltyAccrual::send_refund`] journals and emits.
struct RefundCall<'a> {
    kind: &'a str,
    journal_id: Uuid,
    external: &'a str,
    request: Value,
    event: &'a str,
    fields: Value,
}

pub struct LoyaltyAccrual {
    store: Arc<dyn Storage>,
    resolver: Arc<ConnectorResolver>,
}

impl LoyaltyAccrual {
    pub fn new(store: Arc<dyn Storage>, resolver: Arc<ConnectorResolver>) -> Self {
        LoyaltyAccrual { store, resolver }
    }

    fn retry(e: &ConnectorError) -> HandleError {
        let message = format!("loyalty provider: {e}");
        match e.retry_after() {
            Some(after) => HandleError::RetryAfter { message, after },
            None => HandleError::Retry(message),
        }
    }

    async fn journal(
        &self,
        tenant: Uuid,
        kind: &str,
        receipt: Uuid,
        customer: &str,
        request: Value,
        outcome: Result<Value, &ConnectorError>,
    ) {
        let (status, error, result) = match outcome {
            Ok(r) => ("ok", None, r),
            Err(e) if e.is_retryable() => ("unavailable", Some(e.to_string()), Value::Null),
            Err(e) => ("rejected", Some(e.to_string()), Value::Null),
        };
        let entry = JournalEntry {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            receipt_id: Some(receipt),
            customer_ref: Some(customer.to_owned()),
            request,
            status: status.to_owned(),
            error,
            result,
            at: Utc::now(),
        };
        if let Err(e) = self.store.append_loyalty_journal(tenant, &entry).await {
            tracing::warn!(error = %e, "loyalty journal not written");
        }
    }

    /// Whether the journal already has this receipt's call of `kind` accepted (a redelivered
    /// event: the provider's effect and our event already happened).
    async fn done(&self, tenant: Uuid, kind: &str, receipt: Uuid) -> Result<bool, HandleError> {
        Ok(self.accepted(tenant, kind, receipt).await?.is_some())
    }

    /// The journal's accepted call of `kind` for this receipt, if any.
    async fn accepted(
        &self,
        tenant: Uuid,
        kind: &str,
        receipt: Uuid,
    ) -> Result<Option<JournalEntry>, HandleError> {
        let entries = self
            .store
            .list_loyalty_journal(tenant, Some(receipt), 500)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        Ok(entries
            .into_iter()
            .find(|e| e.kind == kind && e.status == "ok"))
    }

    /// Record the accepted accrual on the receipt's `loyalty` field.
    async fn mark(&self, tenant: Uuid, receipt: Uuid, ev: &Value) -> Result<(), HandleError> {
        let patch = json!({
            "provider": KIND, "customer_id": ev["customer_id"], "external_customer_id": ev["external_id"],
            "accrual": "accrued", "transaction_id": ev["transaction_id"],
            "points_earned": ev["earned"], "points_spent": ev["spent"], "balance": ev["balance"],
        });
        match self
            .store
            .set_receipt_loyalty(tenant, receipt, &patch)
            .await
        {
            Ok(_) | Err(savdo_storage::StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(HandleError::Retry(e.to_string())),
        }
    }

    /// The provider's id of the receipt's customer, when linked.
    async fn external_customer(
        &self,
        tenant: Uuid,
        customer: Option<Uuid>,
    ) -> Result<Option<String>, HandleError> {
        let Some(id) = customer else {
            return Ok(None);
        };
        let c = match self.store.get_customer(tenant, id).await {
            Ok(c) => c,
            Err(savdo_storage::StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(HandleError::Retry(e.to_string())),
        };
        Ok(c.external_ids
            .get(KIND)
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    fn lines(data: &Value) -> Vec<LoyaltyLine> {
        data["lines"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        let qty = savdo_domain::Qty::from_milli(0);
                        let quantity =
                            serde_json::from_value::<savdo_domain::Qty>(l["qty"].clone())
                                .unwrap_or(qty)
                                .milli();
                        let price = l["price"].as_i64().unwrap_or(0);
                        LoyaltyLine {
                            line_ref: l["line_no"].as_u64().unwrap_or(0).to_string(),
                            name: l["name"].as_str().unwrap_or("").to_owned(),
                            quantity,
                            price,
                            amount: l["amount"].as_i64().unwrap_or(0)
                                + l["discount"].as_i64().unwrap_or(0),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Emit `loyalty.redeemed` (when points were spent) and `loyalty.accrued` for an accepted
    /// commit, after recording it on the receipt.
    async fn accepted_commit(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        customer: Option<Uuid>,
        external: &str,
        result: Value,
    ) -> Result<(), HandleError> {
        let spent = result["spent"].as_i64().unwrap_or(0);
        let mut ev = result;
        ev["receipt_id"] = json!(receipt_id);
        ev["customer_id"] = json!(customer);
        ev["external_id"] = json!(external);
        self.mark(tenant, receipt_id, &ev).await?;
        let kinds: &[&str] = if spent > 0 {
            &["loyalty.redeemed", "loyalty.accrued"]
        } else {
            &["loyalty.accrued"]
        };
        for kind in kinds {
            self.store
                .emit_loyalty_event(tenant, kind, ev.clone())
                .await
                .map_err(|e| HandleError::Retry(e.to_string()))?;
        }
        Ok(())
    }

    async fn accrue(&self, tenant: Uuid, data: &Value) -> Result<(), HandleError> {
        let receipt_id: Uuid = serde_json::from_value(data["id"].clone())
            .map_err(|_| HandleError::Permanent("receipt without id".into()))?;
        if self.done(tenant, "accrual", receipt_id).await? {
            return Ok(());
        }
        // The receipt's loyalty record, written with it; receipts without one (or recorded
        // before it existed) fall back to the customer's link.
        let record = data["loyalty"].as_object();
        if record
            .and_then(|r| r.get("provider"))
            .and_then(Value::as_str)
            .is_some_and(|p| p != KIND)
        {
            return Ok(());
        }
        let field = |k: &str| {
            record
                .and_then(|r| r.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let customer: Option<Uuid> = serde_json::from_value(field("customer_id"))
            .ok()
            .or_else(|| serde_json::from_value(data["customer_id"].clone()).ok());
        let external = match field("external_customer_id").as_str() {
            Some(e) => Some(e.to_owned()),
            None => self.external_customer(tenant, customer).await?,
        };
        let Some(external) = external else {
            return Ok(());
        };
        // Points were spent at the till: that commit (same receipt id) already earned the points.
        let redeemed = match field("redeem") {
            r @ Value::Object(_) => Some((
                json!({"quote_id": field("quote_id"), "spend_points": field("points_spent")}),
                r,
            )),
            _ => self
                .accepted(tenant, "redeem", receipt_id)
                .await?
                .map(|e| (e.request, e.result)),
        };
        if let Some((request, result)) = redeemed {
            self.journal(
                tenant,
                "accrual",
                receipt_id,
                &external,
                request,
                Ok(result.clone()),
            )
            .await;
            return self
                .accepted_commit(tenant, receipt_id, customer, &external, result)
                .await;
        }
        let connector = match self.resolver.for_tenant(tenant, KIND).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Self::retry(&e)),
        };
        let Some(l) = connector.as_loyalty() else {
            return Ok(());
        };
        let spend = field("points_spent").as_i64().unwrap_or(0);
        // What was paid in money: the points' share is JOWi's, not earning.
        let points_paid: i64 = data["payments"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["method"] == "loyalty_points")
                    .filter_map(|p| p["amount"].as_i64())
                    .sum()
            })
            .unwrap_or(0);
        let req = CommitSale {
            receipt_id,
            customer_id: external.clone(),
            store_id: data["store_id"].as_str().unwrap_or("").to_owned(),
            total: data["total"].as_i64().unwrap_or(0) - points_paid,
            spend_points: spend,
            lines: Self::lines(data),
        };
        let request = json!({"total": req.total, "spend_points": spend, "lines": req.lines.len()});
        match l.commit_sale(&req).await {
            Ok(c) => {
                let result = json!({"transaction_id": c.transaction_id, "earned": c.earned_points,
                                    "spent": c.spent_points, "balance": c.balance_points});
                self.journal(
                    tenant,
                    "accrual",
                    receipt_id,
                    &external,
                    request,
                    Ok(result.clone()),
                )
                .await;
                self.accepted_commit(tenant, receipt_id, customer, &external, result)
                    .await
            }
            Err(e) => {
                self.journal(tenant, "accrual", receipt_id, &external, request, Err(&e))
                    .await;
                if e.is_retryable() {
                    Err(Self::retry(&e))
                } else {
                    Err(HandleError::Permanent(format!(
                        "JOWi Club refused the accrual: {e}"
                    )))
                }
            }
        }
    }

    /// JOWi's refund `req`, journaled either way; on success `call.event` is emitted: the
    /// refund's result with `call.fields` and the external id. `Err`: JOWi's failure (journaled).
    async fn send_refund(
        &self,
        tenant: Uuid,
        l: &dyn LoyaltyProvider,
        req: &LoyaltyRefund,
        call: RefundCall<'_>,
    ) -> Result<Result<(), HandleError>, ConnectorError> {
        let (kind, id, external) = (call.kind, call.journal_id, call.external);
        match l.refund(req).await {
            Ok(r) => {
                let result = json!({"earned_reversed": r.earned_reversed,
                                    "spent_returned": r.spent_returned, "balance": r.balance_points});
                self.journal(tenant, kind, id, external, call.request, Ok(result.clone()))
                    .await;
                let mut ev = result;
                if let (Some(ev), Value::Object(fields)) = (ev.as_object_mut(), call.fields) {
                    ev.extend(fields);
                }
                ev["external_id"] = json!(external);
                Ok(self
                    .store
                    .emit_loyalty_event(tenant, call.event, ev)
                    .await
                    .map_err(|e| HandleError::Retry(e.to_string())))
            }
            Err(e) => {
                self.journal(tenant, kind, id, external, call.request, Err(&e))
                    .await;
                Err(e)
            }
        }
    }

    /// Give back the points spent for a receipt that was then refused (`loyalty.void_requested`,
    /// written by the API with its journal entry): JOWi's refund of the whole transaction, keyed
    /// by the request's `refund_id`. Not when a receipt with that id was stored after all (a
    /// concurrent retry): it owns the spending.
    async fn void(&self, tenant: Uuid, data: &Value) -> Result<(), HandleError> {
        let (Ok(receipt_id), Ok(refund_id)) = (
            serde_json::from_value::<Uuid>(data["receipt_id"].clone()),
            serde_json::from_value::<Uuid>(data["refund_id"].clone()),
        ) else {
            return Err(HandleError::Permanent(
                "void request without receipt_id or refund_id".into(),
            ));
        };
        // Given back already, or settled as not to be given back (a redelivered request).
        let journal = self
            .store
            .list_loyalty_journal(tenant, Some(receipt_id), 500)
            .await
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        if journal
            .iter()
            .any(|e| e.kind == VOID && matches!(e.status.as_str(), "ok" | "skipped"))
        {
            return Ok(());
        }
        let external = data["external_id"].as_str().unwrap_or_default().to_owned();
        let request = json!({"refund_id": refund_id, "whole": true});
        match self.store.get_receipt(tenant, receipt_id).await {
            Err(savdo_storage::StorageError::NotFound(_)) => {}
            Ok(_) => {
                let skipped = JournalEntry {
                    id: Uuid::now_v7(),
                    kind: VOID.to_owned(),
                    receipt_id: Some(receipt_id),
                    customer_ref: Some(external),
                    request,
                    status: "skipped".to_owned(),
                    error: Some(
                        "the receipt was stored after all: it keeps the points it spent".into(),
                    ),
                    result: Value::Null,
                    at: Utc::now(),
                };
                return self
                    .store
                    .append_loyalty_journal(tenant, &skipped)
                    .await
                    .map_err(|e| HandleError::Retry(e.to_string()));
            }
            Err(e) => return Err(HandleError::Retry(e.to_string())),
        }
        let connector = match self.resolver.for_tenant(tenant, KIND).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(HandleError::Permanent(
                    "points to give back, but the tenant has no JOWi Club integration".into(),
                ));
            }
            Err(e) => return Err(Self::retry(&e)),
        };
        let Some(l) = connector.as_loyalty() else {
            return Err(HandleError::Permanent(
                "the loyalty integration cannot give points back".into(),
            ));
        };
        let req = LoyaltyRefund {
            receipt_id,
            refund_id,
            lines: None,
        };
        let call = RefundCall {
            kind: VOID,
            journal_id: receipt_id,
            external: &external,
            request,
            event: "loyalty.voided",
            fields: json!({"receipt_id": receipt_id, "refund_id": refund_id,
                           "customer_id": data["customer_id"]}),
        };
        match self.send_refund(tenant, l, &req, call).await {
            Ok(done) => done,
            Err(e) if e.is_retryable() => Err(Self::retry(&e)),
            Err(e) => Err(HandleError::Permanent(format!(
                "JOWi Club refused to give the points back: {e}"
            ))),
        }
    }

    async fn refund(&self, tenant: Uuid, data: &Value, attempt: u32) -> Result<(), HandleError> {
        let refund_id: Uuid = serde_json::from_value(data["id"].clone())
            .map_err(|_| HandleError::Permanent("receipt without id".into()))?;
        let Ok(sale_id) = serde_json::from_value::<Uuid>(data["refund_of"].clone()) else {
            return Ok(());
        };
        if self.done(tenant, "refund", refund_id).await? {
            return Ok(());
        }
        let sale = match self.store.get_receipt(tenant, sale_id).await {
            Ok(s) => s,
            Err(savdo_storage::StorageError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(HandleError::Retry(e.to_string())),
        };
        let customer: Option<Uuid> = serde_json::from_value(data["customer_id"].clone())
            .ok()
            .or(sale.customer_id);
        let Some(external) = self.external_customer(tenant, customer).await? else {
            return Ok(());
        };
        let connector = match self.resolver.for_tenant(tenant, KIND).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Self::retry(&e)),
        };
        let Some(l) = connector.as_loyalty() else {
            return Ok(());
        };
        // Refund lines against the sale's line numbers (the refs the sale was committed with).
        let mut lines = Vec::new();
        let mut whole = true;
        for rl in Self::lines(data) {
            let product = data["lines"]
                .as_array()
                .and_then(|ls| {
                    ls.iter().find(|x| {
                        x["line_no"].as_u64().map(|n| n.to_string()) == Some(rl.line_ref.clone())
                    })
                })
                .and_then(|x| x["product_id"].as_str().map(str::to_owned));
            let Some(sold) = sale
                .lines
                .iter()
                .find(|s| Some(s.product_id.to_string()) == product)
            else {
                continue;
            };
            if rl.quantity < sold.qty.milli() {
                whole = false;
            }
            lines.push(LoyaltyLine {
                line_ref: sold.line_no.to_string(),
                ..rl
            });
        }
        if lines.len() < sale.lines.len() {
            whole = false;
        }
        let req = LoyaltyRefund {
            receipt_id: sale_id,
            refund_id,
            lines: if whole { None } else { Some(lines) },
        };
        let request = json!({"sale": sale_id, "whole": whole});
        let call = RefundCall {
            kind: "refund",
            journal_id: refund_id,
            external: &external,
            request,
            event: "loyalty.refunded",
            fields: json!({"receipt_id": refund_id, "refund_of": sale_id, "customer_id": customer}),
        };
        match self.send_refund(tenant, l, &req, call).await {
            Ok(done) => done,
            Err(e) => {
                match &e {
                    _ if e.is_retryable() => Err(Self::retry(&e)),
                    // The sale's accrual may still be waiting in the outbox.
                    ConnectorError::Rejected { code, .. }
                        if code == "404" && attempt < REFUND_WAITS_FOR_SALE =>
                    {
                        Err(HandleError::Retry(e.to_string()))
                    }
                    _ => Err(HandleError::Permanent(e.to_string())),
                }
            }
        }
    }
}

#[async_trait]
impl Consumer for LoyaltyAccrual {
    fn name(&self) -> &str {
        NAME
    }

    fn accepts(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "receipt.created" | "receipt.refunded" | "loyalty.void_requested"
        )
    }

    /// Points must land: JOWi being unavailable is retried without end (capped backoff);
    /// refusals are still dead-lettered.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        Some(RetryPolicy::until_done(FIRST_BACKOFF, MAX_BACKOFF))
    }

    /// Each call waits on JOWi: after an outage the waiting accruals go out [`CONCURRENCY`] at
    /// a time. Receipts are independent of each other; a refund that overtakes its sale's
    /// accrual is retried until JOWi knows the sale.
    fn concurrency(&self) -> usize {
        CONCURRENCY
    }

    /// A sale with neither a customer nor a loyalty record earns nothing; a refund is looked at
    /// always (its sale may name the customer).
    async fn wants(&self, event: &CloudEvent) -> bool {
        event.kind == "receipt.refunded"
            || event.kind == "loyalty.void_requested"
            || !event.data["customer_id"].is_null()
            || !event.data["loyalty"].is_null()
    }

    async fn handle(&self, event: &CloudEvent, attempt: u32) -> Result<(), HandleError> {
        let tenant = event.tenantid;
        if event.kind == "receipt.refunded" {
            self.refund(tenant, &event.data, attempt).await
        } else if event.kind == "loyalty.void_requested" {
            self.void(tenant, &event.data).await
        } else {
            self.accrue(tenant, &event.data).await
        }
    }
}
