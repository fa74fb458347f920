// Marketplace catalogues, links and the push queue, shared by both backends (included after
// shared.rs). Queue columns are `<channel>_seq`, `<channel>_pushed_seq`… for `stock` and `price`.

use crate::marketplace::{
    CatalogItem, CatalogOutcome, Channel, DueItem, DueQuery, LinkChange, LocalProduct, MAPPED_BY_BARCODE,
    MAPPED_BY_MANUAL, Mapping, MappingCounts, MappingFilter, MappingState, MarketplaceStore, PushOutcome, PushResult,
    PushState, PushStatus,
};

/// IN lists are sent in chunks well below both databases' bind limits.
const MP_CHUNK: usize = 500;

fn mp_barcodes(r: &DbRow) -> Result<Vec<String>> {
    let s: String = r.try_get("barcodes")?;
    Ok(serde_json::from_str(&s).unwrap_or_default())
}

fn mp_opt_ts(v: Option<i64>) -> Option<chrono::DateTime<chrono::Utc>> {
    v.map(ts)
}

fn mp_push_state(r: &DbRow, p: &str) -> Result<PushState> {
    let seq: i64 = r.try_get(format!("{p}_seq").as_str())?;
    let pushed_seq: i64 = r.try_get(format!("{p}_pushed_seq").as_str())?;
    let mapped: Option<Uuid> = r.try_get("product_id")?;
    let pending = mapped.is_some() && seq > pushed_seq;
    Ok(PushState {
        pending,
        pushed_value: r.try_get(format!("{p}_pushed_value").as_str())?,
        pushed_at: mp_opt_ts(r.try_get(format!("{p}_pushed_at").as_str())?),
        attempts: r.try_get(format!("{p}_attempts").as_str())?,
        last_error: if pending { r.try_get(format!("{p}_error").as_str())? } else { None },
        next_attempt_at: if pending { mp_opt_ts(r.try_get(format!("{p}_next_at").as_str())?) } else { None },
    })
}

const MAPPING_COLS: &str = "m.external_id, m.product_ext_id, m.title, m.barcodes, m.price, m.remote_stock, m.product_id, \
     m.mapped_by, m.map_note, m.seen_at, p.sku AS product_sku, p.name AS product_name, \
     m.stock_seq, m.stock_pushed_seq, m.stock_pushed_at, m.stock_pushed_value, m.stock_attempts, m.stock_next_at, m.stock_error, \
     m.price_seq, m.price_pushed_seq, m.price_pushed_at, m.price_pushed_value, m.price_attempts, m.price_next_at, m.price_error";

fn mapping_from_row(r: &DbRow) -> Result<Mapping> {
    Ok(Mapping {
        external_id: r.try_get("external_id")?,
        product_ext_id: r.try_get("product_ext_id")?,
        title: r.try_get("title")?,
        barcodes: mp_barcodes(r)?,
        price: r.try_get("price")?,
        remote_stock: r.try_get("remote_stock")?,
        product_id: r.try_get("product_id")?,
        product_sku: r.try_get("product_sku")?,
        product_name: r.try_get("product_name")?,
        mapped_by: r.try_get("mapped_by")?,
        note: r.try_get("map_note")?,
        stock: mp_push_state(r, "stock")?,
        price_push: mp_push_state(r, "price")?,
        seen_at: ts(r.try_get("seen_at")?),
    })
}

/// Products of the tenant (active, not deleted) owning any of `barcodes`: barcode -> product.
async fn mp_products_by_barcode(tx: &mut Tx, tenant: Uuid, barcodes: &[String]) -> Result<HashMap<String, Uuid>> {
    let mut out = HashMap::new();
    for chunk in barcodes.chunks(MP_CHUNK) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT b.barcode, b.product_id FROM product_barcodes b JOIN products p \
             ON p.tenant_id = b.tenant_id AND p.id = b.product_id \
             WHERE p.active AND NOT p.deleted AND b.tenant_id = ",
        );
        qb.push_bind(tenant).push(" AND b.barcode IN (");
        let mut sep = qb.separated(", ");
        for b in chunk {
            sep.push_bind(b.clone());
        }
        qb.push(")");
        for r in qb.build().fetch_all(&mut **tx).await? {
            out.insert(r.try_get::<String, _>("barcode")?, r.try_get::<Uuid, _>("product_id")?);
        }
    }
    Ok(out)
}

#[async_trait]
impl MarketplaceStore for Backend {
    async fn upsert_catalog(
        &self,
        tenant: Uuid,
        integration: Uuid,
        items: &[CatalogItem],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<CatalogOutcome> {
        let mut out = CatalogOutcome::default();
        if items.is_empty() {
            return Ok(out);
        }
        let at = now.timestamp_micros();
        let mut tx = self.begin().await?;
        for it in items {
            sqlx::query(
                "INSERT INTO marketplace_items (tenant_id, integration_id, external_id, product_ext_id, title, barcodes, \
                 price, remote_stock, seen_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (tenant_id, integration_id, external_id) DO UPDATE SET product_ext_id = excluded.product_ext_id, \
                 title = excluded.title, barcodes = excluded.barcodes, price = excluded.price, \
                 remote_stock = excluded.remote_stock, seen_at = excluded.seen_at, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(integration)
            .bind(&it.external_id)
            .bind(&it.product_ext_id)
            .bind(&it.title)
            .bind(serde_json::to_string(&it.barcodes)?)
            .bind(it.price)
            .bind(it.remote_stock)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            out.upserted += 1;
        }
        // Candidates for the barcode matcher: unmapped, and never linked or unlinked by hand.
        let mut candidates: Vec<(String, Vec<String>)> = Vec::new();
        let ids: Vec<String> = items.iter().map(|i| i.external_id.clone()).collect();
        for chunk in ids.chunks(MP_CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(
                "SELECT external_id, barcodes FROM marketplace_items WHERE product_id IS NULL AND mapped_by IS NULL AND tenant_id = ",
            );
            qb.push_bind(tenant).push(" AND integration_id = ").push_bind(integration).push(" AND external_id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id.clone());
            }
            qb.push(") ORDER BY external_id");
            for r in qb.build().fetch_all(&mut *tx).await? {
                candidates.push((r.try_get("external_id")?, mp_barcodes(&r)?));
            }
        }
        let all: Vec<String> = {
            let mut v: Vec<String> = candidates.iter().flat_map(|(_, b)| b.iter().cloned()).collect();
            v.sort();
            v.dedup();
            v
        };
        let owners = mp_products_by_barcode(&mut tx, tenant, &all).await?;
        for (external_id, barcodes) in candidates {
            let mut found: Vec<(Uuid, &String)> = barcodes.iter().filter_map(|b| owners.get(b).map(|p| (*p, b))).collect();
            found.sort();
            found.dedup_by_key(|(p, _)| *p);
            let note = match found.as_slice() {
                [(product, _)] => {
                    sqlx::query(
                        "UPDATE marketplace_items SET product_id = $4, mapped_by = $5, map_note = NULL, \
                         stock_seq = stock_seq + 1, price_seq = price_seq + 1, stock_attempts = 0, stock_error = NULL, \
                         stock_next_at = NULL, price_attempts = 0, price_error = NULL, price_next_at = NULL, updated_at = $6 \
                         WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
                    )
                    .bind(tenant)
                    .bind(integration)
                    .bind(&external_id)
                    .bind(*product)
                    .bind(MAPPED_BY_BARCODE)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    out.mapped.push((external_id, *product));
                    continue;
                }
                [] if barcodes.is_empty() => "the item has no barcode".to_string(),
                [] => format!("no active product has barcode {}", barcodes.join(", ")),
                many => {
                    let list: Vec<String> = many.iter().map(|(p, b)| format!("{b} -> {p}")).collect();
                    format!("ambiguous: its barcodes belong to {} products ({})", many.len(), list.join("; "))
                }
            };
            sqlx::query(
                "UPDATE marketplace_items SET map_note = $4 WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
            )
            .bind(tenant)
            .bind(integration)
            .bind(&external_id)
            .bind(&note)
            .execute(&mut *tx)
            .await?;
            out.unmapped.push((external_id, note));
        }
        self.commit(tx).await?;
        Ok(out)
    }

    async fn list_mappings(
        &self,
        tenant: Uuid,
        integration: Uuid,
        f: &MappingFilter,
    ) -> Result<(Vec<Mapping>, Option<String>)> {
        let limit = page_limit(f.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT {MAPPING_COLS} FROM marketplace_items m LEFT JOIN products p \
             ON p.tenant_id = m.tenant_id AND p.id = m.product_id WHERE m.tenant_id = "
        ));
        qb.push_bind(tenant).push(" AND m.integration_id = ").push_bind(integration);
        match f.state {
            Some(MappingState::Mapped) => {
                qb.push(" AND m.product_id IS NOT NULL");
            }
            Some(MappingState::Unmapped) => {
                qb.push(" AND m.product_id IS NULL");
            }
            None => {}
        }
        if let Some(c) = &f.cursor {
            qb.push(" AND m.external_id > ").push_bind(c.clone());
        }
        qb.push(" ORDER BY m.external_id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let mut items = rows.iter().map(mapping_from_row).collect::<Result<Vec<_>>>()?;
        let next = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|m| m.external_id.clone())
        } else {
            None
        };
        Ok((items, next))
    }

    async fn mapping_counts(&self, tenant: Uuid, integration: Uuid) -> Result<MappingCounts> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS items, COUNT(product_id) AS mapped FROM marketplace_items \
             WHERE tenant_id = $1 AND integration_id = $2",
        )
        .bind(tenant)
        .bind(integration)
        .fetch_one(&self.read)
        .await?;
        let items: i64 = r.try_get("items")?;
        let mapped: i64 = r.try_get("mapped")?;
        let unmapped_local: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM products p WHERE p.tenant_id = $1 AND p.active AND NOT p.deleted AND NOT EXISTS \
             (SELECT 1 FROM marketplace_items m WHERE m.tenant_id = p.tenant_id AND m.integration_id = $2 AND m.product_id = p.id)",
        )
        .bind(tenant)
        .bind(integration)
        .fetch_one(&self.read)
        .await?;
        Ok(MappingCounts { items, mapped, unmapped: items - mapped, unmapped_local })
    }

    async fn unmapped_local(
        &self,
        tenant: Uuid,
        integration: Uuid,
        cursor: Option<Uuid>,
        limit: u32,
    ) -> Result<Paged<LocalProduct>> {
        let limit = page_limit(limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT p.id, p.sku, p.name, p.barcodes FROM products p WHERE p.active AND NOT p.deleted AND p.tenant_id = ",
        );
        qb.push_bind(tenant)
            .push(" AND NOT EXISTS (SELECT 1 FROM marketplace_items m WHERE m.tenant_id = p.tenant_id AND m.product_id = p.id AND m.integration_id = ")
            .push_bind(integration)
            .push(")");
        if let Some(c) = cursor {
            qb.push(" AND p.id > ").push_bind(c);
        }
        qb.push(" ORDER BY p.id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(LocalProduct {
                    id: r.try_get("id")?,
                    sku: r.try_get("sku")?,
                    name: r.try_get("name")?,
                    barcodes: r.try_get::<Json<Vec<String>>, _>("barcodes")?.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |p| p.id))
    }

    async fn set_links(&self, actor: &Actor, integration: Uuid, links: &[LinkChange]) -> Result<usize> {
        let tenant = actor.tenant_id;
        let mut tx = self.begin().await?;
        let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM integrations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(integration)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StorageError::NotFound("integration"));
        }
        let mut errors = Vec::new();
        let mut current: Vec<(Option<Uuid>, Option<String>)> = Vec::with_capacity(links.len());
        for (i, l) in links.iter().enumerate() {
            let row = sqlx::query(
                "SELECT product_id, mapped_by FROM marketplace_items WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
            )
            .bind(tenant)
            .bind(integration)
            .bind(&l.external_id)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(r) => current.push((r.try_get("product_id")?, r.try_get("mapped_by")?)),
                None => {
                    current.push((None, None));
                    errors.push(FieldError::new(
                        format!("links[{i}].external_id"),
                        format!("no item {:?} in this marketplace's catalogue (pull it with a products sync)", l.external_id),
                    ));
                }
            }
            if let Some(p) = l.product_id {
                let found: Option<Uuid> =
                    sqlx::query_scalar("SELECT id FROM products WHERE tenant_id = $1 AND id = $2 AND NOT deleted")
                        .bind(tenant)
                        .bind(p)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    errors.push(FieldError::new(format!("links[{i}].product_id"), "no such product"));
                }
            }
        }
        if !errors.is_empty() {
            return Err(StorageError::Invalid(errors));
        }
        let now = now_micros();
        let mut changed = Vec::new();
        for (l, (old_product, old_by)) in links.iter().zip(current) {
            if old_product == l.product_id && old_by.as_deref() == Some(MAPPED_BY_MANUAL) {
                continue;
            }
            // A new target schedules its pushes; unlinking or confirming the same product does not.
            let bump = if l.product_id.is_some() && old_product != l.product_id { 1i64 } else { 0 };
            sqlx::query(
                "UPDATE marketplace_items SET product_id = $4, mapped_by = $5, map_note = NULL, \
                 stock_seq = stock_seq + $6, price_seq = price_seq + $6, \
                 stock_attempts = 0, stock_error = NULL, stock_next_at = NULL, \
                 price_attempts = 0, price_error = NULL, price_next_at = NULL, updated_at = $7 \
                 WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3",
            )
            .bind(tenant)
            .bind(integration)
            .bind(&l.external_id)
            .bind(l.product_id)
            .bind(MAPPED_BY_MANUAL)
            .bind(bump)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            changed.push(json!({"external_id": l.external_id, "from": old_product, "to": l.product_id}));
        }
        if !changed.is_empty() {
            audit(
                &mut tx,
                actor,
                "update",
                "marketplace_mapping",
                Some(integration.to_string()),
                json!({ "links": changed }),
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(changed.len())
    }

    async fn mark_dirty(&self, tenant: Uuid, integrations: &[Uuid], products: &[Uuid], channel: Channel) -> Result<u64> {
        if integrations.is_empty() || products.is_empty() {
            return Ok(0);
        }
        let p = channel.prefix();
        let mut marked = 0;
        // One statement per chunk of products: a batch of events costs a write, not one each.
        for chunk in products.chunks(MP_CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!("UPDATE marketplace_items SET {p}_seq = {p}_seq + 1 WHERE tenant_id = "));
            qb.push_bind(tenant).push(" AND integration_id IN (");
            let mut sep = qb.separated(", ");
            for i in integrations {
                sep.push_bind(*i);
            }
            qb.push(") AND product_id IN (");
            let mut sep = qb.separated(", ");
            for product in chunk {
                sep.push_bind(*product);
            }
            qb.push(")");
            marked += qb.build().execute(&self.write).await?.rows_affected();
        }
        Ok(marked)
    }

    async fn mark_page_dirty(
        &self,
        tenant: Uuid,
        integration: Uuid,
        channel: Channel,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>> {
        let p = channel.prefix();
        let mut tx = self.begin().await?;
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("SELECT external_id FROM marketplace_items WHERE product_id IS NOT NULL AND tenant_id = ");
        qb.push_bind(tenant).push(" AND integration_id = ").push_bind(integration);
        if let Some(a) = after {
            qb.push(" AND external_id > ").push_bind(a.to_owned());
        }
        qb.push(" ORDER BY external_id LIMIT ").push_bind(i64::from(limit.max(1)));
        let ids: Vec<String> = qb
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("external_id"))
            .collect::<std::result::Result<_, _>>()?;
        for chunk in ids.chunks(MP_CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
                "UPDATE marketplace_items SET {p}_seq = {p}_seq + 1, {p}_attempts = 0, {p}_error = NULL WHERE tenant_id = "
            ));
            qb.push_bind(tenant).push(" AND integration_id = ").push_bind(integration).push(" AND external_id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id.clone());
            }
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        self.commit(tx).await?;
        Ok(ids)
    }

    async fn count_mapped(&self, tenant: Uuid, integration: Uuid) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM marketplace_items WHERE tenant_id = $1 AND integration_id = $2 AND product_id IS NOT NULL",
        )
        .bind(tenant)
        .bind(integration)
        .fetch_one(&self.read)
        .await?)
    }

    async fn push_candidates(&self, now: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<(Uuid, Uuid)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT m.tenant_id, m.integration_id FROM marketplace_items m \
             JOIN integrations i ON i.tenant_id = m.tenant_id AND i.id = m.integration_id \
             LEFT JOIN marketplace_push_state s ON s.tenant_id = m.tenant_id AND s.integration_id = m.integration_id \
             WHERE m.product_id IS NOT NULL AND i.status <> 'disabled' \
             AND ((m.stock_seq > m.stock_pushed_seq AND COALESCE(m.stock_next_at, 0) <= $1) \
               OR (m.price_seq > m.price_pushed_seq AND COALESCE(m.price_next_at, 0) <= $1)) \
             AND (s.tenant_id IS NULL OR (s.blocked_until <= $1 AND (s.owner IS NULL OR s.lease_until < $1))) \
             LIMIT $2",
        )
        .bind(now.timestamp_micros())
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("tenant_id")?, r.try_get("integration_id")?))).collect()
    }

    async fn claim_push(
        &self,
        tenant: Uuid,
        integration: Uuid,
        owner: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        // The conditional upsert is atomic on both databases: of two claimers, one updates the
        // row and the other finds the condition false (no row returned).
        let row = sqlx::query(
            "INSERT INTO marketplace_push_state (tenant_id, integration_id, owner, lease_until, blocked_until, updated_at) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (tenant_id, integration_id) DO UPDATE \
             SET owner = excluded.owner, lease_until = excluded.lease_until, updated_at = excluded.updated_at \
             WHERE marketplace_push_state.blocked_until <= $5 \
             AND (marketplace_push_state.owner IS NULL OR marketplace_push_state.owner = $3 OR marketplace_push_state.lease_until < $5) \
             RETURNING integration_id",
        )
        .bind(tenant)
        .bind(integration)
        .bind(owner)
        .bind(lease_until.timestamp_micros())
        .bind(now.timestamp_micros())
        .fetch_optional(&self.write)
        .await?;
        Ok(row.is_some())
    }

    async fn release_push(
        &self,
        tenant: Uuid,
        integration: Uuid,
        owner: Uuid,
        blocked_until: Option<chrono::DateTime<chrono::Utc>>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE marketplace_push_state SET owner = NULL, lease_until = 0, blocked_until = $4, last_error = $5, updated_at = $6 \
             WHERE tenant_id = $1 AND integration_id = $2 AND owner = $3",
        )
        .bind(tenant)
        .bind(integration)
        .bind(owner)
        .bind(blocked_until.map_or(0, |t| t.timestamp_micros()))
        .bind(error)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn push_status(&self, tenant: Uuid, integration: Uuid) -> Result<Option<PushStatus>> {
        let row = sqlx::query(
            "SELECT blocked_until, last_error, updated_at FROM marketplace_push_state WHERE tenant_id = $1 AND integration_id = $2",
        )
        .bind(tenant)
        .bind(integration)
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let blocked: i64 = r.try_get("blocked_until")?;
        Ok(Some(PushStatus {
            blocked_until: (blocked > 0).then(|| ts(blocked)),
            last_error: r.try_get("last_error")?,
            updated_at: ts(r.try_get("updated_at")?),
        }))
    }

    async fn due_items(&self, tenant: Uuid, integration: Uuid, channel: Channel, q: &DueQuery) -> Result<Vec<DueItem>> {
        let p = channel.prefix();
        let now = q.now.timestamp_micros();
        if let Some(before) = q.pushed_before {
            // Items changed too soon after their last push wait for the interval to pass, so
            // the pusher does not come back for them before then.
            let interval = now - before.timestamp_micros();
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE marketplace_items SET {p}_next_at = {p}_pushed_at + $3 \
                 WHERE tenant_id = $1 AND integration_id = $2 AND product_id IS NOT NULL AND {p}_seq > {p}_pushed_seq \
                 AND {p}_pushed_at > $4 AND COALESCE({p}_next_at, 0) < {p}_pushed_at + $3"
            )))
            .bind(tenant)
            .bind(integration)
            .bind(interval)
            .bind(before.timestamp_micros())
            .execute(&self.write)
            .await?;
        }
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT external_id, product_id, barcodes, {p}_seq AS seq, {p}_attempts AS attempts, {p}_pushed_value AS pushed_value FROM marketplace_items \
             WHERE product_id IS NOT NULL AND {p}_seq > {p}_pushed_seq AND tenant_id = "
        ));
        qb.push_bind(tenant).push(" AND integration_id = ").push_bind(integration);
        qb.push(format!(" AND COALESCE({p}_next_at, 0) <= ")).push_bind(now);
        if let Some(before) = q.pushed_before {
            qb.push(format!(" AND ({p}_pushed_at IS NULL OR {p}_pushed_at <= "))
                .push_bind(before.timestamp_micros())
                .push(")");
        }
        if let Some(only) = &q.only {
            if only.is_empty() {
                return Ok(Vec::new());
            }
            qb.push(" AND external_id IN (");
            let mut sep = qb.separated(", ");
            for id in only.iter().take(MP_CHUNK) {
                sep.push_bind(id.clone());
            }
            qb.push(")");
        }
        qb.push(format!(" ORDER BY COALESCE({p}_pushed_at, 0), external_id LIMIT ")).push_bind(i64::from(q.limit.max(1)));
        let rows = qb.build().fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok(DueItem {
                    external_id: r.try_get("external_id")?,
                    product_id: r.try_get("product_id")?,
                    barcodes: mp_barcodes(r)?,
                    seq: r.try_get("seq")?,
                    attempts: r.try_get("attempts")?,
                    pushed_value: r.try_get("pushed_value")?,
                })
            })
            .collect()
    }

    async fn record_push(
        &self,
        tenant: Uuid,
        integration: Uuid,
        channel: Channel,
        outcomes: &[PushOutcome],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let p = channel.prefix();
        let at = now.timestamp_micros();
        let pushed = format!(
            "UPDATE marketplace_items SET {p}_pushed_seq = CASE WHEN {p}_pushed_seq < $4 THEN $4 ELSE {p}_pushed_seq END, \
             {p}_pushed_at = $5, {p}_pushed_value = $6, {p}_attempts = 0, {p}_error = NULL, {p}_next_at = NULL \
             WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3"
        );
        let failed = format!(
            "UPDATE marketplace_items SET {p}_attempts = {p}_attempts + 1, {p}_error = $4, {p}_next_at = $5 \
             WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3"
        );
        let deferred = format!(
            "UPDATE marketplace_items SET {p}_next_at = $4 WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3"
        );
        let skipped = format!(
            "UPDATE marketplace_items SET {p}_pushed_seq = CASE WHEN {p}_pushed_seq < $4 THEN $4 ELSE {p}_pushed_seq END \
             WHERE tenant_id = $1 AND integration_id = $2 AND external_id = $3"
        );
        let mut tx = self.begin().await?;
        for o in outcomes {
            match &o.result {
                PushResult::Skipped => {
                    sqlx::query(AssertSqlSafe(skipped.clone()))
                        .bind(tenant)
                        .bind(integration)
                        .bind(&o.external_id)
                        .bind(o.seq)
                        .execute(&mut *tx)
                        .await?;
                }
                PushResult::Pushed { value } => {
                    sqlx::query(AssertSqlSafe(pushed.clone()))
                        .bind(tenant)
                        .bind(integration)
                        .bind(&o.external_id)
                        .bind(o.seq)
                        .bind(at)
                        .bind(*value)
                        .execute(&mut *tx)
                        .await?;
                }
                PushResult::Failed { error, retry_at } => {
                    sqlx::query(AssertSqlSafe(failed.clone()))
                        .bind(tenant)
                        .bind(integration)
                        .bind(&o.external_id)
                        .bind(error)
                        .bind(retry_at.timestamp_micros())
                        .execute(&mut *tx)
                        .await?;
                }
                PushResult::Deferred { retry_at } => {
                    sqlx::query(AssertSqlSafe(deferred.clone()))
                        .bind(tenant)
                        .bind(integration)
                        .bind(&o.external_id)
                        .bind(retry_at.timestamp_micros())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn available_stock(&self, tenant: Uuid, stores: &[Uuid], products: &[Uuid]) -> Result<HashMap<Uuid, i64>> {
        let mut out = HashMap::new();
        if stores.is_empty() {
            return Ok(out);
        }
        for chunk in products.chunks(MP_CHUNK) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(
                "SELECT product_id, CAST(SUM(on_hand - reserved) AS BIGINT) AS available FROM stock_levels WHERE tenant_id = ",
            );
            qb.push_bind(tenant).push(" AND store_id IN (");
            let mut sep = qb.separated(", ");
            for s in stores {
                sep.push_bind(*s);
            }
            qb.push(") AND product_id IN (");
            let mut sep = qb.separated(", ");
            for p in chunk {
                sep.push_bind(*p);
            }
            qb.push(") GROUP BY product_id");
            for r in qb.build().fetch_all(&self.read).await? {
                out.insert(r.try_get::<Uuid, _>("product_id")?, r.try_get::<i64, _>("available")?);
            }
        }
        Ok(out)
    }

    async fn product_prices(&self, tenant: Uuid, products: &[Uuid]) -> Result<HashMap<Uuid, i64>> {
        let mut out = HashMap::new();
        for chunk in products.chunks(MP_CHUNK) {
            let mut qb = tenant_rows_by_id("SELECT id, price FROM products", tenant, chunk);
            qb.push(" AND NOT deleted");
            for r in qb.build().fetch_all(&self.read).await? {
                out.insert(r.try_get::<Uuid, _>("id")?, r.try_get::<i64, _>("price")?);
            }
        }
        Ok(out)
    }
}
