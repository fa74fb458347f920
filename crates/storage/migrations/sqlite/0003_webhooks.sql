-- Outbound webhooks: subscriptions and deliveries.
-- The secret is stored as issued (no credential vault yet); it never leaves storage except to
-- sign deliveries and in the answers to creation and rotation.
CREATE TABLE webhooks (
    id                  BLOB PRIMARY KEY,
    tenant_id           BLOB NOT NULL REFERENCES tenants(id),
    url                 TEXT NOT NULL,
    events              TEXT NOT NULL,
    description         TEXT,
    enabled             INTEGER NOT NULL DEFAULT 1,
    secret              TEXT NOT NULL,
    prev_secret         TEXT,
    prev_secret_until   INTEGER,
    failing_since       INTEGER,
    disabled_reason     TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks(tenant_id, enabled);

CREATE TABLE webhook_deliveries (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    webhook_id      BLOB NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        BLOB NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    response_code   INTEGER,
    latency_ms      INTEGER,
    response_body   TEXT,
    last_error      TEXT,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(tenant_id, webhook_id, id);
