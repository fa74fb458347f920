-- Outbound webhooks: subscriptions and deliveries.
-- The secret is stored as issued (no credential vault yet); it never leaves storage except to
-- sign deliveries and in the answers to creation and rotation.
CREATE TABLE webhooks (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants(id),
    url                 TEXT NOT NULL,
    events              JSONB NOT NULL,
    description         TEXT,
    enabled             BOOLEAN NOT NULL DEFAULT TRUE,
    secret              TEXT NOT NULL,
    prev_secret         TEXT,
    prev_secret_until   BIGINT,
    failing_since       BIGINT,
    disabled_reason     TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks(tenant_id, enabled);

CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    webhook_id      UUID NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        UUID NOT NULL,
    event_type      TEXT NOT NULL,
    payload         JSONB NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    response_code   BIGINT,
    latency_ms      BIGINT,
    response_body   TEXT,
    last_error      TEXT,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(tenant_id, webhook_id, id);
