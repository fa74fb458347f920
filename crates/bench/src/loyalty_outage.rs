//! `loyalty-outage`: the checkout load, every sale a loyalty sale as a till makes it (card
//! look-up, quote, receipt with the quote), against a real `savdo serve` whose tenant's
//! `jowi_club` integration points at the JOWi Club simulator. JOWi answers normally, then is
//! down (refusing: 503 at once; black-holed: the connection is held, never answered). Reported
//! per phase: sales/s, latency, refused sales; the ratio p99(down) / p99(normal); and, after
//! recovery, whether every sale's accrual reached JOWi's ledger exactly once.
//!
//! The load runs without a pause across the phases; a sale counts in the phase it started and
//! ended in (one that straddles a switch is counted apart, as `boundary`), so each phase's
//! figures are the experience of that phase alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::receipt_body;
use crate::raw::Rng;
use crate::server::{self, Server};
use crate::setup::{self, Api, Backend, Fixture, FreshDb};
use crate::stats::{self, Latency, MachineInfo, histogram, record};

/// The target: p99 with JOWi down at most this times p99 with JOWi answering.
pub const TARGET_RATIO: f64 = 1.2;

#[derive(clap::Args, Debug, Clone)]
pub struct LoyaltyOutageArgs {
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// Concurrent tills (each one keep-alive HTTP client, one sale at a time).
    #[arg(long, default_value_t = 8)]
    pub tills: usize,
    /// Seconds of each phase (normal, then each outage mode), after a 1 s warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Open loop: offered sales per second over all tills. Without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How JOWi is down: refusing, black-holed, or one phase of each.
    #[arg(long, value_enum, default_value = "both")]
    pub down: OutageMode,
    /// Loyalty customers in the simulator (each sale picks one card).
    #[arg(long, default_value_t = 50)]
    pub customers: usize,
    /// Milliseconds the simulator waits before answering each call while JOWi is up (a real
    /// JOWi is a round trip away; 0: loopback only).
    #[arg(long, default_value_t = 0)]
    pub jowi_latency_ms: u64,
    /// The integration's `lookup_timeout_ms` [default: the connector's].
    #[arg(long)]
    pub lookup_timeout_ms: Option<u64>,
    /// After recovery, wait at most this many seconds for every sale's accrual to reach JOWi's
    /// ledger (0: skip the check).
    #[arg(long, default_value_t = 120)]
    pub accrual_wait: u64,
    /// PostgreSQL server to create fresh databases on (`postgres://user@host:port/db`).
    #[arg(long, env = "SAVDO_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The savdo binary [default: next to this one].
    #[arg(long)]
    pub savdo_bin: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The simulator's state for a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Down {
    Up,
    Refuse,
    Blackhole,
}

impl Down {
    fn faults(self, latency_ms: u64) -> Value {
        match self {
            Down::Up => json!({"latency_ms": latency_ms}),
            Down::Refuse => json!({"down": true}),
            Down::Blackhole => json!({"down": "blackhole"}),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutageMode {
    Refuse,
    Blackhole,
    Both,
}

impl OutageMode {
    pub fn downs(self) -> &'static [Down] {
        match self {
            OutageMode::Refuse => &[Down::Refuse],
            OutageMode::Blackhole => &[Down::Blackhole],
            OutageMode::Both => &[Down::Blackhole, Down::Refuse],
        }
    }
}

// ---------------------------------------------------------------- the simulator

/// The JOWi Club simulator's control API (`/_control/jowi-club/…`).
#[derive(Clone)]
pub struct Jowi {
    pub sandbox: String,
    http: reqwest::Client,
    /// Added to every answer while up.
    pub latency_ms: u64,
}

impl Jowi {
    pub fn new(sandbox_url: &str) -> anyhow::Result<Jowi> {
        Ok(Jowi {
            sandbox: sandbox_url.trim_end_matches('/').to_string(),
            http: setup::client()?,
            latency_ms: 0,
        })
    }

    async fn control(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/_control/jowi-club/{path}", self.sandbox);
        let req = match body {
            Some(b) => self.http.post(&url).json(&b),
            None => self.http.get(&url),
        };
        let r = req
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("sandbox control {path}"))?;
        let status = r.status();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("sandbox control {path} answered {status}: {v}");
        }
        Ok(v)
    }

    pub async fn set_down(&self, d: Down) -> anyhow::Result<()> {
        self.control("faults", Some(d.faults(self.latency_ms)))
            .await
            .map(|_| ())
    }

    /// Seed `n` customers with cards unique to this run; returns the cards.
    pub async fn seed_customers(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let cards = cards(n, chrono::Utc::now().timestamp_micros() as u64);
        let customers: Vec<Value> = cards
            .iter()
            .enumerate()
            .map(|(i, card)| {
                json!({"card": card, "name": format!("Mijoz {i}"), "balance": 0,
                       "discount_percent": 5, "earn_percent": 3, "level": "silver"})
            })
            .collect();
        self.control("seed", Some(json!({ "customers": customers })))
            .await?;
        Ok(cards)
    }

    /// Sale entries of JOWi's ledger per receipt id.
    pub async fn ledger_sales(&self) -> anyhow::Result<HashMap<Uuid, u32>> {
        let v = self.control("ledger", None).await?;
        Ok(count_sales(&v))
    }
}

/// `n` distinct 16-digit cards, tagged by `run` so a reused simulator never clashes.
pub fn cards(n: usize, run: u64) -> Vec<String> {
    (0..n)
        .map(|i| format!("86{:06}{:08}", run % 1_000_000, i))
        .collect()
}

/// Receipt id → number of `sale` entries in a `GET /_control/jowi-club/ledger` answer.
pub fn count_sales(ledger: &Value) -> HashMap<Uuid, u32> {
    let mut m = HashMap::new();
    for e in ledger["entries"].as_array().into_iter().flatten() {
        if e["kind"] == "sale"
            && let Some(id) = e["id"].as_str().and_then(|s| s.parse::<Uuid>().ok())
        {
            *m.entry(id).or_insert(0) += 1;
        }
    }
    m
}

// ---------------------------------------------------------------- the shop

/// Make the shop (store, tills, products, stock), the loyalty customers in the simulator, the
/// tenant's `jowi_club` integration, and link every card (one look-up each, JOWi up).
pub async fn prepare(
    api: &Api,
    tenant: Uuid,
    tills: usize,
    jowi: &Jowi,
    customers: usize,
    lookup_timeout_ms: Option<u64>,
) -> anyhow::Result<(Fixture, Vec<String>)> {
    let fx = setup::seed_api(api, tenant, tills, false).await?;
    jowi.set_down(Down::Up).await?;
    let cards = jowi.seed_customers(customers.max(1)).await?;
    let mut settings = json!({"base_url": format!("{}/jowi-club", jowi.sandbox)});
    if let Some(ms) = lookup_timeout_ms {
        settings["lookup_timeout_ms"] = json!(ms);
    }
    let (s, v) = api
        .post(
            "/integrations",
            &json!({"type": "jowi_club", "name": "JOWi Club",
                    "credentials": {"api_key": savdo_sandbox::jowi_club::DEMO_API_KEY,
                                    "api_secret": savdo_sandbox::jowi_club::DEMO_API_SECRET},
                    "settings": settings}),
        )
        .await?;
    if s != 201 {
        bail!("POST /integrations (jowi_club) answered {s}: {v}");
    }
    for card in &cards {
        let (s, v) = get(api, &api.http, &format!("/loyalty/customers?card={card}")).await?;
        if s != 200 || v["loyalty"]["status"] != "ok" {
            bail!("look-up of card {card} answered {s}: {v}");
        }
    }
    Ok((fx, cards))
}

async fn get(api: &Api, http: &reqwest::Client, path: &str) -> anyhow::Result<(u16, Value)> {
    let r = http
        .get(format!("{}/api/v1{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json::<Value>().await.unwrap_or(Value::Null)))
}

async fn post(
    api: &Api,
    http: &reqwest::Client,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let r = http
        .post(format!("{}/api/v1{path}", api.base))
        .bearer_auth(&api.token)
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json::<Value>().await.unwrap_or(Value::Null)))
}

// ---------------------------------------------------------------- one sale

#[derive(Debug, Default)]
struct Sale {
    id: Uuid,
    acked: bool,
    /// The receipt carries a quote (JOWi answered at the till).
    quoted: bool,
    /// The customer was found (through JOWi, or among ours when JOWi did not answer).
    customer: bool,
    /// Look-up or quote calls that did not answer 200 (the till goes on without them).
    loyalty_errors: u32,
    /// Attempts of the receipt that failed and were retried with the same id (drill mode).
    retried: u32,
    receipt: Option<Duration>,
    problem: Option<String>,
}

/// One sale as the console's cashier makes it: the card looked up through JOWi (or among our
/// customers when JOWi does not answer), a quote for the cart, then the receipt with the
/// customer and the quote, paid in cash net of the quote's discount.
async fn sale(
    api: &Api,
    fx: &Fixture,
    card: &str,
    terminal: Uuid,
    rng: &mut Rng,
    retry: bool,
) -> Sale {
    let (id, mut body) = receipt_body(fx, terminal, rng, false, 0);
    let mut s = Sale {
        id,
        ..Sale::default()
    };
    let http = &api.http;
    // 1. The card.
    let mut customer: Option<Value> = None;
    // When the look-up says JOWi Club is unavailable, the till closes this sale without a
    // quote, as the console's cashier does: asking again would only wait for it twice.
    let mut jowi_down = false;
    match get(api, http, &format!("/loyalty/customers?card={card}")).await {
        Ok((200, v)) if v["customer"]["id"].is_string() => {
            customer = Some(v["customer"]["id"].clone())
        }
        Ok((200, v)) => jowi_down = v["loyalty"]["status"] == "unavailable",
        _ => s.loyalty_errors += 1,
    }
    if customer.is_none()
        && let Ok((200, v)) = get(api, http, &format!("/customers?card={card}")).await
    {
        customer = v["items"][0].get("id").cloned();
    }
    // 2. The quote.
    let mut discount = 0;
    if let Some(c) = &customer {
        s.customer = true;
        body["customer_id"] = c.clone();
    }
    if let Some(c) = customer.as_ref().filter(|_| !jowi_down) {
        let q = json!({"store_id": fx.store_id, "customer": {"id": c}, "lines": body["lines"]});
        match post(api, http, "/loyalty/quote", &q).await {
            Ok((200, v)) if v["quote"]["id"].is_string() => {
                s.quoted = true;
                discount = v["quote"]["discount_total"].as_i64().unwrap_or(0);
                body["loyalty"] = json!({"quote_id": v["quote"]["id"], "spend_points": 0});
            }
            Ok((200, _)) => {}
            _ => s.loyalty_errors += 1,
        }
    }
    let total = body["payments"][0]["amount"].as_i64().unwrap_or(0);
    body["payments"] = json!([{"method": "cash", "amount": total - discount}]);
    // 3. The receipt.
    let t = Instant::now();
    let give_up = t + Duration::from_secs(60);
    loop {
        match post(api, http, "/receipts", &body).await {
            Ok((200 | 201, _)) => {
                s.acked = true;
                s.receipt = Some(t.elapsed());
                return s;
            }
            Ok((status, v)) if !(retry && status >= 500) || Instant::now() > give_up => {
                s.problem = Some(format!(
                    "{status}: {}",
                    v.to_string().chars().take(300).collect::<String>()
                ));
                return s;
            }
            Err(e) if !retry || Instant::now() > give_up => {
                s.problem = Some(e.to_string());
                return s;
            }
            _ => {
                // A real till retries the same receipt id until the server answers.
                s.retried += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ---------------------------------------------------------------- phases

/// One phase of a run: the simulator's state and how long it lasts.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub jowi: Down,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
struct PhaseStats {
    sales: u64,
    refused: u64,
    quoted: u64,
    unquoted: u64,
    without_customer: u64,
    loyalty_errors: u64,
    retried: u64,
    sale: Histogram<u64>,
    receipt: Histogram<u64>,
}

impl PhaseStats {
    fn new() -> PhaseStats {
        PhaseStats {
            sales: 0,
            refused: 0,
            quoted: 0,
            unquoted: 0,
            without_customer: 0,
            loyalty_errors: 0,
            retried: 0,
            sale: histogram(),
            receipt: histogram(),
        }
    }

    fn add(&mut self, o: PhaseStats) {
        self.sales += o.sales;
        self.refused += o.refused;
        self.quoted += o.quoted;
        self.unquoted += o.unquoted;
        self.without_customer += o.without_customer;
        self.loyalty_errors += o.loyalty_errors;
        self.retried += o.retried;
        self.sale.add(o.sale).ok();
        self.receipt.add(o.receipt).ok();
    }

    fn note(&mut self, s: &Sale, whole: Duration, in_histograms: bool) {
        self.loyalty_errors += u64::from(s.loyalty_errors);
        self.retried += u64::from(s.retried);
        if !s.acked {
            self.refused += 1;
            return;
        }
        self.sales += 1;
        if s.quoted {
            self.quoted += 1
        } else {
            self.unquoted += 1
        }
        if !s.customer {
            self.without_customer += 1;
        }
        if in_histograms {
            record(&mut self.sale, whole);
            if let Some(r) = s.receipt {
                record(&mut self.receipt, r);
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub name: String,
    pub jowi: Down,
    pub seconds: f64,
    /// Sales acknowledged (receipt 200/201) that started in this phase.
    pub sales: u64,
    /// Sales whose receipt was not accepted: must be 0.
    pub refused: u64,
    /// Receipts with a JOWi quote applied / without (JOWi did not answer at the till).
    pub quoted: u64,
    pub unquoted: u64,
    pub without_customer: u64,
    /// Look-up and quote calls answered other than 200 (the sale went on without them).
    pub loyalty_call_errors: u64,
    pub receipt_retries: u64,
    pub sales_per_s: f64,
    /// The whole sale as the cashier waits for it: look-up, quote, receipt.
    pub sale_latency: Latency,
    /// `POST /api/v1/receipts` alone.
    pub receipt_latency: Latency,
}

/// A run's phases; sales straddling two phases are counted in `boundary`.
pub struct Run {
    pub phases: Vec<PhaseResult>,
    pub boundary: PhaseResult,
    pub acked: Vec<Uuid>,
    pub problems: Vec<String>,
}

struct TillOut {
    stats: Vec<PhaseStats>,
    boundary: PhaseStats,
    acked: Vec<Uuid>,
    problems: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn till(
    api: Api,
    fx: Arc<Fixture>,
    cards: Arc<Vec<String>>,
    idx: usize,
    phases: usize,
    current: Arc<AtomicUsize>,
    schedule: Option<(Instant, Duration)>, // (first send, interval)
    retry: bool,
) -> TillOut {
    let terminal = fx.terminal_ids[idx % fx.terminal_ids.len()];
    let mut rng = Rng::new(idx as u64 + 7_001);
    let mut out = TillOut {
        stats: (0..phases).map(|_| PhaseStats::new()).collect(),
        boundary: PhaseStats::new(),
        acked: Vec::new(),
        problems: Vec::new(),
    };
    let mut k: u32 = 0;
    loop {
        let started = match schedule {
            Some((first, interval)) => {
                let at = first + interval * k;
                k += 1;
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let phase = current.load(Ordering::Acquire);
        if phase >= phases {
            break;
        }
        let card = &cards[(rng.next() % cards.len() as u64) as usize];
        let s = sale(&api, &fx, card, terminal, &mut rng, retry).await;
        let whole = started.elapsed();
        let same = current.load(Ordering::Acquire) == phase;
        if same {
            out.stats[phase].note(&s, whole, true);
        } else {
            // Refusals count wherever they happen; latency only within one phase.
            out.boundary.note(&s, whole, true);
        }
        if s.acked {
            out.acked.push(s.id);
        } else if let Some(p) = s.problem
            && out.problems.len() < 3
        {
            out.problems.push(format!("till {idx}: {p}"));
        }
    }
    out
}

/// Drive `tills` tills through `plan`, switching the simulator at each phase's start.
#[allow(clippy::too_many_arguments)]
pub async fn run_phases(
    api: &Api,
    fx: &Arc<Fixture>,
    cards: &Arc<Vec<String>>,
    jowi: &Jowi,
    plan: &[Phase],
    tills: usize,
    rate: Option<f64>,
    retry: bool,
    verbose: bool,
) -> anyhow::Result<Run> {
    let current = Arc::new(AtomicUsize::new(0));
    jowi.set_down(plan.first().map_or(Down::Up, |p| p.jowi))
        .await?;
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..tills.max(1) {
        let till_api = Api {
            http: setup::client()?,
            ..api.clone()
        };
        let schedule = rate.map(|r| {
            let interval = Duration::from_secs_f64(tills as f64 / r.max(0.001));
            (t0 + interval.mul_f64(i as f64 / tills as f64), interval)
        });
        handles.push(tokio::spawn(till(
            till_api,
            fx.clone(),
            cards.clone(),
            i,
            plan.len(),
            current.clone(),
            schedule,
            retry,
        )));
    }
    // The controller: each phase's fault, then the next.
    let mut seconds = Vec::with_capacity(plan.len());
    let mut switch_error = None;
    for (i, p) in plan.iter().enumerate() {
        let start = Instant::now();
        if i > 0 {
            // Switch the simulator first: a sale that starts in phase i meets its state.
            if let Err(e) = jowi.set_down(p.jowi).await {
                switch_error = Some(e);
                current.store(plan.len(), Ordering::Release);
                break;
            }
            current.store(i, Ordering::Release);
        }
        if verbose {
            println!(
                "  +{:>6.1} s  phase {:<14} JOWi {:?}",
                t0.elapsed().as_secs_f64(),
                p.name,
                p.jowi
            );
        }
        tokio::time::sleep_until((start + Duration::from_secs_f64(p.seconds)).into()).await;
        seconds.push(start.elapsed().as_secs_f64());
    }
    current.store(plan.len(), Ordering::Release);
    // JOWi is back after the last phase, whatever it was.
    let back = jowi.set_down(Down::Up).await;
    let mut stats: Vec<PhaseStats> = plan.iter().map(|_| PhaseStats::new()).collect();
    let mut boundary = PhaseStats::new();
    let mut acked = Vec::new();
    let mut problems = Vec::new();
    for h in handles {
        let o = h.await?;
        for (s, x) in stats.iter_mut().zip(o.stats) {
            s.add(x);
        }
        boundary.add(o.boundary);
        acked.extend(o.acked);
        problems.extend(o.problems);
    }
    if let Some(e) = switch_error {
        return Err(e);
    }
    back?;
    let result = |name: &str, jowi: Down, secs: f64, s: &PhaseStats| PhaseResult {
        name: name.to_string(),
        jowi,
        seconds: secs,
        sales: s.sales,
        refused: s.refused,
        quoted: s.quoted,
        unquoted: s.unquoted,
        without_customer: s.without_customer,
        loyalty_call_errors: s.loyalty_errors,
        receipt_retries: s.retried,
        sales_per_s: if secs > 0.0 {
            s.sales as f64 / secs
        } else {
            0.0
        },
        sale_latency: Latency::of(&s.sale),
        receipt_latency: Latency::of(&s.receipt),
    };
    Ok(Run {
        phases: plan
            .iter()
            .zip(&seconds)
            .zip(&stats)
            .map(|((p, secs), s)| result(&p.name, p.jowi, *secs, s))
            .collect(),
        boundary: result("boundary", Down::Up, 0.0, &boundary),
        acked,
        problems,
    })
}

// ---------------------------------------------------------------- verdicts

/// A down phase against the normal one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ratio {
    pub phase: String,
    /// p99 of the whole sale, down / normal.
    pub sale_p99: Option<f64>,
    /// p99 of the receipt alone, down / normal.
    pub receipt_p99: Option<f64>,
    pub meets_target: bool,
}

pub fn ratio(down_p99: f64, normal_p99: f64) -> Option<f64> {
    (normal_p99 > 0.0 && down_p99.is_finite()).then(|| down_p99 / normal_p99)
}

/// Each down phase's p99 ratios to the first `Up` phase; the target is met on the whole sale.
pub fn ratios(phases: &[PhaseResult]) -> Vec<Ratio> {
    let Some(normal) = phases.iter().find(|p| p.jowi == Down::Up) else {
        return Vec::new();
    };
    phases
        .iter()
        .filter(|p| p.jowi != Down::Up)
        .map(|p| {
            let sale = ratio(p.sale_latency.p99_ms, normal.sale_latency.p99_ms);
            Ratio {
                phase: p.name.clone(),
                sale_p99: sale,
                receipt_p99: ratio(p.receipt_latency.p99_ms, normal.receipt_latency.p99_ms),
                meets_target: sale.is_some_and(|r| r <= TARGET_RATIO) && p.sales > 0,
            }
        })
        .collect()
}

/// Whether every acknowledged sale's accrual is in JOWi's ledger exactly once.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AccrualCheck {
    pub acked: usize,
    pub accrued_once: usize,
    pub accrued_more_than_once: usize,
    pub missing: usize,
    /// Ledger sales of receipts no till saw acknowledged (a lost answer; not an error).
    pub ledger_not_acked: usize,
    pub waited_s: f64,
    /// The loyalty consumer's inbox after the wait: events dead-lettered and still retrying.
    pub dead_lettered: Option<i64>,
    pub retrying: Option<i64>,
    pub ok: bool,
}

pub fn judge_accruals(acked: &[Uuid], ledger: &HashMap<Uuid, u32>) -> AccrualCheck {
    let mut c = AccrualCheck {
        acked: acked.len(),
        ..AccrualCheck::default()
    };
    let set: std::collections::HashSet<&Uuid> = acked.iter().collect();
    for id in acked {
        match ledger.get(id).copied().unwrap_or(0) {
            0 => c.missing += 1,
            1 => c.accrued_once += 1,
            _ => c.accrued_more_than_once += 1,
        }
    }
    c.ledger_not_acked = ledger.keys().filter(|id| !set.contains(id)).count();
    c.ok = c.missing == 0 && c.accrued_more_than_once == 0;
    c
}

/// Poll the ledger until every acknowledged sale is accrued or `wait` has passed.
pub async fn check_accruals(
    jowi: &Jowi,
    acked: &[Uuid],
    wait: Duration,
    database_url: Option<&str>,
) -> anyhow::Result<AccrualCheck> {
    let t = Instant::now();
    let mut c = loop {
        let c = judge_accruals(acked, &jowi.ledger_sales().await?);
        if c.missing == 0 || t.elapsed() >= wait {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    };
    c.waited_s = t.elapsed().as_secs_f64();
    if let Some(url) = database_url {
        match inbox_states(url).await {
            Ok(m) => {
                c.dead_lettered = Some(m.get("dead").copied().unwrap_or(0));
                c.retrying = Some(m.get("retry").copied().unwrap_or(0));
            }
            Err(e) => eprintln!("loyalty inbox not read: {e:#}"),
        }
    }
    Ok(c)
}

/// The `loyalty` consumer's inbox rows per status.
async fn inbox_states(url: &str) -> anyhow::Result<HashMap<String, i64>> {
    const Q: &str =
        "SELECT status, COUNT(*) FROM consumer_inbox WHERE consumer = 'loyalty' GROUP BY status";
    let rows: Vec<(String, i64)> = if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        sqlx::query_as(Q).fetch_all(&pool).await?
    } else {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        sqlx::query_as(Q).fetch_all(&pool).await?
    };
    Ok(rows.into_iter().collect())
}

// ---------------------------------------------------------------- the benchmark

#[derive(Debug, Clone, Serialize)]
pub struct OutageReport {
    pub benchmark: &'static str,
    pub backend: Backend,
    pub machine: MachineInfo,
    pub tills: usize,
    pub offered_per_s: Option<f64>,
    pub customers: usize,
    pub lookup_timeout_ms: Option<u64>,
    pub phases: Vec<PhaseResult>,
    pub boundary: PhaseResult,
    pub ratios: Vec<Ratio>,
    pub target_ratio: f64,
    pub refused_total: u64,
    pub accruals: Option<AccrualCheck>,
    pub server_peak_rss_mib: Option<f64>,
}

pub fn print_phase(p: &PhaseResult) {
    println!(
        "{:<14} JOWi {:<9} {:>7.0} sales/s  ({} sales in {:.1} s; {} refused; {} with a quote, {} without; {} loyalty calls not 200{})",
        p.name,
        format!("{:?}", p.jowi).to_lowercase(),
        p.sales_per_s,
        p.sales,
        p.seconds,
        p.refused,
        p.quoted,
        p.unquoted,
        p.loyalty_call_errors,
        if p.receipt_retries > 0 {
            format!("; {} receipt attempts retried", p.receipt_retries)
        } else {
            String::new()
        }
    );
    println!("    sale    {}", p.sale_latency.line());
    println!("    receipt {}", p.receipt_latency.line());
}

pub fn print_accruals(c: &AccrualCheck) {
    println!(
        "accruals after recovery: {} acknowledged sales; {} in JOWi's ledger once, {} more than once, {} missing after {:.1} s; {} ledger sales not acknowledged to a till{}",
        c.acked,
        c.accrued_once,
        c.accrued_more_than_once,
        c.missing,
        c.waited_s,
        c.ledger_not_acked,
        match (c.dead_lettered, c.retrying) {
            (Some(d), Some(r)) => format!("; loyalty consumer: {d} dead-lettered, {r} retrying"),
            _ => String::new(),
        }
    );
}

pub async fn run(a: LoyaltyOutageArgs) -> anyhow::Result<()> {
    let machine = MachineInfo::now();
    if !a.json {
        println!(
            "loyalty-outage on {:?}, {} tills, {} s per phase{}{}",
            a.backend,
            a.tills,
            a.duration,
            a.rate
                .map(|r| format!(", open loop at {r:.0} sales/s"))
                .unwrap_or_default(),
            match a.jowi_latency_ms {
                0 => String::new(),
                ms => format!(", JOWi answering after {ms} ms"),
            }
        );
        println!("{}", machine.line());
    }
    let bin = server::savdo_binary(a.savdo_bin.as_deref())?;
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse()?).await?;
    let db = FreshDb::new(a.backend, a.database_url.as_deref()).await?;
    let r = run_in(&a, &bin, &db, &sandbox.url(), machine).await;
    db.drop_db().await;
    drop(sandbox);
    let report = r?;
    if !a.json {
        println!();
        for p in &report.phases {
            print_phase(p);
        }
        if report.boundary.sales + report.boundary.refused > 0 {
            println!(
                "({} sales straddled a switch and are counted in no phase; {} of them refused)",
                report.boundary.sales + report.boundary.refused,
                report.boundary.refused
            );
        }
        for r in &report.ratios {
            println!(
                "p99 {} / normal: sale {}, receipt {} (target ≤ {TARGET_RATIO}: {})",
                r.phase,
                fmt_ratio(r.sale_p99),
                fmt_ratio(r.receipt_p99),
                if r.meets_target { "met" } else { "missed" }
            );
        }
        println!("sales refused: {} (must be 0)", report.refused_total);
        if let Some(c) = &report.accruals {
            print_accruals(c);
        }
    }
    stats::emit_json(a.json, &report)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}×"))
}

async fn run_in(
    a: &LoyaltyOutageArgs,
    bin: &std::path::Path,
    db: &FreshDb,
    sandbox: &str,
    machine: MachineInfo,
) -> anyhow::Result<OutageReport> {
    let data_dir = db.dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let (tenant, token) = server::create_tenant(bin, &data_dir, &db.url).await?;
    let log = db.dir.path().join("server.log");
    let srv = Server::start(bin, &data_dir, &db.url, server::free_port()?, &log, false).await?;
    let result = async {
        let api = Api::new(&srv.base, &token)?;
        let mut jowi = Jowi::new(sandbox)?;
        jowi.latency_ms = a.jowi_latency_ms;
        let (fx, cards) = prepare(
            &api,
            tenant,
            a.tills,
            &jowi,
            a.customers,
            a.lookup_timeout_ms,
        )
        .await?;
        let (fx, cards) = (Arc::new(fx), Arc::new(cards));
        let mut plan = vec![
            Phase {
                name: "warm-up".into(),
                jowi: Down::Up,
                seconds: 1.0,
            },
            Phase {
                name: "normal".into(),
                jowi: Down::Up,
                seconds: a.duration as f64,
            },
        ];
        for d in a.down.downs() {
            plan.push(Phase {
                name: format!("down-{}", format!("{d:?}").to_lowercase()),
                jowi: *d,
                seconds: a.duration as f64,
            });
        }
        if !a.json {
            println!("phases:");
        }
        let run = run_phases(
            &api, &fx, &cards, &jowi, &plan, a.tills, a.rate, false, !a.json,
        )
        .await?;
        for p in &run.problems {
            eprintln!("{p}");
        }
        let accruals = if a.accrual_wait > 0 {
            if !a.json {
                println!(
                    "JOWi back; waiting at most {} s for the accruals",
                    a.accrual_wait
                );
            }
            Some(
                check_accruals(
                    &jowi,
                    &run.acked,
                    Duration::from_secs(a.accrual_wait),
                    Some(&db.url),
                )
                .await?,
            )
        } else {
            None
        };
        let mut phases = run.phases;
        phases.remove(0); // the warm-up
        let refused_total = phases.iter().map(|p| p.refused).sum::<u64>() + run.boundary.refused;
        Ok::<_, anyhow::Error>(OutageReport {
            benchmark: "loyalty-outage",
            backend: a.backend,
            machine,
            tills: a.tills,
            offered_per_s: a.rate,
            customers: a.customers,
            lookup_timeout_ms: a.lookup_timeout_ms,
            ratios: ratios(&phases),
            phases,
            boundary: run.boundary,
            target_ratio: TARGET_RATIO,
            refused_total,
            accruals,
            server_peak_rss_mib: stats::peak_rss_mib(srv.pid),
        })
    }
    .await;
    srv.stop().await;
    if result.is_err()
        && let Ok(text) = std::fs::read_to_string(&log)
    {
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "server log (last lines):\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, jowi: Down, sales: u64, p99_sale: f64, p99_receipt: f64) -> PhaseResult {
        let lat = |p99| Latency {
            count: sales,
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms: p99,
            max_ms: p99,
        };
        PhaseResult {
            name: name.into(),
            jowi,
            seconds: 1.0,
            sales,
            refused: 0,
            quoted: 0,
            unquoted: 0,
            without_customer: 0,
            loyalty_call_errors: 0,
            receipt_retries: 0,
            sales_per_s: sales as f64,
            sale_latency: lat(p99_sale),
            receipt_latency: lat(p99_receipt),
        }
    }

    #[test]
    fn ratios_against_the_normal_phase() {
        let phases = vec![
            phase("normal", Down::Up, 100, 40.0, 20.0),
            phase("down-refuse", Down::Refuse, 100, 44.0, 30.0),
            phase("down-blackhole", Down::Blackhole, 100, 820.0, 20.0),
            phase("down-empty", Down::Refuse, 0, 0.0, 0.0),
        ];
        let r = ratios(&phases);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].phase, "down-refuse");
        assert!((r[0].sale_p99.unwrap() - 1.1).abs() < 1e-9);
        assert!((r[0].receipt_p99.unwrap() - 1.5).abs() < 1e-9);
        assert!(r[0].meets_target, "the target is on the whole sale");
        assert!((r[1].sale_p99.unwrap() - 20.5).abs() < 1e-9);
        assert!(!r[1].meets_target);
        assert!(!r[2].meets_target, "a phase without sales proves nothing");
        assert_eq!(ratio(5.0, 0.0), None);
        assert!(ratios(&phases[1..]).is_empty(), "no normal phase, no ratio");
    }

    #[test]
    fn accruals_once_each() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let stray = Uuid::now_v7();
        let ledger = json!({"count": 5, "entries": [
            {"kind": "sale", "id": a.to_string()},
            {"kind": "sale", "id": b.to_string()},
            {"kind": "refund", "id": b.to_string()},
            {"kind": "sale", "id": b.to_string()},
            {"kind": "sale", "id": stray.to_string()},
            {"kind": "sale", "id": "not-a-uuid"},
        ]});
        let counted = count_sales(&ledger);
        assert_eq!(counted.get(&b), Some(&2));
        let v = judge_accruals(&[a, b, c], &counted);
        assert_eq!(
            (
                v.acked,
                v.accrued_once,
                v.accrued_more_than_once,
                v.missing,
                v.ledger_not_acked
            ),
            (3, 1, 1, 1, 1)
        );
        assert!(!v.ok);
        let v = judge_accruals(
            &[a],
            &count_sales(&json!({"entries": [{"kind": "sale", "id": a.to_string()}]})),
        );
        assert!(v.ok);
    }

    #[test]
    fn cards_are_distinct_and_sixteen_digits() {
        let c = cards(1000, 123_456_789);
        let set: std::collections::HashSet<_> = c.iter().collect();
        assert_eq!(set.len(), 1000);
        assert!(
            c.iter()
                .all(|x| x.len() == 16 && x.bytes().all(|b| b.is_ascii_digit()))
        );
    }
}
