//! `fiscal`: receipts/s through `savdo-fiscal` (started in this process with
//! `savdo_fiscal::start`) on virtual devices, journaling on (it always is), over its HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use savdo_fiscal::amounts::{line_gross, vat_included};
use savdo_fiscal::{Config, DeviceConfig, DriverConfig};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::stats::{self, Latency, MachineInfo, histogram, record};

#[derive(clap::Args, Debug, Clone)]
pub struct FiscalArgs {
    /// Receipts to register in total.
    #[arg(long, default_value_t = 5_000)]
    pub receipts: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Virtual devices (one queue and worker each) [default: one per client, like tills].
    #[arg(long)]
    pub devices: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FiscalReport {
    pub benchmark: &'static str,
    pub machine: MachineInfo,
    pub devices: usize,
    pub concurrency: usize,
    pub registered: u64,
    pub not_registered: u64,
    pub seconds: f64,
    pub receipts_per_s: f64,
    pub latency: Latency,
    pub peak_rss_mib: Option<f64>,
}

/// A sale the gateway's rules accept: 5 items, VAT 12 % included, paid in cash.
pub fn sale(device: &str, k: u64) -> Value {
    let items: Vec<Value> = (0..5)
        .map(|i| {
            let price = 100_000 * ((k + i) % 40 + 1) as i64;
            let qty_milli = 1000;
            let amount = line_gross(price, qty_milli).expect("small amounts");
            json!({"name": format!("Mahsulot {i}"), "mxik": "10202001001000000", "package_code": "1508583",
                   "unit": 1, "qty_milli": qty_milli, "price": price, "discount": 0, "vat_percent": 12,
                   "vat_amount": vat_included(amount, 12).expect("small amounts"), "labels": []})
        })
        .collect();
    let total: i64 = items.iter().map(|i| i["price"].as_i64().unwrap_or(0)).sum();
    json!({"id": Uuid::now_v7(), "device_id": device, "cashier": "Bench", "items": items,
           "payments": {"cash": total, "card": 0, "other": 0}, "total": total})
}

pub async fn run(a: FiscalArgs) -> anyhow::Result<()> {
    let machine = MachineInfo::now();
    let devices = a.devices.unwrap_or(a.concurrency).max(1);
    if !a.json {
        println!(
            "fiscal: {} receipts, {} clients, {devices} virtual devices, journal on",
            a.receipts, a.concurrency
        );
        println!("{}", machine.line());
    }
    savdo_fiscal::install_tls_provider();
    let dir = tempfile::Builder::new()
        .prefix("savdo-bench-fiscal-")
        .tempdir()?;
    let cfg = Config {
        listen: "127.0.0.1:0".parse()?,
        grpc_listen: None,
        data_dir: dir.path().to_path_buf(),
        answer_wait_ms: 10_000,
        retry_initial_ms: 200,
        retry_max_ms: 10_000,
        devices: (0..devices)
            .map(|i| DeviceConfig {
                id: format!("bench-{i}"),
                driver: DriverConfig::Virtual {
                    terminal_id: format!("UZ{:012}", i + 1),
                },
            })
            .collect(),
    };
    let gw = savdo_fiscal::start(cfg)
        .await
        .context("the fiscal gateway did not start")?;
    let base = gw.url();
    let http = crate::setup::client()?;
    for i in 0..devices {
        let r = http
            .post(format!("{base}/v1/devices/bench-{i}/shift/open"))
            .json(&json!({"cashier": "Bench"}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "opening a shift failed: {}",
                r.text().await.unwrap_or_default()
            );
        }
    }
    // Warm-up: one receipt per device.
    for i in 0..devices {
        http.post(format!("{base}/v1/receipts/sale"))
            .json(&sale(&format!("bench-{i}"), 0))
            .send()
            .await?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..a.concurrency {
        let (http, base, next, total) = (
            crate::setup::client()?,
            base.clone(),
            next.clone(),
            a.receipts,
        );
        handles.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut bad) = (0u64, 0u64);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                // Client c always uses device c mod devices, as a till does its own register.
                let body = sale(&format!("bench-{}", c % devices), k);
                let t = Instant::now();
                match http
                    .post(format!("{base}/v1/receipts/sale"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        if status == 200 && v["status"] == "registered" {
                            record(&mut h, t.elapsed());
                            ok += 1;
                        } else {
                            bad += 1;
                            if bad <= 3 {
                                eprintln!("fiscal: {status} {v}");
                            }
                        }
                    }
                    Err(e) => {
                        bad += 1;
                        if bad <= 3 {
                            eprintln!("fiscal: {e}");
                        }
                    }
                }
            }
            (ok, bad, h)
        }));
    }
    let mut h = histogram();
    let (mut ok, mut bad) = (0, 0);
    for j in handles {
        let (o, b, th) = j.await?;
        ok += o;
        bad += b;
        h.add(th).ok();
    }
    let seconds = started.elapsed().as_secs_f64();
    gw.shutdown().await;
    let report = FiscalReport {
        benchmark: "fiscal",
        machine,
        devices,
        concurrency: a.concurrency,
        registered: ok,
        not_registered: bad,
        seconds,
        receipts_per_s: ok as f64 / seconds,
        latency: Latency::of(&h),
        peak_rss_mib: stats::peak_rss_mib(std::process::id()),
    };
    if !a.json {
        println!(
            "fiscal {:>8.0} receipts/s  ({} registered, {} not, in {:.1} s)\n    latency {}",
            report.receipts_per_s,
            ok,
            bad,
            seconds,
            report.latency.line()
        );
    }
    stats::emit_json(a.json, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sales_add_up() {
        for k in 0..20 {
            let s = sale("d", k);
            let sum: i64 = s["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["price"].as_i64().unwrap())
                .sum();
            assert_eq!(s["total"].as_i64(), Some(sum));
            assert_eq!(s["payments"]["cash"].as_i64(), Some(sum));
        }
    }
}
