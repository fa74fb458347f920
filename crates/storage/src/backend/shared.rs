// The storage implementation shared by both backends. It is `include!`d by `sqlite.rs` and
// `postgres.rs`, each of which defines `Db`, `DIALECT`, `MIGRATIONS`, `Backend` and `begin()`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use savdo_domain::Qty;
use savdo_domain::ids::new_id;
use savdo_domain::receipt::{ReceiptType, compute_line, pro_rata};
use savdo_domain::tenant::{Role, TenantSettings};
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, QueryBuilder, Row};
use uuid::Uuid;

use crate::backend::group_commit::{self, GroupCommit};
use crate::backend::{now_micros, ts};
use crate::error::{FieldError, StorageError};
use crate::model::*;
use crate::{Paged, Storage};

type Tx = sqlx::Transaction<'static, Db>;
type DbRow = <Db as sqlx::Database>::Row;

fn page_limit(limit: u32) -> i64 {
    limit.clamp(1, 500) as i64
}

/// Cut a page fetched with `limit + 1` rows and say where the next one starts.
fn paginate<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Paged<T> {
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(&id)
    } else {
        None
    };
    (items, next)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn emit(tx: &mut Tx, tenant: Uuid, kind: &str, data: Value) -> Result<()> {
    sqlx::query("INSERT INTO outbox (id, tenant_id, type, data, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(new_id())
        .bind(tenant)
        .bind(kind)
        .bind(Json(data))
        .bind(now_micros())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn audit(tx: &mut Tx, actor: &Actor, action: &str, entity: &str, entity_id: Option<String>, details: Value) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, token_id, action, entity, entity_id, details, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id())
    .bind(actor.tenant_id)
    .bind(actor.token_id)
    .bind(action)
    .bind(entity)
    .bind(entity_id)
    .bind(Json(details))
    .bind(now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn next_counter(tx: &mut Tx, tenant: Uuid, name: &str) -> Result<i64> {
    let v: i64 = sqlx::query_scalar(
        "INSERT INTO counters (tenant_id, name, value) VALUES ($1, $2, 1) \
         ON CONFLICT (tenant_id, name) DO UPDATE SET value = counters.value + 1 RETURNING value",
    )
    .bind(tenant)
    .bind(name)
    .fetch_one(&mut **tx)
    .await?;
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Row mapping

fn store_from_row(r: &DbRow) -> Result<Store> {
    Ok(Store {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        address: r.try_get("address")?,
        active: r.try_get("active")?,
        created_at: ts(r.try_get("created_at")?),
    })
}

fn token_from_row(r: &DbRow) -> Result<TokenInfo> {
    let role: String = r.try_get("role")?;
    Ok(TokenInfo {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StorageError::Corrupt(format!("role {role}")))?,
        store_id: r.try_get("store_id")?,
        created_at: ts(r.try_get("created_at")?),
    })
}

fn shift_from_row(r: &DbRow) -> Result<Shift> {
    Ok(Shift {
        id: r.try_get("id")?,
        terminal_id: r.try_get("terminal_id")?,
        opened_at: ts(r.try_get("opened_at")?),
        closed_at: r.try_get::<Option<i64>, _>("closed_at")?.map(ts),
    })
}

fn product_from_row(r: &DbRow) -> Result<Product> {
    let vat: i64 = r.try_get("vat_percent")?;
    let unit: i64 = r.try_get("unit")?;
    Ok(Product {
        id: r.try_get("id")?,
        sku: r.try_get("sku")?,
        name: r.try_get("name")?,
        barcodes: r.try_get::<Json<Vec<String>>, _>("barcodes")?.0,
        price: r.try_get("price")?,
        vat_percent: u8::try_from(vat).map_err(|_| StorageError::Corrupt("vat_percent".into()))?,
        mxik: r.try_get("mxik")?,
        package_code: r.try_get("package_code")?,
        unit: i32::try_from(unit).map_err(|_| StorageError::Corrupt("unit".into()))?,
        marked: r.try_get("marked")?,
        active: r.try_get("active")?,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

fn customer_from_row(r: &DbRow) -> Result<Customer> {
    Ok(Customer {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        phone: r.try_get("phone")?,
        loyalty_card: r.try_get("loyalty_card")?,
        external_ids: r.try_get::<Json<serde_json::Map<String, Value>>, _>("external_ids")?.0,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

fn level_from_row(r: &DbRow) -> Result<StockLevel> {
    let on_hand = Qty::from_milli(r.try_get("on_hand")?);
    let reserved = Qty::from_milli(r.try_get("reserved")?);
    Ok(StockLevel {
        store_id: r.try_get("store_id")?,
        product_id: r.try_get("product_id")?,
        on_hand,
        reserved,
        available: Qty::from_milli(on_hand.milli() - reserved.milli()),
    })
}

fn invoice_from_row(r: &DbRow) -> Result<Invoice> {
    let status: String = r.try_get("status")?;
    Ok(Invoice {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        store_id: r.try_get("store_id")?,
        customer_id: r.try_get("customer_id")?,
        channel: r.try_get("channel")?,
        external_ref: r.try_get("external_ref")?,
        status: InvoiceStatus::parse(&status).ok_or_else(|| StorageError::Corrupt(format!("status {status}")))?,
        lines: r.try_get::<Json<Vec<InvoiceLine>>, _>("lines")?.0,
        total: r.try_get("total")?,
        note: r.try_get("note")?,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

const PRODUCT_COLS: &str = "id, sku, name, barcodes, price, vat_percent, mxik, package_code, unit, marked, active, created_at, updated_at";
const CUSTOMER_COLS: &str = "id, name, phone, loyalty_card, external_ids, created_at, updated_at";
const INVOICE_COLS: &str = "id, number, store_id, customer_id, channel, external_ref, status, lines, total, note, created_at, updated_at";

// ---------------------------------------------------------------------------------------------
// Transactional helpers

async fn load_settings(tx: &mut Tx, tenant: Uuid) -> Result<TenantSettings> {
    let row: Option<Json<Value>> = sqlx::query_scalar("SELECT settings FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut **tx)
        .await?;
    let v = row.ok_or(StorageError::NotFound("tenant"))?.0;
    Ok(serde_json::from_value(v)?)
}

async fn store_exists(tx: &mut Tx, tenant: Uuid, store: Uuid) -> Result<bool> {
    let n: Option<Uuid> = sqlx::query_scalar("SELECT id FROM stores WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(store)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(n.is_some())
}

async fn product_in_tx(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<(Product, bool)>> {
    let sql = format!("SELECT {PRODUCT_COLS}, deleted FROM products WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        Some(r) => {
            let deleted: bool = r.try_get("deleted")?;
            Ok(Some((product_from_row(&r)?, deleted)))
        }
        None => Ok(None),
    }
}

/// Apply a change to one stock row and record the movement (for `on_hand` changes).
/// Returns the level after the change.
#[allow(clippy::too_many_arguments)]
async fn move_stock(
    tx: &mut Tx,
    tenant: Uuid,
    store: Uuid,
    product: Uuid,
    on_hand_delta: i64,
    reserved_delta: i64,
    doc_type: &str,
    doc_id: Uuid,
) -> Result<StockLevel> {
    let row = sqlx::query(
        "INSERT INTO stock_levels (tenant_id, store_id, product_id, on_hand, reserved) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, store_id, product_id) DO UPDATE \
         SET on_hand = stock_levels.on_hand + excluded.on_hand, reserved = stock_levels.reserved + excluded.reserved \
         RETURNING store_id, product_id, on_hand, reserved",
    )
    .bind(tenant)
    .bind(store)
    .bind(product)
    .bind(on_hand_delta)
    .bind(reserved_delta)
    .fetch_one(&mut **tx)
    .await?;
    if on_hand_delta != 0 {
        sqlx::query(
            "INSERT INTO stock_movements (id, tenant_id, store_id, product_id, doc_type, doc_id, delta, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new_id())
        .bind(tenant)
        .bind(store)
        .bind(product)
        .bind(doc_type)
        .bind(doc_id)
        .bind(on_hand_delta)
        .bind(now_micros())
        .execute(&mut **tx)
        .await?;
    }
    level_from_row(&row)
}

async fn current_on_hand(tx: &mut Tx, tenant: Uuid, store: Uuid, product: Uuid) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT on_hand FROM stock_levels WHERE tenant_id = $1 AND store_id = $2 AND product_id = $3",
    )
    .bind(tenant)
    .bind(store)
    .bind(product)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(v.unwrap_or(0))
}

/// One `stock.changed` per level, in one statement (rows in key order).
async fn emit_levels(tx: &mut Tx, tenant: Uuid, levels: &BTreeMap<(Uuid, Uuid), StockLevel>) -> Result<()> {
    let rows = levels
        .values()
        .map(|lv| Ok((tenant, "stock.changed", serde_json::to_value(lv)?)))
        .collect::<Result<Vec<_>>>()?;
    emit_rows(tx, &rows).await
}

/// Outbox events `(tenant, type, data)` in the given order, in as few statements as the bind
/// limits allow.
async fn emit_rows(tx: &mut Tx, rows: &[(Uuid, &str, Value)]) -> Result<()> {
    let now = now_micros();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("INSERT INTO outbox (id, tenant_id, type, data, created_at) ");
        qb.push_values(chunk, |mut b, (tenant, kind, data)| {
            b.push_bind(new_id()).push_bind(*tenant).push_bind(*kind).push_bind(Json(data)).push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Rows one multi-row statement carries at most (well under both databases' bind limits).
const ROWS_PER_STATEMENT: usize = 500;

/// [`move_stock`] for the lines of one document in one store, in two statements whatever the
/// number of lines. Returns each product's level after the whole document.
async fn move_stock_lines(
    tx: &mut Tx,
    tenant: Uuid,
    store: Uuid,
    lines: &[(Uuid, i64)],
    doc_type: &str,
    doc_id: Uuid,
) -> Result<BTreeMap<Uuid, StockLevel>> {
    let moves: Vec<StockMove> =
        lines.iter().map(|&(product, delta)| StockMove { tenant, store, product, delta, doc_type, doc_id }).collect();
    let after = move_stock_rows(tx, &moves).await?;
    Ok(after.into_iter().map(|((_, _, p), lv)| (p, lv)).collect())
}

/// One on-hand change of a document line.
struct StockMove<'a> {
    tenant: Uuid,
    store: Uuid,
    product: Uuid,
    delta: i64,
    doc_type: &'a str,
    doc_id: Uuid,
}

/// On-hand changes of any number of lines (of one or several documents, tenants and stores):
/// the levels upserted once per (tenant, store, product) with the deltas summed, in key order
/// (the order in which PostgreSQL takes the row locks, the same in every writer), and one
/// movement per non-zero change. Returns each level after all of them, by (tenant, store,
/// product).
async fn move_stock_rows(tx: &mut Tx, moves: &[StockMove<'_>]) -> Result<BTreeMap<(Uuid, Uuid, Uuid), StockLevel>> {
    let mut per_key: BTreeMap<(Uuid, Uuid, Uuid), i64> = BTreeMap::new();
    for m in moves {
        *per_key.entry((m.tenant, m.store, m.product)).or_insert(0) += m.delta;
    }
    let per_key: Vec<((Uuid, Uuid, Uuid), i64)> = per_key.into_iter().collect();
    let mut levels = BTreeMap::new();
    for chunk in per_key.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("INSERT INTO stock_levels (tenant_id, store_id, product_id, on_hand, reserved) ");
        qb.push_values(chunk, |mut b, ((t, s, p), d)| {
            b.push_bind(*t).push_bind(*s).push_bind(*p).push_bind(*d).push_bind(0i64);
        });
        qb.push(
            " ON CONFLICT (tenant_id, store_id, product_id) DO UPDATE \
             SET on_hand = stock_levels.on_hand + excluded.on_hand, reserved = stock_levels.reserved + excluded.reserved \
             RETURNING tenant_id, store_id, product_id, on_hand, reserved",
        );
        for row in qb.build().fetch_all(&mut **tx).await? {
            let tenant: Uuid = row.try_get("tenant_id")?;
            let lv = level_from_row(&row)?;
            levels.insert((tenant, lv.store_id, lv.product_id), lv);
        }
    }
    let moved: Vec<&StockMove> = moves.iter().filter(|m| m.delta != 0).collect();
    let now = now_micros();
    for chunk in moved.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "INSERT INTO stock_movements (id, tenant_id, store_id, product_id, doc_type, doc_id, delta, created_at) ",
        );
        qb.push_values(chunk, |mut b, m| {
            b.push_bind(new_id())
                .push_bind(m.tenant)
                .push_bind(m.store)
                .push_bind(m.product)
                .push_bind(m.doc_type.to_owned())
                .push_bind(m.doc_id)
                .push_bind(m.delta)
                .push_bind(now);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(levels)
}

/// After [`move_stock_lines`] took stock away: the first line (in line order) at which its
/// product's available stock went below zero, with the level as it was right after that line.
fn first_negative_line(lines: &[(Uuid, i64)], after: &BTreeMap<Uuid, StockLevel>) -> Option<(usize, StockLevel)> {
    let mut total: HashMap<Uuid, i64> = HashMap::new();
    for (p, d) in lines {
        *total.entry(*p).or_insert(0) += d;
    }
    // Running on-hand per product, starting from the level before the document.
    let mut running: HashMap<Uuid, i64> = HashMap::new();
    for (i, (p, d)) in lines.iter().enumerate() {
        let lv = after.get(p)?;
        let on_hand = running.entry(*p).or_insert_with(|| lv.on_hand.milli() - total[p]);
        *on_hand += d;
        let available = *on_hand - lv.reserved.milli();
        if *d < 0 && available < 0 {
            return Some((
                i,
                StockLevel {
                    store_id: lv.store_id,
                    product_id: lv.product_id,
                    on_hand: Qty::from_milli(*on_hand),
                    reserved: lv.reserved,
                    available: Qty::from_milli(available),
                },
            ));
        }
    }
    None
}

/// `{select} WHERE tenant_id = … AND id IN (…)`: a tenant's rows among `ids` (one chunk).
fn tenant_rows_by_id(select: &str, tenant: Uuid, ids: &[Uuid]) -> QueryBuilder<Db> {
    tenant_rows_by(select, tenant, "id", ids)
}

/// `select` for one tenant's rows whose `column` is one of `ids`; the caller may push more
/// conditions.
fn tenant_rows_by(select: &str, tenant: Uuid, column: &str, ids: &[Uuid]) -> QueryBuilder<Db> {
    let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!("{select} WHERE tenant_id = "));
    qb.push_bind(tenant).push(format!(" AND {column} IN ("));
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(*id);
    }
    qb.push(")");
    qb
}

/// Products by id (with their `deleted` flag), in one query.
async fn products_in_tx(tx: &mut Tx, tenant: Uuid, ids: &[Uuid]) -> Result<HashMap<Uuid, (Product, bool)>> {
    let mut found = HashMap::with_capacity(ids.len());
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut qb = tenant_rows_by_id(&format!("SELECT {PRODUCT_COLS}, deleted FROM products"), tenant, chunk);
        for r in qb.build().fetch_all(&mut **tx).await? {
            let deleted: bool = r.try_get("deleted")?;
            let p = product_from_row(&r)?;
            found.insert(p.id, (p, deleted));
        }
    }
    Ok(found)
}

/// What a receipt checks before its lines: the tenant's settings, the terminal (its store and
/// open shift) and whether the store exists.
struct ReceiptContext {
    settings: TenantSettings,
    terminal: Option<(Uuid, Option<Uuid>)>,
    store_exists: bool,
}

/// (tenant, terminal, store) of a receipt.
type ContextKey = (Uuid, Uuid, Uuid);

async fn receipt_context(tx: &mut Tx, tenant: Uuid, terminal: Uuid, store: Uuid) -> Result<ReceiptContext> {
    receipt_contexts(tx, &[(tenant, terminal, store)])
        .await?
        .remove(&(tenant, terminal, store))
        .ok_or(StorageError::NotFound("tenant"))
}

/// [`ReceiptContext`]s of several receipts in one query; a key whose tenant does not exist is
/// missing from the answer.
async fn receipt_contexts(tx: &mut Tx, keys: &[ContextKey]) -> Result<HashMap<ContextKey, ReceiptContext>> {
    let mut found = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT / 4) {
        // VALUES columns are column1.. on both databases.
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT v.column1 AS k, t.settings, tm.store_id AS terminal_store, tm.open_shift_id, tm.id AS terminal_id, \
             (SELECT COUNT(*) FROM stores s WHERE s.tenant_id = v.column2 AND s.id = v.column4) AS stores FROM (",
        );
        qb.push_values(chunk.iter().enumerate(), |mut b, (k, (tenant, terminal, store))| {
            b.push_bind(k as i64).push_bind(*tenant).push_bind(*terminal).push_bind(*store);
        });
        qb.push(
            ") AS v JOIN tenants t ON t.id = v.column2 \
             LEFT JOIN terminals tm ON tm.tenant_id = v.column2 AND tm.id = v.column3",
        );
        for row in qb.build().fetch_all(&mut **tx).await? {
            let k: i64 = row.try_get("k")?;
            let key = usize::try_from(k).ok().and_then(|k| chunk.get(k)).ok_or_else(|| StorageError::Corrupt("receipt context key".into()))?;
            let settings: Json<Value> = row.try_get("settings")?;
            let terminal_id: Option<Uuid> = row.try_get("terminal_id")?;
            let terminal = match terminal_id {
                Some(_) => Some((row.try_get("terminal_store")?, row.try_get("open_shift_id")?)),
                None => None,
            };
            let stores: i64 = row.try_get("stores")?;
            found.insert(*key, ReceiptContext { settings: serde_json::from_value(settings.0)?, terminal, store_exists: stores > 0 });
        }
    }
    Ok(found)
}

/// Which of a tenant's customer ids exist, in one query.
async fn customers_found(tx: &mut Tx, tenant: Uuid, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
    let mut found = std::collections::HashSet::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut qb = tenant_rows_by_id("SELECT id FROM customers", tenant, chunk);
        for r in qb.build().fetch_all(&mut **tx).await? {
            found.insert(r.try_get("id")?);
        }
    }
    Ok(found)
}

fn negative_stock(field: String, l: &StockLevel) -> StorageError {
    StorageError::Invalid(vec![FieldError::new(
        field,
        format!("not enough stock: {} available (forbid_negative_stock is on)", l.available),
    )])
}

async fn write_product(tx: &mut Tx, actor: &Actor, id: Uuid, f: &ProductFields, create: bool) -> Result<Product> {
    let now = now_micros();
    let res = if create {
        sqlx::query(
            "INSERT INTO products (id, tenant_id, sku, name, barcodes, price, vat_percent, mxik, package_code, unit, marked, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(&f.sku)
        .bind(&f.name)
        .bind(Json(&f.barcodes))
        .bind(f.price)
        .bind(f.vat_percent as i64)
        .bind(&f.mxik)
        .bind(&f.package_code)
        .bind(f.unit as i64)
        .bind(f.marked)
        .bind(f.active)
        .bind(now)
        .execute(&mut **tx)
        .await
    } else {
        sqlx::query(
            "UPDATE products SET sku = $3, name = $4, barcodes = $5, price = $6, vat_percent = $7, mxik = $8, \
             package_code = $9, unit = $10, marked = $11, active = $12, updated_at = $13 \
             WHERE tenant_id = $2 AND id = $1 AND NOT deleted",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(&f.sku)
        .bind(&f.name)
        .bind(Json(&f.barcodes))
        .bind(f.price)
        .bind(f.vat_percent as i64)
        .bind(&f.mxik)
        .bind(&f.package_code)
        .bind(f.unit as i64)
        .bind(f.marked)
        .bind(f.active)
        .bind(now)
        .execute(&mut **tx)
        .await
    };
    match res {
        Ok(r) if r.rows_affected() == 0 => return Err(StorageError::NotFound("product")),
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(StorageError::conflict_on("sku", format!("a product with sku {:?} exists already", f.sku)));
        }
        Err(e) => return Err(e.into()),
    }
    sqlx::query("DELETE FROM product_barcodes WHERE tenant_id = $1 AND product_id = $2")
        .bind(actor.tenant_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for (i, b) in f.barcodes.iter().enumerate() {
        let r = sqlx::query("INSERT INTO product_barcodes (tenant_id, barcode, product_id) VALUES ($1, $2, $3)")
            .bind(actor.tenant_id)
            .bind(b)
            .bind(id)
            .execute(&mut **tx)
            .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StorageError::conflict_on(
                    format!("barcodes[{i}]"),
                    format!("barcode {b} belongs to another product"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let p = product_in_tx(tx, actor.tenant_id, id).await?.ok_or(StorageError::NotFound("product"))?.0;
    let kind = if create { "product.created" } else { "product.updated" };
    emit(tx, actor.tenant_id, kind, serde_json::to_value(&p)?).await?;
    audit(tx, actor, if create { "create" } else { "update" }, "product", Some(id.to_string()), json!({"sku": f.sku})).await?;
    Ok(p)
}

async fn write_customer(tx: &mut Tx, actor: &Actor, id: Uuid, f: &CustomerFields, create: bool) -> Result<Customer> {
    let now = now_micros();
    let r = if create {
        sqlx::query(
            "INSERT INTO customers (id, tenant_id, name, phone, loyalty_card, external_ids, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(&f.name)
        .bind(&f.phone)
        .bind(&f.loyalty_card)
        .bind(Json(&f.external_ids))
        .bind(now)
        .execute(&mut **tx)
        .await?
    } else {
        sqlx::query(
            "UPDATE customers SET name = $3, phone = $4, loyalty_card = $5, external_ids = $6, updated_at = $7 \
             WHERE tenant_id = $2 AND id = $1",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(&f.name)
        .bind(&f.phone)
        .bind(&f.loyalty_card)
        .bind(Json(&f.external_ids))
        .bind(now)
        .execute(&mut **tx)
        .await?
    };
    if r.rows_affected() == 0 {
        return Err(StorageError::NotFound("customer"));
    }
    let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(actor.tenant_id).bind(id).fetch_one(&mut **tx).await?;
    let c = customer_from_row(&row)?;
    let kind = if create { "customer.created" } else { "customer.updated" };
    emit(tx, actor.tenant_id, kind, serde_json::to_value(&c)?).await?;
    audit(tx, actor, if create { "create" } else { "update" }, "customer", Some(id.to_string()), json!({})).await?;
    Ok(c)
}

/// Stored receipts of a tenant among `ids`, with their request hashes, in one query.
async fn receipts_by_ids(tx: &mut Tx, tenant: Uuid, ids: &[Uuid]) -> Result<HashMap<Uuid, (Receipt, String)>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut qb = tenant_rows_by_id("SELECT doc, request_hash FROM receipts", tenant, chunk);
        for r in qb.build().fetch_all(&mut **tx).await? {
            let doc: Json<Receipt> = r.try_get("doc")?;
            found.insert(doc.0.id, (doc.0, r.try_get("request_hash")?));
        }
    }
    Ok(found)
}

async fn receipt_by_id<'e, E>(ex: E, tenant: Uuid, id: Uuid) -> Result<Option<(Receipt, String)>>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let row = sqlx::query("SELECT doc, request_hash FROM receipts WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(ex)
        .await?;
    match row {
        Some(r) => {
            let doc: Json<Receipt> = r.try_get("doc")?;
            let hash: String = r.try_get("request_hash")?;
            Ok(Some((doc.0, hash)))
        }
        None => Ok(None),
    }
}

/// Quantities of each product sold by a sale and already refunded against it.
async fn refund_balance(tx: &mut Tx, tenant: Uuid, sale: Uuid) -> Result<HashMap<Uuid, i64>> {
    let rows = sqlx::query(
        "SELECT l.product_id, l.qty FROM receipt_lines l JOIN receipts r ON r.tenant_id = l.tenant_id AND r.id = l.receipt_id \
         WHERE r.tenant_id = $1 AND r.refund_of = $2",
    )
    .bind(tenant)
    .bind(sale)
    .fetch_all(&mut **tx)
    .await?;
    let mut m = HashMap::new();
    for r in rows {
        let p: Uuid = r.try_get("product_id")?;
        let q: i64 = r.try_get("qty")?;
        *m.entry(p).or_insert(0) += q;
    }
    Ok(m)
}

fn transition(from: InvoiceStatus, action: InvoiceAction) -> Option<InvoiceStatus> {
    use InvoiceAction as A;
    use InvoiceStatus as S;
    match (from, action) {
        (S::Draft, A::Reserve) => Some(S::Reserved),
        (S::Draft | S::Reserved, A::Ship) => Some(S::Shipped),
        (S::Draft | S::Reserved, A::Cancel) => Some(S::Cancelled),
        _ => None,
    }
}

#[async_trait]
impl Storage for Backend {
    fn dialect(&self) -> Dialect {
        DIALECT
    }

    async fn migrate(&self) -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| {
                sqlx::migrate::Migration::new(
                    *v,
                    (*d).into(),
                    sqlx::migrate::MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(*sql),
                    false,
                )
            })
            .collect();
        sqlx::migrate::Migrator::with_migrations(migrations).run(&self.write).await?;
        Ok(())
    }

    fn outbox_notify(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox_notify.clone()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    // ----- tenants and tokens -----

    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let id = new_id();
        let now = now_micros();
        sqlx::query("INSERT INTO tenants (id, name, settings, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(name)
            .bind(Json(serde_json::to_value(TenantSettings::default())?))
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(Tenant { id, name: name.to_string(), created_at: ts(now) })
    }

    async fn settings(&self, tenant: Uuid) -> Result<TenantSettings> {
        let row: Option<Json<Value>> = sqlx::query_scalar("SELECT settings FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&self.read)
            .await?;
        Ok(serde_json::from_value(row.ok_or(StorageError::NotFound("tenant"))?.0)?)
    }

    async fn update_settings(&self, actor: &Actor, patch: &Value) -> Result<TenantSettings> {
        let mut tx = self.begin().await?;
        let current = load_settings(&mut tx, actor.tenant_id).await?;
        let mut merged = serde_json::to_value(&current)?;
        let Some(patch_obj) = patch.as_object() else {
            return Err(StorageError::invalid("", "settings must be a JSON object"));
        };
        if let Some(obj) = merged.as_object_mut() {
            for (k, v) in patch_obj {
                obj.insert(k.clone(), v.clone());
            }
        }
        let new: TenantSettings = serde_json::from_value(merged).map_err(|e| {
            let field = patch_obj.keys().find(|k| serde_json::to_value(&current).ok().and_then(|c| c.get(k.as_str()).cloned()).is_none());
            StorageError::invalid(field.cloned().unwrap_or_default(), e.to_string())
        })?;
        sqlx::query("UPDATE tenants SET settings = $2 WHERE id = $1")
            .bind(actor.tenant_id)
            .bind(Json(serde_json::to_value(&new)?))
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, actor, "update", "settings", None, patch.clone()).await?;
        self.commit(tx).await?;
        Ok(new)
    }

    async fn create_token(&self, actor: &Actor, new: &NewToken, hash: &[u8]) -> Result<TokenInfo> {
        let mut tx = self.begin().await?;
        if let Some(s) = new.store_id
            && !store_exists(&mut tx, actor.tenant_id, s).await?
        {
            return Err(StorageError::invalid("store_id", "no such store"));
        }
        let id = new_id();
        let now = now_micros();
        sqlx::query(
            "INSERT INTO tokens (id, tenant_id, name, role, store_id, token_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(new.store_id)
        .bind(hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(&mut tx, actor, "create", "token", Some(id.to_string()), json!({"role": new.role, "name": new.name})).await?;
        self.commit(tx).await?;
        Ok(TokenInfo {
            id,
            tenant_id: actor.tenant_id,
            name: new.name.clone(),
            role: new.role,
            store_id: new.store_id,
            created_at: ts(now),
        })
    }

    async fn list_tokens(&self, tenant: Uuid) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query("SELECT id, tenant_id, name, role, store_id, created_at FROM tokens WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn delete_token(&self, actor: &Actor, id: Uuid) -> Result<()> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM tokens WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound("token"));
        }
        audit(&mut tx, actor, "delete", "token", Some(id.to_string()), json!({})).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenInfo>> {
        let row = sqlx::query("SELECT id, tenant_id, name, role, store_id, created_at FROM tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    // ----- stores, terminals, shifts -----

    async fn create_store(&self, actor: &Actor, name: &str, address: Option<&str>) -> Result<Store> {
        let mut tx = self.begin().await?;
        let id = new_id();
        let now = now_micros();
        sqlx::query("INSERT INTO stores (id, tenant_id, name, address, active, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(actor.tenant_id)
            .bind(name)
            .bind(address)
            .bind(true)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, actor, "create", "store", Some(id.to_string()), json!({"name": name})).await?;
        self.commit(tx).await?;
        Ok(Store { id, name: name.into(), address: address.map(Into::into), active: true, created_at: ts(now) })
    }

    async fn list_stores(&self, tenant: Uuid) -> Result<Vec<Store>> {
        let rows = sqlx::query("SELECT id, name, address, active, created_at FROM stores WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(store_from_row).collect()
    }

    async fn get_store(&self, tenant: Uuid, id: Uuid) -> Result<Store> {
        let row = sqlx::query("SELECT id, name, address, active, created_at FROM stores WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        store_from_row(&row.ok_or(StorageError::NotFound("store"))?)
    }

    async fn update_store(&self, actor: &Actor, id: Uuid, patch: &StorePatch) -> Result<Store> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT id, name, address, active, created_at FROM stores WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let mut s = store_from_row(&row.ok_or(StorageError::NotFound("store"))?)?;
        if let Some(n) = &patch.name {
            s.name = n.clone();
        }
        if let Some(a) = &patch.address {
            s.address = a.clone();
        }
        if let Some(a) = patch.active {
            s.active = a;
        }
        sqlx::query("UPDATE stores SET name = $3, address = $4, active = $5 WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .bind(&s.name)
            .bind(&s.address)
            .bind(s.active)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, actor, "update", "store", Some(id.to_string()), json!({})).await?;
        self.commit(tx).await?;
        Ok(s)
    }

    async fn create_terminal(&self, actor: &Actor, store_id: Uuid, name: &str) -> Result<Terminal> {
        let mut tx = self.begin().await?;
        if !store_exists(&mut tx, actor.tenant_id, store_id).await? {
            return Err(StorageError::invalid("store_id", "no such store"));
        }
        let id = new_id();
        let now = now_micros();
        sqlx::query("INSERT INTO terminals (id, tenant_id, store_id, name, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(actor.tenant_id)
            .bind(store_id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, actor, "create", "terminal", Some(id.to_string()), json!({"name": name})).await?;
        self.commit(tx).await?;
        Ok(Terminal { id, store_id, name: name.into(), open_shift: None, fiscal: None, created_at: ts(now) })
    }

    async fn list_terminals(&self, tenant: Uuid, store_id: Option<Uuid>) -> Result<Vec<Terminal>> {
        let rows = sqlx::query(
            "SELECT t.id, t.store_id, t.name, t.created_at, s.id AS shift_id, s.opened_at, \
             f.gateway_url AS fiscal_gateway_url, f.device_id AS fiscal_device_id \
             FROM terminals t LEFT JOIN shifts s ON s.id = t.open_shift_id \
             LEFT JOIN terminal_fiscal f ON f.tenant_id = t.tenant_id AND f.terminal_id = t.id \
             WHERE t.tenant_id = $1 AND ($2 IS NULL OR t.store_id = $2) ORDER BY t.id",
        )
        .bind(tenant)
        .bind(store_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let id: Uuid = r.try_get("id")?;
                let shift_id: Option<Uuid> = r.try_get("shift_id")?;
                Ok(Terminal {
                    id,
                    store_id: r.try_get("store_id")?,
                    name: r.try_get("name")?,
                    open_shift: match shift_id {
                        Some(sid) => Some(Shift {
                            id: sid,
                            terminal_id: id,
                            opened_at: ts(r.try_get("opened_at")?),
                            closed_at: None,
                        }),
                        None => None,
                    },
                    fiscal: match (r.try_get::<Option<String>, _>("fiscal_gateway_url")?, r.try_get::<Option<String>, _>("fiscal_device_id")?) {
                        (Some(gateway_url), Some(device_id)) => Some(crate::fiscal::TerminalFiscal { gateway_url, device_id }),
                        _ => None,
                    },
                    created_at: ts(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn get_terminal(&self, tenant: Uuid, id: Uuid) -> Result<Terminal> {
        let all = self.list_terminals(tenant, None).await?;
        all.into_iter().find(|t| t.id == id).ok_or(StorageError::NotFound("terminal"))
    }

    async fn open_shift(&self, actor: &Actor, terminal_id: Uuid) -> Result<Shift> {
        let mut tx = self.begin().await?;
        let row: Option<Option<Uuid>> = sqlx::query_scalar("SELECT open_shift_id FROM terminals WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(terminal_id)
            .fetch_optional(&mut *tx)
            .await?;
        match row {
            None => return Err(StorageError::NotFound("terminal")),
            Some(Some(_)) => return Err(StorageError::conflict("a shift is already open on this terminal")),
            Some(None) => {}
        }
        let id = new_id();
        let now = now_micros();
        sqlx::query("INSERT INTO shifts (id, tenant_id, terminal_id, opened_at, opened_by) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(actor.tenant_id)
            .bind(terminal_id)
            .bind(now)
            .bind(actor.token_id)
            .execute(&mut *tx)
            .await?;
        // The guard on NULL makes two concurrent opens (PostgreSQL) end with one winner.
        let r = sqlx::query("UPDATE terminals SET open_shift_id = $3 WHERE tenant_id = $1 AND id = $2 AND open_shift_id IS NULL")
            .bind(actor.tenant_id)
            .bind(terminal_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::conflict("a shift is already open on this terminal"));
        }
        let shift = Shift { id, terminal_id, opened_at: ts(now), closed_at: None };
        emit(&mut tx, actor.tenant_id, "shift.opened", serde_json::to_value(&shift)?).await?;
        audit(&mut tx, actor, "open", "shift", Some(id.to_string()), json!({"terminal_id": terminal_id})).await?;
        self.commit(tx).await?;
        Ok(shift)
    }

    async fn close_shift(&self, actor: &Actor, terminal_id: Uuid) -> Result<Shift> {
        let mut tx = self.begin().await?;
        let row: Option<Option<Uuid>> = sqlx::query_scalar("SELECT open_shift_id FROM terminals WHERE tenant_id = $1 AND id = $2")
            .bind(actor.tenant_id)
            .bind(terminal_id)
            .fetch_optional(&mut *tx)
            .await?;
        let shift_id = match row {
            None => return Err(StorageError::NotFound("terminal")),
            Some(None) => return Err(StorageError::conflict("no shift is open on this terminal")),
            Some(Some(s)) => s,
        };
        let now = now_micros();
        let r = sqlx::query("UPDATE terminals SET open_shift_id = NULL WHERE tenant_id = $1 AND id = $2 AND open_shift_id = $3")
            .bind(actor.tenant_id)
            .bind(terminal_id)
            .bind(shift_id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::conflict("no shift is open on this terminal"));
        }
        let row = sqlx::query(
            "UPDATE shifts SET closed_at = $3, closed_by = $4 WHERE tenant_id = $1 AND id = $2 \
             RETURNING id, terminal_id, opened_at, closed_at",
        )
        .bind(actor.tenant_id)
        .bind(shift_id)
        .bind(now)
        .bind(actor.token_id)
        .fetch_one(&mut *tx)
        .await?;
        let shift = shift_from_row(&row)?;
        emit(&mut tx, actor.tenant_id, "shift.closed", serde_json::to_value(&shift)?).await?;
        audit(&mut tx, actor, "close", "shift", Some(shift_id.to_string()), json!({"terminal_id": terminal_id})).await?;
        self.commit(tx).await?;
        Ok(shift)
    }

    // ----- catalogue -----

    async fn create_product(&self, actor: &Actor, f: &ProductFields) -> Result<Product> {
        let mut tx = self.begin().await?;
        let p = write_product(&mut tx, actor, new_id(), f, true).await?;
        self.commit(tx).await?;
        Ok(p)
    }

    async fn update_product(&self, actor: &Actor, id: Uuid, f: &ProductFields) -> Result<Product> {
        let mut tx = self.begin().await?;
        let p = write_product(&mut tx, actor, id, f, false).await?;
        self.commit(tx).await?;
        Ok(p)
    }

    async fn delete_product(&self, actor: &Actor, id: Uuid) -> Result<()> {
        let mut tx = self.begin().await?;
        // Receipts and movements keep referring to it, so the row stays; its SKU and barcodes
        // are freed for reuse.
        let sku = format!("deleted:{id}");
        let r = sqlx::query("UPDATE products SET deleted = $3, active = $4, sku = $5, barcodes = '[]', updated_at = $6 WHERE tenant_id = $1 AND id = $2 AND NOT deleted")
            .bind(actor.tenant_id)
            .bind(id)
            .bind(true)
            .bind(false)
            .bind(&sku)
            .bind(now_micros())
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound("product"));
        }
        sqlx::query("DELETE FROM product_barcodes WHERE tenant_id = $1 AND product_id = $2")
            .bind(actor.tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        emit(&mut tx, actor.tenant_id, "product.deleted", json!({"id": id})).await?;
        audit(&mut tx, actor, "delete", "product", Some(id.to_string()), json!({})).await?;
        self.commit(tx).await?;
        Ok(())
    }

    async fn get_product(&self, tenant: Uuid, id: Uuid) -> Result<Product> {
        let sql = format!("SELECT {PRODUCT_COLS} FROM products WHERE tenant_id = $1 AND id = $2 AND NOT deleted");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(&self.read).await?;
        product_from_row(&row.ok_or(StorageError::NotFound("product"))?)
    }

    async fn list_products(&self, tenant: Uuid, f: &ProductFilter) -> Result<Paged<Product>> {
        let limit = page_limit(f.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!("SELECT {PRODUCT_COLS} FROM products WHERE tenant_id = "));
        qb.push_bind(tenant).push(" AND NOT deleted");
        if let Some(q) = &f.q {
            let pat = format!("%{}%", q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            qb.push(" AND (lower(name) LIKE ").push_bind(pat.clone()).push(" ESCAPE '\\' OR lower(sku) LIKE ").push_bind(pat).push(" ESCAPE '\\')");
        }
        if let Some(s) = &f.sku {
            qb.push(" AND sku = ").push_bind(s.clone());
        }
        if let Some(b) = &f.barcode {
            qb.push(" AND id IN (SELECT product_id FROM product_barcodes WHERE tenant_id = ").push_bind(tenant).push(" AND barcode = ").push_bind(b.clone()).push(")");
        }
        if let Some(c) = f.cursor {
            qb.push(" AND id > ").push_bind(c);
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows.iter().map(product_from_row).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |p| p.id))
    }

    async fn bulk_upsert_products(&self, actor: &Actor, items: &[ProductFields]) -> Result<BulkResult> {
        let mut tx = self.begin().await?;
        let mut out = BulkResult { created: 0, updated: 0, items: Vec::with_capacity(items.len()) };
        for (i, f) in items.iter().enumerate() {
            let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM products WHERE tenant_id = $1 AND sku = $2 AND NOT deleted")
                .bind(actor.tenant_id)
                .bind(&f.sku)
                .fetch_optional(&mut *tx)
                .await?;
            let res = match existing {
                Some(id) => write_product(&mut tx, actor, id, f, false).await,
                None => write_product(&mut tx, actor, new_id(), f, true).await,
            };
            let p = res.map_err(|e| match e {
                StorageError::Conflict { message, field } => StorageError::Conflict {
                    message,
                    field: Some(format!("items[{i}].{}", field.unwrap_or_default())),
                },
                other => other,
            })?;
            if existing.is_some() {
                out.updated += 1;
            } else {
                out.created += 1;
            }
            out.items.push(p);
        }
        self.commit(tx).await?;
        Ok(out)
    }

    // ----- customers -----

    async fn create_customer(&self, actor: &Actor, f: &CustomerFields) -> Result<Customer> {
        let mut tx = self.begin().await?;
        let c = write_customer(&mut tx, actor, new_id(), f, true).await?;
        self.commit(tx).await?;
        Ok(c)
    }

    async fn update_customer(&self, actor: &Actor, id: Uuid, f: &CustomerFields) -> Result<Customer> {
        let mut tx = self.begin().await?;
        let c = write_customer(&mut tx, actor, id, f, false).await?;
        self.commit(tx).await?;
        Ok(c)
    }

    async fn get_customer(&self, tenant: Uuid, id: Uuid) -> Result<Customer> {
        let sql = format!("SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(&self.read).await?;
        customer_from_row(&row.ok_or(StorageError::NotFound("customer"))?)
    }

    async fn list_customers(&self, tenant: Uuid, f: &CustomerFilter) -> Result<Paged<Customer>> {
        let limit = page_limit(f.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!("SELECT {CUSTOMER_COLS} FROM customers WHERE tenant_id = "));
        qb.push_bind(tenant);
        if let Some(q) = &f.q {
            let pat = format!("%{}%", q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            qb.push(" AND lower(name) LIKE ").push_bind(pat).push(" ESCAPE '\\'");
        }
        if let Some(p) = &f.phone {
            qb.push(" AND phone = ").push_bind(p.clone());
        }
        if let Some(c) = &f.card {
            qb.push(" AND loyalty_card = ").push_bind(c.clone());
        }
        if let Some(c) = f.cursor {
            qb.push(" AND id > ").push_bind(c);
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows.iter().map(customer_from_row).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |c| c.id))
    }

    // ----- stock -----

    async fn stock(&self, tenant: Uuid, store_id: Option<Uuid>, product_id: Option<Uuid>) -> Result<Vec<StockLevel>> {
        let rows = sqlx::query(
            "SELECT store_id, product_id, on_hand, reserved FROM stock_levels WHERE tenant_id = $1 \
             AND ($2 IS NULL OR store_id = $2) AND ($3 IS NULL OR product_id = $3) ORDER BY store_id, product_id",
        )
        .bind(tenant)
        .bind(store_id)
        .bind(product_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(level_from_row).collect()
    }

    async fn movements(&self, tenant: Uuid, store_id: Option<Uuid>, product_id: Option<Uuid>) -> Result<Vec<Movement>> {
        let rows = sqlx::query(
            "SELECT id, store_id, product_id, doc_type, doc_id, delta, created_at FROM stock_movements WHERE tenant_id = $1 \
             AND ($2 IS NULL OR store_id = $2) AND ($3 IS NULL OR product_id = $3) ORDER BY id",
        )
        .bind(tenant)
        .bind(store_id)
        .bind(product_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Movement {
                    id: r.try_get("id")?,
                    store_id: r.try_get("store_id")?,
                    product_id: r.try_get("product_id")?,
                    doc_type: r.try_get("doc_type")?,
                    doc_id: r.try_get("doc_id")?,
                    delta: Qty::from_milli(r.try_get("delta")?),
                    created_at: ts(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    async fn create_stock_doc(&self, actor: &Actor, doc: &NewStockDoc) -> Result<StockDoc> {
        let mut tx = self.begin().await?;
        let settings = load_settings(&mut tx, actor.tenant_id).await?;
        if !store_exists(&mut tx, actor.tenant_id, doc.store_id).await? {
            return Err(StorageError::invalid("store_id", "no such store"));
        }
        if let Some(to) = doc.to_store_id
            && !store_exists(&mut tx, actor.tenant_id, to).await?
        {
            return Err(StorageError::invalid("to_store_id", "no such store"));
        }
        let mut errors = Vec::new();
        for (i, l) in doc.lines.iter().enumerate() {
            match product_in_tx(&mut tx, actor.tenant_id, l.product_id).await? {
                Some((_, false)) => {}
                _ => errors.push(FieldError::new(format!("lines[{i}].product_id"), "no such product")),
            }
        }
        if !errors.is_empty() {
            return Err(StorageError::Invalid(errors));
        }
        let id = new_id();
        let kind = doc.kind.as_str();
        let mut levels: BTreeMap<(Uuid, Uuid), StockLevel> = BTreeMap::new();
        for (i, l) in doc.lines.iter().enumerate() {
            let q = l.qty.milli();
            let field = format!("lines[{i}].qty");
            match doc.kind {
                StockDocKind::Supply => {
                    let lv = move_stock(&mut tx, actor.tenant_id, doc.store_id, l.product_id, q, 0, kind, id).await?;
                    levels.insert((doc.store_id, l.product_id), lv);
                }
                StockDocKind::Writeoff => {
                    let lv = move_stock(&mut tx, actor.tenant_id, doc.store_id, l.product_id, -q, 0, kind, id).await?;
                    if settings.forbid_negative_stock && lv.available.milli() < 0 {
                        return Err(negative_stock(field, &lv));
                    }
                    levels.insert((doc.store_id, l.product_id), lv);
                }
                StockDocKind::Count => {
                    let current = current_on_hand(&mut tx, actor.tenant_id, doc.store_id, l.product_id).await?;
                    let lv = move_stock(&mut tx, actor.tenant_id, doc.store_id, l.product_id, q - current, 0, kind, id).await?;
                    levels.insert((doc.store_id, l.product_id), lv);
                }
                StockDocKind::Transfer => {
                    let to = doc.to_store_id.ok_or_else(|| StorageError::invalid("to_store_id", "required for a transfer"))?;
                    let from = move_stock(&mut tx, actor.tenant_id, doc.store_id, l.product_id, -q, 0, kind, id).await?;
                    if settings.forbid_negative_stock && from.available.milli() < 0 {
                        return Err(negative_stock(field, &from));
                    }
                    let dest = move_stock(&mut tx, actor.tenant_id, to, l.product_id, q, 0, kind, id).await?;
                    levels.insert((doc.store_id, l.product_id), from);
                    levels.insert((to, l.product_id), dest);
                }
            }
        }
        let now = now_micros();
        sqlx::query(
            "INSERT INTO stock_documents (id, tenant_id, kind, store_id, to_store_id, note, lines, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(actor.tenant_id)
        .bind(kind)
        .bind(doc.store_id)
        .bind(doc.to_store_id)
        .bind(&doc.note)
        .bind(Json(&doc.lines))
        .bind(actor.token_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        emit_levels(&mut tx, actor.tenant_id, &levels).await?;
        audit(&mut tx, actor, "create", kind, Some(id.to_string()), json!({"lines": doc.lines.len()})).await?;
        self.commit(tx).await?;
        Ok(StockDoc {
            id,
            kind: doc.kind,
            store_id: doc.store_id,
            to_store_id: doc.to_store_id,
            note: doc.note.clone(),
            lines: doc.lines.clone(),
            levels: levels.into_values().collect(),
            created_at: ts(now),
        })
    }

    // ----- receipts -----

    async fn submit_receipt(&self, actor: &Actor, input: &ReceiptInput, request_hash: &str) -> Result<ReceiptOutcome> {
        self.record_receipt(actor, input, request_hash, &crate::marking::MarkingPrecheck::default()).await
    }

    async fn get_receipt(&self, tenant: Uuid, id: Uuid) -> Result<Receipt> {
        Ok(receipt_by_id(&self.read, tenant, id).await?.ok_or(StorageError::NotFound("receipt"))?.0)
    }

    async fn list_receipts(&self, tenant: Uuid, f: &ReceiptFilter) -> Result<Paged<Receipt>> {
        let limit = page_limit(f.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("SELECT id, doc FROM receipts WHERE tenant_id = ");
        qb.push_bind(tenant);
        if let Some(s) = f.store_id {
            qb.push(" AND store_id = ").push_bind(s);
        }
        if let Some(t) = f.terminal_id {
            qb.push(" AND terminal_id = ").push_bind(t);
        }
        if let Some(from) = f.from {
            qb.push(" AND sold_at >= ").push_bind(from.timestamp_micros());
        }
        if let Some(to) = f.to {
            qb.push(" AND sold_at < ").push_bind(to.timestamp_micros());
        }
        if let Some(c) = f.cursor {
            qb.push(" AND id > ").push_bind(c);
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows
            .iter()
            .map(|r| Ok(r.try_get::<Json<Receipt>, _>("doc")?.0))
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |r| r.id))
    }

    // ----- invoices -----

    async fn create_invoice(&self, actor: &Actor, inv: &NewInvoice) -> Result<(Invoice, bool)> {
        let tenant = actor.tenant_id;
        if let Some(ext) = &inv.external_ref
            && let Some(existing) = invoice_by_ref(&self.read, tenant, ext).await?
        {
            return Ok((existing, false));
        }
        let mut tx = self.begin().await?;
        let settings = load_settings(&mut tx, tenant).await?;
        let mut errors = Vec::new();
        if !store_exists(&mut tx, tenant, inv.store_id).await? {
            errors.push(FieldError::new("store_id", "no such store"));
        }
        if let Some(c) = inv.customer_id {
            let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM customers WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(c)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                errors.push(FieldError::new("customer_id", "no such customer"));
            }
        }
        if inv.lines.is_empty() {
            errors.push(FieldError::new("lines", "an invoice needs at least one line"));
        }
        let mut lines = Vec::new();
        for (i, (pid, qty, price)) in inv.lines.iter().enumerate() {
            match product_in_tx(&mut tx, tenant, *pid).await? {
                Some((p, false)) => {
                    let price = price.unwrap_or(p.price);
                    match compute_line(price, *qty, 0, p.vat_percent) {
                        Ok(a) => lines.push(InvoiceLine { product_id: *pid, qty: *qty, price, amount: a.amount }),
                        Err(e) => errors.push(FieldError::new(format!("lines[{i}].qty"), e.to_string())),
                    }
                }
                _ => errors.push(FieldError::new(format!("lines[{i}].product_id"), "no such product")),
            }
        }
        if !errors.is_empty() {
            return Err(StorageError::Invalid(errors));
        }
        let id = new_id();
        let number = next_counter(&mut tx, tenant, "invoice").await?;
        let now = now_micros();
        let total = lines.iter().map(|l| l.amount).sum();
        let r = sqlx::query(
            "INSERT INTO invoices (id, tenant_id, number, store_id, customer_id, channel, external_ref, status, lines, total, note, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(id)
        .bind(tenant)
        .bind(number)
        .bind(inv.store_id)
        .bind(inv.customer_id)
        .bind(&inv.channel)
        .bind(&inv.external_ref)
        .bind(InvoiceStatus::Draft.as_str())
        .bind(Json(&lines))
        .bind(total)
        .bind(&inv.note)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                // Another import of the same external order committed first.
                tx.rollback().await?;
                let ext = inv.external_ref.as_deref().unwrap_or_default();
                let existing = invoice_by_ref(&self.read, tenant, ext).await?.ok_or(StorageError::NotFound("invoice"))?;
                return Ok((existing, false));
            }
            Err(e) => return Err(e.into()),
        }
        let mut invoice = Invoice {
            id,
            number,
            store_id: inv.store_id,
            customer_id: inv.customer_id,
            channel: inv.channel.clone(),
            external_ref: inv.external_ref.clone(),
            status: InvoiceStatus::Draft,
            lines,
            total,
            note: inv.note.clone(),
            created_at: ts(now),
            updated_at: ts(now),
        };
        emit(&mut tx, tenant, "invoice.created", serde_json::to_value(&invoice)?).await?;
        audit(&mut tx, actor, "create", "invoice", Some(id.to_string()), json!({"external_ref": inv.external_ref})).await?;
        if inv.reserve {
            invoice = apply_invoice_action(&mut tx, actor, &settings, invoice, InvoiceAction::Reserve).await?;
        }
        self.commit(tx).await?;
        Ok((invoice, true))
    }

    async fn get_invoice(&self, tenant: Uuid, id: Uuid) -> Result<Invoice> {
        let sql = format!("SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(id).fetch_optional(&self.read).await?;
        invoice_from_row(&row.ok_or(StorageError::NotFound("invoice"))?)
    }

    async fn list_invoices(&self, tenant: Uuid, f: &InvoiceFilter) -> Result<Paged<Invoice>> {
        let limit = page_limit(f.limit);
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!("SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = "));
        qb.push_bind(tenant);
        if let Some(s) = f.status {
            qb.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(s) = f.store_id {
            qb.push(" AND store_id = ").push_bind(s);
        }
        if let Some(e) = &f.external_ref {
            qb.push(" AND external_ref = ").push_bind(e.clone());
        }
        if let Some(c) = f.cursor {
            qb.push(" AND id > ").push_bind(c);
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(limit + 1);
        let rows = qb.build().fetch_all(&self.read).await?;
        let items = rows.iter().map(invoice_from_row).collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |i| i.id))
    }

    async fn invoice_action(&self, actor: &Actor, id: Uuid, action: InvoiceAction) -> Result<Invoice> {
        let mut tx = self.begin().await?;
        let settings = load_settings(&mut tx, actor.tenant_id).await?;
        let lock = if DIALECT == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let sql = format!("SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND id = $2{lock}");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(actor.tenant_id).bind(id).fetch_optional(&mut *tx).await?;
        let invoice = invoice_from_row(&row.ok_or(StorageError::NotFound("invoice"))?)?;
        let invoice = apply_invoice_action(&mut tx, actor, &settings, invoice, action).await?;
        self.commit(tx).await?;
        Ok(invoice)
    }

    // ----- audit -----

    async fn audit_log(&self, tenant: Uuid, cursor: Option<Uuid>, limit: u32) -> Result<Paged<AuditEntry>> {
        let limit = page_limit(limit);
        let rows = sqlx::query(
            "SELECT id, token_id, action, entity, entity_id, details, at FROM audit_log \
             WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&self.read)
        .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    token_id: r.try_get("token_id")?,
                    action: r.try_get("action")?,
                    entity: r.try_get("entity")?,
                    entity_id: r.try_get("entity_id")?,
                    details: r.try_get::<Json<Value>, _>("details")?.0,
                    at: ts(r.try_get("at")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, limit, |a| a.id))
    }

    // ----- idempotency keys -----

    async fn idem_begin(&self, tenant: Uuid, key: &str, request_hash: &str) -> Result<IdemState> {
        let r = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(tenant)
        .bind(key)
        .bind(request_hash)
        .bind(now_micros())
        .execute(&self.write)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(IdemState::Started);
        }
        // A request that never finished (its client went away mid-flight) holds the key for a
        // minute at most; then a retry takes it over.
        let stale = now_micros() - 60_000_000;
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET request_hash = $3, created_at = $4 \
             WHERE tenant_id = $1 AND key = $2 AND status IS NULL AND created_at < $5",
        )
        .bind(tenant)
        .bind(key)
        .bind(request_hash)
        .bind(now_micros())
        .bind(stale)
        .execute(&self.write)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(IdemState::Started);
        }
        let row = sqlx::query("SELECT request_hash, status, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&self.write)
            .await?;
        let Some(row) = row else {
            // Released between our insert and read: the caller may simply retry.
            return Ok(IdemState::InProgress);
        };
        let status: Option<i64> = row.try_get("status")?;
        let hash: String = row.try_get("request_hash")?;
        Ok(match status {
            None => IdemState::InProgress,
            Some(s) => IdemState::Done {
                same_request: hash == request_hash,
                status: s as u16,
                body: row.try_get::<Option<Vec<u8>>, _>("response")?.unwrap_or_default(),
            },
        })
    }

    async fn idem_finish(&self, tenant: Uuid, key: &str, status: u16, body: &[u8]) -> Result<()> {
        sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .bind(status as i64)
            .bind(body)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn idem_abort(&self, tenant: Uuid, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL")
            .bind(tenant)
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    // ----- events -----

    async fn events(&self, tenant: Uuid, after: i64, types: &[String], limit: u32) -> Result<Vec<OutboxEvent>> {
        // The publishing numbers are in `outbox_pub` (see `relay_batch_impl`).
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "SELECT p.pub_seq, o.id, o.tenant_id, o.type, o.data, o.created_at FROM outbox_pub p \
             JOIN outbox o ON o.seq = p.seq WHERE p.tenant_id = ",
        );
        qb.push_bind(tenant).push(" AND p.pub_seq > ").push_bind(after);
        if !types.is_empty() {
            qb.push(" AND o.type IN (");
            let mut sep = qb.separated(", ");
            for t in types {
                sep.push_bind(t.clone());
            }
            qb.push(")");
        }
        qb.push(" ORDER BY p.pub_seq LIMIT ").push_bind(page_limit(limit));
        let rows = qb.build().fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                outbox_from_row(r, "pub_seq")
            })
            .collect()
    }
}

impl Backend {
    /// The group-commit queue (its writer started on first use); `None` when group commit is off.
    fn group_queue(&self) -> Option<&group_commit::Queue> {
        // The writer's own handle has group commit off: it writes, it does not queue.
        let writer = || Backend { group: group_commit::Slot::new(GroupCommit::OFF), ..self.clone() };
        self.group.queue(writer)
    }

    /// [`Storage::submit_receipt`] with what the online marking check found before it.
    async fn record_receipt(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &crate::marking::MarkingPrecheck,
    ) -> Result<ReceiptOutcome> {
        let tenant = actor.tenant_id;
        if let Some(queue) = self.group_queue() {
            // The writer looks for a stored receipt itself, in its transaction: for a whole
            // batch in one query.
            return queue.submit(actor, input, request_hash, precheck).await;
        }
        // A retry is answered from what was stored, whatever changed since (prices, stock).
        if let Some((r, hash)) = receipt_by_id(&self.read, tenant, input.id).await? {
            return replay(r, &hash, request_hash);
        }
        self.write_alone(actor, input, request_hash, precheck).await
    }

    /// One receipt in its own transaction.
    async fn write_alone(
        &self,
        actor: &Actor,
        input: &ReceiptInput,
        request_hash: &str,
        precheck: &crate::marking::MarkingPrecheck,
    ) -> Result<ReceiptOutcome> {
        let mut tx = self.begin().await?;
        let outcome = write_receipt(&mut tx, actor, input, request_hash, precheck).await?;
        // Only a new receipt keeps its writes: a replay found a concurrent retry's row.
        match outcome {
            ReceiptOutcome::Created(_) => self.commit(tx).await?,
            ReceiptOutcome::Replayed(_) => tx.rollback().await?,
        }
        Ok(outcome)
    }

    /// Switch group commit for receipts (before the first receipt is submitted); by default
    /// it comes from `SAVDO_GROUP_COMMIT`.
    pub fn with_group_commit(mut self, setting: GroupCommit) -> Self {
        self.group = group_commit::Slot::new(setting);
        self
    }

    /// Whether receipts are group-committed, and how many at most per transaction.
    pub fn group_commit(&self) -> GroupCommit {
        self.group.setting()
    }

    /// What group commit did so far; `None` when it is off.
    pub fn group_commit_stats(&self) -> Option<group_commit::GroupCommitStats> {
        self.group.stats()
    }
}

/// Validate and write one receipt in `tx`, and say what it is: `Created`, or `Replayed` when a
/// concurrent retry of the same id got there first. After a replay or an error the caller
/// undoes what was written here (the receipt number taken, for one).
async fn write_receipt(
    tx: &mut Tx,
    actor: &Actor,
    input: &ReceiptInput,
    request_hash: &str,
    precheck: &crate::marking::MarkingPrecheck,
) -> Result<ReceiptOutcome> {
    let tenant = actor.tenant_id;
    let mut errors = Vec::new();

    if let Some(bound) = actor.store_id
        && bound != input.store_id
    {
        return Err(StorageError::invalid("store_id", "this token is bound to another store"));
    }
    let ctx = receipt_context(tx, tenant, input.terminal_id, input.store_id).await?;
    let customer_found = match input.customer_id {
        Some(c) => customers_found(tx, tenant, &[c]).await?.contains(&c),
        None => false,
    };
    let shift_id = check_receipt_header(input, &ctx, customer_found, &mut errors);
    let settings = ctx.settings;

    // What a refund may take back, per product: (sold qty, price, discount, refunded so far).
    let mut refundable: HashMap<Uuid, (i64, i64, i64, i64)> = HashMap::new();
    match (input.kind, input.refund_of) {
        (ReceiptType::Sale, Some(_)) => errors.push(FieldError::new("refund_of", "only a refund refers to a sale")),
        (ReceiptType::Refund, None) => errors.push(FieldError::new("refund_of", "a refund must name the sale it refunds")),
        (ReceiptType::Refund, Some(sale_id)) => match receipt_by_id(&mut **tx, tenant, sale_id).await? {
            None => errors.push(FieldError::new("refund_of", "no such receipt")),
            Some((sale, _)) if sale.kind != ReceiptType::Sale => {
                errors.push(FieldError::new("refund_of", "a refund must refer to a sale"))
            }
            Some((sale, _)) => {
                if sale.store_id != input.store_id {
                    errors.push(FieldError::new("store_id", "a refund is made in the store of the sale"));
                }
                let done = refund_balance(tx, tenant, sale_id).await?;
                for l in &sale.lines {
                    let e = refundable.entry(l.product_id).or_insert((0, l.price, 0, 0));
                    e.0 += l.qty.milli();
                    e.2 += l.discount;
                }
                for (p, q) in done {
                    if let Some(e) = refundable.get_mut(&p) {
                        e.3 += q;
                    }
                }
            }
        },
        (ReceiptType::Sale, None) => {}
    }

    let mut lines = Vec::with_capacity(input.lines.len());
    let mut taking: HashMap<Uuid, i64> = HashMap::new();
    let mut marking = MarkingLines::default();
    let ids: Vec<Uuid> = input.lines.iter().map(|l| l.product_id).collect();
    let products = products_in_tx(tx, tenant, &ids).await?;
    for (i, l) in input.lines.iter().enumerate() {
        let Some((p, deleted)) = products.get(&l.product_id).cloned() else {
            errors.push(FieldError::new(format!("lines[{i}].product_id"), "no such product"));
            continue;
        };
        let codes = marking.check_line(tx, tenant, input, i, &p, &mut errors).await?;
        let (price, discount) = match input.kind {
            ReceiptType::Sale => match sale_terms(i, l, &p, deleted) {
                Ok(terms) => terms,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
            ReceiptType::Refund => {
                let Some(&(sold, price, disc, done)) = refundable.get(&l.product_id) else {
                    if input.refund_of.is_some() && errors.iter().all(|e| e.field != "refund_of") {
                        errors.push(FieldError::new(format!("lines[{i}].product_id"), "the sale has no such product"));
                    }
                    continue;
                };
                let t = taking.entry(l.product_id).or_insert(0);
                *t += l.qty.milli();
                if done + *t > sold {
                    errors.push(FieldError::new(
                        format!("lines[{i}].qty"),
                        format!(
                            "refunds more than was sold: sold {}, refunded before {}, left {}",
                            Qty::from_milli(sold),
                            Qty::from_milli(done),
                            Qty::from_milli(sold - done)
                        ),
                    ));
                    continue;
                }
                let default_discount = pro_rata(disc, l.qty, Qty::from_milli(sold));
                (l.price.unwrap_or(price), l.discount.unwrap_or(default_discount))
            }
        };
        let codes = codes.iter().map(|(_, c)| c.raw().to_string()).collect();
        match priced_line(i, l, &p, price, discount, codes) {
            Ok(line) => lines.push(line),
            Err(e) => errors.push(e),
        }
    }
    check_payments(input, &lines, &mut errors);
    if !errors.is_empty() {
        return Err(StorageError::Invalid(errors));
    }

    let number: i64 = sqlx::query_scalar(
        "UPDATE stores SET next_receipt_no = next_receipt_no + 1 WHERE tenant_id = $1 AND id = $2 RETURNING next_receipt_no - 1",
    )
    .bind(tenant)
    .bind(input.store_id)
    .fetch_one(&mut **tx)
    .await?;
    let receipt = new_receipt(actor, input, number, shift_id, lines, precheck, now_micros());
    if insert_receipts(tx, &[(tenant, &receipt, request_hash)]).await?.is_empty() {
        // A concurrent retry of the same id won the race: answer as it was stored.
        let (r, hash) = receipt_by_id(&mut **tx, tenant, input.id).await?.ok_or(StorageError::NotFound("receipt"))?;
        return replay(r, &hash, request_hash);
    }
    // QR payments (Payme, Click) used by this sale: paid, same amount, not used before.
    if receipt.kind == ReceiptType::Sale {
        let uses: Vec<(usize, Uuid, i64)> =
            input.payments.iter().enumerate().filter_map(|(i, p)| p.payment_id.map(|id| (i, id, p.amount))).collect();
        if !uses.is_empty() {
            use_payments_in_tx(tx, tenant, receipt.id, &uses).await?;
        }
    }
    let sign = match receipt.kind {
        ReceiptType::Sale => -1,
        ReceiptType::Refund => 1,
    };
    insert_receipt_lines(tx, &[(tenant, &receipt)]).await?;
    let deltas: Vec<(Uuid, i64)> = receipt.lines.iter().map(|l| (l.product_id, sign * l.qty.milli())).collect();
    let after = move_stock_lines(tx, tenant, receipt.store_id, &deltas, receipt.kind.as_str(), receipt.id).await?;
    if sign < 0
        && settings.forbid_negative_stock
        && let Some((i, lv)) = first_negative_line(&deltas, &after)
    {
        return Err(negative_stock(format!("lines[{}].qty", receipt.lines[i].line_no - 1), &lv));
    }
    let levels: BTreeMap<(Uuid, Uuid), StockLevel> = after.into_values().map(|lv| ((lv.store_id, lv.product_id), lv)).collect();
    let kind = match receipt.kind {
        ReceiptType::Sale => "receipt.created",
        ReceiptType::Refund => "receipt.refunded",
    };
    emit(tx, tenant, kind, serde_json::to_value(&receipt)?).await?;
    marking.register(tx, tenant, &receipt, precheck.online).await?;
    emit_levels(tx, tenant, &levels).await?;
    Ok(ReceiptOutcome::Created(receipt))
}

/// The checks of a receipt's header against what [`receipt_context`] read: its terminal, store
/// and customer, and that it has lines. Returns the shift it is sold in.
fn check_receipt_header(input: &ReceiptInput, ctx: &ReceiptContext, customer_found: bool, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let shift_id = match ctx.terminal {
        None => {
            errors.push(FieldError::new("terminal_id", "no such terminal"));
            None
        }
        Some((store, shift)) => {
            if store != input.store_id {
                errors.push(FieldError::new("terminal_id", "the terminal belongs to another store"));
            }
            if shift.is_none() && ctx.settings.require_open_shift {
                errors.push(FieldError::new("terminal_id", "no shift is open on this terminal (require_open_shift is on)"));
            }
            shift
        }
    };
    if !ctx.store_exists {
        errors.push(FieldError::new("store_id", "no such store"));
    }
    if input.customer_id.is_some() && !customer_found {
        errors.push(FieldError::new("customer_id", "no such customer"));
    }
    if input.lines.is_empty() {
        errors.push(FieldError::new("lines", "a receipt needs at least one line"));
    }
    shift_id
}

/// A sale line's price and discount (the product's price unless the till set one).
fn sale_terms(i: usize, l: &ReceiptLineInput, p: &Product, deleted: bool) -> std::result::Result<(i64, i64), FieldError> {
    if deleted || !p.active {
        return Err(FieldError::new(format!("lines[{i}].product_id"), "the product is not on sale"));
    }
    Ok((l.price.unwrap_or(p.price), l.discount.unwrap_or(0)))
}

/// Line `i` as stored, with its amount and VAT, or the problem with its numbers.
fn priced_line(
    i: usize,
    l: &ReceiptLineInput,
    p: &Product,
    price: i64,
    discount: i64,
    marking_codes: Vec<String>,
) -> std::result::Result<ReceiptLine, FieldError> {
    match compute_line(price, l.qty, discount, p.vat_percent) {
        Ok(a) => Ok(ReceiptLine {
            line_no: i as u32 + 1,
            product_id: p.id,
            sku: p.sku.clone(),
            name: p.name.clone(),
            qty: l.qty,
            price,
            discount,
            amount: a.amount,
            vat_percent: p.vat_percent,
            vat_amount: a.vat_amount,
            mxik: p.mxik.clone(),
            package_code: p.package_code.clone(),
            unit: p.unit,
            // Normalised: real GS separators, no symbology prefix.
            marking_codes,
        }),
        Err(e) => {
            let field = match e {
                savdo_domain::receipt::LineError::QtyNotPositive => "qty",
                savdo_domain::receipt::LineError::NegativePrice => "price",
                savdo_domain::receipt::LineError::NegativeDiscount | savdo_domain::receipt::LineError::DiscountTooLarge => {
                    "discount"
                }
                savdo_domain::receipt::LineError::Overflow => "price",
            };
            Err(FieldError::new(format!("lines[{i}].{field}"), e.to_string()))
        }
    }
}

/// Every payment positive and, when nothing else is wrong, together the receipt's total.
fn check_payments(input: &ReceiptInput, lines: &[ReceiptLine], errors: &mut Vec<FieldError>) {
    let total: i64 = lines.iter().map(|l| l.amount).sum();
    let mut paid: i64 = 0;
    for (i, p) in input.payments.iter().enumerate() {
        if p.amount <= 0 {
            errors.push(FieldError::new(format!("payments[{i}].amount"), "must be greater than zero"));
        }
        paid = paid.saturating_add(p.amount);
    }
    if errors.is_empty() && paid != total {
        errors.push(FieldError::new(
            "payments",
            format!("payments add up to {paid} tiyin but the receipt total is {total} tiyin"),
        ));
    }
}

/// The receipt as stored, from its checked lines and its number.
fn new_receipt(
    actor: &Actor,
    input: &ReceiptInput,
    number: i64,
    shift_id: Option<Uuid>,
    lines: Vec<ReceiptLine>,
    precheck: &crate::marking::MarkingPrecheck,
    now: i64,
) -> Receipt {
    Receipt {
        id: input.id,
        number,
        kind: input.kind,
        refund_of: input.refund_of,
        store_id: input.store_id,
        terminal_id: input.terminal_id,
        shift_id,
        cashier_token_id: actor.token_id,
        customer_id: input.customer_id,
        total: lines.iter().map(|l| l.amount).sum(),
        vat_total: lines.iter().map(|l| l.vat_amount).sum(),
        discount_total: lines.iter().map(|l| l.discount).sum(),
        lines,
        payments: input
            .payments
            .iter()
            .map(|p| ReceiptPayment { method: p.method, amount: p.amount, payment_id: p.payment_id })
            .collect(),
        warnings: precheck.warnings.clone(),
        loyalty: input.loyalty.clone(),
        fiscal: input.fiscal.clone(),
        note: input.note.clone(),
        sold_at: input.sold_at.unwrap_or_else(|| ts(now)),
        created_at: ts(now),
    }
}

/// Receipt rows `(tenant, receipt, request hash)`; an id the tenant has already is left as it
/// is. Returns the (tenant, id) of the rows inserted.
async fn insert_receipts(tx: &mut Tx, rows: &[(Uuid, &Receipt, &str)]) -> Result<Vec<(Uuid, Uuid)>> {
    let mut inserted = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT / 12) {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(
            "INSERT INTO receipts (tenant_id, id, number, kind, refund_of, store_id, terminal_id, total, request_hash, doc, sold_at, created_at) ",
        );
        qb.push_values(chunk, |mut b, (tenant, r, hash)| {
            b.push_bind(*tenant)
                .push_bind(r.id)
                .push_bind(r.number)
                .push_bind(r.kind.as_str())
                .push_bind(r.refund_of)
                .push_bind(r.store_id)
                .push_bind(r.terminal_id)
                .push_bind(r.total)
                .push_bind(*hash)
                .push_bind(Json(*r))
                .push_bind(r.sold_at.timestamp_micros())
                .push_bind(r.created_at.timestamp_micros());
        });
        qb.push(" ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id");
        for row in qb.build().fetch_all(&mut **tx).await? {
            inserted.push((row.try_get("tenant_id")?, row.try_get("id")?));
        }
    }
    Ok(inserted)
}

/// The line rows of receipts `(tenant, receipt)`.
async fn insert_receipt_lines(tx: &mut Tx, receipts: &[(Uuid, &Receipt)]) -> Result<()> {
    let rows: Vec<(Uuid, Uuid, &ReceiptLine)> =
        receipts.iter().flat_map(|(t, r)| r.lines.iter().map(move |l| (*t, r.id, l))).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("INSERT INTO receipt_lines (tenant_id, receipt_id, line_no, product_id, qty, amount) ");
        qb.push_values(chunk, |mut b, (tenant, receipt, l)| {
            b.push_bind(*tenant)
                .push_bind(*receipt)
                .push_bind(l.line_no as i64)
                .push_bind(l.product_id)
                .push_bind(l.qty.milli())
                .push_bind(l.amount);
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Group commit: the receipts of a batch in one transaction, each under a savepoint so that
/// one refused receipt undoes only its own writes; every caller is answered after the commit.
/// The relay's numbering, when it waits, goes first in the same transaction.
#[async_trait]
impl group_commit::BatchWriter for Backend {
    async fn write_batch(&self, jobs: &[group_commit::Job], numbering: &[group_commit::Numbering]) -> group_commit::Written {
        if let ([job], []) = (jobs, numbering) {
            // Alone in the queue: written as without group commit.
            let answer = match receipt_by_id(&self.read, job.actor.tenant_id, job.input.id).await {
                Ok(Some((r, hash))) => replay(r, &hash, &job.request_hash),
                Ok(None) => self.write_alone(&job.actor, &job.input, &job.request_hash, &job.precheck).await,
                Err(e) => Err(e),
            };
            return group_commit::Written { answers: vec![answer], numbered: Vec::new(), plain: 0 };
        }
        let mut answers: Vec<Option<Result<ReceiptOutcome>>> = jobs.iter().map(|_| None).collect();
        let mut numbered = Vec::with_capacity(numbering.len());
        let mut plain = 0;
        let failed = match self.begin().await {
            Ok(mut tx) => match write_in(&mut tx, jobs, numbering, &mut answers, &mut numbered).await {
                Ok(n) => {
                    plain = n;
                    if jobs.is_empty() {
                        // Numbering alone commits nothing for the relay to wake up to.
                        tx.commit().await.err().map(StorageError::from)
                    } else {
                        self.commit(tx).await.err()
                    }
                }
                Err(e) => Some(e),
            },
            Err(e) => Some(e),
        };
        if let Some(e) = &failed {
            tracing::warn!(error = %e, receipts = jobs.len(), "group commit failed: none of its receipts was stored");
        }
        let answers = answers
            .into_iter()
            .map(|answer| match &failed {
                None => answer.unwrap_or_else(|| Err(StorageError::Corrupt("group commit lost an answer".into()))),
                Some(e) => Err(group_commit::batch_failed(e)),
            })
            .collect();
        let numbered = match &failed {
            None => numbered.into_iter().map(Ok).collect(),
            Some(e) => numbering.iter().map(|_| Err(group_commit::batch_failed(e))).collect(),
        };
        group_commit::Written { answers, numbered, plain: if failed.is_some() { 0 } else { plain } }
    }
}

/// A batch's writes in `tx`: the relay's numbering, then the plain sales together, then the
/// other receipts one by one. Returns how many receipts the fast path stored. An error means
/// the transaction is broken: nothing of the batch may be committed.
async fn write_in(
    tx: &mut Tx,
    jobs: &[group_commit::Job],
    numbering: &[group_commit::Numbering],
    answers: &mut [Option<Result<ReceiptOutcome>>],
    numbered: &mut Vec<Vec<(i64, i64)>>,
) -> Result<u64> {
    for n in numbering {
        numbered.push(Backend::number_published(tx, n.first, n.last).await?);
    }
    let plain = write_plain_sales(tx, jobs, answers).await?;
    write_jobs(tx, jobs, answers).await?;
    Ok(plain)
}

/// The jobs of a batch not answered yet, in `tx`, one savepoint each. An error means the
/// transaction itself is broken: nothing of the batch may be committed.
async fn write_jobs(tx: &mut Tx, jobs: &[group_commit::Job], answers: &mut [Option<Result<ReceiptOutcome>>]) -> Result<()> {
    // Receipts created earlier in this batch: a retry of one of them (same tenant and id) is
    // answered from it, as it would be after its commit.
    let mut created: HashMap<(Uuid, Uuid), (Receipt, &str)> = HashMap::new();
    for (job, answer) in jobs.iter().zip(answers.iter()) {
        if let Some(Ok(ReceiptOutcome::Created(r))) = answer {
            created.insert((job.actor.tenant_id, r.id), (r.clone(), &job.request_hash));
        }
    }
    for (job, answer) in jobs.iter().zip(answers.iter_mut()) {
        if answer.is_some() {
            continue;
        }
        let key = (job.actor.tenant_id, job.input.id);
        if let Some((r, hash)) = created.get(&key) {
            *answer = Some(replay(r.clone(), hash, &job.request_hash));
            continue;
        }
        if let Some((r, hash)) = receipt_by_id(&mut **tx, job.actor.tenant_id, job.input.id).await? {
            *answer = Some(replay(r, &hash, &job.request_hash));
            continue;
        }
        // Not released after success (one round trip less): a name refers to its latest
        // savepoint, and the commit releases them all. The cap keeps them few.
        sqlx::raw_sql("SAVEPOINT receipt").execute(&mut **tx).await?;
        let outcome = write_receipt(tx, &job.actor, &job.input, &job.request_hash, &job.precheck).await;
        if let Ok(ReceiptOutcome::Created(r)) = &outcome {
            created.insert(key, (r.clone(), &job.request_hash));
        } else {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT receipt").execute(&mut **tx).await?;
        }
        *answer = Some(outcome);
    }
    Ok(())
}

fn replay(r: Receipt, stored_hash: &str, request_hash: &str) -> Result<ReceiptOutcome> {
    if stored_hash == request_hash {
        Ok(ReceiptOutcome::Replayed(r))
    } else {
        Err(StorageError::conflict_on(
            "id",
            "a different receipt with this id exists already; a retry must send the same content",
        ))
    }
}

async fn invoice_by_ref<'e, E>(ex: E, tenant: Uuid, ext: &str) -> Result<Option<Invoice>>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let sql = format!("SELECT {INVOICE_COLS} FROM invoices WHERE tenant_id = $1 AND external_ref = $2");
    let row = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(ext).fetch_optional(ex).await?;
    row.as_ref().map(invoice_from_row).transpose()
}

async fn apply_invoice_action(
    tx: &mut Tx,
    actor: &Actor,
    settings: &TenantSettings,
    mut invoice: Invoice,
    action: InvoiceAction,
) -> Result<Invoice> {
    let tenant = actor.tenant_id;
    let Some(next) = transition(invoice.status, action) else {
        return Err(StorageError::conflict_on(
            "status",
            format!("an invoice in status {} cannot be {}", invoice.status.as_str(), match action {
                InvoiceAction::Reserve => "reserved",
                InvoiceAction::Ship => "shipped",
                InvoiceAction::Cancel => "cancelled",
            }),
        ));
    };
    let was_reserved = invoice.status == InvoiceStatus::Reserved;
    let mut levels = BTreeMap::new();
    for (i, l) in invoice.lines.iter().enumerate() {
        let q = l.qty.milli();
        let (on_hand, reserved) = match action {
            InvoiceAction::Reserve => (0, q),
            InvoiceAction::Ship => (-q, if was_reserved { -q } else { 0 }),
            InvoiceAction::Cancel => (0, if was_reserved { -q } else { 0 }),
        };
        if on_hand == 0 && reserved == 0 {
            continue;
        }
        let lv = move_stock(tx, tenant, invoice.store_id, l.product_id, on_hand, reserved, "invoice", invoice.id).await?;
        if settings.forbid_negative_stock && lv.available.milli() < 0 && action != InvoiceAction::Cancel {
            return Err(negative_stock(format!("lines[{i}].qty"), &lv));
        }
        levels.insert((invoice.store_id, l.product_id), lv);
    }
    let now = now_micros();
    sqlx::query("UPDATE invoices SET status = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(invoice.id)
        .bind(next.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    invoice.status = next;
    invoice.updated_at = ts(now);
    let kind = match action {
        InvoiceAction::Reserve => "invoice.reserved",
        InvoiceAction::Ship => "invoice.shipped",
        InvoiceAction::Cancel => "invoice.cancelled",
    };
    emit(tx, tenant, kind, serde_json::to_value(&invoice)?).await?;
    emit_levels(tx, tenant, &levels).await?;
    audit(tx, actor, next.as_str(), "invoice", Some(invoice.id.to_string()), json!({})).await?;
    Ok(invoice)
}
