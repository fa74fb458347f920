//! Fresh databases and the shop every benchmark sells in: one store, N tills, 50 products with
//! stock (one of them marked, for `--marked`), made through the `Storage` trait or the HTTP API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use savdo_domain::Qty;
use savdo_storage::{Actor, NewStockDoc, ProductFields, StockDocKind, StockDocLine, Storage};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

pub const PRODUCTS: usize = 50;
/// Stock supplied per product before a run, in units.
pub const SUPPLY_UNITS: i64 = 10_000_000;
/// The marked product's barcode (EAN-13) and the GTIN-14 its marking codes carry.
pub const MARKED_BARCODE: &str = "4780101164394";
pub const MARKED_GTIN: &str = "04780101164394";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Keys {
    /// Random UUIDs.
    V4,
    /// Time-ordered UUIDs (what Savdo uses).
    V7,
}

impl Keys {
    pub fn new_id(self) -> Uuid {
        match self {
            Keys::V4 => Uuid::new_v4(),
            Keys::V7 => Uuid::now_v7(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct ProductRef {
    pub id: Uuid,
    pub price: i64,
}

/// The shop a benchmark sells in.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub tenant_id: Uuid,
    pub store_id: Uuid,
    pub terminal_ids: Vec<Uuid>,
    pub plain_products: Vec<ProductRef>,
    pub marked_product: Option<ProductRef>,
}

/// A marking code (GS1 DataMatrix) for the marked product, unique per `serial`.
pub fn marking_code(serial: u64) -> String {
    let tail = "A".repeat(44);
    format!(
        "01{MARKED_GTIN}21{}\u{1d}91EE06\u{1d}92{tail}",
        crate::raw::serial_of(serial)
    )
}

fn product_fields(i: usize, marked: bool) -> ProductFields {
    ProductFields {
        sku: if marked {
            "BENCH-MARKED".into()
        } else {
            format!("BENCH-{i:03}")
        },
        name: if marked {
            "Sigaret (marked)".into()
        } else {
            format!("Mahsulot {i}")
        },
        barcodes: if marked {
            vec![MARKED_BARCODE.into()]
        } else {
            Vec::new()
        },
        price: price_of(i),
        vat_percent: 12,
        mxik: Some("10202001001000000".into()),
        package_code: Some("1508583".into()),
        unit: 1,
        marked,
        active: true,
    }
}

fn price_of(i: usize) -> i64 {
    // 1,000 to 50,000 so'm, in tiyin.
    ((i as i64 % 50) + 1) * 100_000
}

/// Seed a shop through the `Storage` trait (raw and in-process benchmarks).
pub async fn seed_storage(
    store: &Arc<dyn Storage>,
    tills: usize,
    marked: bool,
) -> anyhow::Result<Fixture> {
    let tenant = store.create_tenant("bench").await?;
    let actor = Actor::system(tenant.id);
    let shop = store
        .create_store(&actor, "Bench store", Some("Toshkent"))
        .await?;
    let mut terminal_ids = Vec::new();
    for t in 0..tills.max(1) {
        let term = store
            .create_terminal(&actor, shop.id, &format!("Till {}", t + 1))
            .await?;
        store.open_shift(&actor, term.id).await?;
        terminal_ids.push(term.id);
    }
    let mut items: Vec<ProductFields> = (0..PRODUCTS).map(|i| product_fields(i, false)).collect();
    if marked {
        items.push(product_fields(PRODUCTS, true));
    }
    let bulk = store.bulk_upsert_products(&actor, &items).await?;
    let mut plain = Vec::new();
    let mut marked_product = None;
    for p in &bulk.items {
        let r = ProductRef {
            id: p.id,
            price: p.price,
        };
        if p.marked {
            marked_product = Some(r)
        } else {
            plain.push(r)
        }
    }
    let lines = bulk
        .items
        .iter()
        .map(|p| StockDocLine {
            product_id: p.id,
            qty: Qty::from_milli(SUPPLY_UNITS * 1000),
            cost: None,
        })
        .collect();
    store
        .create_stock_doc(
            &actor,
            &NewStockDoc {
                kind: StockDocKind::Supply,
                store_id: shop.id,
                to_store_id: None,
                note: None,
                lines,
            },
        )
        .await?;
    Ok(Fixture {
        tenant_id: tenant.id,
        store_id: shop.id,
        terminal_ids,
        plain_products: plain,
        marked_product,
    })
}

/// A small JSON client for the Savdo API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Api> {
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: client()?,
        })
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, v))
    }

    async fn post_ok(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let (s, v) = self.post(path, body).await?;
        if !(200..300).contains(&s) {
            bail!("POST {path} answered {s}: {v}");
        }
        Ok(v)
    }
}

/// A keep-alive HTTP/1.1 client (one per simulated till).
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

fn uuid_of(v: &Value) -> anyhow::Result<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no id in {v}"))
}

/// Seed a shop over the HTTP API (checkout), as a back office would.
pub async fn seed_api(
    api: &Api,
    tenant_id: Uuid,
    tills: usize,
    marked: bool,
) -> anyhow::Result<Fixture> {
    let shop = api
        .post_ok(
            "/stores",
            &json!({"name": "Bench store", "address": "Toshkent"}),
        )
        .await?;
    let store_id = uuid_of(&shop)?;
    let mut terminal_ids = Vec::new();
    for t in 0..tills.max(1) {
        let term = api
            .post_ok(
                "/terminals",
                &json!({"store_id": store_id, "name": format!("Till {}", t + 1)}),
            )
            .await?;
        let id = uuid_of(&term)?;
        api.post_ok(&format!("/terminals/{id}/shifts/open"), &json!({}))
            .await?;
        terminal_ids.push(id);
    }
    let mut items: Vec<Value> = (0..PRODUCTS).map(|i| product_json(i, false)).collect();
    if marked {
        items.push(product_json(PRODUCTS, true));
    }
    let bulk = api
        .post_ok("/products/bulk", &json!({ "items": items }))
        .await?;
    let listed = bulk["items"]
        .as_array()
        .context("bulk answer without items")?;
    let mut plain = Vec::new();
    let mut marked_product = None;
    let mut lines = Vec::new();
    for p in listed {
        let r = ProductRef {
            id: uuid_of(p)?,
            price: p["price"].as_i64().unwrap_or(0),
        };
        lines.push(json!({"product_id": r.id, "qty": SUPPLY_UNITS}));
        if p["marked"].as_bool() == Some(true) {
            marked_product = Some(r)
        } else {
            plain.push(r)
        }
    }
    api.post_ok(
        "/stock/supplies",
        &json!({"store_id": store_id, "lines": lines}),
    )
    .await?;
    Ok(Fixture {
        tenant_id,
        store_id,
        terminal_ids,
        plain_products: plain,
        marked_product,
    })
}

fn product_json(i: usize, marked: bool) -> Value {
    let f = product_fields(i, marked);
    json!({"sku": f.sku, "name": f.name, "barcodes": f.barcodes, "price": f.price, "vat_percent": f.vat_percent,
           "mxik": f.mxik, "package_code": f.package_code, "unit": f.unit, "marked": f.marked})
}

/// A fresh database for one run: a SQLite file in a temporary directory, or a new PostgreSQL
/// database created next to the one `base_url` names (and dropped afterwards).
pub struct FreshDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_admin: Option<(String, String)>, // admin URL, database name
}

static FRESH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl FreshDb {
    pub async fn new(backend: Backend, pg_base_url: Option<&str>) -> anyhow::Result<FreshDb> {
        let dir = tempfile::Builder::new().prefix("savdo-bench-").tempdir()?;
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("savdo.sqlite").display());
                Ok(FreshDb {
                    url,
                    dir,
                    pg_admin: None,
                })
            }
            Backend::Postgres => {
                let base = pg_base_url.context(
                    "PostgreSQL needs --database-url or SAVDO_BENCH_DATABASE_URL (postgres://user@host:port/db)",
                )?;
                let n = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = format!(
                    "savdo_bench_{}_{}_{n}",
                    std::process::id(),
                    chrono::Utc::now().timestamp()
                );
                let mut admin = pg_connect(base).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut admin)
                    .await?;
                let url = replace_db(base, &name);
                Ok(FreshDb {
                    url,
                    dir,
                    pg_admin: Some((base.to_string(), name)),
                })
            }
        }
    }

    pub async fn drop_db(&self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Ok(mut c) = pg_connect(admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
        }
    }
}

/// `postgres://u@h:p/old?x` → `postgres://u@h:p/new?x`.
pub fn replace_db(url: &str, db: &str) -> String {
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    format!("{base}/{db}{query}")
}

async fn pg_connect(url: &str) -> anyhow::Result<sqlx::postgres::PgConnection> {
    use sqlx::Connection;
    sqlx::postgres::PgConnection::connect(url)
        .await
        .context("cannot connect to PostgreSQL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaced() {
        assert_eq!(
            replace_db("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            replace_db("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(replace_db("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn marking_codes_parse_and_differ() {
        let a = savdo_domain::marking::MarkingCode::parse(&marking_code(1)).unwrap();
        let b = savdo_domain::marking::MarkingCode::parse(&marking_code(2)).unwrap();
        assert_eq!(a.gtin(), MARKED_GTIN);
        assert_ne!(a.serial(), b.serial());
    }
}
