// Payments by QR, shared by both backends (included after shared.rs).

use crate::payments::{ClickTx, PaymeTx, Payment, PaymentStore};

const PAYMENT_COLS: &str = "id, tenant_id, provider, integration_id, amount, store_id, terminal_id, receipt_id, description, status, checkout_url, expires_at, used_by_receipt, created_at, updated_at";
const PAYME_COLS: &str = "payme_id, payment_id, time, amount, create_time, perform_time, cancel_time, state, reason, seq";
const CLICK_COLS: &str = "click_trans_id, payment_id, click_paydoc_id, amount, merchant_prepare_id, merchant_confirm_id, status";

fn payment_from_row(r: &DbRow) -> Result<Payment> {
    Ok(Payment {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        provider: r.try_get("provider")?,
        integration_id: r.try_get("integration_id")?,
        amount: r.try_get("amount")?,
        store_id: r.try_get("store_id")?,
        terminal_id: r.try_get("terminal_id")?,
        receipt_id: r.try_get("receipt_id")?,
        description: r.try_get("description")?,
        status: r.try_get("status")?,
        checkout_url: r.try_get("checkout_url")?,
        expires_at: ts(r.try_get("expires_at")?),
        used_by_receipt: r.try_get("used_by_receipt")?,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

fn payme_from_row(r: &DbRow) -> Result<PaymeTx> {
    Ok(PaymeTx {
        payme_id: r.try_get("payme_id")?,
        payment_id: r.try_get("payment_id")?,
        time: r.try_get("time")?,
        amount: r.try_get("amount")?,
        create_time: r.try_get("create_time")?,
        perform_time: r.try_get("perform_time")?,
        cancel_time: r.try_get("cancel_time")?,
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
        seq: r.try_get("seq")?,
    })
}

fn click_from_row(r: &DbRow) -> Result<ClickTx> {
    Ok(ClickTx {
        click_trans_id: r.try_get("click_trans_id")?,
        payment_id: r.try_get("payment_id")?,
        click_paydoc_id: r.try_get("click_paydoc_id")?,
        amount: r.try_get("amount")?,
        merchant_prepare_id: r.try_get("merchant_prepare_id")?,
        merchant_confirm_id: r.try_get("merchant_confirm_id")?,
        status: r.try_get("status")?,
    })
}

fn payment_event(p: &Payment) -> Value {
    json!({
        "payment_id": p.id,
        "provider": p.provider,
        "integration_id": p.integration_id,
        "amount": p.amount,
        "store_id": p.store_id,
        "terminal_id": p.terminal_id,
        "receipt_id": p.receipt_id,
        "status": p.status,
    })
}

/// Move a payment to `to` (from one of `from`) in `tx`, emitting the event of the new status.
async fn payment_status_in_tx(
    tx: &mut Tx,
    tenant: Uuid,
    id: Uuid,
    from: &[&str],
    to: &str,
) -> Result<Option<Payment>> {
    let sql = format!("SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(mut p) = row.as_ref().map(payment_from_row).transpose()? else {
        return Ok(None);
    };
    if !from.contains(&p.status.as_str()) {
        return Ok(None);
    }
    let now = now_micros();
    let done = sqlx::query(
        "UPDATE payments SET status = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2 AND status = $5",
    )
    .bind(tenant)
    .bind(id)
    .bind(to)
    .bind(now)
    .bind(&p.status)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    p.status = to.to_owned();
    p.updated_at = ts(now);
    let kind = match to {
        "paid" => Some("payment.completed"),
        "cancelled" | "expired" => Some("payment.cancelled"),
        "refunded" => Some("payment.refunded"),
        _ => None,
    };
    if let Some(kind) = kind {
        emit(tx, tenant, kind, payment_event(&p)).await?;
    }
    Ok(Some(p))
}

/// Mark paid payments used by a receipt (`payments[i].payment_id`), in the receipt's
/// transaction: refused when not paid, for another amount, or already used.
async fn use_payments_in_tx(
    tx: &mut Tx,
    tenant: Uuid,
    receipt: Uuid,
    uses: &[(usize, Uuid, i64)],
) -> Result<()> {
    let mut errors = Vec::new();
    for (i, payment_id, amount) in uses {
        let field = format!("payments[{i}].payment_id");
        let sql = format!("SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(*payment_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(p) = row.as_ref().map(payment_from_row).transpose()? else {
            errors.push(FieldError::new(field, "no such payment"));
            continue;
        };
        if p.status != "paid" {
            errors.push(FieldError::new(
                field,
                format!("the payment is {}, not paid", p.status),
            ));
        } else if p.amount != *amount {
            errors.push(FieldError::new(
                field,
                format!("the payment is for {} tiyin, not {amount}", p.amount),
            ));
        } else if p.used_by_receipt.is_some() {
            errors.push(FieldError::new(
                field,
                "the payment is already used by another receipt",
            ));
        } else {
            let done = sqlx::query(
                "UPDATE payments SET used_by_receipt = $3, updated_at = $4 \
                 WHERE tenant_id = $1 AND id = $2 AND used_by_receipt IS NULL",
            )
            .bind(tenant)
            .bind(*payment_id)
            .bind(receipt)
            .bind(now_micros())
            .execute(&mut **tx)
            .await?;
            if done.rows_affected() == 0 {
                errors.push(FieldError::new(
                    field,
                    "the payment is already used by another receipt",
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StorageError::Invalid(errors))
    }
}

#[async_trait]
impl PaymentStore for Backend {
    async fn create_payment(&self, p: &Payment) -> Result<()> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "INSERT INTO payments ({PAYMENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(p.id)
            .bind(p.tenant_id)
            .bind(&p.provider)
            .bind(p.integration_id)
            .bind(p.amount)
            .bind(p.store_id)
            .bind(p.terminal_id)
            .bind(p.receipt_id)
            .bind(&p.description)
            .bind(&p.status)
            .bind(&p.checkout_url)
            .bind(p.expires_at.timestamp_micros())
            .bind(p.used_by_receipt)
            .bind(p.created_at.timestamp_micros())
            .bind(p.updated_at.timestamp_micros())
            .execute(&mut *tx)
            .await?;
        emit(&mut tx, p.tenant_id, "payment.created", payment_event(p)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_payment(&self, tenant: Uuid, id: Uuid) -> Result<Option<Payment>> {
        let sql = format!("SELECT {PAYMENT_COLS} FROM payments WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn set_payment_status(
        &self,
        tenant: Uuid,
        id: Uuid,
        from: &[&str],
        to: &str,
    ) -> Result<Option<Payment>> {
        let mut tx = self.begin().await?;
        let p = payment_status_in_tx(&mut tx, tenant, id, from, to).await?;
        tx.commit().await?;
        Ok(p)
    }

    async fn payme_tx(&self, integration: Uuid, payme_id: &str) -> Result<Option<PaymeTx>> {
        let sql = format!(
            "SELECT {PAYME_COLS} FROM payme_transactions WHERE integration_id = $1 AND payme_id = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(integration)
            .bind(payme_id)
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(payme_from_row).transpose()
    }

    async fn payme_txs_of_payment(&self, payment: Uuid) -> Result<Vec<PaymeTx>> {
        let sql = format!(
            "SELECT {PAYME_COLS} FROM payme_transactions WHERE payment_id = $1 ORDER BY create_time, seq"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(payment)
            .fetch_all(&self.write)
            .await?;
        rows.iter().map(payme_from_row).collect()
    }

    async fn save_payme_tx(
        &self,
        tenant: Uuid,
        integration: Uuid,
        t: &PaymeTx,
        payment_status: Option<(&[&str], &str)>,
    ) -> Result<PaymeTx> {
        let mut tx = self.begin().await?;
        let mut t = t.clone();
        if t.seq == 0 {
            t.seq = next_counter(&mut tx, tenant, "payme_transaction").await?;
            let sql = format!(
                "INSERT INTO payme_transactions (integration_id, tenant_id, {PAYME_COLS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(integration)
                .bind(tenant)
                .bind(&t.payme_id)
                .bind(t.payment_id)
                .bind(t.time)
                .bind(t.amount)
                .bind(t.create_time)
                .bind(t.perform_time)
                .bind(t.cancel_time)
                .bind(t.state)
                .bind(t.reason)
                .bind(t.seq)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE payme_transactions SET perform_time = $3, cancel_time = $4, state = $5, reason = $6 \
                 WHERE integration_id = $1 AND payme_id = $2",
            )
            .bind(integration)
            .bind(&t.payme_id)
            .bind(t.perform_time)
            .bind(t.cancel_time)
            .bind(t.state)
            .bind(t.reason)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((from, to)) = payment_status {
            payment_status_in_tx(&mut tx, tenant, t.payment_id, from, to).await?;
        }
        tx.commit().await?;
        Ok(t)
    }

    async fn payme_statement(&self, integration: Uuid, from: i64, to: i64) -> Result<Vec<PaymeTx>> {
        let sql = format!(
            "SELECT {PAYME_COLS} FROM payme_transactions WHERE integration_id = $1 \
             AND create_time >= $2 AND create_time <= $3 ORDER BY create_time, seq"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(integration)
            .bind(from)
            .bind(to)
            .fetch_all(&self.write)
            .await?;
        rows.iter().map(payme_from_row).collect()
    }

    async fn click_tx(&self, integration: Uuid, click_trans_id: i64) -> Result<Option<ClickTx>> {
        let sql = format!(
            "SELECT {CLICK_COLS} FROM click_transactions WHERE integration_id = $1 AND click_trans_id = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(integration)
            .bind(click_trans_id)
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(click_from_row).transpose()
    }

    async fn click_txs_of_payment(&self, payment: Uuid) -> Result<Vec<ClickTx>> {
        let sql = format!(
            "SELECT {CLICK_COLS} FROM click_transactions WHERE payment_id = $1 ORDER BY created_at, click_trans_id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(payment)
            .fetch_all(&self.write)
            .await?;
        rows.iter().map(click_from_row).collect()
    }

    async fn save_click_tx(
        &self,
        tenant: Uuid,
        integration: Uuid,
        t: &ClickTx,
        payment_status: Option<(&[&str], &str)>,
    ) -> Result<ClickTx> {
        let mut tx = self.begin().await?;
        let mut t = t.clone();
        let now = now_micros();
        if t.merchant_prepare_id == 0 {
            t.merchant_prepare_id = next_counter(&mut tx, tenant, "click_prepare").await?;
            let sql = format!(
                "INSERT INTO click_transactions (integration_id, tenant_id, created_at, updated_at, {CLICK_COLS}) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10)"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(integration)
                .bind(tenant)
                .bind(now)
                .bind(t.click_trans_id)
                .bind(t.payment_id)
                .bind(t.click_paydoc_id)
                .bind(&t.amount)
                .bind(t.merchant_prepare_id)
                .bind(t.merchant_confirm_id)
                .bind(&t.status)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE click_transactions SET merchant_confirm_id = $3, status = $4, updated_at = $5 \
                 WHERE integration_id = $1 AND click_trans_id = $2",
            )
            .bind(integration)
            .bind(t.click_trans_id)
            .bind(t.merchant_confirm_id)
            .bind(&t.status)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((from, to)) = payment_status {
            payment_status_in_tx(&mut tx, tenant, t.payment_id, from, to).await?;
        }
        tx.commit().await?;
        Ok(t)
    }

    async fn next_payment_number(&self, tenant: Uuid, name: &str) -> Result<i64> {
        let mut tx = self.begin().await?;
        let v = next_counter(&mut tx, tenant, name).await?;
        tx.commit().await?;
        Ok(v)
    }
}
