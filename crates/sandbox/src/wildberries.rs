//! Simulator of wildberries. Not yet implemented beyond the common control API.

use std::sync::Arc;

use axum::Router;
use serde_json::{Value, json};

use crate::common::{Simulator, SystemState};

#[derive(Default)]
pub struct Wildberries {
    state: SystemState,
}

impl Simulator for Wildberries {
    fn name(&self) -> &'static str {
        "wildberries"
    }
    fn router(self: Arc<Self>) -> Router {
        Router::new()
    }
    fn reset(&self) {}
    fn seed(&self, _data: Value) -> Result<Value, String> {
        Ok(json!({}))
    }
    fn state(&self) -> &SystemState {
        &self.state
    }
}
