//! `savdo-sandbox`: simulators of every external system Savdo talks to, on one port.
//!
//! Each simulator lives in its own module and is mounted under its prefix (`/jowi-club`,
//! `/payme`, …). The common control API (`/_control/<system>/…`) injects faults, resets and seeds
//! state, and shows what a simulator received, so tests and people can reproduce outages.

pub mod common;
pub mod marketplace_common;

pub mod aslbelgisi;
pub mod atol;
pub mod click;
pub mod jowi_club;
pub mod kkmserver;
pub mod ozon;
pub mod payme;
pub mod uzum;
pub mod wildberries;

use std::net::SocketAddr;
use std::sync::Arc;

pub use common::{Call, Faults, Simulator, SystemState};

/// Every simulator the sandbox serves, in a stable order.
pub fn simulators() -> Vec<Arc<dyn Simulator>> {
    vec![
        Arc::new(jowi_club::JowiClub::default()),
        Arc::new(payme::Payme::default()),
        Arc::new(click::Click::default()),
        Arc::new(uzum::Uzum::default()),
        Arc::new(wildberries::Wildberries::default()),
        Arc::new(ozon::Ozon::default()),
        Arc::new(aslbelgisi::AslBelgisi::default()),
        Arc::new(atol::Atol::default()),
        Arc::new(kkmserver::KkmServer::default()),
    ]
}

/// The whole sandbox as one axum router.
pub fn router() -> axum::Router {
    common::build_router(simulators())
}

/// A sandbox running in the background (tests start one on port 0).
pub struct RunningSandbox {
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// Base URL such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Start the sandbox on `addr` (use port 0 for an ephemeral port).
pub async fn spawn(addr: SocketAddr) -> std::io::Result<RunningSandbox> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router();
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(RunningSandbox { addr, handle })
}
