// Fiscal storage, shared by both backends (included after shared.rs).

use crate::fiscal::UnsettledReceipt;
use crate::fiscal::{FiscalStatus, FiscalStore, FiscalUpdate, ReceiptFiscal, TerminalFiscal};

/// Whether a stored `fiscal` value says the receipt is registered (by us or by the till).
fn fiscal_registered(v: Option<&Value>) -> bool {
    v.and_then(|f| f.get("status"))
        .and_then(Value::as_str)
        .is_some_and(|s| s == FiscalStatus::Registered.as_str())
}

/// A receipt's next check in a reconciliation table (`fiscal_unsettled`, `marking_rechecks`:
/// one row per receipt with `next_check_at`, `checks` and `last_error`), pushed back with the
/// attempt counted.
async fn recheck_later(
    db: &sqlx::Pool<Db>,
    table: &'static str,
    tenant: Uuid,
    receipt_id: Uuid,
    next_at: chrono::DateTime<chrono::Utc>,
    error: &str,
) -> Result<()> {
    let sql = format!(
        "UPDATE {table} SET next_check_at = $3, checks = checks + 1, last_error = $4 \
         WHERE tenant_id = $1 AND receipt_id = $2"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(receipt_id)
        .bind(next_at.timestamp_micros())
        .bind(error)
        .execute(db)
        .await?;
    Ok(())
}

/// A receipt's row of a reconciliation table, removed: nothing left to check.
async fn recheck_done(
    db: &sqlx::Pool<Db>,
    table: &'static str,
    tenant: Uuid,
    receipt_id: Uuid,
) -> Result<()> {
    let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND receipt_id = $2");
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(receipt_id)
        .execute(db)
        .await?;
    Ok(())
}

#[async_trait]
impl FiscalStore for Backend {
    async fn set_terminal_fiscal(
        &self,
        actor: &Actor,
        terminal_id: Uuid,
        fiscal: Option<&TerminalFiscal>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM terminals WHERE tenant_id = $1 AND id = $2")
                .bind(actor.tenant_id)
                .bind(terminal_id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(StorageError::NotFound("terminal"));
        }
        match fiscal {
            Some(f) => {
                sqlx::query(
                    "INSERT INTO terminal_fiscal (tenant_id, terminal_id, gateway_url, device_id, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, terminal_id) DO UPDATE \
                     SET gateway_url = excluded.gateway_url, device_id = excluded.device_id, updated_at = excluded.updated_at",
                )
                .bind(actor.tenant_id)
                .bind(terminal_id)
                .bind(&f.gateway_url)
                .bind(&f.device_id)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
                audit(
                    &mut tx,
                    actor,
                    "set_fiscal",
                    "terminal",
                    Some(terminal_id.to_string()),
                    json!({"gateway_url": f.gateway_url, "device_id": f.device_id}),
                )
                .await?;
            }
            None => {
                sqlx::query(
                    "DELETE FROM terminal_fiscal WHERE tenant_id = $1 AND terminal_id = $2",
                )
                .bind(actor.tenant_id)
                .bind(terminal_id)
                .execute(&mut *tx)
                .await?;
                audit(
                    &mut tx,
                    actor,
                    "remove_fiscal",
                    "terminal",
                    Some(terminal_id.to_string()),
                    json!({}),
                )
                .await?;
            }
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn terminal_fiscal(
        &self,
        tenant: Uuid,
        terminal_id: Uuid,
    ) -> Result<Option<TerminalFiscal>> {
        let row = sqlx::query("SELECT gateway_url, device_id FROM terminal_fiscal WHERE tenant_id = $1 AND terminal_id = $2")
            .bind(tenant)
            .bind(terminal_id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(TerminalFiscal {
                gateway_url: r.try_get("gateway_url")?,
                device_id: r.try_get("device_id")?,
            })
        })
        .transpose()
    }

    async fn fiscal_terminals(&self, tenant: Uuid, terminal_ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
        let mut ids = terminal_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut found = std::collections::HashSet::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = tenant_rows_by("SELECT terminal_id FROM terminal_fiscal", tenant, "terminal_id", chunk);
            found.extend(qb.build_query_scalar::<Uuid>().fetch_all(&self.read).await?);
        }
        Ok(found)
    }

    async fn set_receipt_fiscal(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        fiscal: &ReceiptFiscal,
    ) -> Result<FiscalUpdate> {
        let mut tx = self.begin().await?;
        let lock = if DIALECT == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!("SELECT doc FROM receipts WHERE tenant_id = $1 AND id = $2{lock}");
        let doc: Option<Json<Receipt>> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(receipt_id)
            .fetch_optional(&mut *tx)
            .await?;
        let mut receipt = doc.ok_or(StorageError::NotFound("receipt"))?.0;
        let current: Option<ReceiptFiscal> = receipt
            .fiscal
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let unchanged = current.as_ref().is_some_and(|c| fiscal.same_state(c));
        if unchanged || fiscal_registered(receipt.fiscal.as_ref()) {
            tx.rollback().await?;
            return Ok(FiscalUpdate {
                receipt,
                changed: false,
                fiscalized: false,
            });
        }
        receipt.fiscal = Some(serde_json::to_value(fiscal)?);
        sqlx::query("UPDATE receipts SET doc = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(receipt_id)
            .bind(Json(&receipt))
            .execute(&mut *tx)
            .await?;
        // The reconciliation list follows the state: unsettled joins it, settled leaves it.
        if matches!(fiscal.status, FiscalStatus::Pending | FiscalStatus::Queued) {
            let since = fiscal.updated_at.timestamp_micros();
            sqlx::query(
                "INSERT INTO fiscal_unsettled (tenant_id, receipt_id, since, next_check_at, checks) \
                 VALUES ($1, $2, $3, $3, 0) ON CONFLICT (tenant_id, receipt_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(receipt_id)
            .bind(since)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM fiscal_unsettled WHERE tenant_id = $1 AND receipt_id = $2")
                .bind(tenant)
                .bind(receipt_id)
                .execute(&mut *tx)
                .await?;
        }
        let fiscalized = fiscal.status == FiscalStatus::Registered;
        if fiscalized {
            emit(
                &mut tx,
                tenant,
                "receipt.fiscalized",
                serde_json::to_value(&receipt)?,
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(FiscalUpdate {
            receipt,
            changed: true,
            fiscalized,
        })
    }

    async fn fiscal_unsettled(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        older_than: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<UnsettledReceipt>> {
        let rows = sqlx::query(
            "SELECT tenant_id, receipt_id, since, checks FROM fiscal_unsettled \
             WHERE next_check_at <= $1 AND since <= $2 ORDER BY next_check_at LIMIT $3",
        )
        .bind(now.timestamp_micros())
        .bind(older_than.timestamp_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let checks: i64 = r.try_get("checks")?;
                Ok(UnsettledReceipt {
                    tenant_id: r.try_get("tenant_id")?,
                    receipt_id: r.try_get("receipt_id")?,
                    since: ts(r.try_get("since")?),
                    checks: u32::try_from(checks).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn claim_fiscal_check(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        // A conditional update: of two workers, the second finds the check no longer due.
        let done = sqlx::query(
            "UPDATE fiscal_unsettled SET next_check_at = $4 \
             WHERE tenant_id = $1 AND receipt_id = $2 AND next_check_at <= $3",
        )
        .bind(tenant)
        .bind(receipt_id)
        .bind(now.timestamp_micros())
        .bind(lease_until.timestamp_micros())
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fiscal_check_later(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        next_at: chrono::DateTime<chrono::Utc>,
        error: &str,
    ) -> Result<()> {
        recheck_later(&self.write, "fiscal_unsettled", tenant, receipt_id, next_at, error).await
    }

    async fn fiscal_check_done(&self, tenant: Uuid, receipt_id: Uuid) -> Result<()> {
        recheck_done(&self.write, "fiscal_unsettled", tenant, receipt_id).await
    }
}
