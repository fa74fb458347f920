//! `loyalty-load` and `loyalty-verify`: the halves of the JOWi-down drill
//! (`scripts/drill-jowi-down.sh`). `loyalty-load` makes loyalty sales against a running server
//! while it takes JOWi Club (the sandbox simulator) down and brings it back; `loyalty-verify`
//! then checks that no sale was refused and that every sale's accrual reached JOWi's ledger
//! exactly once within a bounded wait.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::loyalty_outage::{self, Down, Jowi, OutageMode, Phase, PhaseResult};
use crate::setup::Api;

#[derive(clap::Args, Debug, Clone)]
pub struct LoyaltyLoadArgs {
    /// Base URL of a running server, e.g. http://127.0.0.1:18080.
    #[arg(long)]
    pub url: String,
    /// An owner token of the tenant (from `savdo tenant create`).
    #[arg(long)]
    pub token: String,
    /// Base URL of a running sandbox, e.g. http://127.0.0.1:18090.
    #[arg(long)]
    pub sandbox: String,
    #[arg(long, default_value_t = 4)]
    pub tills: usize,
    /// Seconds of sales with JOWi up before the outage.
    #[arg(long, default_value_t = 10)]
    pub before: u64,
    /// Seconds JOWi is down (with `--down both`: the first half black-holed, then refusing).
    #[arg(long, default_value_t = 60)]
    pub outage: u64,
    /// Seconds of sales after JOWi is back.
    #[arg(long, default_value_t = 10)]
    pub after: u64,
    #[arg(long, value_enum, default_value = "both")]
    pub down: OutageMode,
    #[arg(long, default_value_t = 50)]
    pub customers: usize,
    /// Open loop: offered sales per second over all tills [default: closed loop].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Ids of acknowledged receipts, one a line.
    #[arg(long)]
    pub acked_file: PathBuf,
    /// The run's figures (phases, refused sales), for `loyalty-verify`.
    #[arg(long)]
    pub report_file: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoyaltyVerifyArgs {
    /// Base URL of the sandbox the load used.
    #[arg(long)]
    pub sandbox: String,
    #[arg(long)]
    pub acked_file: PathBuf,
    /// `loyalty-load`'s report.
    #[arg(long)]
    pub report_file: PathBuf,
    /// The server's database, to count the loyalty consumer's dead letters.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Seconds to wait for the accruals to reach JOWi after the outage.
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoadReport {
    pub phases: Vec<PhaseOut>,
    pub refused: u64,
    pub acked: usize,
}

/// What `loyalty-verify` needs of a phase (the full figures are printed by `loyalty-load`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PhaseOut {
    pub name: String,
    pub sales: u64,
    pub refused: u64,
    pub quoted: u64,
    pub unquoted: u64,
    pub sale_p99_ms: f64,
}

impl From<&PhaseResult> for PhaseOut {
    fn from(p: &PhaseResult) -> Self {
        PhaseOut {
            name: p.name.clone(),
            sales: p.sales,
            refused: p.refused,
            quoted: p.quoted,
            unquoted: p.unquoted,
            sale_p99_ms: p.sale_latency.p99_ms,
        }
    }
}

/// The drill's timeline: JOWi up, down (one mode or half of each), back up.
pub fn plan(before: u64, outage: u64, after: u64, down: OutageMode) -> Vec<Phase> {
    let mut p = vec![Phase {
        name: "before".into(),
        jowi: Down::Up,
        seconds: before as f64,
    }];
    let modes = down.downs();
    let each = outage as f64 / modes.len() as f64;
    for d in modes {
        p.push(Phase {
            name: format!("down-{}", format!("{d:?}").to_lowercase()),
            jowi: *d,
            seconds: each,
        });
    }
    p.push(Phase {
        name: "after".into(),
        jowi: Down::Up,
        seconds: after as f64,
    });
    p
}

pub async fn load(a: LoyaltyLoadArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.url, &a.token)?;
    let jowi = Jowi::new(&a.sandbox)?;
    let (fx, cards) =
        loyalty_outage::prepare(&api, Uuid::nil(), a.tills, &jowi, a.customers, None).await?;
    let plan = plan(a.before, a.outage, a.after, a.down);
    println!(
        "loyalty load: {} tills, {} customers; JOWi up {} s, down {} s ({:?}), up {} s",
        a.tills, a.customers, a.before, a.outage, a.down, a.after
    );
    // Tills retry the same receipt id through server errors, as real tills do.
    let run = loyalty_outage::run_phases(
        &api,
        &Arc::new(fx),
        &Arc::new(cards),
        &jowi,
        &plan,
        a.tills,
        a.rate,
        true,
        true,
    )
    .await?;
    for p in &run.phases {
        loyalty_outage::print_phase(p);
    }
    for p in &run.problems {
        eprintln!("{p}");
    }
    let refused = run.phases.iter().map(|p| p.refused).sum::<u64>() + run.boundary.refused;
    let text: String = run.acked.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&a.acked_file, text)?;
    let report = LoadReport {
        phases: run.phases.iter().map(PhaseOut::from).collect(),
        refused,
        acked: run.acked.len(),
    };
    std::fs::write(&a.report_file, serde_json::to_vec_pretty(&report)?)?;
    println!(
        "load: {} sales acknowledged, {refused} refused",
        run.acked.len()
    );
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct DrillVerdict {
    pub refused: u64,
    pub accruals: loyalty_outage::AccrualCheck,
    pub ok: bool,
}

pub fn verdict(refused: u64, accruals: loyalty_outage::AccrualCheck) -> DrillVerdict {
    let ok = refused == 0 && accruals.ok && accruals.acked > 0;
    DrillVerdict {
        refused,
        accruals,
        ok,
    }
}

pub async fn verify(a: LoyaltyVerifyArgs) -> anyhow::Result<bool> {
    let report: LoadReport = serde_json::from_slice(
        &std::fs::read(&a.report_file)
            .with_context(|| format!("cannot read {}", a.report_file.display()))?,
    )?;
    let acked: Vec<Uuid> = std::fs::read_to_string(&a.acked_file)
        .with_context(|| format!("cannot read {}", a.acked_file.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()?;
    let jowi = Jowi::new(&a.sandbox)?;
    let accruals = loyalty_outage::check_accruals(
        &jowi,
        &acked,
        Duration::from_secs(a.wait),
        a.database_url.as_deref(),
    )
    .await?;
    let v = verdict(report.refused, accruals);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("sales acknowledged:                  {}", acked.len());
        println!("sales refused:                       {}", v.refused);
        loyalty_outage::print_accruals(&v.accruals);
        if v.accruals.dead_lettered.is_some_and(|d| d > 0) {
            println!(
                "NOTE: the loyalty consumer dead-lettered accruals: its retry policy gave up while JOWi was down"
            );
        }
        println!("VERDICT: {}", if v.ok { "PASS" } else { "FAIL" });
    }
    Ok(v.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_splits_the_outage() {
        let p = plan(10, 60, 15, OutageMode::Both);
        let names: Vec<_> = p
            .iter()
            .map(|x| (x.name.as_str(), x.jowi, x.seconds))
            .collect();
        assert_eq!(
            names,
            vec![
                ("before", Down::Up, 10.0),
                ("down-blackhole", Down::Blackhole, 30.0),
                ("down-refuse", Down::Refuse, 30.0),
                ("after", Down::Up, 15.0),
            ]
        );
        assert_eq!(plan(5, 20, 5, OutageMode::Blackhole)[1].seconds, 20.0);
    }

    #[test]
    fn verdict_needs_no_refusals_and_every_accrual_once() {
        let good = loyalty_outage::AccrualCheck {
            acked: 10,
            accrued_once: 10,
            ok: true,
            ..Default::default()
        };
        assert!(verdict(0, good.clone()).ok);
        assert!(!verdict(1, good.clone()).ok);
        let missing = loyalty_outage::AccrualCheck {
            accrued_once: 9,
            missing: 1,
            ok: false,
            ..good.clone()
        };
        assert!(!verdict(0, missing).ok);
        let nothing = loyalty_outage::AccrualCheck {
            ok: true,
            ..Default::default()
        };
        assert!(
            !verdict(0, nothing).ok,
            "a drill without sales proves nothing"
        );
    }
}
