//! `savdo-bench`: the figures that show whether Savdo is fast — each next to the limit of the
//! same machine, measured in the same run. See BENCHMARKS.md at the repository root.

mod checkout;
mod events;
mod fiscal;
mod raw;
mod server;
mod setup;
mod stats;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "savdo-bench",
    version,
    about = "Savdo benchmark harness and fault-drill helpers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Tills posting receipts over HTTP to a real server, and the raw database limit.
    Checkout(checkout::CheckoutArgs),
    /// Receipt commit -> consumer latency, and relay throughput.
    Events(events::EventsArgs),
    /// Receipts/s through the fiscal gateway on virtual devices, journal on.
    Fiscal(fiscal::FiscalArgs),
    /// Checkout p99 with JOWi Club answering, then down (not available yet).
    LoyaltyOutage,
    /// Stock changes pushed to the marketplace simulators (not available yet).
    MarketplaceSync,
    /// Drill helper: tills against a running server, retrying through its deaths.
    Load(verify::LoadArgs),
    /// Drill helper: every acknowledged receipt stored once, stock = movements, events delivered.
    Verify(verify::VerifyArgs),
}

fn not_yet(name: &str, needs: &str) -> anyhow::Result<()> {
    eprintln!("savdo-bench {name}: not available yet: {needs}. No figures are reported.");
    std::process::exit(2);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().cmd {
        Cmd::Checkout(a) => checkout::run(a).await,
        Cmd::Events(a) => events::run(a).await,
        Cmd::Fiscal(a) => fiscal::run(a).await,
        Cmd::LoyaltyOutage => not_yet(
            "loyalty-outage",
            "the JOWi Club loyalty integration is not in the server yet",
        ),
        Cmd::MarketplaceSync => not_yet(
            "marketplace-sync",
            "the marketplace connectors are not in the server yet",
        ),
        Cmd::Load(a) => verify::load(a).await,
        Cmd::Verify(a) => {
            if !verify::verify(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
