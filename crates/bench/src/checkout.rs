//! `checkout`: N simulated tills post receipts over HTTP to a real `savdo serve`, closed loop
//! (each till as fast as it can) or open loop (a fixed offered rate, latency measured from the
//! scheduled send time so a slow server cannot hide its queue: no coordinated omission). In the
//! same run, the raw limit of the same database work without HTTP (see [`crate::raw`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::raw::{self, RawConfig, RawResult, Rng};
use crate::server::{self, Server};
use crate::setup::{self, Api, Backend, Fixture, FreshDb, Keys, marking_code};
use crate::stats::{self, Latency, MachineInfo, histogram, record};

#[derive(clap::Args, Debug, Clone)]
pub struct CheckoutArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// Concurrent tills (each one keep-alive HTTP client, one request at a time).
    #[arg(long, default_value_t = 8)]
    pub tills: usize,
    /// Seconds of load (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Open loop: offered receipts per second over all tills. Without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// One line of every receipt is a marked product with its marking code.
    #[arg(long)]
    pub marked: bool,
    /// PostgreSQL server to create fresh databases on (`postgres://user@host:port/db`).
    #[arg(long, env = "SAVDO_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Keys for the raw limit runs: v7 (what Savdo uses), v4 (random), or both.
    #[arg(long, value_enum, default_value = "v7")]
    pub keys: KeysArg,
    /// Seconds for each raw-limit run [default: the load duration, at most 10].
    #[arg(long)]
    pub raw_duration: Option<u64>,
    /// Skip the raw limit.
    #[arg(long)]
    pub no_raw: bool,
    /// Run the server without its relay and consumers (`savdo serve --no-workers`), to see
    /// what event delivery costs the checkout.
    #[arg(long)]
    pub no_workers: bool,
    /// The savdo binary [default: next to this one].
    #[arg(long)]
    pub savdo_bin: Option<PathBuf>,
    /// Write the ids of acknowledged receipts here (for `verify`).
    #[arg(long)]
    pub acked_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeysArg {
    V4,
    V7,
    Both,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub mode: String,
    pub tills: usize,
    pub offered_per_s: Option<f64>,
    pub receipts: u64,
    pub errors: u64,
    pub seconds: f64,
    pub receipts_per_s: f64,
    pub latency: Latency,
    pub server_cpu_s: Option<f64>,
    /// Server CPU per receipt, in microseconds.
    pub server_cpu_us_per_receipt: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckoutReport {
    pub benchmark: &'static str,
    pub backend: Backend,
    pub marked: bool,
    pub machine: MachineInfo,
    pub api: LoadResult,
    pub raw: Vec<RawResult>,
    /// API receipts/s over the raw one-receipt-per-transaction (UUIDv7) receipts/s.
    pub api_over_raw: Option<f64>,
}

/// The request body of one receipt: 5 lines (the last one marked with `--marked`), cash.
pub fn receipt_body(
    fx: &Fixture,
    terminal: Uuid,
    rng: &mut Rng,
    marked: bool,
    serial: u64,
) -> (Uuid, Value) {
    let id = Uuid::now_v7();
    let picks = rng.distinct(5, fx.plain_products.len());
    let mut total = 0;
    let mut lines: Vec<Value> = picks
        .iter()
        .map(|&i| {
            let p = &fx.plain_products[i];
            total += p.price;
            json!({"product_id": p.id, "qty": 1})
        })
        .collect();
    if marked && let Some(m) = &fx.marked_product {
        total -= fx.plain_products[picks[4]].price;
        total += m.price;
        lines[4] = json!({"product_id": m.id, "qty": 1, "marking_codes": [marking_code(serial)]});
    }
    let body = json!({
        "id": id, "store_id": fx.store_id, "terminal_id": terminal, "lines": lines,
        "payments": [{"method": "cash", "amount": total}],
    });
    (id, body)
}

/// Marking-code serials: unique over every load of this process (warm-up included), since a
/// marked unit sells once.
static SERIALS: AtomicU64 = AtomicU64::new(1);

struct TillResult {
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
    acked: Vec<Uuid>,
}

/// One till: posts receipts until `deadline`. With `interval`, its sends are scheduled at
/// `start + offset + k·interval` and latency counts from the scheduled time.
#[allow(clippy::too_many_arguments)]
async fn till(
    api: Api,
    fx: Arc<Fixture>,
    idx: usize,
    marked: bool,
    start: Instant,
    deadline: Instant,
    schedule: Option<(Duration, Duration)>, // (offset, interval)
    keep_acked: bool,
) -> TillResult {
    let terminal = fx.terminal_ids[idx % fx.terminal_ids.len()];
    let mut rng = Rng::new(idx as u64 + 101);
    let mut r = TillResult {
        ok: 0,
        errors: 0,
        hist: histogram(),
        acked: Vec::new(),
    };
    let url = format!("{}/api/v1/receipts", api.base);
    let mut k: u32 = 0;
    loop {
        let scheduled = match schedule {
            Some((offset, interval)) => {
                let at = start + offset + interval * k;
                k += 1;
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        let serial = SERIALS.fetch_add(1, Ordering::Relaxed);
        let (id, body) = receipt_body(&fx, terminal, &mut rng, marked, serial);
        let mut resp = api
            .http
            .post(&url)
            .bearer_auth(&api.token)
            .json(&body)
            .send()
            .await;
        if keep_acked {
            // Drill mode: a till retries the same receipt id until it is answered (bounded),
            // through server deaths; a retry of a committed receipt must answer 200, once.
            let give_up = Instant::now() + Duration::from_secs(60);
            while Instant::now() < give_up
                && match &resp {
                    Err(_) => true,
                    Ok(r) => r.status().is_server_error(),
                }
            {
                r.errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                resp = api
                    .http
                    .post(&url)
                    .bearer_auth(&api.token)
                    .json(&body)
                    .send()
                    .await;
            }
        }
        match resp {
            Ok(resp) if resp.status().as_u16() == 201 || resp.status().as_u16() == 200 => {
                // Read the body: the answer is complete only then.
                let _ = resp.bytes().await;
                record(&mut r.hist, scheduled.elapsed());
                r.ok += 1;
                if keep_acked {
                    r.acked.push(id);
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                r.errors += 1;
                if r.errors <= 3 {
                    eprintln!(
                        "till {idx}: {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                }
            }
            Err(e) => {
                r.errors += 1;
                if r.errors <= 3 {
                    eprintln!("till {idx}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    r
}

/// Drive `tills` tills against `api` for `duration`; `rate` makes it an open loop.
pub async fn load(
    api: &Api,
    fx: &Arc<Fixture>,
    tills: usize,
    duration: Duration,
    rate: Option<f64>,
    marked: bool,
    keep_acked: bool,
) -> anyhow::Result<(u64, u64, f64, Histogram<u64>, Vec<Uuid>)> {
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration;
    let mut handles = Vec::new();
    for i in 0..tills {
        // Each till its own client: its own keep-alive connection, as real tills have.
        let till_api = Api {
            http: setup::client()?,
            ..api.clone()
        };
        let schedule = rate.map(|r| {
            let interval = Duration::from_secs_f64(tills as f64 / r);
            (interval.mul_f64(i as f64 / tills as f64), interval)
        });
        handles.push(tokio::spawn(till(
            till_api,
            fx.clone(),
            i,
            marked,
            start,
            deadline,
            schedule,
            keep_acked,
        )));
    }
    let mut h = histogram();
    let (mut ok, mut errors) = (0, 0);
    let mut acked = Vec::new();
    for j in handles {
        let r = j.await?;
        ok += r.ok;
        errors += r.errors;
        h.add(r.hist).ok();
        acked.extend(r.acked);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok((ok, errors, seconds, h, acked))
}

pub async fn run(a: CheckoutArgs) -> anyhow::Result<()> {
    let machine = MachineInfo::now();
    if !a.json {
        println!(
            "checkout on {:?}, {} tills, {} s{}",
            a.backend,
            a.tills,
            a.duration,
            if a.marked { ", marked items" } else { "" }
        );
        println!("{}", machine.line());
    }
    let bin = server::savdo_binary(a.savdo_bin.as_deref())?;
    let db = FreshDb::new(a.backend, a.database_url.as_deref()).await?;
    let api_result = run_api(&a, &bin, &db).await;
    db.drop_db().await;
    let api_result = api_result?;
    if !a.json {
        print_load(&api_result);
    }

    let mut raws = Vec::new();
    if !a.no_raw {
        let secs = a.raw_duration.unwrap_or(a.duration.min(10));
        let keys: &[Keys] = match a.keys {
            KeysArg::V7 => &[Keys::V7],
            KeysArg::V4 => &[Keys::V4],
            KeysArg::Both => &[Keys::V7, Keys::V4],
        };
        let mut plan = Vec::new();
        for &k in keys {
            plan.push((k, 1));
            if k == Keys::V7 {
                plan.push((k, 8));
            }
        }
        for (k, per_tx) in plan {
            let label = format!("{per_tx}/tx, {:?} keys", k).to_lowercase();
            let cfg = RawConfig {
                concurrency: a.tills,
                per_tx,
                keys: k,
                marked: a.marked,
                duration: Duration::from_secs(secs),
            };
            let db = FreshDb::new(a.backend, a.database_url.as_deref()).await?;
            let r = async {
                let store = savdo_storage::connect(&db.url).await?;
                store.migrate().await?;
                let fx = Arc::new(setup::seed_storage(&store, a.tills, a.marked).await?);
                drop(store);
                raw::run(&db.url, fx, cfg, &label).await
            }
            .await;
            db.drop_db().await;
            let r = r?;
            if !a.json {
                println!("{}", r.line());
            }
            raws.push(r);
        }
    }
    let base = raws
        .iter()
        .find(|r| r.receipts_per_tx == 1 && r.keys == Keys::V7)
        .or(raws.first());
    let ratio = base.map(|r| api_result.receipts_per_s / r.receipts_per_s);
    if !a.json
        && let (Some(ratio), Some(b)) = (ratio, base)
    {
        println!(
            "API / raw ({}): {:.0} / {:.0} = {:.0} %",
            b.label,
            api_result.receipts_per_s,
            b.receipts_per_s,
            ratio * 100.0
        );
        if a.rate.is_some() {
            println!(
                "    (open loop: the API ran at the offered rate; the ratio means something in closed loop only)"
            );
        }
    }
    let report = CheckoutReport {
        benchmark: "checkout",
        backend: a.backend,
        marked: a.marked,
        machine,
        api: api_result,
        raw: raws,
        api_over_raw: ratio,
    };
    stats::emit_json(a.json, &report)
}

fn print_load(r: &LoadResult) {
    println!(
        "api {:<24} {:>8.0} receipts/s  ({} receipts in {:.1} s, {} errors{})",
        r.mode,
        r.receipts_per_s,
        r.receipts,
        r.seconds,
        r.errors,
        r.offered_per_s
            .map(|o| format!(", offered {o:.0}/s"))
            .unwrap_or_default()
    );
    println!("    latency {}", r.latency.line());
    println!(
        "    server CPU {}  ({} per receipt), peak RSS {}",
        r.server_cpu_s
            .map(|c| format!("{c:.2} s"))
            .unwrap_or("?".into()),
        r.server_cpu_us_per_receipt
            .map(|c| format!("{c:.0} µs"))
            .unwrap_or("?".into()),
        r.server_peak_rss_mib
            .map(|m| format!("{m:.1} MiB"))
            .unwrap_or("?".into()),
    );
}

async fn run_api(
    a: &CheckoutArgs,
    bin: &std::path::Path,
    db: &FreshDb,
) -> anyhow::Result<LoadResult> {
    let data_dir = db.dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let (tenant, token) = server::create_tenant(bin, &data_dir, &db.url).await?;
    let port = server::free_port()?;
    let log = db.dir.path().join("server.log");
    let srv = Server::start(bin, &data_dir, &db.url, port, &log, a.no_workers).await?;
    let result = async {
        let api = Api::new(&srv.base, &token)?;
        let fx = Arc::new(setup::seed_api(&api, tenant, a.tills, a.marked).await?);
        // Warm-up: connections, caches, the first pages of the tables.
        load(
            &api,
            &fx,
            a.tills,
            Duration::from_secs(1),
            None,
            a.marked,
            false,
        )
        .await?;
        let cpu0 = stats::cpu_seconds(srv.pid);
        let (ok, errors, seconds, h, acked) = load(
            &api,
            &fx,
            a.tills,
            Duration::from_secs(a.duration),
            a.rate,
            a.marked,
            a.acked_file.is_some(),
        )
        .await?;
        let cpu1 = stats::cpu_seconds(srv.pid);
        let rss = stats::peak_rss_mib(srv.pid);
        if let Some(path) = &a.acked_file {
            let text: String = acked.iter().map(|id| format!("{id}\n")).collect();
            std::fs::write(path, text)?;
        }
        let cpu = cpu0.zip(cpu1).map(|(x, y)| y - x);
        Ok::<_, anyhow::Error>(LoadResult {
            mode: match a.rate {
                Some(_) => "open loop".into(),
                None => "closed loop".into(),
            },
            tills: a.tills,
            offered_per_s: a.rate,
            receipts: ok,
            errors,
            seconds,
            receipts_per_s: ok as f64 / seconds,
            latency: Latency::of(&h),
            server_cpu_s: cpu,
            server_cpu_us_per_receipt: cpu.filter(|_| ok > 0).map(|c| c * 1e6 / ok as f64),
            server_peak_rss_mib: rss,
        })
    }
    .await;
    srv.stop().await;
    if result.is_err()
        && let Ok(tail) = std::fs::read_to_string(&log)
    {
        eprintln!(
            "server log (last lines):\n{}",
            tail.lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(marked: bool) -> Fixture {
        Fixture {
            tenant_id: Uuid::now_v7(),
            store_id: Uuid::now_v7(),
            terminal_ids: vec![Uuid::now_v7()],
            plain_products: (0..50)
                .map(|i| setup::ProductRef {
                    id: Uuid::now_v7(),
                    price: (i + 1) * 100,
                })
                .collect(),
            marked_product: marked.then(|| setup::ProductRef {
                id: Uuid::now_v7(),
                price: 7_000,
            }),
        }
    }

    #[test]
    fn receipts_pay_their_total() {
        for marked in [false, true] {
            let fx = fixture(marked);
            let mut rng = Rng::new(3);
            for s in 0..50 {
                let (_, b) = receipt_body(&fx, fx.terminal_ids[0], &mut rng, marked, s);
                let lines = b["lines"].as_array().unwrap();
                assert_eq!(lines.len(), 5);
                let price = |id: &str| {
                    fx.plain_products
                        .iter()
                        .chain(fx.marked_product.iter())
                        .find(|p| p.id.to_string() == id)
                        .unwrap()
                        .price
                };
                let sum: i64 = lines
                    .iter()
                    .map(|l| price(l["product_id"].as_str().unwrap()))
                    .sum();
                assert_eq!(b["payments"][0]["amount"].as_i64(), Some(sum));
                assert_eq!(lines[4].get("marking_codes").is_some(), marked);
            }
        }
    }
}
