//! `savdo import orders FILE`: the API's order import run straight on the configured database,
//! with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use savdo_api::order_import::{
    self, Format, ImportOptions, ImportReport, Limits, RowReport, RowStatus,
};
use uuid::Uuid;

use crate::config::DbArgs;

#[derive(Subcommand)]
pub enum ImportCmd {
    /// Import online orders from CSV or JSON as outgoing invoices (see docs/import.md).
    /// Orders imported before are skipped as duplicates; the exit code is 1 when any failed.
    Orders(OrdersArgs),
}

#[derive(Args)]
pub struct OrdersArgs {
    /// The CSV or JSON file.
    file: PathBuf,
    /// The tenant (business) the orders belong to.
    #[arg(long, env = "SAVDO_TENANT")]
    tenant: Uuid,
    /// Reserve the stock of every invoice created.
    #[arg(long)]
    reserve: bool,
    /// The file's format [default: json for *.json, otherwise csv].
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// Print the whole report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum FileFormat {
    Csv,
    Json,
}

pub async fn run(db: &DbArgs, cmd: ImportCmd) -> anyhow::Result<()> {
    let ImportCmd::Orders(args) = cmd;
    let format = match args.format {
        Some(FileFormat::Csv) => Format::Csv,
        Some(FileFormat::Json) => Format::Json,
        None if args
            .file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json")) =>
        {
            Format::Json
        }
        None => Format::Csv,
    };
    let body = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let parsed = order_import::parse(format, &body, &Limits::FILE)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let (store, _) = crate::open(db).await?;
    store
        .settings(args.tenant)
        .await
        .with_context(|| format!("tenant {}", args.tenant))?;
    let actor = savdo_storage::Actor::system(args.tenant);
    let mut progress = Progress::new(parsed.len() as u64);
    let report = order_import::import(
        store.as_ref(),
        &actor,
        parsed,
        ImportOptions {
            reserve: args.reserve,
        },
        |row| progress.step(row),
    )
    .await?;
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    anyhow::ensure!(
        report.summary.failed == 0,
        "{} order(s) failed",
        report.summary.failed
    );
    Ok(())
}

fn print_report(r: &ImportReport) {
    let s = &r.summary;
    println!(
        "created {}, duplicate {}, failed {}",
        s.created, s.duplicate, s.failed
    );
    for row in r.rows.iter().filter(|r| r.status == RowStatus::Failed) {
        println!(
            "failed: row {} ({})",
            row.row,
            row.external_ref.as_deref().unwrap_or("no external_ref")
        );
        for e in &row.errors {
            match e.row {
                Some(line) => println!("  line {line}, {}: {}", e.field, e.message),
                None => println!("  {}: {}", e.field, e.message),
            }
        }
    }
}

/// A bar on a terminal; otherwise a plain line every tenth of the way.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { total: u64, done: u64, shown: u64 },
}

impl Progress {
    fn new(total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} orders {elapsed_precise} {msg}",
            ) {
                bar.set_style(style);
            }
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                total,
                done: 0,
                shown: 0,
            }
        }
    }

    fn step(&mut self, row: &RowReport) {
        match self {
            Progress::Bar(b) => {
                b.inc(1);
                if let Some(r) = &row.external_ref {
                    b.set_message(r.clone());
                }
            }
            Progress::Lines { total, done, shown } => {
                *done += 1;
                let tenth = (*done * 10) / (*total).max(1);
                if tenth > *shown || *done == *total {
                    *shown = tenth;
                    eprintln!("imported {done}/{total} orders");
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
