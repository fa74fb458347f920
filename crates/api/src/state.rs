//! What every handler shares.

use std::sync::Arc;

use savdo_storage::Storage;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Storage>,
}
