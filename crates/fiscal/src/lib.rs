//! `savdo-fiscal`: the fiscal gateway. One API over HTTP JSON and gRPC in front of fiscal
//! devices (a virtual fiscal module, ATOL web server, KKMServer), with a journal that makes
//! every receipt registered exactly once, in order, whatever crashes or outages happen.
//!
//! Start it in-process with [`start`] (tests and demos bind port 0), or run the binary.

pub mod amounts;
pub mod clock;
pub mod config;
pub mod driver;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod journal;
pub mod model;
pub mod queue;
pub mod validate;

/// Code generated from `proto/fiscal.proto`.
pub mod pb {
    tonic::include_proto!("savdo.fiscal.v1");
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, DeviceConfig, DriverConfig};
pub use gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("device {0}: {1}")]
    Driver(String, driver::DriverError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// A gateway running in the background. Dropping it stops every task (as a crash would, minus
/// the process exit); [`RunningGateway::shutdown`] also waits for them and closes the journal.
pub struct RunningGateway {
    pub http_addr: SocketAddr,
    pub grpc_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Base URL of the HTTP API, such as `http://127.0.0.1:8070`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// gRPC endpoint URL, when `grpc_listen` was configured.
    pub fn grpc_url(&self) -> Option<String> {
        self.grpc_addr.map(|a| format!("http://{a}"))
    }

    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.gateway.journal.close().await;
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Installs the process-wide TLS crypto provider (ring) that HTTP clients need, even for plain
/// HTTP; harmless when one is already installed.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Starts the gateway with the system clock.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningGateway, StartError> {
    config.check()?;
    let journal = journal::Journal::open(&config.data_dir).await?;
    let finished = Arc::new(queue::Finished::default());
    let mut devices = BTreeMap::new();
    for d in &config.devices {
        let drv = driver::build(&d.driver, &journal, clock.clone())
            .map_err(|e| StartError::Driver(d.id.clone(), e))?;
        devices.insert(
            d.id.clone(),
            Arc::new(queue::Device::new(d.id.clone(), drv)),
        );
    }
    let gw = Arc::new(Gateway {
        journal: journal.clone(),
        devices,
        finished: finished.clone(),
        answer_wait: Duration::from_millis(config.answer_wait_ms),
    });

    let http_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let grpc_listener = match config.grpc_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Bind(addr, e))?,
        ),
        None => None,
    };
    let grpc_addr = grpc_listener.as_ref().and_then(|l| l.local_addr().ok());

    let mut tasks = Vec::new();
    let backoff = queue::Backoff {
        initial: Duration::from_millis(config.retry_initial_ms.max(1)),
        max: Duration::from_millis(config.retry_max_ms.max(config.retry_initial_ms).max(1)),
    };
    // Workers first: jobs left unfinished by a previous run are resumed before new ones.
    for dev in gw.devices.values() {
        let w = queue::Worker {
            device: dev.clone(),
            journal: journal.clone(),
            finished: finished.clone(),
            backoff,
        };
        tasks.push(tokio::spawn(w.run()));
    }
    let app = http::router(gw.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    if let Some(l) = grpc_listener {
        let svc = grpc::FiscalService::new(gw.clone());
        tasks.push(tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(l);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));
    }
    tracing::info!(%http_addr, ?grpc_addr, devices = gw.devices.len(), "fiscal gateway started");
    Ok(RunningGateway {
        http_addr,
        grpc_addr,
        gateway: gw,
        tasks,
    })
}
