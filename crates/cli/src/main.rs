//! `savdo`: the server, its worker, and the operator's commands.

mod config;
mod demo;
mod import;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use savdo_storage::Storage;

use crate::config::DbArgs;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "savdo",
    version,
    about = "Retail back office and point-of-sale API for Uzbekistan"
)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP server (migrations are applied on start).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "SAVDO_LISTEN")]
        listen: Option<SocketAddr>,
        /// Do not run the relay and consumers here (run `savdo worker` processes instead).
        #[arg(long, env = "SAVDO_NO_WORKERS")]
        no_workers: bool,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Run the outbox relay and the event consumers without serving HTTP.
    Worker {
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// The credential vault.
    Vault {
        #[command(subcommand)]
        cmd: VaultCmd,
    },
    /// The whole product on this machine: server, sandbox, fiscal gateway and a demo business.
    Demo {
        #[command(flatten)]
        args: demo::DemoArgs,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Manage tenants (businesses).
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// Import data files into the configured database.
    Import {
        #[command(subcommand)]
        cmd: import::ImportCmd,
    },
}

#[derive(clap::Args, Clone)]
struct BusArgs {
    /// NATS server with JetStream; without it events travel on the in-process bus.
    #[arg(long, env = "SAVDO_NATS_URL")]
    nats_url: Option<String>,
    /// Let webhooks target loopback and private addresses (development only).
    #[arg(long, env = "SAVDO_WEBHOOKS_ALLOW_PRIVATE", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    webhooks_allow_private: bool,
}

#[derive(Subcommand)]
enum VaultCmd {
    /// Make a new key active (old keys stay for decryption) and re-encrypt every stored
    /// credential and webhook signing secret under it, in batches, while servers keep running. With `SAVDO_MASTER_KEY`,
    /// prepend the new key to the variable first; this then re-encrypts under it.
    Rotate {
        /// Credentials re-encrypted per batch.
        #[arg(long, default_value_t = 100)]
        batch: u32,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant with an owner token; prints `{"tenant_id", "token"}`.
    Create {
        #[arg(long)]
        name: String,
    },
}

fn init_logging(format: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SAVDO_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("SAVDO_LOG_FORMAT").ok().as_deref().or(format) == Some("json");
    // Logs go to stderr: stdout is for machine-readable output (`tenant create`).
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn open(db: &DbArgs) -> anyhow::Result<(Arc<dyn Storage>, config::Resolved)> {
    let r = db.resolve()?;
    let store = savdo_storage::connect(&r.database_url)
        .await
        .with_context(|| "cannot open the database")?;
    store.migrate().await.context("migrations failed")?;
    Ok((store, r))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider so that nothing but ring is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let file_log = cli.db.resolve().ok().and_then(|r| r.log_format);
    init_logging(file_log.as_deref());
    match cli.cmd {
        Cmd::Serve {
            listen,
            no_workers,
            bus,
        } => {
            let (store, r) = open(&cli.db).await?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let platform = workers::Platform::new(store, &r.data_dir)?;
            savdo_webhooks::seal_at_start(&platform.store, &platform.vault).await?;
            let workers = if no_workers {
                Vec::new()
            } else {
                platform.start_workers(&bus, stop_rx).await?
            };
            tracing::info!(data_dir = %r.data_dir.display(), database = %redact(&r.database_url), "storage ready");
            let addr = listen
                .or(r.file_listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let state = platform.app_state(bus.webhooks_allow_private);
            savdo_api::serve(listener, state, shutdown_signal()).await?;
            let _ = stop_tx.send(true);
            workers::join(workers).await;
        }
        Cmd::Worker { bus } => {
            let (store, r) = open(&cli.db).await?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let platform = workers::Platform::new(store, &r.data_dir)?;
            savdo_webhooks::seal_at_start(&platform.store, &platform.vault).await?;
            let handles = platform.start_workers(&bus, stop_rx).await?;
            shutdown_signal().await;
            let _ = stop_tx.send(true);
            workers::join(handles).await;
        }
        Cmd::Demo { args, bus } => demo::run(cli.db.clone(), bus, args).await?,
        Cmd::Import { cmd } => import::run(&cli.db, cmd).await?,
        Cmd::Migrate => {
            let (_store, r) = open(&cli.db).await?;
            tracing::info!(database = %redact(&r.database_url), "migrations applied");
        }
        Cmd::Vault {
            cmd: VaultCmd::Rotate { batch },
        } => {
            let (store, r) = open(&cli.db).await?;
            let mut vault = savdo_hub::Vault::open(&r.data_dir).context("cannot open the vault")?;
            let previous = vault.active_key_id().to_owned();
            if vault.source() == savdo_hub::vault::KeySource::Env {
                tracing::info!("keyring from SAVDO_MASTER_KEY: re-encrypting under its first key");
            } else {
                vault.rotate().context("cannot rotate the vault key")?;
            }
            let report = savdo_integrations::reencrypt_all(&store, &vault, batch.max(1)).await?;
            // Webhook signing secrets are sealed by the same vault (rows from before sealing too).
            let webhooks = savdo_webhooks::reseal_all(&store, &vault, batch.max(1)).await?;
            println!(
                "{}",
                serde_json::json!({"previous_key": previous, "report": report, "webhooks": webhooks})
            );
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} credential(s) could not be decrypted with any key of the ring",
                report.failed.len()
            );
            anyhow::ensure!(
                webhooks.failed.is_empty(),
                "{} webhook secret(s) could not be decrypted with any key of the ring",
                webhooks.failed.len()
            );
        }
        Cmd::Tenant {
            cmd: TenantCmd::Create { name },
        } => {
            let (store, _) = open(&cli.db).await?;
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 200,
                "--name must be 1 to 200 characters"
            );
            let tenant = store.create_tenant(name).await?;
            let token = savdo_api::routes::tokens::generate_token();
            let actor = savdo_storage::Actor::system(tenant.id);
            store
                .create_token(
                    &actor,
                    &savdo_storage::NewToken {
                        name: "owner".into(),
                        role: savdo_domain::tenant::Role::Owner,
                        store_id: None,
                    },
                    &savdo_api::extract::hash_token(&token),
                )
                .await?;
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant.id, "token": token})
            );
        }
    }
    Ok(())
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:****{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
