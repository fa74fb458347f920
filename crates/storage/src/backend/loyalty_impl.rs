// Loyalty quotes and journal, shared by both backends (included after shared.rs).

use crate::loyalty::{JournalEntry, LoyaltyStore, ProviderCustomer, StoredQuote};

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn json_col(r: &DbRow, col: &str) -> Result<Value> {
    let s: String = r.try_get(col)?;
    Ok(serde_json::from_str(&s).unwrap_or(Value::Null))
}

#[async_trait]
impl LoyaltyStore for Backend {
    async fn put_loyalty_quote(&self, q: &StoredQuote) -> Result<()> {
        sqlx::query(
            "INSERT INTO loyalty_quotes (tenant_id, id, store_id, customer_id, external_customer_id, \
             lines, discounts, points, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(q.tenant_id)
        .bind(q.id)
        .bind(q.store_id)
        .bind(q.customer_id)
        .bind(&q.external_customer_id)
        .bind(json_text(&q.lines))
        .bind(json_text(&q.discounts))
        .bind(json_text(&q.points))
        .bind(q.expires_at.timestamp_micros())
        .bind(q.created_at.timestamp_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_loyalty_quote(&self, tenant: Uuid, id: Uuid) -> Result<Option<StoredQuote>> {
        let row = sqlx::query(
            "SELECT tenant_id, id, store_id, customer_id, external_customer_id, lines, discounts, \
             points, expires_at, created_at FROM loyalty_quotes WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some(StoredQuote {
            tenant_id: r.try_get("tenant_id")?,
            id: r.try_get("id")?,
            store_id: r.try_get("store_id")?,
            customer_id: r.try_get("customer_id")?,
            external_customer_id: r.try_get("external_customer_id")?,
            lines: json_col(&r, "lines")?,
            discounts: json_col(&r, "discounts")?,
            points: json_col(&r, "points")?,
            expires_at: ts(r.try_get("expires_at")?),
            created_at: ts(r.try_get("created_at")?),
        }))
    }

    async fn append_loyalty_journal(&self, tenant: Uuid, e: &JournalEntry) -> Result<()> {
        insert_journal(&self.write, tenant, e).await
    }

    async fn append_loyalty_journal_with_event(
        &self,
        tenant: Uuid,
        e: &JournalEntry,
        kind: &str,
        data: Value,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_journal(&mut *tx, tenant, e).await?;
        emit(&mut tx, tenant, kind, data).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn customer_by_external_id(
        &self,
        tenant: Uuid,
        kind: &str,
        external_id: &str,
    ) -> Result<Option<Customer>> {
        let cond = match DIALECT {
            Dialect::Sqlite => "json_extract(external_ids, '$.' || $2) = $3",
            Dialect::Postgres => "external_ids ->> $2 = $3",
        };
        let sql = format!(
            "SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 AND {cond} ORDER BY id LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(kind)
            .bind(external_id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(customer_from_row).transpose()
    }

    async fn set_receipt_loyalty(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        patch: &Value,
    ) -> Result<Receipt> {
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
        let mut merged = match receipt.loyalty.take() {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        if let Some(p) = patch.as_object() {
            for (k, v) in p {
                merged.insert(k.clone(), v.clone());
            }
        }
        receipt.loyalty = Some(Value::Object(merged));
        sqlx::query("UPDATE receipts SET doc = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(receipt_id)
            .bind(Json(&receipt))
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(receipt)
    }

    async fn emit_loyalty_event(&self, tenant: Uuid, kind: &str, data: Value) -> Result<()> {
        let mut tx = self.begin().await?;
        emit(&mut tx, tenant, kind, data).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn refresh_loyalty_customer(
        &self,
        tenant: Uuid,
        customer_id: Uuid,
        update: &ProviderCustomer,
        mut event: Value,
    ) -> Result<(Customer, Vec<&'static str>)> {
        let mut tx = self.begin().await?;
        let lock = if DIALECT == Dialect::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql =
            format!("SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 AND id = $2{lock}");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(customer_id)
            .fetch_optional(&mut *tx)
            .await?;
        let mut customer = customer_from_row(&row.ok_or(StorageError::NotFound("customer"))?)?;
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT loyalty_updated_at FROM customers WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(customer_id)
        .fetch_one(&mut *tx)
        .await?;
        let at = update.at.map(|t| t.timestamp_micros());
        // A late delivery of an older change: what is stored is newer.
        let stale = matches!((at, last), (Some(at), Some(last)) if at <= last);
        if let Some(at) = at.filter(|_| !stale) {
            sqlx::query(
                "UPDATE customers SET loyalty_updated_at = $3 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        let name = update
            .name
            .as_deref()
            .filter(|n| !stale && *n != customer.name);
        let phone = update
            .phone
            .as_deref()
            .filter(|p| !stale && customer.phone.as_deref() != Some(*p));
        let mut changed = Vec::new();
        if name.is_some() {
            changed.push("name");
        }
        if phone.is_some() {
            changed.push("phone");
        }
        if !changed.is_empty() {
            let f = CustomerFields {
                name: name.map_or_else(|| customer.name.clone(), str::to_owned),
                phone: phone.map(str::to_owned).or_else(|| customer.phone.clone()),
                loyalty_card: customer.loyalty_card.clone(),
                external_ids: customer.external_ids.clone(),
            };
            customer =
                write_customer(&mut tx, &Actor::system(tenant), customer_id, &f, false).await?;
        }
        if let Some(o) = event.as_object_mut() {
            o.insert("changed".to_owned(), json!(changed));
            o.insert("stale".to_owned(), json!(stale));
        }
        emit(&mut tx, tenant, "customer.loyalty_updated", event).await?;
        self.commit(tx).await?;
        Ok((customer, changed))
    }

    async fn list_loyalty_journal(
        &self,
        tenant: Uuid,
        receipt: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<JournalEntry>> {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT id, kind, receipt_id, customer_ref, request, status, error, result, at \
             FROM loyalty_journal WHERE tenant_id = ",
        );
        qb.push_bind(tenant);
        if let Some(r) = receipt {
            qb.push(" AND receipt_id = ").push_bind(r);
        }
        qb.push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit.clamp(1, 500)));
        let rows = qb.build().fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok(JournalEntry {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    receipt_id: r.try_get("receipt_id")?,
                    customer_ref: r.try_get("customer_ref")?,
                    request: json_col(r, "request")?,
                    status: r.try_get("status")?,
                    error: r.try_get("error")?,
                    result: json_col(r, "result")?,
                    at: ts(r.try_get("at")?),
                })
            })
            .collect()
    }
}

async fn insert_journal<'e, E>(ex: E, tenant: Uuid, e: &JournalEntry) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    sqlx::query(
        "INSERT INTO loyalty_journal (tenant_id, id, kind, receipt_id, customer_ref, request, \
         status, error, result, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(tenant)
    .bind(e.id)
    .bind(&e.kind)
    .bind(e.receipt_id)
    .bind(&e.customer_ref)
    .bind(json_text(&e.request))
    .bind(&e.status)
    .bind(&e.error)
    .bind(json_text(&e.result))
    .bind(e.at.timestamp_micros())
    .execute(ex)
    .await?;
    Ok(())
}
