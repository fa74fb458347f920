// Marking codes, shared by both backends (included after shared.rs): the checks a receipt's
// lines go through, the registry writes in the receipt's transaction, and the registry reads.

use savdo_domain::barcode::Barcode;
use savdo_domain::marking::MarkingCode;

use crate::marking::PendingRecheck;
use crate::marking::{CodeState, MarkedCode, MarkingPrecheck, OnlineCheck, RecheckResult};

const MARKED_COLS: &str = "label, gtin, code, product_id, state, sale_receipt_id, refund_receipt_id, online_check, updated_at";

fn marked_from_row(r: &DbRow) -> Result<MarkedCode> {
    let state: String = r.try_get("state")?;
    Ok(MarkedCode {
        label: r.try_get("label")?,
        gtin: r.try_get("gtin")?,
        code: r.try_get("code")?,
        product_id: r.try_get("product_id")?,
        state: match state.as_str() {
            "sold" => CodeState::Sold,
            "returned" => CodeState::Returned,
            other => return Err(StorageError::Corrupt(format!("marking code state {other}"))),
        },
        sale_receipt_id: r.try_get("sale_receipt_id")?,
        refund_receipt_id: r.try_get("refund_receipt_id")?,
        online_check: r.try_get("online_check")?,
        updated_at: ts(r.try_get("updated_at")?),
    })
}

async fn marked_in_tx(tx: &mut Tx, tenant: Uuid, label: &str) -> Result<Option<MarkedCode>> {
    let sql =
        format!("SELECT {MARKED_COLS} FROM marking_codes WHERE tenant_id = $1 AND label = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(label)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(marked_from_row).transpose()
}

fn code_field(line: usize, j: usize) -> String {
    format!("lines[{line}].marking_codes[{j}]")
}

/// What a code is, for the `marking.*` events.
fn code_json(line_no: u32, product_id: Uuid, c: &MarkingCode) -> Value {
    json!({
        "line_no": line_no,
        "product_id": product_id,
        "code": c.raw(),
        "label": c.label(),
        "cis": c.cis(),
        "gtin": c.gtin(),
        "serial": c.serial(),
    })
}

/// The marking codes of one receipt while it is validated and written.
#[derive(Default)]
struct MarkingLines {
    /// Line index -> (index of the code in the request, the parsed code).
    by_line: BTreeMap<usize, Vec<(usize, MarkingCode)>>,
    /// Label -> where it first appeared (line, code index).
    seen: HashMap<String, (usize, usize)>,
}

impl MarkingLines {
    /// Validate line `i`'s codes against its product, the rest of the receipt and the registry,
    /// pushing a problem per bad code. Returns the line's codes parsed.
    async fn check_line(
        &mut self,
        tx: &mut Tx,
        tenant: Uuid,
        input: &ReceiptInput,
        i: usize,
        p: &Product,
        errors: &mut Vec<FieldError>,
    ) -> Result<Vec<(usize, MarkingCode)>> {
        let l = &input.lines[i];
        let field = format!("lines[{i}].marking_codes");
        if !p.marked {
            if !l.marking_codes.is_empty() {
                errors.push(FieldError::new(
                    field,
                    "the product is not marked: its lines take no marking codes",
                ));
            }
            return Ok(Vec::new());
        }
        if l.marking_codes.is_empty() {
            errors.push(FieldError::new(
                field,
                "the product is marked: scan one marking code per unit",
            ));
            return Ok(Vec::new());
        }
        let milli = l.qty.milli();
        if milli % 1000 != 0 {
            errors.push(FieldError::new(
                format!("lines[{i}].qty"),
                "a marked product is sold in whole units, one marking code each",
            ));
        } else if milli / 1000 != l.marking_codes.len() as i64 {
            errors.push(FieldError::new(
                field,
                format!(
                    "{} marking codes for a quantity of {}: one code per unit",
                    l.marking_codes.len(),
                    l.qty
                ),
            ));
        }
        let barcodes: Vec<Barcode> = p
            .barcodes
            .iter()
            .filter_map(|b| Barcode::parse(b).ok())
            .collect();
        let mut out = Vec::with_capacity(l.marking_codes.len());
        for (j, raw) in l.marking_codes.iter().enumerate() {
            let f = code_field(i, j);
            let code = match MarkingCode::parse(raw) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(FieldError::new(f, e.to_string()));
                    continue;
                }
            };
            if !barcodes.iter().any(|b| code.matches_barcode(b)) {
                errors.push(FieldError::new(
                    f,
                    format!("the code's GTIN {} is none of the product's barcodes: the code marks another product", code.gtin()),
                ));
                continue;
            }
            let label = code.label();
            if let Some(&(li, lj)) = self.seen.get(&label) {
                errors.push(FieldError::new(
                    f,
                    format!(
                        "the same unit is already on {} of this receipt",
                        code_field(li, lj)
                    ),
                ));
                continue;
            }
            self.seen.insert(label.clone(), (i, j));
            let known = marked_in_tx(tx, tenant, &label).await?;
            match (input.kind, input.refund_of, known) {
                (ReceiptType::Sale, _, Some(k)) if k.state == CodeState::Sold => {
                    errors.push(FieldError::new(
                        f,
                        format!(
                            "this unit was already sold (receipt {}) and has not been returned",
                            k.sale_receipt_id
                        ),
                    ));
                    continue;
                }
                (ReceiptType::Sale, _, _) => {}
                (ReceiptType::Refund, Some(sale), Some(k))
                    if k.sale_receipt_id == sale && k.state == CodeState::Sold => {}
                (ReceiptType::Refund, Some(sale), Some(k)) if k.sale_receipt_id == sale => {
                    let by = k
                        .refund_receipt_id
                        .map(|r| format!(" (refund {r})"))
                        .unwrap_or_default();
                    errors.push(FieldError::new(
                        f,
                        format!("this unit was already returned{by}"),
                    ));
                    continue;
                }
                (ReceiptType::Refund, Some(_), _) => {
                    errors.push(FieldError::new(
                        f,
                        "this unit was not sold on the refunded sale",
                    ));
                    continue;
                }
                // No sale named: refund_of carries the problem.
                (ReceiptType::Refund, None, _) => continue,
            }
            out.push((j, code));
        }
        self.by_line.insert(i, out.clone());
        Ok(out)
    }

    /// Register the receipt's codes as sold (or returned) and emit `marking.sold` /
    /// `marking.returned`. The key on (tenant, label) settles a race with another till: the
    /// loser's upsert finds a sold row and changes nothing.
    async fn register(
        self,
        tx: &mut Tx,
        tenant: Uuid,
        receipt: &Receipt,
        online: OnlineCheck,
    ) -> Result<()> {
        if self.by_line.values().all(Vec::is_empty) {
            return Ok(());
        }
        let now = now_micros();
        let mut listed = Vec::new();
        for (i, codes) in &self.by_line {
            let Some(line) = receipt.lines.iter().find(|l| l.line_no as usize == i + 1) else {
                continue;
            };
            for (j, c) in codes {
                let label = c.label();
                match receipt.kind {
                    ReceiptType::Sale => {
                        let won: Option<String> = sqlx::query_scalar(
                            "INSERT INTO marking_codes (tenant_id, label, gtin, code, product_id, state, sale_receipt_id, sale_line_no, refund_receipt_id, online_check, check_note, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, 'sold', $6, $7, NULL, $8, NULL, $9) \
                             ON CONFLICT (tenant_id, label) DO UPDATE SET gtin = excluded.gtin, code = excluded.code, product_id = excluded.product_id, \
                             state = 'sold', sale_receipt_id = excluded.sale_receipt_id, sale_line_no = excluded.sale_line_no, refund_receipt_id = NULL, \
                             online_check = excluded.online_check, check_note = NULL, updated_at = excluded.updated_at \
                             WHERE marking_codes.state = 'returned' RETURNING label",
                        )
                        .bind(tenant)
                        .bind(&label)
                        .bind(c.gtin())
                        .bind(c.raw())
                        .bind(line.product_id)
                        .bind(receipt.id)
                        .bind(line.line_no as i64)
                        .bind(online.as_str())
                        .bind(now)
                        .fetch_optional(&mut **tx)
                        .await?;
                        if won.is_none() {
                            let by = marked_in_tx(tx, tenant, &label)
                                .await?
                                .map(|k| format!(" (receipt {})", k.sale_receipt_id));
                            return Err(StorageError::invalid(
                                code_field(*i, *j),
                                format!(
                                    "this unit was already sold{} and has not been returned",
                                    by.unwrap_or_default()
                                ),
                            ));
                        }
                    }
                    ReceiptType::Refund => {
                        let done = sqlx::query(
                            "UPDATE marking_codes SET state = 'returned', refund_receipt_id = $3, updated_at = $5 \
                             WHERE tenant_id = $1 AND label = $2 AND state = 'sold' AND sale_receipt_id = $4",
                        )
                        .bind(tenant)
                        .bind(&label)
                        .bind(receipt.id)
                        .bind(receipt.refund_of)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                        if done.rows_affected() != 1 {
                            return Err(StorageError::invalid(
                                code_field(*i, *j),
                                "this unit is not sold on the refunded sale (returned already, or never sold there)",
                            ));
                        }
                    }
                }
                listed.push(code_json(line.line_no, line.product_id, c));
            }
        }
        match receipt.kind {
            ReceiptType::Sale => {
                let data = json!({
                    "receipt_id": receipt.id,
                    "store_id": receipt.store_id,
                    "terminal_id": receipt.terminal_id,
                    "online_check": online.as_str(),
                    "codes": listed,
                });
                emit(tx, tenant, "marking.sold", data).await
            }
            ReceiptType::Refund => {
                let data = json!({
                    "receipt_id": receipt.id,
                    "refund_of": receipt.refund_of,
                    "store_id": receipt.store_id,
                    "terminal_id": receipt.terminal_id,
                    "codes": listed,
                });
                emit(tx, tenant, "marking.returned", data).await
            }
        }
    }
}

/// The barcodes a GTIN-14 may have been entered as: itself, EAN-13, UPC-A, EAN-8.
fn gtin_forms(gtin: &str) -> Vec<String> {
    let mut v = vec![gtin.to_string()];
    for (zeros, len) in [(1, 13), (2, 12), (6, 8)] {
        if gtin.len() == 14 && gtin[..zeros].bytes().all(|b| b == b'0') {
            v.push(gtin[14 - len..].to_string());
        }
    }
    v
}

#[async_trait]
impl crate::marking::MarkingStore for Backend {
    async fn submit_receipt_checked(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &MarkingPrecheck,
    ) -> Result<ReceiptOutcome> {
        self.record_receipt(actor, input, request_hash, precheck)
            .await
    }

    async fn check_receipt(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &MarkingPrecheck,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let outcome = write_receipt(&mut tx, actor, input, request_hash, precheck).await;
        tx.rollback().await?;
        outcome.map(|_| ())
    }

    async fn marked_codes(
        &self,
        tenant: Uuid,
        labels: &[String],
    ) -> Result<Vec<Option<MarkedCode>>> {
        let mut out = Vec::with_capacity(labels.len());
        let sql =
            format!("SELECT {MARKED_COLS} FROM marking_codes WHERE tenant_id = $1 AND label = $2");
        for label in labels {
            let row = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(tenant)
                .bind(label)
                .fetch_optional(&self.read)
                .await?;
            out.push(row.as_ref().map(marked_from_row).transpose()?);
        }
        Ok(out)
    }

    async fn product_by_gtin(&self, tenant: Uuid, gtin: &str) -> Result<Option<(Uuid, bool)>> {
        let forms = gtin_forms(gtin);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT p.id, p.marked, p.deleted FROM product_barcodes b JOIN products p ON p.tenant_id = b.tenant_id AND p.id = b.product_id WHERE b.tenant_id = ",
        );
        qb.push_bind(tenant).push(" AND b.barcode IN (");
        let mut sep = qb.separated(", ");
        for f in &forms {
            sep.push_bind(f.clone());
        }
        qb.push(")");
        let rows = qb.build().fetch_all(&self.read).await?;
        for r in rows {
            let deleted: bool = r.try_get("deleted")?;
            if !deleted {
                return Ok(Some((r.try_get("id")?, r.try_get("marked")?)));
            }
        }
        Ok(None)
    }

    async fn pending_marking_checks(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
    ) -> Result<Vec<MarkedCode>> {
        let sql = format!(
            "SELECT {MARKED_COLS} FROM marking_codes WHERE tenant_id = $1 AND sale_receipt_id = $2 AND online_check = 'pending' ORDER BY sale_line_no, label"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(receipt_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(marked_from_row).collect()
    }

    async fn finish_marking_recheck(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        results: &[RecheckResult],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_micros();
        let mut failed = Vec::new();
        for r in results {
            let (state, note) = match &r.failure {
                None => ("ok", None),
                Some(f) => ("failed", Some(f.reason.clone())),
            };
            let done = sqlx::query(
                "UPDATE marking_codes SET online_check = $4, check_note = $5, updated_at = $6 \
                 WHERE tenant_id = $1 AND label = $2 AND sale_receipt_id = $3 AND online_check = 'pending'",
            )
            .bind(tenant)
            .bind(&r.label)
            .bind(receipt_id)
            .bind(state)
            .bind(note)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1
                && let Some(f) = &r.failure
            {
                let code: Option<String> = sqlx::query_scalar(
                    "SELECT code FROM marking_codes WHERE tenant_id = $1 AND label = $2",
                )
                .bind(tenant)
                .bind(&r.label)
                .fetch_optional(&mut *tx)
                .await?;
                failed.push(json!({
                    "label": r.label,
                    "code": code,
                    "verdict": f.verdict,
                    "status": f.status,
                    "reason": f.reason,
                }));
            }
        }
        if !failed.is_empty() {
            let store: Option<Uuid> = sqlx::query_scalar(
                "SELECT store_id FROM receipts WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant)
            .bind(receipt_id)
            .fetch_optional(&mut *tx)
            .await?;
            emit(
                &mut tx,
                tenant,
                "marking.check_failed",
                json!({"receipt_id": receipt_id, "store_id": store, "codes": failed}),
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(())
    }

    async fn marking_rechecks_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        older_than: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<PendingRecheck>> {
        let rows = sqlx::query(
            "SELECT m.tenant_id, m.sale_receipt_id, MAX(c.checks) AS checks, MIN(m.updated_at) AS waiting \
             FROM marking_codes m LEFT JOIN marking_rechecks c \
             ON c.tenant_id = m.tenant_id AND c.receipt_id = m.sale_receipt_id \
             WHERE m.online_check = 'pending' AND m.updated_at <= $2 \
             AND (c.next_check_at IS NULL OR c.next_check_at <= $1) \
             GROUP BY m.tenant_id, m.sale_receipt_id ORDER BY waiting LIMIT $3",
        )
        .bind(now.timestamp_micros())
        .bind(older_than.timestamp_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let checks: Option<i64> = r.try_get("checks")?;
                Ok(PendingRecheck {
                    tenant_id: r.try_get("tenant_id")?,
                    receipt_id: r.try_get("sale_receipt_id")?,
                    checks: u32::try_from(checks.unwrap_or(0)).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn claim_marking_recheck(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        // One statement: of two workers, the second finds the row claimed (on PostgreSQL it
        // waits for the first and then sees its lease) and gets no row back; a worker whose
        // list was read before another finished the receipt finds no code pending any more.
        let won: Option<i64> = sqlx::query_scalar(
            "INSERT INTO marking_rechecks (tenant_id, receipt_id, next_check_at, checks) \
             SELECT $1, $2, $4, 0 WHERE EXISTS (SELECT 1 FROM marking_codes \
                 WHERE tenant_id = $1 AND sale_receipt_id = $2 AND online_check = 'pending') \
             ON CONFLICT (tenant_id, receipt_id) DO UPDATE \
             SET next_check_at = excluded.next_check_at WHERE marking_rechecks.next_check_at <= $3 \
             RETURNING checks",
        )
        .bind(tenant)
        .bind(receipt_id)
        .bind(now.timestamp_micros())
        .bind(lease_until.timestamp_micros())
        .fetch_optional(&self.write)
        .await?;
        Ok(won.is_some())
    }

    async fn marking_recheck_later(
        &self,
        tenant: Uuid,
        receipt_id: Uuid,
        next_at: chrono::DateTime<chrono::Utc>,
        error: &str,
    ) -> Result<()> {
        recheck_later(&self.write, "marking_rechecks", tenant, receipt_id, next_at, error).await
    }

    async fn marking_recheck_done(&self, tenant: Uuid, receipt_id: Uuid) -> Result<()> {
        recheck_done(&self.write, "marking_rechecks", tenant, receipt_id).await
    }
}
