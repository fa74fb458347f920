// Event bus storage, shared by both backends (included after shared.rs). The relay's
// claiming differs per backend and lives in `sqlite.rs` / `postgres.rs` (`relay_batch_impl`).

fn outbox_from_row(r: &DbRow, seq_col: &str) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        seq: r.try_get(seq_col)?,
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        kind: r.try_get("type")?,
        data: r.try_get::<Json<Value>, _>("data")?.0,
        time: ts(r.try_get("created_at")?),
    })
}

#[async_trait]
impl crate::bus::EventStore for Backend {
    async fn relay(&self, limit: u32, publish: crate::bus::PublishFn<'_>) -> Result<crate::bus::Relayed> {
        self.relay_batch_impl(limit.clamp(1, 10_000) as i64, publish).await
    }

    async fn published_after(&self, pub_seq: i64, limit: u32) -> Result<Vec<OutboxEvent>> {
        let sql = "SELECT p.pub_seq, o.id, o.tenant_id, o.type, o.data, o.created_at FROM outbox_pub p \
                   JOIN outbox o ON o.seq = p.seq WHERE p.pub_seq > $1 ORDER BY p.pub_seq LIMIT $2";
        let rows = sqlx::query(sql)
        .bind(pub_seq)
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| outbox_from_row(r, "pub_seq")).collect()
    }

    async fn last_pub_seq(&self) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(pub_seq) FROM outbox_pub").fetch_one(&self.read).await?;
        Ok(v.unwrap_or(0))
    }

    async fn outbox_backlog(&self) -> Result<i64> {
        match DIALECT {
            Dialect::Sqlite => Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM outbox_pub)",
            )
            .fetch_one(&self.read)
            .await?),
            // Rows commit out of `seq` order: see `relay_batch_impl` in postgres.rs. The floor
            // is bound so that the count is planned for its value.
            Dialect::Postgres => {
                let floor: i64 = sqlx::query_scalar("SELECT floor FROM outbox_relay")
                    .fetch_one(&self.read)
                    .await?;
                Ok(sqlx::query_scalar(
                    "SELECT COUNT(*) FROM outbox o WHERE o.txid >= $1 \
                     AND NOT EXISTS (SELECT 1 FROM outbox_pub p WHERE p.seq = o.seq)",
                )
                .bind(floor)
                .persistent(false)
                .fetch_one(&self.read)
                .await?)
            }
        }
    }

    async fn consumer_position(&self, consumer: &str) -> Result<i64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT position FROM consumer_positions WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&self.read)
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn save_consumer_position(&self, consumer: &str, pub_seq: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO consumer_positions (consumer, position, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        )
        .bind(consumer)
        .bind(pub_seq)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn inbox_begin(&self, consumer: &str, event: &OutboxEvent) -> Result<crate::bus::InboxState> {
        use crate::bus::InboxState;
        let r = sqlx::query(
            "INSERT INTO consumer_inbox (consumer, event_id, tenant_id, status, attempts, event, updated_at) \
             VALUES ($1, $2, $3, 'processing', 0, $4, $5) ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event.id)
        .bind(event.tenant_id)
        .bind(Json(serde_json::to_value(event)?))
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(InboxState::New);
        }
        let row = sqlx::query("SELECT status, attempts FROM consumer_inbox WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event.id)
            .fetch_one(&self.write)
            .await?;
        let status: String = row.try_get("status")?;
        let attempts: i64 = row.try_get("attempts")?;
        Ok(match status.as_str() {
            "done" => InboxState::Done,
            "dead" => InboxState::Dead,
            _ => InboxState::Retry { attempts: attempts.max(0) as u32 },
        })
    }

    async fn inbox_done(&self, consumer: &str, event_id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE consumer_inbox SET status = 'done', attempts = attempts + 1, event = NULL, next_attempt_at = NULL, updated_at = $3 \
             WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn inbox_fail(
        &self,
        consumer: &str,
        event_id: Uuid,
        error: &str,
        next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<()> {
        let status = if next_attempt_at.is_some() { "retry" } else { "dead" };
        let error: String = error.chars().take(2000).collect();
        sqlx::query(
            "UPDATE consumer_inbox SET status = $3, attempts = attempts + 1, last_error = $4, next_attempt_at = $5, updated_at = $6 \
             WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(status)
        .bind(error)
        .bind(next_attempt_at.map(|t| t.timestamp_micros()))
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn inbox_claim(
        &self,
        consumer: &str,
        event_id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE consumer_inbox SET next_attempt_at = $4, updated_at = $5 \
             WHERE consumer = $1 AND event_id = $2 AND status = 'retry' AND next_attempt_at <= $3",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(now.timestamp_micros())
        .bind(lease_until.timestamp_micros())
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn inbox_claim_many(
        &self,
        consumer: &str,
        event_ids: &[Uuid],
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Uuid>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("UPDATE consumer_inbox SET next_attempt_at = ");
        qb.push_bind(lease_until.timestamp_micros()).push(", updated_at = ").push_bind(now_micros());
        qb.push(" WHERE consumer = ").push_bind(consumer);
        qb.push(" AND status = 'retry' AND next_attempt_at <= ").push_bind(now.timestamp_micros());
        qb.push(" AND event_id IN (");
        let mut ids = qb.separated(", ");
        for id in event_ids {
            ids.push_bind(*id);
        }
        qb.push(") RETURNING event_id");
        let rows = qb.build().fetch_all(&self.write).await?;
        rows.iter().map(|r| Ok(r.try_get("event_id")?)).collect()
    }

    async fn inbox_due(&self, consumer: &str, now: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<(OutboxEvent, u32)>> {
        let rows = sqlx::query(
            "SELECT event, attempts FROM consumer_inbox WHERE consumer = $1 AND status = 'retry' AND next_attempt_at <= $2 \
             ORDER BY next_attempt_at LIMIT $3",
        )
        .bind(consumer)
        .bind(now.timestamp_micros())
        .bind(limit.clamp(1, 1000) as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let ev: Json<OutboxEvent> = r.try_get("event")?;
                let attempts: i64 = r.try_get("attempts")?;
                Ok((ev.0, attempts.max(0) as u32))
            })
            .collect()
    }

    async fn inbox_entries(&self, consumer: &str, status: Option<&str>, limit: u32) -> Result<Vec<crate::bus::InboxEntry>> {
        let rows = sqlx::query(
            "SELECT consumer, event_id, tenant_id, status, attempts, last_error, next_attempt_at, event FROM consumer_inbox \
             WHERE consumer = $1 AND ($2 IS NULL OR status = $2) ORDER BY updated_at DESC LIMIT $3",
        )
        .bind(consumer)
        .bind(status)
        .bind(limit.clamp(1, 1000) as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let attempts: i64 = r.try_get("attempts")?;
                Ok(crate::bus::InboxEntry {
                    consumer: r.try_get("consumer")?,
                    event_id: r.try_get("event_id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    status: r.try_get("status")?,
                    attempts: attempts.max(0) as u32,
                    last_error: r.try_get("last_error")?,
                    next_attempt_at: r.try_get::<Option<i64>, _>("next_attempt_at")?.map(ts),
                    event: r.try_get::<Option<Json<Value>>, _>("event")?.map(|j| j.0),
                })
            })
            .collect()
    }

    async fn inbox_counts(&self, consumer: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM consumer_inbox WHERE consumer = $1 GROUP BY status ORDER BY status")
            .bind(consumer)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("status")?, r.try_get("n")?))).collect()
    }
}
