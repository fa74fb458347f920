//! What every handler shares.

use std::sync::Arc;

use savdo_domain::clock::{Clock, SystemClock};
use savdo_storage::Storage;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Storage>,
    pub clock: Arc<dyn Clock>,
    /// Allow webhook URLs that resolve to loopback/private addresses (`SAVDO_WEBHOOKS_ALLOW_PRIVATE=1`).
    pub webhooks_allow_private: bool,
}

impl AppState {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        AppState {
            store,
            clock: Arc::new(SystemClock),
            webhooks_allow_private: false,
        }
    }
}
