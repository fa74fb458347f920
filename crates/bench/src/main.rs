//! `savdo-bench`: the figures that show whether Savdo is fast — each next to the limit of the
//! same machine, measured in the same run. See BENCHMARKS.md at the repository root.

mod checkout;
mod events;
mod fiscal;
mod fiscal_drill;
mod loyalty_drill;
mod loyalty_outage;
mod marketplace_sync;
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
    /// Loyalty sales with JOWi Club answering, then down (black-holed, refusing): p99 and ratio.
    LoyaltyOutage(loyalty_outage::LoyaltyOutageArgs),
    /// Stock changes pushed to the marketplace simulators: requests vs the minimum, 429s, time.
    MarketplaceSync(marketplace_sync::MarketplaceSyncArgs),
    /// Drill: marketplace simulators answer 429/5xx at random while stock changes; final stock equal.
    MarketplaceChaos(marketplace_sync::MarketplaceChaosArgs),
    /// Drill helper: tills against a running server, retrying through its deaths.
    Load(verify::LoadArgs),
    /// Drill helper: every acknowledged receipt stored once, stock = movements, events delivered.
    Verify(verify::VerifyArgs),
    /// Drill helper: sales against a running fiscal gateway, retrying through its deaths.
    FiscalLoad(fiscal_drill::FiscalLoadArgs),
    /// Drill helper: every acknowledged sale registered, and printed exactly once.
    FiscalVerify(fiscal_drill::FiscalVerifyArgs),
    /// Drill helper: loyalty sales against a running server while JOWi Club goes down and back.
    LoyaltyLoad(loyalty_drill::LoyaltyLoadArgs),
    /// Drill helper: no sale refused, every accrual in JOWi's ledger exactly once.
    LoyaltyVerify(loyalty_drill::LoyaltyVerifyArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().cmd {
        Cmd::Checkout(a) => checkout::run(a).await,
        Cmd::Events(a) => events::run(a).await,
        Cmd::Fiscal(a) => fiscal::run(a).await,
        Cmd::LoyaltyOutage(a) => loyalty_outage::run(a).await,
        Cmd::MarketplaceSync(a) => marketplace_sync::run(a).await,
        Cmd::MarketplaceChaos(a) => {
            if !marketplace_sync::chaos(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Load(a) => verify::load(a).await,
        Cmd::FiscalLoad(a) => fiscal_drill::load(a).await,
        Cmd::LoyaltyLoad(a) => loyalty_drill::load(a).await,
        Cmd::LoyaltyVerify(a) => {
            if !loyalty_drill::verify(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::FiscalVerify(a) => {
            if !fiscal_drill::verify(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Verify(a) => {
            if !verify::verify(a).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
