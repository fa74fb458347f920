//! Loyalty through the tenant's JOWi Club integration: customer look-up (linking our customer
//! record), receipt quotes, and the journal of every call. JOWi being slow or down never fails
//! these calls: they answer 200 with `"loyalty": {"status": "unavailable"}` and a warning the
//! till can show, and the sale goes on without the discount.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use savdo_connectors::loyalty_accrual::VOID;
use savdo_domain::phone::normalize_phone;
use savdo_hub::connector::{CustomerLookup, LoyaltyCustomer, LoyaltyLine, QuoteRequest};
use savdo_hub::{Connector, ConnectorError};
use savdo_storage::loyalty::{JournalEntry, StoredQuote};
use savdo_storage::{CustomerFields, CustomerFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::state::AppState;

pub const KIND: &str = "jowi_club";
/// What the till shows when JOWi Club does not answer.
pub const UNAVAILABLE_WARNING: &str =
    "Loyalty service unavailable: sale without discount; points will be credited later";
const QUOTE_TTL_MINUTES: i64 = 10;

/// The tenant's loyalty connector (resolved and cached across requests).
async fn provider(st: &AppState, tenant: Uuid) -> ApiResult<Arc<dyn Connector>> {
    let hub = st
        .hub
        .clone()
        .ok_or_else(|| ApiError::Unavailable("integrations are not enabled".into()))?;
    let resolver = st
        .loyalty_resolver
        .get_or_init(|| {
            Arc::new(savdo_integrations::ConnectorResolver::new(
                st.store.clone(),
                st.vault.clone(),
                st.registry.clone(),
                hub,
            ))
        })
        .clone();
    match resolver.for_tenant(tenant, KIND).await {
        Ok(Some(c)) if c.as_loyalty().is_some() => Ok(c),
        Ok(_) => Err(ApiError::NotFound("JOWi Club integration".into())),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

fn unavailable(e: &ConnectorError) -> Value {
    json!({"status": "unavailable", "code": e.code(), "message": e.to_string()})
}

async fn journal(
    st: &AppState,
    tenant: Uuid,
    kind: &str,
    customer_ref: Option<String>,
    request: Value,
    outcome: Result<Value, &ConnectorError>,
) {
    let (status, error, result) = match outcome {
        Ok(r) => ("ok".to_owned(), None, r),
        Err(e) => {
            let s = if e.is_retryable() {
                "unavailable"
            } else {
                "rejected"
            };
            (s.to_owned(), Some(e.to_string()), Value::Null)
        }
    };
    let entry = JournalEntry {
        id: Uuid::now_v7(),
        kind: kind.to_owned(),
        receipt_id: None,
        customer_ref,
        request,
        status,
        error,
        result,
        at: Utc::now(),
    };
    if let Err(e) = st.store.append_loyalty_journal(tenant, &entry).await {
        tracing::warn!(error = %e, "loyalty journal not written");
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LookupQuery {
    pub card: Option<String>,
    pub phone: Option<String>,
    pub code: Option<String>,
}

fn lookup_of(
    card: Option<String>,
    phone: Option<String>,
    code: Option<String>,
) -> ApiResult<CustomerLookup> {
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    match (nonempty(card), nonempty(phone), nonempty(code)) {
        (Some(c), None, None) => Ok(CustomerLookup::Card(c)),
        (None, Some(p), None) => Ok(CustomerLookup::Phone(p)),
        (None, None, Some(c)) => Ok(CustomerLookup::Code(c)),
        _ => Err(ApiError::field(
            "card",
            "give exactly one of card, phone or code",
        )),
    }
}

fn describe(by: &CustomerLookup) -> Value {
    serde_json::to_value(by).unwrap_or(Value::Null)
}

/// Our customer record for the provider's customer: found by the link, the card or the phone
/// (and linked), or created.
async fn link(
    st: &AppState,
    auth: &Auth,
    c: &LoyaltyCustomer,
) -> ApiResult<savdo_storage::Customer> {
    let tenant = auth.tenant();
    let phone = c.phone.as_deref().and_then(|p| normalize_phone(p).ok());
    let mut found = None;
    for f in [
        c.card.clone().map(|card| CustomerFilter {
            card: Some(card),
            limit: 10,
            ..Default::default()
        }),
        phone.clone().map(|p| CustomerFilter {
            phone: Some(p),
            limit: 10,
            ..Default::default()
        }),
    ]
    .into_iter()
    .flatten()
    {
        let (items, _) = st.store.list_customers(tenant, &f).await?;
        if let Some(hit) = items.into_iter().next() {
            found = Some(hit);
            break;
        }
    }
    let linked = json!(c.id);
    match found {
        Some(cur) if cur.external_ids.get(KIND) == Some(&linked) => Ok(cur),
        Some(cur) => {
            let mut ext = cur.external_ids.clone();
            ext.insert(KIND.to_owned(), linked);
            let f = CustomerFields {
                name: cur.name,
                phone: cur.phone.or(phone),
                loyalty_card: cur.loyalty_card.or_else(|| c.card.clone()),
                external_ids: ext,
            };
            Ok(st.store.update_customer(&auth.0, cur.id, &f).await?)
        }
        None => {
            let mut ext = serde_json::Map::new();
            ext.insert(KIND.to_owned(), linked);
            let f = CustomerFields {
                name: c
                    .name
                    .clone()
                    .unwrap_or_else(|| "JOWi Club customer".to_owned()),
                phone,
                loyalty_card: c.card.clone(),
                external_ids: ext,
            };
            Ok(st.store.create_customer(&auth.0, &f).await?)
        }
    }
}

fn customer_json(ours: &savdo_storage::Customer, c: &LoyaltyCustomer) -> Value {
    json!({
        "id": ours.id,
        "external_id": c.id,
        "name": c.name.clone().unwrap_or_else(|| ours.name.clone()),
        "phone": c.phone,
        "card": c.card,
        "level": c.level,
        "discount_percent": c.discount_bp.map(|bp| f64::from(bp) / 100.0),
        "balance": c.balance_points,
    })
}

#[utoipa::path(get, path = "/api/v1/loyalty/customers", tag = "loyalty", params(LookupQuery),
    responses((status = 200, body = Object), (status = 404, body = crate::error::Problem)))]
pub async fn lookup(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> ApiResult<Json<Value>> {
    let by = lookup_of(q.card, q.phone, q.code)?;
    let c = provider(&st, auth.tenant()).await?;
    let l = c
        .as_loyalty()
        .ok_or_else(|| ApiError::NotFound("JOWi Club integration".into()))?;
    let res = l.find_customer(&by).await;
    let request = json!({"lookup": describe(&by)});
    match res {
        Ok(Some(cust)) => {
            journal(
                &st,
                auth.tenant(),
                "lookup",
                Some(cust.id.clone()),
                request,
                Ok(json!({"balance": cust.balance_points})),
            )
            .await;
            let ours = link(&st, &auth, &cust).await?;
            Ok(Json(
                json!({"customer": customer_json(&ours, &cust), "loyalty": {"status": "ok"}}),
            ))
        }
        Ok(None) => {
            journal(
                &st,
                auth.tenant(),
                "lookup",
                None,
                request,
                Ok(json!({"found": false})),
            )
            .await;
            Err(ApiError::NotFound("loyalty customer".into()))
        }
        Err(e) => {
            journal(&st, auth.tenant(), "lookup", None, request, Err(&e)).await;
            Ok(Json(json!({"customer": null, "loyalty": unavailable(&e),
                           "warning": UNAVAILABLE_WARNING})))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct QuoteCustomer {
    pub card: Option<String>,
    pub phone: Option<String>,
    pub code: Option<String>,
    /// Our customer id (linked to JOWi Club by an earlier look-up).
    pub id: Option<Uuid>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteLine {
    pub product_id: Uuid,
    /// Like a receipt line: a decimal with at most 3 places.
    #[schema(value_type = f64, example = 1)]
    pub qty: savdo_domain::Qty,
    /// Unit price, tiyin; defaults to the product's price.
    #[serde(default)]
    pub price: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteBody {
    pub store_id: Uuid,
    pub customer: QuoteCustomer,
    pub lines: Vec<QuoteLine>,
    #[serde(default)]
    pub spend_points: i64,
}

#[utoipa::path(post, path = "/api/v1/loyalty/quote", tag = "loyalty", request_body = QuoteBody,
    responses((status = 200, body = Object), (status = 404, body = crate::error::Problem)))]
pub async fn quote(
    State(st): State<AppState>,
    auth: Auth,
    ApiJson(b): ApiJson<QuoteBody>,
) -> ApiResult<Json<Value>> {
    if b.lines.is_empty() {
        return Err(ApiError::field("lines", "must not be empty"));
    }
    if b.spend_points < 0 {
        return Err(ApiError::field("spend_points", "must be >= 0"));
    }
    let tenant = auth.tenant();
    let mut lines = Vec::with_capacity(b.lines.len());
    for (i, l) in b.lines.iter().enumerate() {
        if !l.qty.is_positive() {
            return Err(ApiError::field(
                format!("lines[{i}].qty"),
                "must be greater than zero",
            ));
        }
        let product = st
            .store
            .get_product(tenant, l.product_id)
            .await
            .map_err(|e| match e {
                savdo_storage::StorageError::NotFound(_) => {
                    ApiError::field(format!("lines[{i}].product_id"), "no such product")
                }
                other => other.into(),
            })?;
        let price = l.price.unwrap_or(product.price);
        if price < 0 {
            return Err(ApiError::field(
                format!("lines[{i}].price"),
                "must not be negative",
            ));
        }
        let amount = savdo_domain::money::line_gross(price, l.qty)
            .ok_or_else(|| ApiError::field(format!("lines[{i}].price"), "amount too large"))?;
        lines.push(LoyaltyLine {
            line_ref: (i + 1).to_string(),
            name: product.name.clone(),
            quantity: l.qty.milli(),
            price,
            amount,
        });
    }
    let c = provider(&st, tenant).await?;
    let l = c
        .as_loyalty()
        .ok_or_else(|| ApiError::NotFound("JOWi Club integration".into()))?;
    // Who: our linked record, or a look-up by card / phone / code.
    let (ours, external) = match b.customer.id {
        Some(id) => {
            let cur = st.store.get_customer(tenant, id).await?;
            let ext = cur
                .external_ids
                .get(KIND)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::field(
                        "customer.id",
                        "is not linked to JOWi Club: look the customer up first",
                    )
                })?;
            (Some(cur.id), ext)
        }
        None => {
            let by = lookup_of(
                b.customer.card.clone(),
                b.customer.phone.clone(),
                b.customer.code.clone(),
            )?;
            let request = json!({"lookup": describe(&by)});
            match l.find_customer(&by).await {
                Ok(Some(cust)) => {
                    journal(
                        &st,
                        tenant,
                        "lookup",
                        Some(cust.id.clone()),
                        request,
                        Ok(json!({"balance": cust.balance_points})),
                    )
                    .await;
                    let ours = link(&st, &auth, &cust).await?;
                    (Some(ours.id), cust.id)
                }
                Ok(None) => {
                    journal(
                        &st,
                        tenant,
                        "lookup",
                        None,
                        request,
                        Ok(json!({"found": false})),
                    )
                    .await;
                    return Err(ApiError::NotFound("loyalty customer".into()));
                }
                Err(e) => {
                    journal(&st, tenant, "lookup", None, request, Err(&e)).await;
                    return Ok(Json(json!({"quote": null, "loyalty": unavailable(&e),
                                          "warning": UNAVAILABLE_WARNING})));
                }
            }
        }
    };
    let req = QuoteRequest {
        customer_id: external.clone(),
        store_id: b.store_id.to_string(),
        lines: lines.clone(),
        spend_points: b.spend_points,
    };
    let request =
        json!({"store_id": b.store_id, "lines": lines.len(), "spend_points": b.spend_points});
    let q = match l.quote(&req).await {
        Ok(q) => q,
        Err(e) => {
            journal(&st, tenant, "quote", Some(external), request, Err(&e)).await;
            return Ok(Json(json!({"quote": null, "loyalty": unavailable(&e),
                                  "warning": UNAVAILABLE_WARNING})));
        }
    };
    let now = Utc::now();
    let quoted_lines: Vec<Value> = b
        .lines
        .iter()
        .zip(&lines)
        .zip(&q.lines)
        .map(|((src, l), d)| {
            json!({"ref": l.line_ref, "product_id": src.product_id, "qty": src.qty, "quantity": l.quantity,
                   "price": l.price, "amount": l.amount, "discount": d.discount})
        })
        .collect();
    let points = json!({
        "spend_max": q.points_spend_max, "to_spend": q.points_to_spend,
        "to_earn": q.points_to_earn, "balance": q.balance_points,
        "balance_after": q.balance_after, "point_value": q.point_value,
    });
    let stored = StoredQuote {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        store_id: b.store_id,
        customer_id: ours,
        external_customer_id: external.clone(),
        lines: Value::Array(quoted_lines.clone()),
        discounts: serde_json::to_value(&q.lines).unwrap_or(Value::Null),
        points: points.clone(),
        expires_at: now + chrono::Duration::minutes(QUOTE_TTL_MINUTES),
        created_at: now,
    };
    st.store.put_loyalty_quote(&stored).await?;
    journal(
        &st,
        tenant,
        "quote",
        Some(external),
        request,
        Ok(json!({"quote_id": stored.id, "discount_total": q.discount_total, "points": points})),
    )
    .await;
    Ok(Json(json!({
        "quote": {
            "id": stored.id,
            "expires_at": stored.expires_at,
            "customer_id": ours,
            "lines": quoted_lines,
            "discount_total": q.discount_total,
            "points": points,
        },
        "loyalty": {"status": "ok"},
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct JournalQuery {
    pub receipt_id: Option<Uuid>,
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/loyalty/transactions", tag = "loyalty", params(JournalQuery),
    responses((status = 200, body = Object)))]
pub async fn transactions(
    State(st): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<JournalQuery>,
) -> ApiResult<Json<Value>> {
    let limit = super::limit(q.limit)?;
    let items = st
        .store
        .list_loyalty_journal(auth.tenant(), q.receipt_id, limit)
        .await?;
    Ok(Json(json!({"items": items})))
}

// ---------------------------------------------------------------- receipts

/// `loyalty` of `POST /api/v1/receipts`: apply a quote, and spend points (confirmed with JOWi
/// Club before the receipt is accepted).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLoyalty {
    pub quote_id: Uuid,
    /// Points to spend; pay them with a `loyalty_points` payment of `points × point value`.
    #[serde(default)]
    pub spend_points: i64,
}

/// What a quote changes on a receipt.
pub struct Applied {
    /// What the receipt's `loyalty` field records.
    pub record: Value,
    pub customer_id: Option<Uuid>,
    /// Per receipt line, tiyin.
    pub discounts: Vec<i64>,
    /// Points to spend with JOWi Club before the receipt is accepted (not for a retry of a
    /// recorded receipt): the caller checks the receipt first, then calls [`spend`].
    pub spend: Option<PendingSpend>,
}

/// A spending of points not yet sent to JOWi Club.
pub struct PendingSpend {
    req: savdo_hub::connector::CommitSale,
    request: Value,
    customer_id: Option<Uuid>,
}

/// A receipt line as the quote check sees it: product, quantity (thousandths), price if given.
pub type QuotedLine = (Uuid, i64, Option<i64>);

fn loyalty_conflict(message: String) -> ApiError {
    ApiError::Conflict {
        message,
        field: Some("loyalty".into()),
    }
}

const OFFLINE: &str = "Loyalty service unavailable: points cannot be spent offline; close the sale \
                       without spending points";

/// Check the receipt against its quote (409 with the difference) and work out its discounts and
/// `loyalty` record. Points to spend come back as [`Applied::spend`]: they are spent (by
/// [`spend`]) only after the receipt itself passed its checks, since JOWi Club cannot spend
/// offline and a refused receipt must not cost the customer points. For a retry of a receipt
/// already `recorded`, the quote is applied as it was (expired or not) and nothing is to be spent
/// again, so the retry answers with the stored receipt whatever JOWi's state.
#[allow(clippy::too_many_arguments)]
pub async fn apply_to_receipt(
    st: &AppState,
    auth: &Auth,
    receipt_id: Uuid,
    store_id: Uuid,
    l: &ReceiptLoyalty,
    lines: &[QuotedLine],
    points_paid: i64,
    recorded: bool,
) -> ApiResult<Applied> {
    let tenant = auth.tenant();
    let q = st
        .store
        .get_loyalty_quote(tenant, l.quote_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("loyalty quote".into()))?;
    if !recorded && q.expires_at < Utc::now() {
        return Err(loyalty_conflict(format!(
            "the loyalty quote expired at {}: ask for a new quote",
            q.expires_at.to_rfc3339()
        )));
    }
    if q.store_id != store_id {
        return Err(loyalty_conflict(
            "the loyalty quote is for another store".into(),
        ));
    }
    let quoted = q.lines.as_array().cloned().unwrap_or_default();
    if quoted.len() != lines.len() {
        return Err(loyalty_conflict(format!(
            "the receipt has {} lines, the loyalty quote {}: quote the receipt again",
            lines.len(),
            quoted.len()
        )));
    }
    let mut discounts = Vec::with_capacity(lines.len());
    let mut loyalty_lines = Vec::with_capacity(lines.len());
    let mut net = 0;
    for (i, ((product, qty, price), ql)) in lines.iter().zip(&quoted).enumerate() {
        let q_product = ql["product_id"].as_str().unwrap_or("");
        let q_qty = ql["quantity"].as_i64().unwrap_or(0);
        let q_price = ql["price"].as_i64().unwrap_or(0);
        if q_product != product.to_string() || q_qty != *qty || price.is_some_and(|p| p != q_price)
        {
            return Err(loyalty_conflict(format!(
                "line {}: the quote has product {q_product}, quantity {q_qty}/1000 at {q_price} \
                 tiyin; the receipt has product {product}, quantity {qty}/1000 at {}: quote the \
                 receipt again",
                i + 1,
                price.map_or("the product's price".to_owned(), |p| format!("{p} tiyin"))
            )));
        }
        let d = ql["discount"].as_i64().unwrap_or(0);
        let amount = ql["amount"].as_i64().unwrap_or(0);
        net += amount - d;
        discounts.push(d);
        loyalty_lines.push(LoyaltyLine {
            line_ref: ql["ref"].as_str().unwrap_or("").to_owned(),
            name: product.to_string(),
            quantity: q_qty,
            price: q_price,
            amount,
        });
    }
    let spend = l.spend_points;
    if spend < 0 {
        return Err(ApiError::field("loyalty.spend_points", "must be >= 0"));
    }
    let point_value = q.points["point_value"].as_i64().unwrap_or(100).max(1);
    if points_paid != spend * point_value {
        return Err(ApiError::field(
            "payments",
            format!(
                "spending {spend} points needs a loyalty_points payment of {} tiyin",
                spend * point_value
            ),
        ));
    }
    let pending = (spend > 0 && !recorded).then(|| {
        let req = savdo_hub::connector::CommitSale {
            receipt_id,
            customer_id: q.external_customer_id.clone(),
            store_id: store_id.to_string(),
            total: net - spend * point_value,
            spend_points: spend,
            lines: loyalty_lines,
        };
        let request = json!({"quote_id": q.id, "spend_points": spend, "total": req.total});
        PendingSpend {
            req,
            request,
            customer_id: q.customer_id,
        }
    });
    let discount_total: i64 = discounts.iter().sum();
    let record = json!({
        "provider": KIND, "quote_id": q.id, "customer_id": q.customer_id,
        "external_customer_id": q.external_customer_id, "discount_total": discount_total,
        "points_spent": spend, "points_to_earn": q.points["to_earn"],
        "point_value": point_value, "accrual": "pending",
    });
    Ok(Applied {
        record,
        customer_id: q.customer_id,
        discounts,
        spend: pending,
    })
}

/// A receipt's loyalty journal, and whether points it spent were asked back.
async fn receipt_journal(
    st: &AppState,
    tenant: Uuid,
    receipt_id: Uuid,
) -> ApiResult<(Vec<JournalEntry>, bool)> {
    let journal = st
        .store
        .list_loyalty_journal(tenant, Some(receipt_id), 500)
        .await?;
    let given_back = journal.iter().any(|e| e.kind == VOID);
    Ok((journal, given_back))
}

/// Spend the points with JOWi Club (keyed by the receipt id: a retry gets the first answer and
/// spends nothing twice); 409 when JOWi is unavailable or refuses. Returns JOWi's answer, which
/// the receipt's `loyalty` record keeps as `redeem` (the accrual is then not sent again).
pub async fn spend(st: &AppState, tenant: Uuid, p: &PendingSpend) -> ApiResult<Value> {
    let receipt_id = p.req.receipt_id;
    // Points spent for this id were given back after the receipt was refused: JOWi would answer
    // the old spending again without spending anew.
    let (_, given_back) = receipt_journal(st, tenant, receipt_id).await?;
    if given_back {
        return Err(loyalty_conflict(
            "the points this receipt spent were given back to the customer when it was refused: \
             send the sale again under a new receipt id"
                .into(),
        ));
    }
    let c = provider(st, tenant)
        .await
        .map_err(|_| loyalty_conflict(OFFLINE.into()))?;
    let lp = c
        .as_loyalty()
        .ok_or_else(|| ApiError::NotFound("JOWi Club integration".into()))?;
    let outcome = lp.commit_sale(&p.req).await;
    let entry = |status: &str, error: Option<String>, result: Value| JournalEntry {
        id: Uuid::now_v7(),
        kind: "redeem".into(),
        receipt_id: Some(receipt_id),
        customer_ref: Some(p.req.customer_id.clone()),
        request: p.request.clone(),
        status: status.into(),
        error,
        result,
        at: Utc::now(),
    };
    match outcome {
        Ok(done) => {
            let result = json!({"transaction_id": done.transaction_id, "earned": done.earned_points,
                                "spent": done.spent_points, "balance": done.balance_points});
            st.store
                .append_loyalty_journal(tenant, &entry("ok", None, result.clone()))
                .await?;
            Ok(result)
        }
        Err(e) => {
            let retryable = e.is_retryable();
            let status = if retryable { "unavailable" } else { "rejected" };
            let _ = st
                .store
                .append_loyalty_journal(tenant, &entry(status, Some(e.to_string()), Value::Null))
                .await;
            Err(loyalty_conflict(if retryable {
                OFFLINE.into()
            } else {
                format!("JOWi Club refused to spend the points: {e}")
            }))
        }
    }
}

/// A receipt that spends points was refused. If JOWi accepted its spending (in this request,
/// the state having changed since the check, or in an earlier attempt whose give-back was not
/// recorded) and no receipt with its id was stored (a concurrent retry would own the spending),
/// ask for the points back: the request is journaled and written as a
/// `loyalty.void_requested` event in one transaction; the `loyalty` consumer gives the points
/// back (JOWi's refund of the whole transaction, keyed by `refund_id`), retrying while JOWi is
/// unavailable. From then on the receipt id cannot spend again (see [`spend`]).
pub async fn settle_refused(
    st: &AppState,
    tenant: Uuid,
    p: &PendingSpend,
    reason: &str,
) -> ApiResult<()> {
    let receipt_id = p.req.receipt_id;
    let (journal, given_back) = receipt_journal(st, tenant, receipt_id).await?;
    if given_back {
        return Ok(());
    }
    let Some(redeem) = journal
        .iter()
        .find(|e| e.kind == "redeem" && e.status == "ok")
    else {
        return Ok(());
    };
    match st.store.get_receipt(tenant, receipt_id).await {
        Err(savdo_storage::StorageError::NotFound(_)) => {}
        Ok(_) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let refund_id = Uuid::now_v7();
    let request = json!({"refund_id": refund_id, "spend_points": p.req.spend_points,
                         "transaction_id": redeem.result["transaction_id"], "reason": reason});
    let entry = JournalEntry {
        id: Uuid::now_v7(),
        kind: VOID.into(),
        receipt_id: Some(receipt_id),
        customer_ref: Some(p.req.customer_id.clone()),
        request,
        status: "requested".into(),
        error: None,
        result: Value::Null,
        at: Utc::now(),
    };
    let event = json!({"receipt_id": receipt_id, "refund_id": refund_id,
                       "customer_id": p.customer_id, "external_id": p.req.customer_id,
                       "points": p.req.spend_points, "reason": reason});
    st.store
        .append_loyalty_journal_with_event(tenant, &entry, "loyalty.void_requested", event)
        .await?;
    tracing::warn!(%tenant, %receipt_id, "points spent for a refused receipt: given back");
    Ok(())
}

/// The `loyalty` record of a sale for a customer linked to JOWi Club without a quote (JOWi was
/// down at the till, or the till did not ask): the accrual consumer earns the points later.
/// `None` for customers not linked (or unknown: the receipt's own check names the field).
pub async fn record_for_customer(
    st: &AppState,
    tenant: Uuid,
    customer_id: Uuid,
) -> ApiResult<Option<Value>> {
    let c = match st.store.get_customer(tenant, customer_id).await {
        Ok(c) => c,
        Err(savdo_storage::StorageError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(c.external_ids.get(KIND).and_then(Value::as_str).map(|ext| {
        json!({"provider": KIND, "quote_id": null, "customer_id": c.id,
               "external_customer_id": ext, "discount_total": 0, "points_spent": 0,
               "accrual": "pending"})
    }))
}
