// Group commit's fast path for plain sales, `include!`d after `shared.rs` by both backends.
//
// Written one by one, a receipt costs about eleven statements, and every statement is a round
// trip (to PostgreSQL, or to SQLite's connection thread). The plain sales of a batch (no refund,
// no marking code, no QR payment, an id seen once in the batch) are instead read (first any
// receipt already stored under their ids: a retry is answered as stored), checked and written
// together: a handful of multi-row statements for the whole batch. Each receipt gets
// exactly what it would get written alone, in batch order: the same checks and problems, its
// own number, the levels after it in its `stock.changed` events, and refusal when it would take
// stock below zero under `forbid_negative_stock`.
//
// Whatever the plan cannot decide before writing (stock going below zero, an id a concurrent
// writer stored meanwhile) undoes the plan's writes (a savepoint) and leaves its receipts to
// the one-by-one path, which answers them as before.

/// A plain sale that passed its checks, waiting for its number.
struct PlannedSale {
    job: usize,
    shift_id: Option<Uuid>,
    lines: Vec<ReceiptLine>,
    forbid_negative_stock: bool,
}

/// A job the fast path can take: a sale without refund, marking codes or QR payment.
fn plain_sale(job: &group_commit::Job) -> bool {
    let i = &job.input;
    i.kind == ReceiptType::Sale
        && i.refund_of.is_none()
        && i.payments.iter().all(|p| p.payment_id.is_none())
        && i.lines.iter().all(|l| l.marking_codes.is_empty())
}

/// Answer the batch's plain sales (their slots in `answers`) with the fast path; the other
/// slots stay empty for the one-by-one path. Returns how many receipts it stored. An error
/// means the transaction is broken.
async fn write_plain_sales(tx: &mut Tx, jobs: &[group_commit::Job], answers: &mut [Option<Result<ReceiptOutcome>>]) -> Result<u64> {
    let mut seen: HashMap<(Uuid, Uuid), usize> = HashMap::new();
    for job in jobs {
        *seen.entry((job.actor.tenant_id, job.input.id)).or_insert(0) += 1;
    }
    // A retry within the batch stays on the one-by-one path, which answers it in order.
    let picked: Vec<usize> = (0..jobs.len())
        .filter(|&i| plain_sale(&jobs[i]) && seen[&(jobs[i].actor.tenant_id, jobs[i].input.id)] == 1)
        .collect();
    if picked.len() < 2 {
        return Ok(0);
    }
    sqlx::raw_sql("SAVEPOINT plain_sales").execute(&mut **tx).await?;
    match plan_plain_sales(tx, jobs, &picked).await {
        Ok(Some(done)) => {
            let mut stored = 0;
            for (i, answer) in done {
                stored += u64::from(matches!(answer, Ok(ReceiptOutcome::Created(_))));
                answers[i] = Some(answer);
            }
            Ok(stored)
        }
        outcome => {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "plain sales of a batch: written one by one instead");
            }
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT plain_sales").execute(&mut **tx).await?;
            Ok(0)
        }
    }
}

/// Check and write the `picked` jobs together. `None`: undo, write them one by one.
async fn plan_plain_sales(
    tx: &mut Tx,
    jobs: &[group_commit::Job],
    picked: &[usize],
) -> Result<Option<Vec<(usize, Result<ReceiptOutcome>)>>> {
    let mut done: Vec<(usize, Result<ReceiptOutcome>)> = Vec::with_capacity(picked.len());

    // Everything the checks read, in one query per kind of thing (per tenant where scoped).
    let mut keys: Vec<ContextKey> = picked.iter().map(|&i| context_key(&jobs[i])).collect();
    keys.sort_unstable();
    keys.dedup();
    let contexts = receipt_contexts(tx, &keys).await?;
    let mut wanted: BTreeMap<Uuid, (Vec<Uuid>, Vec<Uuid>)> = BTreeMap::new();
    for &i in picked {
        let w = wanted.entry(jobs[i].actor.tenant_id).or_default();
        w.0.extend(jobs[i].input.lines.iter().map(|l| l.product_id));
        w.1.extend(jobs[i].input.customer_id);
    }
    // Receipts stored already (a retry after its answer was lost): answered as stored,
    // whatever changed since.
    let mut stored_before = HashMap::new();
    for &i in picked {
        stored_before.entry(jobs[i].actor.tenant_id).or_insert_with(Vec::new).push(jobs[i].input.id);
    }
    let mut retries = HashMap::new();
    for (tenant, ids) in stored_before {
        for (id, found) in receipts_by_ids(tx, tenant, &ids).await? {
            retries.insert((tenant, id), found);
        }
    }
    let mut products = HashMap::new();
    let mut customers = std::collections::HashSet::new();
    for (tenant, (product_ids, customer_ids)) in &wanted {
        for (id, p) in products_in_tx(tx, *tenant, product_ids).await? {
            products.insert((*tenant, id), p);
        }
        if !customer_ids.is_empty() {
            customers.extend(customers_found(tx, *tenant, customer_ids).await?.into_iter().map(|c| (*tenant, c)));
        }
    }

    // The checks of `write_receipt`, in its order, for each sale.
    let mut sales: Vec<PlannedSale> = Vec::with_capacity(picked.len());
    for &i in picked {
        let (actor, input) = (&jobs[i].actor, &jobs[i].input);
        let tenant = actor.tenant_id;
        if let Some((r, hash)) = retries.remove(&(tenant, input.id)) {
            done.push((i, replay(r, &hash, &jobs[i].request_hash)));
            continue;
        }
        if let Some(bound) = actor.store_id
            && bound != input.store_id
        {
            done.push((i, Err(StorageError::invalid("store_id", "this token is bound to another store"))));
            continue;
        }
        let Some(ctx) = contexts.get(&context_key(&jobs[i])) else {
            done.push((i, Err(StorageError::NotFound("tenant"))));
            continue;
        };
        let mut errors = Vec::new();
        let customer_found = input.customer_id.is_some_and(|c| customers.contains(&(tenant, c)));
        let shift_id = check_receipt_header(input, ctx, customer_found, &mut errors);
        let mut lines = Vec::with_capacity(input.lines.len());
        let mut marking = MarkingLines::default();
        for (n, l) in input.lines.iter().enumerate() {
            let Some((p, deleted)) = products.get(&(tenant, l.product_id)) else {
                errors.push(FieldError::new(format!("lines[{n}].product_id"), "no such product"));
                continue;
            };
            // Without codes this reads nothing: it only says a marked product needs them.
            marking.check_line(tx, tenant, input, n, p, &mut errors).await?;
            let line = sale_terms(n, l, p, *deleted).and_then(|(price, discount)| priced_line(n, l, p, price, discount, Vec::new()));
            match line {
                Ok(line) => lines.push(line),
                Err(e) => errors.push(e),
            }
        }
        check_payments(input, &lines, &mut errors);
        if !errors.is_empty() {
            done.push((i, Err(StorageError::Invalid(errors))));
            continue;
        }
        sales.push(PlannedSale { job: i, shift_id, lines, forbid_negative_stock: ctx.settings.forbid_negative_stock });
    }
    if sales.is_empty() {
        return Ok(Some(done));
    }

    // Numbers: one counter update per store, in key order (the order row locks are taken in).
    let mut per_store: BTreeMap<(Uuid, Uuid), Vec<usize>> = BTreeMap::new();
    for (k, s) in sales.iter().enumerate() {
        let job = &jobs[s.job];
        per_store.entry((job.actor.tenant_id, job.input.store_id)).or_default().push(k);
    }
    let mut numbers = vec![0i64; sales.len()];
    for ((tenant, store), ks) in &per_store {
        let first: Option<i64> = sqlx::query_scalar(
            "UPDATE stores SET next_receipt_no = next_receipt_no + $3 WHERE tenant_id = $1 AND id = $2 RETURNING next_receipt_no - $3",
        )
        .bind(tenant)
        .bind(store)
        .bind(ks.len() as i64)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(first) = first else { return Ok(None) };
        for (n, &k) in ks.iter().enumerate() {
            numbers[k] = first + n as i64;
        }
    }

    let now = now_micros();
    let receipts: Vec<Receipt> = sales
        .iter_mut()
        .zip(&numbers)
        .map(|(s, &number)| {
            let job = &jobs[s.job];
            new_receipt(&job.actor, &job.input, number, s.shift_id, std::mem::take(&mut s.lines), &job.precheck, now)
        })
        .collect();
    let rows: Vec<(Uuid, &Receipt, &str)> =
        sales.iter().zip(&receipts).map(|(s, r)| (jobs[s.job].actor.tenant_id, r, jobs[s.job].request_hash.as_str())).collect();
    if insert_receipts(tx, &rows).await?.len() != rows.len() {
        // Another writer stored one of these ids meanwhile: the one-by-one path replays it.
        return Ok(None);
    }
    let stored: Vec<(Uuid, &Receipt)> = rows.iter().map(|(t, r, _)| (*t, *r)).collect();
    insert_receipt_lines(tx, &stored).await?;
    let moves: Vec<StockMove> = stored
        .iter()
        .flat_map(|(tenant, r)| {
            r.lines.iter().map(move |l| StockMove {
                tenant: *tenant,
                store: r.store_id,
                product: l.product_id,
                delta: -l.qty.milli(),
                doc_type: ReceiptType::Sale.as_str(),
                doc_id: r.id,
            })
        })
        .collect();
    let after = move_stock_rows(tx, &moves).await?;

    // Replay the batch in order from the levels before it: each sale's levels after it, and
    // whether one took stock below zero where that is forbidden.
    let mut on_hand: HashMap<(Uuid, Uuid, Uuid), i64> = after.iter().map(|(k, lv)| (*k, lv.on_hand.milli())).collect();
    for m in &moves {
        if let Some(v) = on_hand.get_mut(&(m.tenant, m.store, m.product)) {
            *v -= m.delta;
        }
    }
    let mut events: Vec<(Uuid, &str, Value)> = Vec::with_capacity(stored.len() * 6);
    for (s, (tenant, r)) in sales.iter().zip(&stored) {
        let mut levels: BTreeMap<(Uuid, Uuid), StockLevel> = BTreeMap::new();
        for l in &r.lines {
            let key = (*tenant, r.store_id, l.product_id);
            let (Some(v), Some(lv)) = (on_hand.get_mut(&key), after.get(&key)) else {
                return Err(StorageError::Corrupt("a sold product has no stock level".into()));
            };
            *v -= l.qty.milli();
            let available = *v - lv.reserved.milli();
            if s.forbid_negative_stock && available < 0 {
                return Ok(None);
            }
            let level = StockLevel {
                store_id: r.store_id,
                product_id: l.product_id,
                on_hand: Qty::from_milli(*v),
                reserved: lv.reserved,
                available: Qty::from_milli(available),
            };
            levels.insert((r.store_id, l.product_id), level);
        }
        events.push((*tenant, "receipt.created", serde_json::to_value(r)?));
        for lv in levels.values() {
            events.push((*tenant, "stock.changed", serde_json::to_value(lv)?));
        }
    }
    emit_rows(tx, &events).await?;
    for (s, r) in sales.iter().zip(receipts) {
        done.push((s.job, Ok(ReceiptOutcome::Created(r))));
    }
    Ok(Some(done))
}

fn context_key(job: &group_commit::Job) -> ContextKey {
    (job.actor.tenant_id, job.input.terminal_id, job.input.store_id)
}
