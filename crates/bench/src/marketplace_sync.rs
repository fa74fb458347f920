//! `marketplace-sync`: a real `savdo serve` whose tenant has a `uzum`, a `wildberries` and an
//! `ozon` integration pointed at the simulators of a sandbox started in this process. Every
//! simulator's catalogue is seeded with the same SKUs (one barcode each) through its control API;
//! the "products" sync of each integration, started over the API, links them by barcode, which
//! schedules the first push of every item (round 1). Then a back office posts stock documents
//! (supplies and write-offs, `--lines-per-doc` distinct products each) until `--changes` lines
//! have changed stock (round 2), and the run waits until every simulator shows, for every SKU,
//! our available stock minus the safety buffer.
//!
//! Reported per simulator and round: stock requests it received against the fewest the limits
//! allow, items carried, 429s, the time the limits need at least, and the time to the consistent
//! state. See [`RateModel`] and [`min_requests`] for the arithmetic.
//!
//! `marketplace-chaos` (the drill) runs the same flow with the simulators answering 429 and 5xx
//! at random while the documents flow, then healthy again, and prints a verdict.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use savdo_domain::Qty;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::process::Command;
use uuid::Uuid;

use crate::raw::Rng;
use crate::server::{self, Server};
use crate::setup::{self, Api, Backend, FreshDb};
use crate::stats::{self, Latency, MachineInfo, histogram, record};

/// The target: stock requests within this share above the minimum.
pub const TARGET_WITHIN: f64 = 0.10;
/// Items one Uzum stock request carries: Uzum publishes no cap, the connector sends 500
/// (`savdo_connectors::uzum::MAX_BATCH`).
pub const UZUM_BATCH: u64 = 500;
/// Units each product starts with (far from 0 and from Wildberries' cap of 100,000).
const START_UNITS: i64 = 1_000;
/// A document's kind is chosen to keep every level inside this band.
const LOW_UNITS: i64 = 100;
const HIGH_UNITS: i64 = 90_000;
/// How often the simulators' stock is compared with ours while waiting.
const POLL: Duration = Duration::from_millis(500);

#[derive(clap::Args, Debug, Clone)]
pub struct MarketplaceSyncArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// SKUs in our catalogue and on each marketplace.
    #[arg(long, default_value_t = 10_000)]
    pub skus: usize,
    /// Stock changes (document lines) after the mapping.
    #[arg(long, default_value_t = 100_000)]
    pub changes: usize,
    /// Lines of one stock document (distinct products).
    #[arg(long, default_value_t = 100)]
    pub lines_per_doc: usize,
    /// Back-office clients posting documents at once.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// The integrations' safety buffer, in units.
    #[arg(long, default_value_t = 2)]
    pub buffer: i64,
    /// Longest wait for the consistent state after each round, seconds.
    #[arg(long, default_value_t = 900)]
    pub wait: u64,
    /// PostgreSQL server to create fresh databases on (`postgres://user@host:port/db`).
    #[arg(long, env = "SAVDO_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The savdo binary [default: next to this one].
    #[arg(long)]
    pub savdo_bin: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MarketplaceChaosArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// Enough that Ozon's round inside the faults is several requests (100 items each).
    #[arg(long, default_value_t = 1_000)]
    pub skus: usize,
    #[arg(long, default_value_t = 5_000)]
    pub changes: usize,
    #[arg(long, default_value_t = 50)]
    pub lines_per_doc: usize,
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    #[arg(long, default_value_t = 2)]
    pub buffer: i64,
    /// Share (0..=1) of marketplace requests answered with an injected error while faulty.
    #[arg(long, default_value_t = 0.4)]
    pub error_rate: f64,
    /// The injected status changes this often (429, 500, 502, 503 in turn), milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub switch_ms: u64,
    /// Faults last this long (longer if the documents take longer), seconds; the documents are
    /// spread over it. Ozon takes an item at most once per 2 minutes, so under 120 s its
    /// stock requests never meet a fault.
    #[arg(long, default_value_t = 150)]
    pub chaos_secs: u64,
    /// Longest wait for the consistent state once the faults stop, seconds.
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
    #[arg(long, env = "SAVDO_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long)]
    pub savdo_bin: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------- the minimum arithmetic

/// Requests needed to carry `distinct` items, `batch` a request: `ceil(distinct / batch)`.
pub fn min_requests(distinct: u64, batch: u64) -> u64 {
    distinct.div_ceil(batch.max(1))
}

/// A provider's rate limit on the stock endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RateModel {
    /// `burst` at once, refilled at `per_sec` (Uzum, Wildberries).
    TokenBucket { burst: u64, per_sec: f64 },
    /// At most `limit` in any `window_secs` (Ozon: 80 a minute).
    Window { limit: u64, window_secs: f64 },
}

impl RateModel {
    /// The least time `n` requests take from a rested limit:
    /// bucket `max(0, n − burst) / per_sec`; window `(ceil(n / limit) − 1) × window`.
    pub fn min_secs(&self, n: u64) -> f64 {
        if n == 0 {
            return 0.0;
        }
        match *self {
            RateModel::TokenBucket { burst, per_sec } => {
                n.saturating_sub(burst) as f64 / per_sec.max(f64::MIN_POSITIVE)
            }
            RateModel::Window { limit, window_secs } => {
                (n.div_ceil(limit.max(1)) - 1) as f64 * window_secs
            }
        }
    }

    /// The most requests the limit accepts in `secs`: bucket `burst + floor(per_sec × secs)`;
    /// window `limit × ceil(secs / window)` (a sliding window: every window of that length
    /// holds at most `limit`).
    pub fn max_requests(&self, secs: f64) -> u64 {
        let secs = secs.max(0.0);
        match *self {
            RateModel::TokenBucket { burst, per_sec } => burst + (per_sec * secs).floor() as u64,
            RateModel::Window { limit, window_secs } => {
                let windows = (secs / window_secs.max(f64::MIN_POSITIVE)).ceil().max(1.0);
                limit * windows as u64
            }
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            RateModel::TokenBucket { burst, per_sec } => {
                format!("token bucket: burst {burst}, {per_sec}/s")
            }
            RateModel::Window { limit, window_secs } => {
                format!("{limit} per {window_secs} s (sliding window)")
            }
        }
    }
}

/// The least wait, from a round's reference moment, before the item pushed last in the previous
/// round may go again: that push came after the previous round's last poll that still found a
/// difference, `off_ago` seconds before the reference, so `max(0, interval − off_ago)`.
pub fn item_interval_wait(interval: Option<f64>, off_ago: Option<f64>) -> f64 {
    match (interval, off_ago) {
        (Some(i), Some(ago)) => (i - ago).max(0.0),
        _ => 0.0,
    }
}

/// What the run must see on a marketplace: our available stock (thousandths) minus the buffer,
/// in whole units, never below zero.
pub fn expected_units(available_milli: i64, buffer_units: i64) -> i64 {
    available_milli
        .saturating_sub(buffer_units.saturating_mul(1000))
        .max(0)
        / 1000
}

/// SKUs whose marketplace stock differs from `expected` (index = SKU number).
pub fn mismatches(
    m: Market,
    expected: &[i64],
    remote: &HashMap<String, i64>,
) -> Vec<(usize, i64, Option<i64>)> {
    expected
        .iter()
        .enumerate()
        .filter_map(|(i, want)| {
            let got = remote.get(&m.external_id(i)).copied();
            (got != Some(*want)).then_some((i, *want, got))
        })
        .collect()
}

/// A valid EAN-13 for SKU `i` (prefix 478, Uzbekistan).
pub fn ean13(i: usize) -> String {
    let body = format!("478{:09}", i % 1_000_000_000);
    let sum: u32 = body
        .bytes()
        .enumerate()
        .map(|(k, b)| u32::from(b - b'0') * if k % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

// ---------------------------------------------------------------- the marketplaces

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Market {
    Uzum,
    Wildberries,
    Ozon,
}

pub const MARKETS: [Market; 3] = [Market::Uzum, Market::Wildberries, Market::Ozon];
/// Numeric marketplace ids of the SKUs start here.
const ID_BASE: u64 = 100_000;

impl Market {
    pub fn kind(self) -> &'static str {
        match self {
            Market::Uzum => "uzum",
            Market::Wildberries => "wildberries",
            Market::Ozon => "ozon",
        }
    }

    fn credentials(self) -> Value {
        match self {
            Market::Uzum => json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}),
            Market::Wildberries => json!({"token": savdo_sandbox::wildberries::DEFAULT_TOKEN}),
            Market::Ozon => json!({"client_id": savdo_sandbox::ozon::DEFAULT_CLIENT_ID,
                                   "api_key": savdo_sandbox::ozon::DEFAULT_API_KEY}),
        }
    }

    fn settings(self, sandbox: &str, store: Uuid, buffer: i64) -> Value {
        let (field, base) = match self {
            Market::Uzum => ("shop_id", format!("{sandbox}/uzum/api/seller-openapi")),
            Market::Wildberries => ("warehouse_id", format!("{sandbox}/wildberries")),
            Market::Ozon => ("warehouse_id", format!("{sandbox}/ozon")),
        };
        let mut s =
            json!({"store_ids": [store.to_string()], "safety_buffer": buffer, "base_url": base});
        s[field] = json!("1");
        s
    }

    /// The simulator's catalogue item for SKU `i`, with no stock yet.
    fn seed_item(self, i: usize) -> Value {
        let n = ID_BASE + i as u64;
        let barcode = ean13(i);
        match self {
            Market::Uzum => json!({"sku_id": n, "product_id": n, "barcode": barcode,
                                   "title": format!("Mahsulot {i}"), "price": 10_000, "amount": 0}),
            Market::Wildberries => json!({"chrt_id": n, "nm_id": n, "barcodes": [barcode],
                                          "title": format!("Mahsulot {i}"), "amount": 0}),
            Market::Ozon => {
                json!({"offer_id": format!("MP-{i}"), "product_id": n, "barcodes": [barcode],
                                   "name": format!("Mahsulot {i}"), "stock": 0})
            }
        }
    }

    /// Our external id of SKU `i` (Uzum skuId, WB chrtId, Ozon offer_id).
    pub fn external_id(self, i: usize) -> String {
        match self {
            Market::Ozon => format!("MP-{i}"),
            _ => (ID_BASE + i as u64).to_string(),
        }
    }

    /// Method and path suffix of the stock update, as the call log shows it.
    fn stock_call(self) -> (&'static str, &'static str) {
        match self {
            Market::Uzum => ("POST", "/v2/fbs/sku/stocks"),
            Market::Wildberries => ("PUT", "/api/v3/stocks/"),
            Market::Ozon => ("POST", "/v2/products/stocks"),
        }
    }

    /// The stock endpoint as the simulator's stats name it.
    fn stock_endpoint(self) -> &'static str {
        match self {
            Market::Uzum => "POST /api/seller-openapi/v2/fbs/sku/stocks",
            Market::Wildberries => "PUT /api/v3/stocks/{warehouse_id}",
            Market::Ozon => "POST /v2/products/stocks",
        }
    }

    /// Batch size, rate model and per-item interval from `GET /_control/<name>/limits`.
    fn limits(self, v: &Value) -> anyhow::Result<Limits> {
        let l = &v["limits"];
        let num = |k: &str| {
            l[k].as_f64()
                .with_context(|| format!("{} limits without {k}: {v}", self.kind()))
        };
        Ok(match self {
            Market::Uzum => Limits {
                batch: UZUM_BATCH,
                rate: RateModel::TokenBucket {
                    burst: num("burst")? as u64,
                    per_sec: num("per_second")?,
                },
                item_interval_secs: None,
            },
            Market::Wildberries => Limits {
                batch: num("max_stock_items")? as u64,
                rate: RateModel::TokenBucket {
                    burst: num("marketplace_burst")? as u64,
                    per_sec: num("marketplace_per_second")?,
                },
                item_interval_secs: None,
            },
            Market::Ozon => Limits {
                batch: num("max_stock_items")? as u64,
                rate: RateModel::Window {
                    limit: num("stocks_per_window")? as u64,
                    window_secs: num("stocks_window_ms")? / 1000.0,
                },
                item_interval_secs: Some(num("item_interval_ms")? / 1000.0),
            },
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub batch: u64,
    pub rate: RateModel,
    /// The same item at most once per this (Ozon).
    pub item_interval_secs: Option<f64>,
}

impl Limits {
    fn line(&self) -> String {
        let mut s = format!("{} items a request, {}", self.batch, self.rate.describe());
        if let Some(i) = self.item_interval_secs {
            s.push_str(&format!(", an item at most once per {i} s"));
        }
        s
    }
}

/// The sandbox's control API for the three marketplaces.
#[derive(Clone)]
struct Sims {
    base: String,
    http: reqwest::Client,
}

/// Stock-endpoint counters of a simulator at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    requests: u64,
    ok: u64,
    items: u64,
}

impl Sims {
    fn url(&self, m: Market, path: &str) -> String {
        format!("{}/_control/{}/{path}", self.base, m.kind())
    }

    async fn get(&self, m: Market, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(self.url(m, path))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("sandbox {} {path}", m.kind()))?;
        let s = r.status();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        if !s.is_success() {
            bail!("sandbox {} {path} answered {s}: {v}", m.kind());
        }
        Ok(v)
    }

    async fn post(&self, m: Market, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(self.url(m, path))
            .json(body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("sandbox {} {path}", m.kind()))?;
        let s = r.status();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        if !s.is_success() {
            bail!("sandbox {} {path} answered {s}: {v}", m.kind());
        }
        Ok(v)
    }

    /// Stock by our external id.
    async fn stock(&self, m: Market) -> anyhow::Result<HashMap<String, i64>> {
        let v = self.get(m, "stock").await?;
        let pairs = |key: &str| -> HashMap<String, i64> {
            v[key]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, a)| a.as_i64().map(|a| (k.clone(), a)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(match m {
            Market::Uzum => v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| Some((i["sku_id"].as_u64()?.to_string(), i["amount"].as_i64()?)))
                .collect(),
            Market::Wildberries => pairs("by_chrt_id"),
            Market::Ozon => pairs("by_offer_id"),
        })
    }

    async fn counters(&self, m: Market) -> anyhow::Result<Counters> {
        let s = self.get(m, "stats").await?;
        let e = &s["endpoints"][m.stock_endpoint()];
        let st = &s["stock"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(Counters {
            requests: n(&e["total"]),
            ok: e["by_status"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| k.starts_with('2'))
                        .map(|(_, v)| n(v))
                        .sum()
                })
                .unwrap_or(0),
            items: n(&st["items_updated"]) + n(&st["items_rejected"]) + n(&st["items_ignored"]),
        })
    }

    /// Stock calls in the simulator's log by status, injected faults included (the stats count
    /// only what reached the provider's handlers).
    async fn stock_calls(&self, m: Market) -> anyhow::Result<BTreeMap<u16, u64>> {
        let v = self.get(m, "calls?path=stocks").await?;
        let (method, suffix) = m.stock_call();
        let mut by = BTreeMap::new();
        for c in v["calls"].as_array().into_iter().flatten() {
            let path = c["path"].as_str().unwrap_or("");
            let ok_path = match m {
                Market::Wildberries => path.contains(suffix),
                _ => path.ends_with(suffix),
            };
            if c["method"] == method && ok_path {
                let status = c["status"].as_u64().unwrap_or(0) as u16;
                *by.entry(status).or_insert(0) += 1;
            }
        }
        Ok(by)
    }

    async fn set_faults(&self, m: Market, faults: &Value) -> anyhow::Result<()> {
        self.post(m, "faults", faults).await.map(|_| ())
    }
}

// ---------------------------------------------------------------- the shop over the API

struct Shop {
    store_id: Uuid,
    /// Our product of SKU `i`.
    products: Vec<Uuid>,
}

async fn api_get(api: &Api, path: &str) -> anyhow::Result<Value> {
    let r = api
        .http
        .get(format!("{}/api/v1{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await?;
    let s = r.status();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    if !s.is_success() {
        bail!("GET {path} answered {s}: {v}");
    }
    Ok(v)
}

async fn api_post(api: &Api, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (s, v) = api.post(path, body).await?;
    if !(200..300).contains(&s) {
        bail!("POST {path} answered {s}: {v}");
    }
    Ok(v)
}

fn id_of(v: &Value) -> anyhow::Result<Uuid> {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no id in {v}"))
}

/// One store, `skus` products with one barcode each, `START_UNITS` of each in stock.
async fn make_shop(api: &Api, skus: usize) -> anyhow::Result<Shop> {
    let store = api_post(
        api,
        "/stores",
        &json!({"name": "Online store", "address": "Toshkent"}),
    )
    .await?;
    let store_id = id_of(&store)?;
    let mut products = vec![Uuid::nil(); skus];
    for chunk in (0..skus).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|&i| {
                json!({"sku": format!("MP-{i:06}"), "name": format!("Mahsulot {i}"),
                       "barcodes": [ean13(i)], "price": 1_500_000, "vat_percent": 12, "unit": 1})
            })
            .collect();
        let bulk = api_post(api, "/products/bulk", &json!({ "items": items })).await?;
        for p in bulk["items"]
            .as_array()
            .context("bulk answer without items")?
        {
            let i: usize = p["sku"]
                .as_str()
                .and_then(|s| s.strip_prefix("MP-"))
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("unexpected product {p}"))?;
            if let Some(slot) = products.get_mut(i) {
                *slot = id_of(p)?;
            }
        }
    }
    if products.iter().any(Uuid::is_nil) {
        bail!("products/bulk did not answer every product");
    }
    for chunk in products.chunks(5000) {
        let lines: Vec<Value> = chunk
            .iter()
            .map(|p| json!({"product_id": p, "qty": START_UNITS}))
            .collect();
        api_post(
            api,
            "/stock/supplies",
            &json!({"store_id": store_id, "note": "opening stock", "lines": lines}),
        )
        .await?;
    }
    Ok(Shop { store_id, products })
}

/// Our available stock per SKU, thousandths.
async fn available(api: &Api, shop: &Shop) -> anyhow::Result<Vec<i64>> {
    let v = api_get(api, &format!("/stock?store_id={}", shop.store_id)).await?;
    let mut by_product = HashMap::new();
    for l in v["items"]
        .as_array()
        .context("stock answer without items")?
    {
        let p: Uuid = l["product_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("stock level without product_id")?;
        let q: Qty = serde_json::from_value(l["available"].clone())
            .with_context(|| format!("bad available in {l}"))?;
        by_product.insert(p, q.milli());
    }
    Ok(shop
        .products
        .iter()
        .map(|p| by_product.get(p).copied().unwrap_or(0))
        .collect())
}

// ---------------------------------------------------------------- the documents

#[derive(Debug, Clone)]
struct Doc {
    supply: bool,
    /// (SKU, units)
    lines: Vec<(usize, i64)>,
}

/// `changes` lines in documents of `per_doc` distinct SKUs; each document a supply or a
/// write-off of 1–3 units a line, chosen to keep every level between `LOW_UNITS` and
/// `HIGH_UNITS` in the planned order (the few documents in flight at once cannot move a level
/// anywhere near zero or Wildberries' cap). Returns the documents and the level each SKU ends at.
fn plan_docs(skus: usize, changes: usize, per_doc: usize, seed: u64) -> (Vec<Doc>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let per_doc = per_doc.clamp(1, skus.max(1));
    let mut levels = vec![START_UNITS; skus];
    let mut docs = Vec::new();
    let mut left = changes;
    while left > 0 && skus > 0 {
        let k = per_doc.min(left);
        let picked = rng.distinct(k, skus);
        // Write-offs only where every line stays above the floor; otherwise a supply.
        let supply =
            rng.next().is_multiple_of(2) || picked.iter().any(|&i| levels[i] - 3 < LOW_UNITS);
        let supply = supply && picked.iter().all(|&i| levels[i] + 3 <= HIGH_UNITS);
        let lines: Vec<(usize, i64)> = picked
            .into_iter()
            .map(|i| {
                let units = 1 + (rng.next() % 3) as i64;
                levels[i] += if supply { units } else { -units };
                (i, units)
            })
            .collect();
        docs.push(Doc { supply, lines });
        left -= k;
    }
    (docs, levels)
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeReport {
    pub documents: usize,
    pub lines: usize,
    pub distinct_skus: usize,
    pub failed_documents: usize,
    pub secs: f64,
    pub lines_per_sec: f64,
    pub document_latency: Latency,
    /// Our stock after the run equals the opening stock plus every document.
    pub server_matches_documents: bool,
}

/// Post the documents from `clients` back-office clients at once: as fast as the server takes
/// them, or, with `spread`, document k not before `k / n` of it (changes flowing all along).
async fn post_docs(
    api: &Api,
    shop: &Shop,
    docs: Arc<Vec<Doc>>,
    clients: usize,
    spread: Option<Duration>,
) -> anyhow::Result<(usize, f64, Latency)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let n = docs.len().max(1) as u32;
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let api = Api::new(&api.base, &api.token)?;
        let docs = docs.clone();
        let next = next.clone();
        let products = shop.products.clone();
        let store_id = shop.store_id;
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut failed = 0usize;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = docs.get(k) else { break };
                if let Some(total) = spread {
                    let at = started + total.mul_f64(f64::from(k as u32) / f64::from(n));
                    tokio::time::sleep_until(at.into()).await;
                }
                let lines: Vec<Value> = d
                    .lines
                    .iter()
                    .map(|(i, u)| json!({"product_id": products[*i], "qty": u}))
                    .collect();
                let path = if d.supply {
                    "/stock/supplies"
                } else {
                    "/stock/writeoffs"
                };
                let body =
                    json!({"store_id": store_id, "note": format!("bench {k}"), "lines": lines});
                let t = Instant::now();
                match api.post(path, &body).await {
                    Ok((s, _)) if (200..300).contains(&s) => record(&mut h, t.elapsed()),
                    Ok((s, v)) => {
                        failed += 1;
                        eprintln!("document {k}: POST {path} answered {s}: {v}");
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("document {k}: POST {path} failed: {e}");
                    }
                }
            }
            (failed, h)
        }));
    }
    let mut failed = 0;
    let mut all = histogram();
    for t in tasks {
        let (f, h) = t.await?;
        failed += f;
        all.add(&h).ok();
    }
    Ok((failed, started.elapsed().as_secs_f64(), Latency::of(&all)))
}

// ---------------------------------------------------------------- the server

/// `savdo serve` with the marketplace order poller slowed to once an hour, so the stock
/// endpoints' figures are the pusher's alone (the poller shares Uzum's one request a second).
async fn start_server(
    bin: &Path,
    data_dir: &Path,
    db_url: &str,
    log: &Path,
) -> anyhow::Result<Server> {
    let port = server::free_port()?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut child = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--database-url")
        .arg(db_url)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("SAVDO_LOG", "warn")
        .env("SAVDO_MARKETPLACE_POLL_SECS", "3600")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start savdo serve")?;
    let pid = child.id().context("server exited at once")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = setup::client()?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait()? {
            bail!(
                "savdo serve exited during start ({st}); see {}",
                log.display()
            );
        }
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > until {
            bail!("savdo serve did not answer /healthz within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Server { child, pid, base })
}

// ---------------------------------------------------------------- one run

struct Params {
    backend: Backend,
    database_url: Option<String>,
    savdo_bin: Option<PathBuf>,
    skus: usize,
    changes: usize,
    lines_per_doc: usize,
    clients: usize,
    buffer: i64,
    wait: Duration,
    chaos: Option<Chaos>,
}

#[derive(Debug, Clone, Serialize)]
struct Chaos {
    error_rate: f64,
    switch_ms: u64,
    min_secs: u64,
}

/// One simulator in one round.
#[derive(Debug, Clone, Serialize)]
pub struct MarketRound {
    pub market: Market,
    /// Stock requests the simulator's API received in the round (every answer).
    pub requests: u64,
    pub requests_ok: u64,
    /// Items those requests carried.
    pub items_sent: u64,
    /// Distinct items whose value had to reach the marketplace.
    pub distinct_items: u64,
    /// `ceil(distinct_items / batch)`.
    pub min_requests: u64,
    /// `requests / min_requests`.
    pub ratio: f64,
    /// `ratio` at most 1 + [`TARGET_WITHIN`].
    pub within_target: bool,
    /// `ceil(items_sent / batch)`: the fewest requests for the items actually sent.
    pub min_requests_for_items_sent: u64,
    /// The least time the limits allow: what the rate limit lets `min_requests` take, or the
    /// wait Ozon's per-item interval imposes after the previous round, whichever is longer.
    pub min_secs: f64,
    /// The per-item interval's part: see [`item_interval_wait`].
    pub min_secs_item_interval: f64,
    /// The most requests the rate limit accepts over the round's span.
    pub max_requests_in_span: u64,
    /// From the round's start (the last document acknowledged, for the changes) to every SKU
    /// equal on this marketplace; `None`: not within the wait.
    pub consistent_after_secs: Option<f64>,
    /// SKUs still different when the wait ended.
    pub mismatched: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MarketTotals {
    pub market: Market,
    pub limits: Limits,
    /// 429s the simulator's own limits answered over the whole run (every endpoint).
    pub responses_429: u64,
    /// Products sync: seconds from the job's creation to `succeeded`, and items mapped.
    pub products_sync_secs: f64,
    pub mapped: i64,
    /// Drill only: stock calls by status in the simulator's log, injected faults included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stock_calls_by_status: Option<BTreeMap<u16, u64>>,
    /// Drill only: stock calls answered by an injected fault (the log's count minus what reached
    /// the provider's handlers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injected_faults: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub machine: MachineInfo,
    pub savdo_bin: String,
    pub backend: Backend,
    pub skus: usize,
    pub changes: usize,
    pub buffer_units: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    chaos: Option<Chaos>,
    pub markets: Vec<MarketTotals>,
    /// Round 1: the first push of every mapped item after the products sync.
    pub mapping_round: Vec<MarketRound>,
    pub changes_report: ChangeReport,
    /// Round 2: the documents' changes.
    pub changes_round: Vec<MarketRound>,
    /// Last document acknowledged (drill: faults stopped) -> every marketplace consistent.
    pub all_consistent_after_secs: Option<f64>,
    pub consistent: bool,
    pub zero_429: bool,
}

/// What polling saw of one marketplace.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Seconds from the reference to the first poll that found every SKU equal.
    after_secs: Option<f64>,
    /// SKUs still different at the last poll.
    mismatched: usize,
    /// When the last poll that found a difference asked: everything the round pushed and the
    /// poll saw missing was pushed after it.
    last_off: Option<Instant>,
}

/// Poll every simulator until each shows `expected` for every SKU (or `wait` passes).
async fn wait_consistent(
    sims: &Sims,
    expected: &[i64],
    from: Instant,
    wait: Duration,
) -> anyhow::Result<BTreeMap<Market, Seen>> {
    let fresh = Seen {
        after_secs: None,
        mismatched: expected.len(),
        last_off: None,
    };
    let mut out: BTreeMap<Market, Seen> = MARKETS.iter().map(|m| (*m, fresh)).collect();
    let until = Instant::now() + wait;
    loop {
        for m in MARKETS {
            let entry = out.entry(m).or_insert(fresh);
            if entry.after_secs.is_some() {
                continue;
            }
            let asked = Instant::now();
            let remote = sims.stock(m).await?;
            let off = mismatches(m, expected, &remote);
            entry.mismatched = off.len();
            if off.is_empty() {
                entry.after_secs = Some(from.elapsed().as_secs_f64());
            } else {
                entry.last_off = Some(asked);
            }
        }
        if out.values().all(|s| s.after_secs.is_some()) || Instant::now() > until {
            return Ok(out);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn round(
    m: Market,
    limits: &Limits,
    (before, after): (Counters, Counters),
    distinct: u64,
    span_secs: f64,
    seen: Seen,
    interval_wait: f64,
) -> MarketRound {
    let requests = after.requests.saturating_sub(before.requests);
    let items_sent = after.items.saturating_sub(before.items);
    let min = min_requests(distinct, limits.batch);
    let ratio = if min > 0 {
        requests as f64 / min as f64
    } else {
        0.0
    };
    MarketRound {
        market: m,
        requests,
        requests_ok: after.ok.saturating_sub(before.ok),
        items_sent,
        distinct_items: distinct,
        min_requests: min,
        ratio,
        within_target: ratio <= 1.0 + TARGET_WITHIN,
        min_requests_for_items_sent: min_requests(items_sent, limits.batch),
        min_secs: limits.rate.min_secs(min).max(interval_wait),
        min_secs_item_interval: interval_wait,
        max_requests_in_span: limits.rate.max_requests(span_secs),
        consistent_after_secs: seen.after_secs,
        mismatched: seen.mismatched,
    }
}

/// Switch the simulators' injected faults (429, 500, 502, 503 in turn) until `stop`.
async fn chaos_loop(sims: Sims, chaos: Chaos, stop: Arc<AtomicBool>) {
    let statuses = [429u16, 500, 502, 503];
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        for (j, m) in MARKETS.iter().enumerate() {
            let status = statuses[(k + j) % statuses.len()];
            let f = json!({"error_rate": chaos.error_rate, "status": status});
            if let Err(e) = sims.set_faults(*m, &f).await {
                eprintln!("chaos: {e}");
            }
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(chaos.switch_ms.max(50))).await;
    }
}

async fn run_flow(p: &Params, machine: MachineInfo) -> anyhow::Result<SyncReport> {
    let say = |s: String| println!("{s}");
    let bin = server::savdo_binary(p.savdo_bin.as_deref())?;
    let db = FreshDb::new(p.backend, p.database_url.as_deref()).await?;
    // Interrupted (the drill's timeout sends SIGINT): dropping the run stops the server child.
    let result = tokio::select! {
        r = run_in(p, &bin, &db, machine, &say) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    db.drop_db().await;
    result
}

async fn run_in(
    p: &Params,
    bin: &Path,
    db: &FreshDb,
    machine: MachineInfo,
    say: &dyn Fn(String),
) -> anyhow::Result<SyncReport> {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse()?).await?;
    let sims = Sims {
        base: sandbox.url().trim_end_matches('/').to_string(),
        http: setup::client()?,
    };
    let data_dir = db.dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let log = db.dir.path().join("server.log");
    let (_tenant, token) = server::create_tenant(bin, &data_dir, &db.url).await?;
    let srv = start_server(bin, &data_dir, &db.url, &log).await?;
    let api = Api::new(&srv.base, &token)?;
    let r = flow(p, &api, &sims, machine, bin, say).await;
    srv.stop().await;
    if r.is_err() {
        // The log lives in the run's temporary directory: show its end before it goes.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("server log (last lines):");
        for l in tail.into_iter().rev() {
            eprintln!("  {l}");
        }
    }
    drop(sandbox);
    r
}

async fn flow(
    p: &Params,
    api: &Api,
    sims: &Sims,
    machine: MachineInfo,
    bin: &Path,
    say: &dyn Fn(String),
) -> anyhow::Result<SyncReport> {
    // 1. The marketplaces' catalogues, through their control API.
    let mut limits = BTreeMap::new();
    for m in MARKETS {
        sims.post(m, "reset", &json!({})).await.ok();
        let items: Vec<Value> = (0..p.skus).map(|i| m.seed_item(i)).collect();
        sims.post(m, "seed", &json!({"clear": true, "products": items}))
            .await?;
        let l = m.limits(&sims.get(m, "limits").await?)?;
        say(format!("  {:<12} {}", m.kind(), l.line()));
        limits.insert(m, l);
    }
    // 2. Our shop, as a back office makes it.
    let t = Instant::now();
    let shop = make_shop(api, p.skus).await?;
    say(format!(
        "shop: {} products with one barcode each, {START_UNITS} units each, made over the API in {:.1} s",
        p.skus,
        t.elapsed().as_secs_f64()
    ));
    // 3. The integrations and their products sync (round 1 starts with the links).
    let mut before = BTreeMap::new();
    for m in MARKETS {
        before.insert(m, sims.counters(m).await?);
    }
    let round1_start = Instant::now();
    let mut jobs = Vec::new();
    for m in MARKETS {
        let v = api_post(
            api,
            "/integrations",
            &json!({"type": m.kind(), "name": m.kind(), "credentials": m.credentials(),
                    "settings": m.settings(&sims.base, shop.store_id, p.buffer)}),
        )
        .await?;
        let id = id_of(&v)?;
        let job = api_post(
            api,
            &format!("/integrations/{id}/sync"),
            &json!({"what": "products"}),
        )
        .await?;
        jobs.push((m, id, id_of(&job)?));
    }
    // The stock does not move in round 1: each marketplace is watched from the start, while
    // the products jobs (which one runner takes in turn) are still pulling catalogues.
    let expected: Vec<i64> = available(api, &shop)
        .await?
        .into_iter()
        .map(|a| expected_units(a, p.buffer))
        .collect();
    let sync_jobs = async {
        let mut totals = Vec::new();
        let sync_wait = Instant::now() + p.wait;
        for (m, id, job) in &jobs {
            let secs = loop {
                let j = api_get(api, &format!("/integrations/{id}/jobs/{job}")).await?;
                match j["status"].as_str() {
                    Some("succeeded") => break round1_start.elapsed().as_secs_f64(),
                    Some("failed") => bail!("{} products sync failed: {j}", m.kind()),
                    _ if Instant::now() > sync_wait => {
                        bail!("{} products sync did not finish: {j}", m.kind())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            let counts = api_get(api, &format!("/integrations/{id}/mappings?limit=1")).await?;
            let mapped = counts["counts"]["mapped"].as_i64().unwrap_or(0);
            say(format!(
                "products sync {:<12} succeeded {secs:.1} s after the integrations were created; {mapped} of {} SKUs mapped by barcode",
                m.kind(),
                p.skus
            ));
            totals.push(MarketTotals {
                market: *m,
                limits: limits[m],
                responses_429: 0,
                products_sync_secs: secs,
                mapped,
                stock_calls_by_status: None,
                injected_faults: None,
            });
        }
        Ok::<_, anyhow::Error>(totals)
    };
    let (totals, seen) = tokio::join!(
        sync_jobs,
        wait_consistent(sims, &expected, round1_start, p.wait)
    );
    let (mut totals, seen) = (totals?, seen?);
    let span1 = round1_start.elapsed().as_secs_f64();
    let round1_last_off: BTreeMap<Market, Option<Instant>> =
        seen.iter().map(|(m, s)| (*m, s.last_off)).collect();
    let mut mapping_round = Vec::new();
    let mut mid = BTreeMap::new();
    for m in MARKETS {
        let now = sims.counters(m).await?;
        mid.insert(m, now);
        mapping_round.push(round(
            m,
            &limits[&m],
            (before[&m], now),
            p.skus as u64,
            span1,
            seen[&m],
            0.0,
        ));
    }
    say(String::new());
    say("round 1: the first push of every mapped item (timed from the integrations' creation, so the catalogue pull is included)".into());
    say(round_table(&mapping_round));
    if mapping_round
        .iter()
        .any(|r| r.consistent_after_secs.is_none())
    {
        say(format!(
            "round 1 did not reach the consistent state within {} s; the changes run anyway",
            p.wait.as_secs()
        ));
    }

    // 4. The changes.
    let (docs, final_levels) = plan_docs(
        p.skus,
        p.changes,
        p.lines_per_doc,
        chrono::Utc::now().timestamp_micros() as u64,
    );
    let distinct = {
        let mut seen = vec![false; p.skus];
        for d in &docs {
            for (i, _) in &d.lines {
                seen[*i] = true;
            }
        }
        seen.iter().filter(|s| **s).count()
    };
    let lines: usize = docs.iter().map(|d| d.lines.len()).sum();
    let n_docs = docs.len();
    let stop = Arc::new(AtomicBool::new(false));
    let chaos_task = p
        .chaos
        .clone()
        .map(|c| tokio::spawn(chaos_loop(sims.clone(), c, stop.clone())));
    let chaos_started = Instant::now();
    say(String::new());
    say(format!(
        "changes: {lines} lines in {n_docs} documents of up to {} distinct SKUs ({distinct} SKUs touched), {} clients{}",
        p.lines_per_doc,
        p.clients,
        if p.chaos.is_some() {
            " — the simulators answer 429/5xx at random meanwhile"
        } else {
            ""
        }
    ));
    let round2_first = Instant::now();
    let (failed, secs, latency) = post_docs(
        api,
        &shop,
        Arc::new(docs),
        p.clients,
        p.chaos.as_ref().map(|c| Duration::from_secs(c.min_secs)),
    )
    .await?;
    let last_change = Instant::now();
    let mut faults_off = last_change;
    if let (Some(task), Some(c)) = (chaos_task, &p.chaos) {
        let min = Duration::from_secs(c.min_secs);
        let ran = chaos_started.elapsed();
        if ran < min {
            tokio::time::sleep(min - ran).await;
        }
        stop.store(true, Ordering::Relaxed);
        task.await.ok();
        for m in MARKETS {
            sims.set_faults(m, &json!({})).await?;
        }
        faults_off = Instant::now();
        say(format!(
            "faults stopped {:.1} s after they started",
            chaos_started.elapsed().as_secs_f64()
        ));
    }
    let avail = available(api, &shop).await?;
    let matches_docs = failed == 0
        && avail
            .iter()
            .zip(&final_levels)
            .all(|(a, want)| *a == want * 1000);
    let changes_report = ChangeReport {
        documents: n_docs,
        lines,
        distinct_skus: distinct,
        failed_documents: failed,
        secs,
        lines_per_sec: lines as f64 / secs.max(1e-9),
        document_latency: latency,
        server_matches_documents: matches_docs,
    };
    say(format!(
        "  posted in {secs:.1} s: {:.0} lines/s, {} documents failed; document latency {}",
        changes_report.lines_per_sec,
        failed,
        latency.line()
    ));
    say(format!(
        "  our stock equals the opening stock plus every document: {}",
        if matches_docs { "yes" } else { "NO" }
    ));
    let expected: Vec<i64> = avail
        .into_iter()
        .map(|a| expected_units(a, p.buffer))
        .collect();
    let seen = wait_consistent(sims, &expected, faults_off, p.wait).await?;
    let span2 = round2_first.elapsed().as_secs_f64();
    let mut changes_round = Vec::new();
    for m in MARKETS {
        let now = sims.counters(m).await?;
        changes_round.push(round(
            m,
            &limits[&m],
            (mid[&m], now),
            distinct as u64,
            span2,
            seen[&m],
            item_interval_wait(
                limits[&m].item_interval_secs,
                round1_last_off[&m]
                    .map(|at| faults_off.saturating_duration_since(at).as_secs_f64()),
            ),
        ));
    }
    say(String::new());
    say(format!(
        "round 2: the changes (consistency timed from {}; span for the limit = first document to consistent, {span2:.1} s)",
        if p.chaos.is_some() {
            "the moment faults stopped"
        } else {
            "the last document acknowledged"
        }
    ));
    say(round_table(&changes_round));
    for t in &mut totals {
        let s = sims.get(t.market, "stats").await?;
        t.responses_429 = s["responses_429"].as_u64().unwrap_or(0);
        if p.chaos.is_some() {
            let by = sims.stock_calls(t.market).await?;
            let logged: u64 = by.values().sum();
            let reached = sims.counters(t.market).await?.requests;
            t.injected_faults = Some(logged.saturating_sub(reached));
            t.stock_calls_by_status = Some(by);
        }
    }
    let consistent = changes_round
        .iter()
        .all(|r| r.consistent_after_secs.is_some());
    let all_after = changes_round
        .iter()
        .map(|r| r.consistent_after_secs)
        .try_fold(0.0f64, |acc, t| t.map(|t| acc.max(t)));
    let zero_429 = totals.iter().all(|t| t.responses_429 == 0);
    say(String::new());
    for t in &totals {
        let mut line = format!(
            "{:<12} 429s from the provider's own limits over the whole run: {}",
            t.market.kind(),
            t.responses_429
        );
        if let Some(by) = &t.stock_calls_by_status {
            let s: Vec<String> = by.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            line.push_str(&format!(
                "; stock calls by status (injected faults included): {}; injected: {}",
                s.join(", "),
                t.injected_faults.unwrap_or(0)
            ));
        }
        say(line);
    }
    say(match all_after {
        Some(s) => format!(
            "every marketplace equals our available − buffer for every SKU {s:.1} s after {}",
            if p.chaos.is_some() {
                "the faults stopped"
            } else {
                "the last change"
            }
        ),
        None => format!(
            "NOT consistent within {} s: {} SKUs differ",
            p.wait.as_secs(),
            changes_round.iter().map(|r| r.mismatched).sum::<usize>()
        ),
    });
    Ok(SyncReport {
        machine,
        savdo_bin: bin.display().to_string(),
        backend: p.backend,
        skus: p.skus,
        changes: p.changes,
        buffer_units: p.buffer,
        chaos: p.chaos.clone(),
        markets: totals,
        mapping_round,
        changes_report,
        changes_round,
        all_consistent_after_secs: all_after,
        consistent,
        zero_429,
    })
}

fn round_table(rows: &[MarketRound]) -> String {
    let mut s = format!(
        "  {:<12} {:>8} {:>8} {:>6} {:>5} {:>10} {:>10} {:>9} {:>10} {:>11}\n",
        "market",
        "requests",
        "minimum",
        "ratio",
        "≤1.1",
        "items sent",
        "min(items)",
        "min time",
        "limit max",
        "consistent"
    );
    for r in rows {
        let when = match r.consistent_after_secs {
            Some(t) => format!("{t:.1} s"),
            None => format!("NO ({} off)", r.mismatched),
        };
        s.push_str(&format!(
            "  {:<12} {:>8} {:>8} {:>6.2} {:>5} {:>10} {:>10} {:>7.1} s {:>10} {:>11}\n",
            r.market.kind(),
            r.requests,
            r.min_requests,
            r.ratio,
            if r.within_target { "yes" } else { "no" },
            r.items_sent,
            r.min_requests_for_items_sent,
            r.min_secs,
            r.max_requests_in_span,
            when
        ));
    }
    s.trim_end().to_string()
}

// ---------------------------------------------------------------- entry points

pub async fn run(a: MarketplaceSyncArgs) -> anyhow::Result<()> {
    let machine = MachineInfo::now();
    println!(
        "marketplace-sync: {} SKUs on each marketplace simulator, {} stock changes, {:?}, buffer {} units",
        a.skus, a.changes, a.backend, a.buffer
    );
    println!("{}", machine.line());
    println!(
        "real limits (no simulator clock is moved); the order poller runs hourly so the stock endpoints see the pusher alone"
    );
    println!("limits:");
    let p = Params {
        backend: a.backend,
        database_url: a.database_url.clone(),
        savdo_bin: a.savdo_bin.clone(),
        skus: a.skus,
        changes: a.changes,
        lines_per_doc: a.lines_per_doc,
        clients: a.clients,
        buffer: a.buffer,
        wait: Duration::from_secs(a.wait),
        chaos: None,
    };
    let report = run_flow(&p, machine).await?;
    stats::emit_json(a.json, &report)?;
    if !(report.consistent && report.zero_429) {
        std::process::exit(1);
    }
    Ok(())
}

/// The drill: `true` when every marketplace ends equal to our stock.
pub async fn chaos(a: MarketplaceChaosArgs) -> anyhow::Result<bool> {
    let machine = MachineInfo::now();
    if !(0.0..=1.0).contains(&a.error_rate) {
        bail!("--error-rate must be between 0 and 1");
    }
    println!(
        "marketplace chaos drill: {} SKUs, {} stock changes; simulators answer an injected 429/500/502/503 to {:.0} % of requests for at least {} s",
        a.skus,
        a.changes,
        a.error_rate * 100.0,
        a.chaos_secs
    );
    println!("{}", machine.line());
    println!("limits:");
    let p = Params {
        backend: a.backend,
        database_url: a.database_url.clone(),
        savdo_bin: a.savdo_bin.clone(),
        skus: a.skus,
        changes: a.changes,
        lines_per_doc: a.lines_per_doc,
        clients: a.clients,
        buffer: a.buffer,
        wait: Duration::from_secs(a.wait),
        chaos: Some(Chaos {
            error_rate: a.error_rate,
            switch_ms: a.switch_ms,
            min_secs: a.chaos_secs,
        }),
    };
    let report = run_flow(&p, machine).await?;
    // A marketplace whose stock calls never met a fault proved nothing.
    let exercised = report
        .markets
        .iter()
        .all(|t| t.injected_faults.unwrap_or(0) > 0);
    let pass = report.consistent && report.changes_report.server_matches_documents && exercised;
    stats::emit_json(a.json, &report)?;
    println!(
        "checks: every marketplace's stock calls met injected faults: {}; every mapped SKU equal on every marketplace within {} s of the faults stopping: {}; our stock equals the documents: {}; 429s from the providers' own limits: {}",
        if exercised {
            "yes"
        } else {
            "NO (rerun, or raise --error-rate / --skus)"
        },
        a.wait,
        if report.consistent { "yes" } else { "NO" },
        if report.changes_report.server_matches_documents {
            "yes"
        } else {
            "NO"
        },
        report
            .markets
            .iter()
            .map(|t| format!("{} {}", t.market.kind(), t.responses_429))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("VERDICT: {}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_requests_is_the_ceiling_of_items_over_batch() {
        assert_eq!(min_requests(10_000, 1000), 10);
        assert_eq!(min_requests(10_000, 500), 20);
        assert_eq!(min_requests(10_001, 100), 101);
        assert_eq!(min_requests(1, 100), 1);
        assert_eq!(min_requests(0, 100), 0);
        assert_eq!(
            min_requests(5, 0),
            5,
            "a zero batch reads as one item a request"
        );
    }

    #[test]
    fn token_bucket_time_and_capacity() {
        // Wildberries: burst 20, 5/s.
        let wb = RateModel::TokenBucket {
            burst: 20,
            per_sec: 5.0,
        };
        assert_eq!(wb.min_secs(10), 0.0);
        assert_eq!(wb.min_secs(20), 0.0);
        assert_eq!(wb.min_secs(120), 20.0);
        assert_eq!(wb.max_requests(60.0), 320);
        // Uzum: burst 3, 1/s.
        let uz = RateModel::TokenBucket {
            burst: 3,
            per_sec: 1.0,
        };
        assert_eq!(uz.min_secs(20), 17.0);
        assert_eq!(uz.max_requests(0.0), 3);
        assert_eq!(uz.max_requests(17.5), 20);
    }

    #[test]
    fn sliding_window_time_and_capacity() {
        // Ozon: 80 a minute.
        let oz = RateModel::Window {
            limit: 80,
            window_secs: 60.0,
        };
        assert_eq!(oz.min_secs(0), 0.0);
        assert_eq!(oz.min_secs(80), 0.0);
        assert_eq!(oz.min_secs(81), 60.0);
        assert_eq!(oz.min_secs(100), 60.0);
        assert_eq!(oz.min_secs(200), 120.0);
        assert_eq!(oz.max_requests(0.0), 80);
        assert_eq!(oz.max_requests(60.0), 80);
        assert_eq!(oz.max_requests(61.0), 160);
    }

    #[test]
    fn limits_read_from_the_simulators_control_api() {
        let oz = Market::Ozon
            .limits(
                &json!({"limits": {"stocks_per_window": 80, "stocks_window_ms": 60000,
                "item_interval_ms": 120000, "max_stock_items": 100, "requests_per_second": 50}}),
            )
            .unwrap();
        assert_eq!(oz.batch, 100);
        assert_eq!(
            oz.rate,
            RateModel::Window {
                limit: 80,
                window_secs: 60.0
            }
        );
        assert_eq!(oz.item_interval_secs, Some(120.0));
        let wb = Market::Wildberries
            .limits(&json!({"limits": {"marketplace_burst": 20, "marketplace_per_second": 5.0,
                "content_burst": 5, "content_per_second": 1.6, "conflict_cost": 10, "max_stock_items": 1000}}))
            .unwrap();
        assert_eq!(wb.batch, 1000);
        let uz = Market::Uzum
            .limits(&json!({"limits": {"burst": 3, "per_second": 1.0}}))
            .unwrap();
        assert_eq!(uz.batch, UZUM_BATCH);
        assert!(Market::Uzum.limits(&json!({"limits": {}})).is_err());
    }

    #[test]
    fn ozon_interval_wait_counts_from_the_previous_round() {
        // Round 1 last seen different 10 s before the last change: its last item may go again
        // no sooner than 110 s after it.
        assert_eq!(item_interval_wait(Some(120.0), Some(10.0)), 110.0);
        assert_eq!(item_interval_wait(Some(120.0), Some(200.0)), 0.0);
        assert_eq!(item_interval_wait(None, Some(10.0)), 0.0);
        assert_eq!(item_interval_wait(Some(120.0), None), 0.0);
    }

    #[test]
    fn expected_is_available_minus_buffer_in_whole_units_never_negative() {
        assert_eq!(expected_units(1_000_000, 2), 998);
        assert_eq!(expected_units(2_500, 2), 0);
        assert_eq!(expected_units(3_999, 2), 1);
        assert_eq!(expected_units(0, 2), 0);
        assert_eq!(expected_units(-5_000, 0), 0);
    }

    #[test]
    fn mismatches_name_missing_and_different_skus() {
        let m = Market::Ozon;
        let remote: HashMap<String, i64> =
            [("MP-0".to_string(), 5), ("MP-1".to_string(), 6)].into();
        assert!(mismatches(m, &[5, 6], &remote).is_empty());
        assert_eq!(mismatches(m, &[5, 7], &remote), vec![(1, 7, Some(6))]);
        assert_eq!(mismatches(m, &[5, 6, 1], &remote), vec![(2, 1, None)]);
        assert_eq!(Market::Uzum.external_id(3), "100003");
    }

    #[test]
    fn barcodes_are_valid_and_distinct() {
        assert_eq!(ean13(0).len(), 13);
        assert!(ean13(123).starts_with("478000000123"));
        assert_ne!(ean13(1), ean13(2));
        // Weights 1,3,1,3…: 4 + 21 + 8 + 3 = 36 -> 4; 4 + 21 + 8 = 33 -> 7.
        assert_eq!(ean13(1), "4780000000014");
        assert_eq!(ean13(0), "4780000000007");
    }

    #[test]
    fn documents_cover_every_change_and_keep_levels_in_band() {
        let (docs, levels) = plan_docs(50, 1_234, 20, 7);
        assert_eq!(docs.iter().map(|d| d.lines.len()).sum::<usize>(), 1_234);
        let mut replay = vec![START_UNITS; 50];
        for d in &docs {
            let mut seen = std::collections::HashSet::new();
            for (i, u) in &d.lines {
                assert!(seen.insert(*i), "a product twice in one document");
                assert!((1..=3).contains(u));
                replay[*i] += if d.supply { *u } else { -*u };
            }
        }
        assert_eq!(replay, levels);
        assert!(levels.iter().all(|l| (LOW_UNITS..=HIGH_UNITS).contains(l)));
        assert!(docs.iter().any(|d| d.supply) && docs.iter().any(|d| !d.supply));
    }
}
