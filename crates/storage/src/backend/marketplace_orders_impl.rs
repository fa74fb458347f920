// Marketplace orders and the order poller's cursors, shared by both backends (included after
// shared.rs and integrations_impl.rs, whose helpers it uses: the invoice is cancelled in the
// same transaction as the order record).

use crate::marketplace_orders::{
    CancelOutcome, MarketplaceOrderRecord, MarketplaceOrderState, MarketplaceOrderStore, OrderCancellation,
    OrderFilter, OrderInput, OrderPollClaim, OrderPollDone,
};

const MO_COLS: &str = "id, tenant_id, integration_id, kind, external_id, state, raw_status, reason, invoice_id, total, \
     payload, attempts, confirmed_at, confirm_error, confirm_attempts, cancelled_at, created_at, updated_at";

fn mo_from_row(r: &DbRow) -> Result<MarketplaceOrderRecord> {
    let state: String = r.try_get("state")?;
    Ok(MarketplaceOrderRecord {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        integration_id: r.try_get("integration_id")?,
        kind: r.try_get("kind")?,
        external_id: r.try_get("external_id")?,
        state: MarketplaceOrderState::parse(&state)
            .ok_or_else(|| StorageError::Corrupt(format!("marketplace order state {state}")))?,
        raw_status: r.try_get("raw_status")?,
        reason: r.try_get("reason")?,
        invoice_id: r.try_get("invoice_id")?,
        total: r.try_get("total")?,
        payload: r.try_get::<Json<Value>, _>("payload")?.0,
        attempts: r.try_get("attempts")?,
        confirmed_at: r.try_get::<Option<i64>, _>("confirmed_at")?.map(ts),
        confirm_error: r.try_get("confirm_error")?,
        confirm_attempts: r.try_get("confirm_attempts")?,
        cancelled_at: r.try_get::<Option<i64>, _>("cancelled_at")?.map(ts),
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

/// What the events carry: the record without the raw payload.
fn mo_event(o: &MarketplaceOrderRecord) -> Value {
    json!({
        "order_id": o.id, "integration_id": o.integration_id, "type": o.kind,
        "external_id": o.external_id, "external_ref": o.external_ref(), "state": o.state,
        "raw_status": o.raw_status, "reason": o.reason, "invoice_id": o.invoice_id, "total": o.total,
    })
}

fn mo_lock() -> &'static str {
    if DIALECT == Dialect::Postgres { " FOR UPDATE" } else { "" }
}

async fn mo_in_tx(tx: &mut Tx, tenant: Uuid, integration: Uuid, external_id: &str) -> Result<Option<MarketplaceOrderRecord>> {
    let sql = format!(
        "SELECT {MO_COLS} FROM marketplace_orders WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3{}",
        mo_lock()
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(integration)
        .bind(external_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(mo_from_row).transpose()
}

/// Insert a new record unless one exists (a concurrent import); the row either way.
async fn mo_insert(
    tx: &mut Tx,
    tenant: Uuid,
    o: &OrderInput,
    state: MarketplaceOrderState,
    reason: Option<&str>,
    invoice_id: Option<Uuid>,
) -> Result<(MarketplaceOrderRecord, bool)> {
    let now = now_micros();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO marketplace_orders (tenant_id, id, integration_id, kind, external_id, state, raw_status, reason, \
         invoice_id, total, payload, attempts, cancelled_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $13) \
         ON CONFLICT (tenant_id, integration_id, external_id) DO NOTHING RETURNING id",
    )
    .bind(tenant)
    .bind(new_id())
    .bind(o.integration_id)
    .bind(&o.kind)
    .bind(&o.external_id)
    .bind(state.as_str())
    .bind(&o.raw_status)
    .bind(reason)
    .bind(invoice_id)
    .bind(o.total)
    .bind(Json(&o.payload))
    .bind((state == MarketplaceOrderState::Cancelled).then_some(now))
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let row = mo_in_tx(tx, tenant, o.integration_id, &o.external_id)
        .await?
        .ok_or(StorageError::NotFound("marketplace order"))?;
    Ok((row, inserted.is_some()))
}

/// Cancel an invoice still draft or reserved (the reservation is released, `stock.changed`
/// emitted); a shipped or cancelled one stays. Whether it was cancelled now.
async fn mo_cancel_invoice(tx: &mut Tx, tenant: Uuid, invoice_id: Uuid) -> Result<Option<InvoiceStatus>> {
    let sql = format!("SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND id = $2{}", mo_lock());
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(invoice_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let invoice = invoice_from_row(&row)?;
    if !matches!(invoice.status, InvoiceStatus::Draft | InvoiceStatus::Reserved) {
        return Ok(Some(invoice.status));
    }
    let settings = load_settings(tx, tenant).await?;
    let done = apply_invoice_action(tx, &Actor::system(tenant), &settings, invoice, InvoiceAction::Cancel).await?;
    Ok(Some(done.status))
}

async fn mo_set_cancelled(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    raw_status: &str,
    reason: Option<&str>,
    invoice_id: Option<Uuid>,
) -> Result<()> {
    let now = now_micros();
    sqlx::query(
        "UPDATE marketplace_orders SET state = 'cancelled', raw_status = $3, reason = $4, invoice_id = COALESCE(invoice_id, $5), \
         cancelled_at = $6, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(raw_status)
    .bind(reason)
    .bind(invoice_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn mo_cancel_reason(c: &OrderCancellation, invoice: Option<InvoiceStatus>) -> String {
    let mut r = match &c.reason {
        Some(why) if !why.trim().is_empty() => format!("cancelled on the marketplace: {}", why.trim()),
        _ => "cancelled on the marketplace".to_owned(),
    };
    if invoice == Some(InvoiceStatus::Shipped) {
        r.push_str("; the invoice was already shipped and stays as it is");
    }
    r
}

#[async_trait]
impl MarketplaceOrderStore for Backend {
    async fn claim_order_poll(
        &self,
        kinds: &[String],
        owner: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<OrderPollClaim>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let now_us = now.timestamp_micros();
        // A poll row for every enabled marketplace integration (new ones are due at once).
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "INSERT INTO marketplace_order_polls (tenant_id, integration_id, next_poll_at) SELECT tenant_id, id, ",
        );
        qb.push_bind(now_us);
        qb.push(" FROM integrations WHERE status <> 'disabled' AND type IN (");
        let mut sep = qb.separated(", ");
        for k in kinds {
            sep.push_bind(k.clone());
        }
        qb.push(") ON CONFLICT (tenant_id, integration_id) DO NOTHING");
        qb.build().execute(&self.write).await?;

        let mut tx = self.begin().await?;
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT p.tenant_id, p.integration_id, p.new_since, p.cancel_since FROM marketplace_order_polls p \
             JOIN integrations i ON i.tenant_id = p.tenant_id AND i.id = p.integration_id \
             WHERE i.status <> 'disabled' AND i.type IN (",
        );
        let mut sep = qb.separated(", ");
        for k in kinds {
            sep.push_bind(k.clone());
        }
        qb.push(") AND p.next_poll_at <= ").push_bind(now_us);
        qb.push(" AND (p.lease_until IS NULL OR p.lease_until <= ").push_bind(now_us);
        qb.push(") ORDER BY p.next_poll_at, p.integration_id LIMIT 1");
        if DIALECT == Dialect::Postgres {
            qb.push(" FOR UPDATE OF p SKIP LOCKED");
        }
        let Some(row) = qb.build().fetch_optional(&mut *tx).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let tenant: Uuid = row.try_get("tenant_id")?;
        let integration: Uuid = row.try_get("integration_id")?;
        let new_since: Option<i64> = row.try_get("new_since")?;
        let cancel_since: Option<i64> = row.try_get("cancel_since")?;
        sqlx::query(
            "UPDATE marketplace_order_polls SET lease_owner = $3, lease_until = $4 WHERE tenant_id = $1 AND integration_id = $2",
        )
        .bind(tenant)
        .bind(integration)
        .bind(owner)
        .bind(lease_until.timestamp_micros())
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {INTEGRATION_COLS} FROM integrations WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(integration)
            .fetch_one(&mut *tx)
            .await?;
        let integration = integration_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(OrderPollClaim {
            integration,
            new_since: new_since.map(ts),
            cancel_since: cancel_since.map(ts),
        }))
    }

    async fn finish_order_poll(&self, tenant: Uuid, integration: Uuid, owner: Uuid, done: &OrderPollDone) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE marketplace_order_polls SET new_since = $4, cancel_since = $5, next_poll_at = $6, last_error = $7, \
             last_polled_at = $8, lease_owner = NULL, lease_until = NULL \
             WHERE tenant_id = $1 AND integration_id = $2 AND lease_owner = $3",
        )
        .bind(tenant)
        .bind(integration)
        .bind(owner)
        .bind(done.new_since.map(|t| t.timestamp_micros()))
        .bind(done.cancel_since.map(|t| t.timestamp_micros()))
        .bind(done.next_poll_at.timestamp_micros())
        .bind(&done.error)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn get_marketplace_order(&self, tenant: Uuid, integration: Uuid, external_id: &str) -> Result<Option<MarketplaceOrderRecord>> {
        let sql = format!("SELECT {MO_COLS} FROM marketplace_orders WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(integration)
            .bind(external_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(mo_from_row).transpose()
    }

    async fn list_marketplace_orders(&self, tenant: Uuid, integration: Uuid, f: &OrderFilter) -> Result<Paged<MarketplaceOrderRecord>> {
        let limit = page_limit(f.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!("SELECT {MO_COLS} FROM marketplace_orders WHERE tenant_id = "));
        qb.push_bind(tenant);
        qb.push(" AND integration_id = ").push_bind(integration);
        if let Some(s) = f.state {
            qb.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(max) = f.unconfirmed_below {
            qb.push(" AND state = 'imported' AND confirmed_at IS NULL AND confirm_attempts < ").push_bind(max);
        }
        if let Some(c) = f.cursor {
            qb.push(" AND id > ").push_bind(c);
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows.iter().map(mo_from_row).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |o| o.id))
    }

    async fn map_order_lines(&self, tenant: Uuid, integration: Uuid, lines: &[(String, Option<String>)]) -> Result<Vec<Option<Uuid>>> {
        let mut out = Vec::with_capacity(lines.len());
        for (external_id, barcode) in lines {
            let item: Option<Option<Uuid>> = sqlx::query_scalar(
                "SELECT m.product_id FROM marketplace_items m \
                 LEFT JOIN products p ON p.tenant_id = m.tenant_id AND p.id = m.product_id AND p.deleted = FALSE \
                 WHERE m.tenant_id = $1 AND m.integration_id = $2 AND m.external_id = $3 \
                 AND (m.product_id IS NULL OR p.id IS NOT NULL)",
            )
            .bind(tenant)
            .bind(integration)
            .bind(external_id)
            .fetch_optional(&self.read)
            .await?;
            let mapped = match (item, barcode.as_deref().map(str::trim)) {
                (Some(product), _) => product,
                // Not in the pulled catalogue at all: a barcode is unique per tenant, so at most
                // one product carries it.
                (None, Some(b)) if !b.is_empty() => {
                    sqlx::query_scalar(
                        "SELECT b.product_id FROM product_barcodes b JOIN products p ON p.tenant_id = b.tenant_id AND p.id = b.product_id \
                         WHERE b.tenant_id = $1 AND b.barcode = $2 AND p.deleted = FALSE",
                    )
                    .bind(tenant)
                    .bind(b)
                    .fetch_optional(&self.read)
                    .await?
                }
                _ => None,
            };
            out.push(mapped);
        }
        Ok(out)
    }

    async fn record_order_imported(&self, tenant: Uuid, o: &OrderInput, invoice_id: Uuid) -> Result<(MarketplaceOrderRecord, bool)> {
        let mut tx = self.begin().await?;
        let existing = match mo_in_tx(&mut tx, tenant, o.integration_id, &o.external_id).await? {
            Some(r) => r,
            None => {
                let (r, inserted) = mo_insert(&mut tx, tenant, o, MarketplaceOrderState::Imported, None, Some(invoice_id)).await?;
                if inserted {
                    emit(&mut tx, tenant, "marketplace.order_imported", mo_event(&r)).await?;
                    self.commit(tx).await?;
                    return Ok((r, true));
                }
                r
            }
        };
        match existing.state {
            MarketplaceOrderState::Imported => {
                tx.commit().await?;
                Ok((existing, false))
            }
            MarketplaceOrderState::Cancelled => {
                // Cancelled while this import ran: the new invoice goes too.
                if existing.invoice_id.is_none_or(|i| i == invoice_id) {
                    mo_cancel_invoice(&mut tx, tenant, invoice_id).await?;
                    sqlx::query("UPDATE marketplace_orders SET invoice_id = $3 WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant)
                        .bind(existing.id)
                        .bind(invoice_id)
                        .execute(&mut *tx)
                        .await?;
                }
                self.commit(tx).await?;
                let r = self.get_marketplace_order(tenant, o.integration_id, &o.external_id).await?;
                Ok((r.unwrap_or(existing), false))
            }
            MarketplaceOrderState::NeedsAttention => {
                let now = now_micros();
                sqlx::query(
                    "UPDATE marketplace_orders SET state = 'imported', reason = NULL, invoice_id = $3, raw_status = $4, total = $5, \
                     payload = $6, attempts = attempts + 1, updated_at = $7 WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant)
                .bind(existing.id)
                .bind(invoice_id)
                .bind(&o.raw_status)
                .bind(o.total)
                .bind(Json(&o.payload))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let r = mo_in_tx(&mut tx, tenant, o.integration_id, &o.external_id)
                    .await?
                    .ok_or(StorageError::NotFound("marketplace order"))?;
                emit(&mut tx, tenant, "marketplace.order_imported", mo_event(&r)).await?;
                self.commit(tx).await?;
                Ok((r, true))
            }
        }
    }

    async fn record_order_attention(&self, tenant: Uuid, o: &OrderInput, reason: &str) -> Result<(MarketplaceOrderRecord, bool)> {
        let mut tx = self.begin().await?;
        let existing = match mo_in_tx(&mut tx, tenant, o.integration_id, &o.external_id).await? {
            Some(r) => r,
            None => {
                let (r, inserted) = mo_insert(&mut tx, tenant, o, MarketplaceOrderState::NeedsAttention, Some(reason), None).await?;
                if inserted {
                    emit(&mut tx, tenant, "marketplace.order_needs_attention", mo_event(&r)).await?;
                    self.commit(tx).await?;
                    return Ok((r, true));
                }
                r
            }
        };
        if existing.state != MarketplaceOrderState::NeedsAttention {
            tx.commit().await?;
            return Ok((existing, false));
        }
        let changed = existing.reason.as_deref() != Some(reason);
        sqlx::query(
            "UPDATE marketplace_orders SET reason = $3, raw_status = $4, total = $5, payload = $6, attempts = attempts + 1, \
             updated_at = $7 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(existing.id)
        .bind(reason)
        .bind(&o.raw_status)
        .bind(o.total)
        .bind(Json(&o.payload))
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let r = mo_in_tx(&mut tx, tenant, o.integration_id, &o.external_id)
            .await?
            .ok_or(StorageError::NotFound("marketplace order"))?;
        if changed {
            emit(&mut tx, tenant, "marketplace.order_needs_attention", mo_event(&r)).await?;
        }
        self.commit(tx).await?;
        Ok((r, changed))
    }

    async fn cancel_marketplace_order(&self, tenant: Uuid, c: &OrderCancellation) -> Result<CancelOutcome> {
        let mut tx = self.begin().await?;
        let record = match mo_in_tx(&mut tx, tenant, c.integration_id, &c.external_id).await? {
            Some(r) => r,
            None => {
                // Never recorded: only an invoice made just before a crash can exist.
                let ext = crate::marketplace_orders::external_ref(&c.kind, &c.external_id);
                let sql = format!("SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND external_ref = $2");
                let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(&ext).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    tx.commit().await?;
                    return Ok(CancelOutcome::Unknown);
                };
                let invoice = invoice_from_row(&row)?;
                let status = mo_cancel_invoice(&mut tx, tenant, invoice.id).await?;
                let input = OrderInput {
                    integration_id: c.integration_id,
                    kind: c.kind.clone(),
                    external_id: c.external_id.clone(),
                    raw_status: c.raw_status.clone(),
                    total: invoice.total,
                    payload: Value::Null,
                };
                let reason = mo_cancel_reason(c, status);
                let (r, _) = mo_insert(&mut tx, tenant, &input, MarketplaceOrderState::Cancelled, Some(&reason), Some(invoice.id)).await?;
                emit(&mut tx, tenant, "marketplace.order_cancelled", mo_event(&r)).await?;
                self.commit(tx).await?;
                return Ok(CancelOutcome::Cancelled(r));
            }
        };
        if record.state == MarketplaceOrderState::Cancelled {
            tx.commit().await?;
            return Ok(CancelOutcome::Already(record));
        }
        let status = match record.invoice_id {
            Some(i) => mo_cancel_invoice(&mut tx, tenant, i).await?,
            None => None,
        };
        let reason = mo_cancel_reason(c, status);
        mo_set_cancelled(&mut tx, tenant, record.id, &c.raw_status, Some(&reason), None).await?;
        let r = mo_in_tx(&mut tx, tenant, c.integration_id, &c.external_id)
            .await?
            .ok_or(StorageError::NotFound("marketplace order"))?;
        emit(&mut tx, tenant, "marketplace.order_cancelled", mo_event(&r)).await?;
        self.commit(tx).await?;
        Ok(CancelOutcome::Cancelled(r))
    }

    async fn set_order_confirmed(
        &self,
        tenant: Uuid,
        integration: Uuid,
        external_id: &str,
        outcome: std::result::Result<chrono::DateTime<chrono::Utc>, String>,
    ) -> Result<()> {
        let (at, error) = match outcome {
            Ok(at) => (Some(at.timestamp_micros()), None),
            Err(e) => (None, Some(e)),
        };
        sqlx::query(
            "UPDATE marketplace_orders SET confirmed_at = COALESCE(confirmed_at, $4), confirm_error = $5, \
             confirm_attempts = confirm_attempts + 1, updated_at = $6 \
             WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
        )
        .bind(tenant)
        .bind(integration)
        .bind(external_id)
        .bind(at)
        .bind(error)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
