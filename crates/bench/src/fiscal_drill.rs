//! `fiscal-load` and `fiscal-verify`: the halves of the fiscal gateway kill drill
//! (`scripts/drill-kill-fiscal.sh`). The gateway prints through the ATOL simulator of a separate
//! `savdo-sandbox` process, which outlives every kill and remembers each document it printed.
//! `fiscal-load` posts sales and retries the *same* receipt id through every death of the gateway,
//! as a till does; `fiscal-verify` then checks that the printer printed each receipt exactly once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct FiscalLoadArgs {
    /// Base URL of a running `savdo-fiscal`, e.g. http://127.0.0.1:17000.
    #[arg(long)]
    pub url: String,
    /// Device ids to post to; one client per device.
    #[arg(long, value_delimiter = ',', default_value = "drill-0")]
    pub devices: Vec<String>,
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Ids the gateway acknowledged (`registered` or `queued`), one a line.
    #[arg(long)]
    pub acked_file: PathBuf,
    /// Every id ever posted, one a line (a superset of the acknowledged ones).
    #[arg(long)]
    pub sent_file: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FiscalVerifyArgs {
    /// Base URL of the (restarted) `savdo-fiscal`.
    #[arg(long)]
    pub url: String,
    /// Base URL of the `savdo-sandbox` whose ATOL simulator is the printer.
    #[arg(long)]
    pub sandbox: String,
    #[arg(long)]
    pub acked_file: PathBuf,
    #[arg(long)]
    pub sent_file: PathBuf,
    /// How long to wait for queued receipts to be registered.
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct FiscalVerdict {
    pub sent: usize,
    pub acked: usize,
    pub acked_not_registered: usize,
    pub registered: usize,
    pub printed_sales: usize,
    pub printed_twice: usize,
    pub registered_not_printed: usize,
    pub printed_unknown: usize,
    pub ok: bool,
}

pub async fn load(a: FiscalLoadArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let mut handles = Vec::new();
    for (k, device) in a.devices.iter().enumerate() {
        let (http, url, device, stop) = (
            crate::setup::client()?,
            a.url.clone(),
            device.clone(),
            stop.clone(),
        );
        handles.push(tokio::spawn(async move {
            let (mut sent, mut acked, mut retries) = (Vec::new(), Vec::new(), 0u64);
            let mut n = k as u64 * 1_000_000;
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let body = crate::fiscal::sale(&device, n);
                n += 1;
                let id = body["id"].as_str().unwrap_or_default().to_owned();
                sent.push(id.clone());
                // The same id until the gateway answers: a retry must never print twice.
                loop {
                    match http
                        .post(format!("{url}/v1/receipts/sale"))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if matches!(v["status"].as_str(), Some("registered" | "queued")) {
                                acked.push(id.clone());
                                break;
                            }
                            retries += 1;
                        }
                        _ => retries += 1,
                    }
                    if Instant::now() > deadline + Duration::from_secs(60) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (sent, acked, retries)
        }));
    }
    let (mut sent, mut acked, mut retries) = (Vec::new(), Vec::new(), 0);
    for h in handles {
        let (s, a2, r) = h.await?;
        sent.extend(s);
        acked.extend(a2);
        retries += r;
    }
    std::fs::write(&a.sent_file, lines(&sent))?;
    std::fs::write(&a.acked_file, lines(&acked))?;
    println!(
        "fiscal-load: {} sales acknowledged, {} sent, {retries} failed attempts (retried with the same id)",
        acked.len(),
        sent.len()
    );
    Ok(())
}

fn lines(ids: &[String]) -> String {
    ids.iter().map(|id| format!("{id}\n")).collect()
}

fn read_ids(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Returns whether the drill passed.
pub async fn verify(a: FiscalVerifyArgs) -> anyhow::Result<bool> {
    let http = crate::setup::client()?;
    let sent = read_ids(&a.sent_file)?;
    let acked: HashSet<String> = read_ids(&a.acked_file)?.into_iter().collect();
    // Every id ever sent: acknowledged ones must end registered; the others may or may not have
    // reached the journal before a kill, but if they did they must print once like the rest.
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    let mut signs: HashMap<String, String> = HashMap::new();
    let mut pending: Vec<String> = sent.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let r = http
                .get(format!("{}/v1/receipts/{id}", a.url))
                .send()
                .await?;
            if r.status().as_u16() == 404 && !acked.contains(&id) {
                continue; // never reached the journal: the till would have retried it
            }
            let v: Value = r.json().await.unwrap_or(Value::Null);
            match (v["status"].as_str(), v["fiscal_sign"].as_str()) {
                (Some("registered"), Some(sign)) => {
                    signs.insert(id, sign.to_owned());
                }
                _ => still.push(id),
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let printed: Value = http
        .get(format!("{}/_control/atol/printed", a.sandbox))
        .send()
        .await?
        .json()
        .await?;
    let mut per_sign: HashMap<String, usize> = HashMap::new();
    let mut printed_sales = 0;
    for d in printed["documents"].as_array().into_iter().flatten() {
        if d["kind"] == "sale" {
            printed_sales += 1;
            let sign = d["fiscal_sign"].as_str().unwrap_or_default().to_owned();
            *per_sign.entry(sign).or_default() += 1;
        }
    }
    let known: HashSet<&String> = signs.values().collect();
    let v = FiscalVerdict {
        sent: sent.len(),
        acked: acked.len(),
        acked_not_registered: acked.iter().filter(|id| !signs.contains_key(*id)).count(),
        registered: signs.len(),
        printed_sales,
        printed_twice: per_sign.values().filter(|&&n| n > 1).count(),
        registered_not_printed: signs
            .values()
            .filter(|s| !per_sign.contains_key(*s))
            .count(),
        printed_unknown: per_sign.keys().filter(|s| !known.contains(s)).count(),
        ok: false,
    };
    let ok = v.acked_not_registered == 0
        && v.printed_twice == 0
        && v.registered_not_printed == 0
        && v.printed_unknown == 0
        && v.printed_sales == v.registered;
    let v = FiscalVerdict { ok, ..v };
    if a.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "fiscal-verify: {} sent, {} acknowledged; {} registered, {} acknowledged but not registered\n\
             printer: {} sales printed, {} printed twice, {} registered but not printed, {} printed but unknown to the gateway",
            v.sent,
            v.acked,
            v.registered,
            v.acked_not_registered,
            v.printed_sales,
            v.printed_twice,
            v.registered_not_printed,
            v.printed_unknown
        );
        println!("VERDICT: {}", if ok { "PASS" } else { "FAIL" });
    }
    Ok(ok)
}
