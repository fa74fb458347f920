//! `savdo-fiscal --config FILE [--listen ADDR] [--data-dir DIR]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use savdo_fiscal::Config;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "savdo-fiscal",
    version,
    about = "Savdo fiscal gateway (HTTP + gRPC)"
)]
struct Args {
    /// TOML configuration; without it one virtual device is served.
    #[arg(long, env = "SAVDO_FISCAL_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address (overrides the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// gRPC listen address (overrides the file).
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// Journal directory (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(g) = args.grpc_listen {
        config.grpc_listen = Some(g);
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let running = savdo_fiscal::start(config).await?;
    println!("savdo-fiscal listening on {}", running.url());
    if let Some(g) = running.grpc_url() {
        println!("gRPC on {g}");
    }
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
