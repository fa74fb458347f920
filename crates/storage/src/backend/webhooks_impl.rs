// Webhook storage, shared by both backends (included after shared.rs).

#[async_trait]
impl crate::webhooks::WebhookStore for Backend {}
