use std::net::SocketAddr;

use clap::Parser;

/// Simulators of the external systems Savdo integrates with, on one port.
#[derive(Parser)]
#[command(name = "savdo-sandbox", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SAVDO_SANDBOX_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "savdo-sandbox listening");
    axum::serve(listener, savdo_sandbox::router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
