// Webhook storage, shared by both backends (included after shared.rs).

use crate::webhooks::{
    AttemptRecord, Delivery, DeliveryStatus, DueDelivery, NewWebhook, SealedSecret, StoredSecrets,
    Webhook, WebhookPatch, WebhookSecrets, mask_secret,
};

// Never the secret itself: only its hint, for the mask.
const WEBHOOK_COLS: &str = "id, tenant_id, url, events, description, enabled, secret_hint, failing_since, disabled_reason, created_at, updated_at";
const DELIVERY_COLS: &str = "id, webhook_id, event_id, event_type, status, attempts, response_code, latency_ms, response_body, last_error, next_attempt_at, created_at, updated_at";

fn webhook_from_row(r: &DbRow) -> Result<Webhook> {
    let hint: Option<String> = r.try_get("secret_hint")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        url: r.try_get("url")?,
        events: r.try_get::<Json<Vec<String>>, _>("events")?.0,
        description: r.try_get("description")?,
        enabled: r.try_get("enabled")?,
        secret: mask_secret(hint.as_deref().unwrap_or("")),
        failing_since: r.try_get::<Option<i64>, _>("failing_since")?.map(ts),
        disabled_reason: r.try_get("disabled_reason")?,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

fn delivery_from_row(r: &DbRow) -> Result<Delivery> {
    let status: String = r.try_get("status")?;
    let attempts: i64 = r.try_get("attempts")?;
    let code: Option<i64> = r.try_get("response_code")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StorageError::Corrupt(format!("delivery status {status}")))?,
        attempts: attempts.max(0) as u32,
        response_code: code.and_then(|c| u16::try_from(c).ok()),
        latency_ms: r.try_get("latency_ms")?,
        response_body: r.try_get("response_body")?,
        last_error: r.try_get("last_error")?,
        next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(ts),
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

async fn webhook_in_tx(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Webhook> {
    let sql = format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StorageError::NotFound("webhook"))?;
    webhook_from_row(&row)
}

fn webhook_summary(w: &Webhook) -> Value {
    json!({ "id": w.id, "url": w.url, "events": w.events, "enabled": w.enabled })
}

#[async_trait]
impl crate::webhooks::WebhookStore for Backend {
    async fn create_webhook(&self, actor: &Actor, new: &NewWebhook) -> Result<Webhook> {
        let id = new.id;
        let now = now_micros();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO webhooks (id, tenant_id, url, events, description, enabled, secret, secret_hint, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8, $8)",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(&new.url)
        .bind(Json(&new.events))
        .bind(&new.description)
        .bind(true)
        .bind(&new.secret.sealed)
        .bind(now)
        .bind(&new.secret.hint)
        .execute(&mut *tx)
        .await?;
        let w = webhook_in_tx(&mut tx, actor.tenant_id, id).await?;
        audit(
            &mut tx,
            actor,
            "webhook.create",
            "webhook",
            Some(id.to_string()),
            webhook_summary(&w),
        )
        .await?;
        self.commit(tx).await?;
        Ok(w)
    }

    async fn list_webhooks(&self, tenant: Uuid) -> Result<Vec<Webhook>> {
        let sql = format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE tenant_id = $1 ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn get_webhook(&self, tenant: Uuid, id: Uuid) -> Result<Webhook> {
        let sql = format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StorageError::NotFound("webhook"))?;
        webhook_from_row(&row)
    }

    async fn update_webhook(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: &WebhookPatch,
    ) -> Result<Webhook> {
        let mut tx = self.begin().await?;
        let old = webhook_in_tx(&mut tx, actor.tenant_id, id).await?;
        let url = patch.url.clone().unwrap_or(old.url.clone());
        let events = patch.events.clone().unwrap_or(old.events.clone());
        let description = match &patch.description {
            Some(d) => d.clone(),
            None => old.description.clone(),
        };
        let enabled = patch.enabled.unwrap_or(old.enabled);
        // Enabling (again) starts with a clean failure record.
        let reenabled = patch.enabled == Some(true);
        sqlx::query(
            "UPDATE webhooks SET url = $3, events = $4, description = $5, enabled = $6, \
             failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END, \
             disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END, updated_at = $8 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(actor.tenant_id)
        .bind(id)
        .bind(&url)
        .bind(Json(&events))
        .bind(&description)
        .bind(enabled)
        .bind(reenabled)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let w = webhook_in_tx(&mut tx, actor.tenant_id, id).await?;
        audit(
            &mut tx,
            actor,
            "webhook.update",
            "webhook",
            Some(id.to_string()),
            webhook_summary(&w),
        )
        .await?;
        self.commit(tx).await?;
        Ok(w)
    }

    async fn delete_webhook(&self, actor: &Actor, id: Uuid) -> Result<()> {
        let mut tx = self.begin().await?;
        let old = webhook_in_tx(&mut tx, actor.tenant_id, id).await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            "webhook.delete",
            "webhook",
            Some(id.to_string()),
            webhook_summary(&old),
        )
        .await?;
        self.commit(tx).await
    }

    async fn rotate_webhook_secret(
        &self,
        actor: &Actor,
        id: Uuid,
        new_secret: &SealedSecret,
        previous_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Webhook> {
        let mut tx = self.begin().await?;
        webhook_in_tx(&mut tx, actor.tenant_id, id).await?;
        sqlx::query(
            "UPDATE webhooks SET prev_secret = secret, prev_secret_until = $3, secret = $4, secret_hint = $6, updated_at = $5 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(actor.tenant_id)
        .bind(id)
        .bind(previous_until.timestamp_micros())
        .bind(&new_secret.sealed)
        .bind(now_micros())
        .bind(&new_secret.hint)
        .execute(&mut *tx)
        .await?;
        let w = webhook_in_tx(&mut tx, actor.tenant_id, id).await?;
        // The audit entry says that it happened, never what the secret is.
        audit(
            &mut tx,
            actor,
            "webhook.rotate_secret",
            "webhook",
            Some(id.to_string()),
            json!({ "previous_valid_until": previous_until }),
        )
        .await?;
        self.commit(tx).await?;
        Ok(w)
    }

    async fn webhook_secrets_batch(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<StoredSecrets>> {
        let rows = sqlx::query(
            "SELECT tenant_id, id, secret, prev_secret FROM webhooks WHERE ($1 OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(after.is_none())
        .bind(after.unwrap_or_default())
        .bind(limit.clamp(1, 1000) as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredSecrets {
                    tenant_id: r.try_get("tenant_id")?,
                    id: r.try_get("id")?,
                    secret: r.try_get("secret")?,
                    prev_secret: r.try_get("prev_secret")?,
                })
            })
            .collect()
    }

    async fn swap_webhook_secrets(
        &self,
        old: &StoredSecrets,
        secret: &str,
        prev_secret: Option<&str>,
        hint: Option<&str>,
    ) -> Result<bool> {
        // Not `updated_at`: re-sealing changes nothing a user would see.
        let r = sqlx::query(
            "UPDATE webhooks SET secret = $5, prev_secret = $6, secret_hint = COALESCE($7, secret_hint) \
             WHERE tenant_id = $1 AND id = $2 AND secret = $3 AND COALESCE(prev_secret, '') = COALESCE($4, '')",
        )
        .bind(old.tenant_id)
        .bind(old.id)
        .bind(&old.secret)
        .bind(&old.prev_secret)
        .bind(secret)
        .bind(prev_secret)
        .bind(hint)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn enabled_webhooks(&self, tenant: Uuid) -> Result<Vec<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLS} FROM webhooks WHERE tenant_id = $1 AND enabled = $2 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(true)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn enqueue_deliveries_many(&self, events: &[crate::webhooks::EventDeliveries], now: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        if events.iter().all(|e| e.webhook_ids.is_empty()) {
            return Ok(0);
        }
        let now = now.timestamp_micros();
        let mut tx = self.begin().await?;
        let mut created = 0;
        for e in events {
            for wid in &e.webhook_ids {
                let r = sqlx::query(
                    "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, event_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at) \
                     SELECT $1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $7 WHERE EXISTS (SELECT 1 FROM webhooks WHERE tenant_id = $2 AND id = $3) \
                     ON CONFLICT (webhook_id, event_id) DO NOTHING",
                )
                .bind(new_id())
                .bind(e.tenant)
                .bind(*wid)
                .bind(e.event_id)
                .bind(&e.event_type)
                .bind(Json(&e.payload))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                created += r.rows_affected() as usize;
            }
        }
        self.commit(tx).await?;
        Ok(created)
    }

    async fn list_deliveries(
        &self,
        tenant: Uuid,
        webhook_id: Uuid,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(webhook_id)
            .bind(page_limit(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn get_delivery(&self, tenant: Uuid, webhook_id: Uuid, id: Uuid) -> Result<Delivery> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(webhook_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StorageError::NotFound("delivery"))?;
        delivery_from_row(&row)
    }

    async fn requeue_delivery(
        &self,
        tenant: Uuid,
        webhook_id: Uuid,
        id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Delivery> {
        let r = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, updated_at = $4 \
             WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3",
        )
        .bind(tenant)
        .bind(webhook_id)
        .bind(id)
        .bind(now.timestamp_micros())
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound("delivery"));
        }
        self.outbox_notify.notify_one();
        self.get_delivery(tenant, webhook_id, id).await
    }

    async fn claim_due_deliveries(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        let now = now.timestamp_micros();
        let lease = lease_until.timestamp_micros();
        let lock = if DIALECT == Dialect::Postgres {
            " FOR UPDATE OF d SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "SELECT d.id AS d_id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempts, d.response_code, d.latency_ms, \
             d.response_body, d.last_error, d.next_attempt_at, d.created_at, d.updated_at, d.payload, d.tenant_id, \
             w.url, w.secret, w.prev_secret, w.prev_secret_until \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= $1 AND w.enabled = $2 \
             ORDER BY d.next_attempt_at LIMIT $3{lock}"
        );
        let mut tx = self.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(true)
            .bind(limit.clamp(1, 1000) as i64)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: Uuid = r.try_get("d_id")?;
            sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1")
                .bind(id)
                .bind(lease)
                .execute(&mut *tx)
                .await?;
            let status: String = r.try_get("status")?;
            let attempts: i64 = r.try_get("attempts")?;
            let code: Option<i64> = r.try_get("response_code")?;
            let prev: Option<String> = r.try_get("prev_secret")?;
            let prev_until: Option<i64> = r.try_get("prev_secret_until")?;
            out.push(DueDelivery {
                delivery: Delivery {
                    id,
                    webhook_id: r.try_get("webhook_id")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    status: DeliveryStatus::parse(&status).ok_or_else(|| {
                        StorageError::Corrupt(format!("delivery status {status}"))
                    })?,
                    attempts: attempts.max(0) as u32,
                    response_code: code.and_then(|c| u16::try_from(c).ok()),
                    latency_ms: r.try_get("latency_ms")?,
                    response_body: r.try_get("response_body")?,
                    last_error: r.try_get("last_error")?,
                    next_attempt_at: Some(ts(lease)),
                    created_at: ts(r.try_get("created_at")?),
                    updated_at: ts(r.try_get("updated_at")?),
                },
                tenant_id: r.try_get("tenant_id")?,
                url: r.try_get("url")?,
                payload: r.try_get::<Json<Value>, _>("payload")?.0,
                secrets: WebhookSecrets {
                    current: r.try_get("secret")?,
                    previous: prev.zip(prev_until.map(ts)),
                },
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn record_attempt(&self, rec: &AttemptRecord) -> Result<bool> {
        let at = rec.at.timestamp_micros();
        let status = if rec.success {
            DeliveryStatus::Succeeded
        } else if rec.next_attempt_at.is_some() {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Dead
        };
        let error: Option<String> = rec.error.as_ref().map(|e| e.chars().take(2000).collect());
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, response_code = $3, latency_ms = $4, \
             response_body = $5, last_error = $6, next_attempt_at = $7, updated_at = $8 WHERE id = $1 \
             RETURNING tenant_id, webhook_id",
        )
        .bind(rec.delivery_id)
        .bind(status.as_str())
        .bind(rec.response_code.map(i64::from))
        .bind(rec.latency_ms)
        .bind(&rec.response_body)
        .bind(&error)
        .bind(rec.next_attempt_at.map(|t| t.timestamp_micros()))
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        // The endpoint was deleted meanwhile: nothing to record.
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(false);
        };
        let tenant: Uuid = row.try_get("tenant_id")?;
        let webhook_id: Uuid = row.try_get("webhook_id")?;
        if rec.success {
            sqlx::query("UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                .bind(webhook_id)
                .execute(&mut *tx)
                .await?;
            self.commit(tx).await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE webhooks SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL",
        )
        .bind(webhook_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let limit = at - rec.disable_after.num_microseconds().unwrap_or(i64::MAX);
        let reason = "failing continuously for 5 days";
        let disabled = sqlx::query(
            "UPDATE webhooks SET enabled = $2, disabled_reason = $3, updated_at = $4 \
             WHERE id = $1 AND enabled = $5 AND failing_since IS NOT NULL AND failing_since <= $6",
        )
        .bind(webhook_id)
        .bind(false)
        .bind(reason)
        .bind(now_micros())
        .bind(true)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if disabled {
            let w = webhook_in_tx(&mut tx, tenant, webhook_id).await?;
            emit(
                &mut tx,
                tenant,
                "webhook.disabled",
                json!({
                    "webhook_id": w.id,
                    "url": w.url,
                    "reason": reason,
                    "failing_since": w.failing_since,
                    "disabled_at": rec.at,
                }),
            )
            .await?;
            tracing::warn!(webhook = %webhook_id, tenant = %tenant, "webhook endpoint disabled after failing continuously");
        }
        self.commit(tx).await?;
        Ok(disabled)
    }
}
