// Integration hub storage, shared by both backends (included after shared.rs).

use crate::integrations::{
    HookDelivery, HookInsert, Integration, IntegrationPatch, IntegrationStatus, Job, JobProgress,
    JobStatus, LogEntry, LogFilter, LogStatus, NewIntegration,
};

const INTEGRATION_COLS: &str = "id, tenant_id, type, name, status, settings, credentials, health, health_at, created_at, updated_at";
const LOG_COLS: &str = "id, tenant_id, integration_id, operation, started_at, attempt, method, url, status, latency_ms, error, request_headers, request_body, response_body";
const JOB_COLS: &str = "id, tenant_id, integration_id, what, status, done, total, errors, cursor, created_at, updated_at, finished_at";
const HOOK_COLS: &str = "id, tenant_id, integration_id, delivery_id, status, result, received_at";

fn integration_from_row(r: &DbRow) -> Result<Integration> {
    let status: String = r.try_get("status")?;
    Ok(Integration {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        kind: r.try_get("type")?,
        name: r.try_get("name")?,
        status: IntegrationStatus::parse(&status)
            .ok_or_else(|| StorageError::Corrupt(format!("integration status {status}")))?,
        settings: r.try_get::<Json<Value>, _>("settings")?.0,
        credentials_sealed: r.try_get("credentials")?,
        health: r.try_get::<Option<Json<Value>>, _>("health")?.map(|j| j.0),
        health_at: r.try_get::<Option<i64>, _>("health_at")?.map(ts),
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

fn log_from_row(r: &DbRow) -> Result<LogEntry> {
    let attempt: i64 = r.try_get("attempt")?;
    let status: Option<i64> = r.try_get("status")?;
    let latency: i64 = r.try_get("latency_ms")?;
    Ok(LogEntry {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        integration_id: r.try_get("integration_id")?,
        operation: r.try_get("operation")?,
        started_at: ts(r.try_get("started_at")?),
        attempt: u32::try_from(attempt).unwrap_or(0),
        method: r.try_get("method")?,
        url: r.try_get("url")?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        latency_ms: u64::try_from(latency).unwrap_or(0),
        error: r.try_get("error")?,
        request_headers: r
            .try_get::<Json<Vec<(String, String)>>, _>("request_headers")?
            .0,
        request_body: r.try_get("request_body")?,
        response_body: r.try_get("response_body")?,
    })
}

fn job_from_row(r: &DbRow) -> Result<Job> {
    let status: String = r.try_get("status")?;
    Ok(Job {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        integration_id: r.try_get("integration_id")?,
        what: r.try_get("what")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StorageError::Corrupt(format!("job status {status}")))?,
        done: r.try_get("done")?,
        total: r.try_get("total")?,
        errors: r.try_get::<Json<Vec<Value>>, _>("errors")?.0,
        cursor: r.try_get::<Option<Json<Value>>, _>("cursor")?.map(|j| j.0),
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(ts),
    })
}

fn hook_from_row(r: &DbRow) -> Result<HookDelivery> {
    Ok(HookDelivery {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        integration_id: r.try_get("integration_id")?,
        delivery_id: r.try_get("delivery_id")?,
        status: r.try_get("status")?,
        result: r.try_get::<Option<Json<Value>>, _>("result")?.map(|j| j.0),
        received_at: ts(r.try_get("received_at")?),
    })
}

async fn integration_in_tx(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Integration> {
    let sql =
        format!("SELECT {INTEGRATION_COLS} FROM integrations WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StorageError::NotFound("integration"))?;
    integration_from_row(&row)
}

/// What events and the audit log say about an integration: never its credentials.
fn integration_summary(i: &Integration) -> Value {
    json!({ "integration_id": i.id, "type": i.kind, "name": i.name, "status": i.status.as_str() })
}

/// Errors kept per job: the first ones say most, the count says the rest.
const MAX_JOB_ERRORS: usize = 100;

#[async_trait]
impl crate::integrations::IntegrationStore for Backend {
    async fn create_integration(&self, actor: &Actor, new: &NewIntegration) -> Result<Integration> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO integrations (id, tenant_id, type, name, status, settings, credentials, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(new.id)
        .bind(actor.tenant_id)
        .bind(&new.kind)
        .bind(&new.name)
        .bind(new.status.as_str())
        .bind(Json(&new.settings))
        .bind(&new.credentials_sealed)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::conflict("an integration with this id exists")
            } else {
                e.into()
            }
        })?;
        let i = integration_in_tx(&mut tx, actor.tenant_id, new.id).await?;
        let summary = integration_summary(&i);
        audit(
            &mut tx,
            actor,
            "integration.create",
            "integration",
            Some(i.id.to_string()),
            summary.clone(),
        )
        .await?;
        emit(&mut tx, actor.tenant_id, "integration.created", summary).await?;
        self.commit(tx).await?;
        Ok(i)
    }

    async fn list_integrations(&self, tenant: Uuid) -> Result<Vec<Integration>> {
        let sql =
            format!("SELECT {INTEGRATION_COLS} FROM integrations WHERE tenant_id = $1 ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(integration_from_row).collect()
    }

    async fn get_integration(&self, tenant: Uuid, id: Uuid) -> Result<Integration> {
        let sql =
            format!("SELECT {INTEGRATION_COLS} FROM integrations WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StorageError::NotFound("integration"))?;
        integration_from_row(&row)
    }

    async fn integration_for_hook(&self, kind: &str, id: Uuid) -> Result<Option<Integration>> {
        let sql =
            format!("SELECT {INTEGRATION_COLS} FROM integrations WHERE id = $1 AND type = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(kind)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(integration_from_row).transpose()
    }

    async fn update_integration(
        &self,
        actor: &Actor,
        id: Uuid,
        patch: &IntegrationPatch,
    ) -> Result<Integration> {
        let mut tx = self.begin().await?;
        let old = integration_in_tx(&mut tx, actor.tenant_id, id).await?;
        let name = patch.name.clone().unwrap_or(old.name.clone());
        let status = patch.status.unwrap_or(old.status);
        let settings = patch.settings.clone().unwrap_or(old.settings.clone());
        let sealed = patch
            .credentials_sealed
            .clone()
            .unwrap_or(old.credentials_sealed.clone());
        sqlx::query(
            "UPDATE integrations SET name = $3, status = $4, settings = $5, credentials = $6, updated_at = $7 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(actor.tenant_id)
        .bind(id)
        .bind(&name)
        .bind(status.as_str())
        .bind(Json(&settings))
        .bind(&sealed)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let i = integration_in_tx(&mut tx, actor.tenant_id, id).await?;
        let mut summary = integration_summary(&i);
        // Say which parts changed, never what the credentials are.
        summary["changed"] = json!({
            "name": patch.name.is_some(),
            "status": patch.status.is_some(),
            "settings": patch.settings.is_some(),
            "credentials": patch.credentials_sealed.is_some(),
        });
        audit(
            &mut tx,
            actor,
            "integration.update",
            "integration",
            Some(id.to_string()),
            summary.clone(),
        )
        .await?;
        emit(&mut tx, actor.tenant_id, "integration.updated", summary).await?;
        self.commit(tx).await?;
        Ok(i)
    }

    async fn delete_integration(&self, actor: &Actor, id: Uuid) -> Result<()> {
        let mut tx = self.begin().await?;
        let old = integration_in_tx(&mut tx, actor.tenant_id, id).await?;
        for table in ["integration_log", "integration_jobs", "hook_inbox"] {
            let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND integration_id = $2");
            sqlx::query(AssertSqlSafe(sql))
                .bind(actor.tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM integrations WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let summary = integration_summary(&old);
        audit(
            &mut tx,
            actor,
            "integration.delete",
            "integration",
            Some(id.to_string()),
            summary.clone(),
        )
        .await?;
        emit(&mut tx, actor.tenant_id, "integration.deleted", summary).await?;
        self.commit(tx).await
    }

    async fn record_health(
        &self,
        tenant: Uuid,
        id: Uuid,
        health: &Value,
        failing: bool,
    ) -> Result<Integration> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let old = integration_in_tx(&mut tx, tenant, id).await?;
        let status = match (old.status, failing) {
            (IntegrationStatus::Disabled, _) => IntegrationStatus::Disabled,
            (_, true) => IntegrationStatus::Failing,
            (_, false) => IntegrationStatus::Active,
        };
        sqlx::query(
            "UPDATE integrations SET health = $3, health_at = $4, status = $5, updated_at = $4 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(Json(health))
        .bind(now)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
        let i = integration_in_tx(&mut tx, tenant, id).await?;
        if status == IntegrationStatus::Failing && old.status != IntegrationStatus::Failing {
            let mut data = integration_summary(&i);
            // The health message comes from status lines and redacted bodies, never credentials.
            data["health"] = health.clone();
            emit(&mut tx, tenant, "integration.failed", data).await?;
        }
        self.commit(tx).await?;
        Ok(i)
    }

    async fn sealed_credentials_batch(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<(Uuid, Uuid, String)>> {
        let rows = sqlx::query(
            "SELECT tenant_id, id, credentials FROM integrations WHERE ($1 OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(after.is_none())
        .bind(after.unwrap_or_default())
        .bind(limit.clamp(1, 1000) as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("id")?,
                    r.try_get("credentials")?,
                ))
            })
            .collect()
    }

    async fn swap_sealed_credentials(
        &self,
        tenant: Uuid,
        id: Uuid,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        // Not `updated_at`: re-sealing changes nothing a user would see.
        let r = sqlx::query(
            "UPDATE integrations SET credentials = $4 WHERE tenant_id = $1 AND id = $2 AND credentials = $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(old)
        .bind(new)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn append_log(&self, entries: &[LogEntry], keep: u32) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut touched: Vec<Uuid> = Vec::new();
        for e in entries {
            sqlx::query(
                "INSERT INTO integration_log (id, tenant_id, integration_id, operation, started_at, attempt, method, url, status, latency_ms, error, request_headers, request_body, response_body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(new_id())
            .bind(e.tenant_id)
            .bind(e.integration_id)
            .bind(&e.operation)
            .bind(e.started_at.timestamp_micros())
            .bind(i64::from(e.attempt))
            .bind(&e.method)
            .bind(&e.url)
            .bind(e.status.map(i64::from))
            .bind(i64::try_from(e.latency_ms).unwrap_or(i64::MAX))
            .bind(&e.error)
            .bind(Json(&e.request_headers))
            .bind(&e.request_body)
            .bind(&e.response_body)
            .execute(&mut *tx)
            .await?;
            if !touched.contains(&e.integration_id) {
                touched.push(e.integration_id);
            }
        }
        for integration in touched {
            // Everything older than the `keep`-th newest entry goes.
            sqlx::query(
                "DELETE FROM integration_log WHERE integration_id = $1 AND id < \
                 (SELECT id FROM integration_log WHERE integration_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(integration)
            .bind(i64::from(keep.max(1)) - 1)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_log(
        &self,
        tenant: Uuid,
        integration: Uuid,
        filter: &LogFilter,
    ) -> Result<Paged<LogEntry>> {
        let limit = page_limit(filter.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT {LOG_COLS} FROM integration_log WHERE tenant_id = "
        ));
        qb.push_bind(tenant);
        qb.push(" AND integration_id = ");
        qb.push_bind(integration);
        match filter.status {
            Some(LogStatus::Ok) => {
                qb.push(" AND error IS NULL AND status IS NOT NULL AND status < 400");
            }
            Some(LogStatus::Error) => {
                qb.push(" AND (error IS NOT NULL OR status IS NULL OR status >= 400)");
            }
            Some(LogStatus::Code(c)) => {
                qb.push(" AND status = ");
                qb.push_bind(i64::from(c));
            }
            None => {}
        }
        if let Some(since) = filter.since {
            qb.push(" AND started_at >= ");
            qb.push_bind(since.timestamp_micros());
        }
        if let Some(c) = filter.cursor {
            qb.push(" AND id < ");
            qb.push_bind(c);
        }
        qb.push(" ORDER BY id DESC LIMIT ");
        qb.push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows.iter().map(log_from_row).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |e| e.id))
    }

    async fn create_job(&self, tenant: Uuid, integration: Uuid, what: &str) -> Result<Job> {
        let id = new_id();
        let now = now_micros();
        let mut tx = self.begin().await?;
        integration_in_tx(&mut tx, tenant, integration).await?;
        sqlx::query(
            "INSERT INTO integration_jobs (id, tenant_id, integration_id, what, status, done, errors, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6)",
        )
        .bind(id)
        .bind(tenant)
        .bind(integration)
        .bind(what)
        .bind(Json(Vec::<Value>::new()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        self.get_job(tenant, integration, id).await
    }

    async fn list_jobs(&self, tenant: Uuid, integration: Uuid, limit: u32) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM integration_jobs WHERE tenant_id = $1 AND integration_id = $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(integration)
            .bind(page_limit(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn get_job(&self, tenant: Uuid, integration: Uuid, id: Uuid) -> Result<Job> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM integration_jobs WHERE tenant_id = $1 AND integration_id = $2 AND id = $3"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(integration)
            .bind(id)
            .fetch_optional(&self.write)
            .await?
            .ok_or(StorageError::NotFound("job"))?;
        job_from_row(&row)
    }

    async fn claim_job(
        &self,
        owner: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Job>> {
        let lock = if DIALECT == Dialect::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id FROM integration_jobs WHERE status = 'queued' \
             OR (status = 'running' AND (lease_until IS NULL OR lease_until <= $1)) ORDER BY id LIMIT 1{lock}"
        );
        let mut tx = self.begin().await?;
        let id: Option<Uuid> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(now.timestamp_micros())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            tx.commit().await?;
            return Ok(None);
        };
        sqlx::query(
            "UPDATE integration_jobs SET status = 'running', lease_owner = $2, lease_until = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(owner)
        .bind(lease_until.timestamp_micros())
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let sql = format!("SELECT {JOB_COLS} FROM integration_jobs WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let job = job_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn save_job_progress(&self, id: Uuid, owner: Uuid, p: &JobProgress) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let errors: Option<Json<Vec<Value>>> = sqlx::query_scalar(
            "SELECT errors FROM integration_jobs WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(Json(mut errors)) = errors else {
            tx.commit().await?;
            return Ok(false);
        };
        for e in &p.new_errors {
            if errors.len() < MAX_JOB_ERRORS {
                errors.push(e.clone());
            }
        }
        let status = p.finish.unwrap_or(JobStatus::Running);
        let finished = p.finish.map(|_| now);
        sqlx::query(
            "UPDATE integration_jobs SET status = $3, done = $4, total = $5, cursor = $6, errors = $7, \
             lease_until = $8, lease_owner = CASE WHEN $9 THEN NULL ELSE lease_owner END, updated_at = $10, finished_at = $11 \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(status.as_str())
        .bind(p.done)
        .bind(p.total)
        .bind(p.cursor.as_ref().map(Json))
        .bind(Json(&errors))
        .bind(p.lease_until.timestamp_micros())
        .bind(p.finish.is_some())
        .bind(now)
        .bind(finished)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn release_job(&self, id: Uuid, owner: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE integration_jobs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn insert_hook(
        &self,
        tenant: Uuid,
        integration: Uuid,
        delivery_id: &str,
        body: &[u8],
        headers: &Value,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<HookInsert> {
        let id = new_id();
        let now = now.timestamp_micros();
        let r = sqlx::query(
            "INSERT INTO hook_inbox (id, tenant_id, integration_id, delivery_id, body, headers, received_at, status, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'received', $7) ON CONFLICT (integration_id, delivery_id) DO NOTHING",
        )
        .bind(id)
        .bind(tenant)
        .bind(integration)
        .bind(delivery_id)
        .bind(body)
        .bind(Json(headers))
        .bind(now)
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(HookInsert::New(id));
        }
        let sql = format!(
            "SELECT {HOOK_COLS} FROM hook_inbox WHERE tenant_id = $1 AND integration_id = $2 AND delivery_id = $3"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(integration)
            .bind(delivery_id)
            .fetch_optional(&self.write)
            .await?
            .ok_or(StorageError::NotFound("hook delivery"))?;
        Ok(HookInsert::Duplicate(hook_from_row(&row)?))
    }

    async fn retake_hook(
        &self,
        id: Uuid,
        stale_before: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE hook_inbox SET updated_at = $3 WHERE id = $1 AND status = 'received' AND updated_at < $2",
        )
        .bind(id)
        .bind(stale_before.timestamp_micros())
        .bind(now.timestamp_micros())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_hook(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE hook_inbox SET updated_at = 0 WHERE id = $1 AND status = 'received'")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn finish_hook(&self, id: Uuid, result: &Value) -> Result<()> {
        sqlx::query(
            "UPDATE hook_inbox SET status = 'handled', result = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(Json(result))
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn list_hooks(
        &self,
        tenant: Uuid,
        integration: Uuid,
        limit: u32,
    ) -> Result<Vec<HookDelivery>> {
        let sql = format!(
            "SELECT {HOOK_COLS} FROM hook_inbox WHERE tenant_id = $1 AND integration_id = $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(integration)
            .bind(page_limit(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(hook_from_row).collect()
    }
}
