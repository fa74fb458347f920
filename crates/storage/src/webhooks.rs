//! What outbound webhooks need from storage (subscriptions and deliveries).

use async_trait::async_trait;

#[async_trait]
pub trait WebhookStore: Send + Sync {}
