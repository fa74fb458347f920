-- Marketplace orders as imported: one row per order (Uzum order id, Wildberries assembly task,
-- Ozon posting number) and integration, in state imported | needs_attention | cancelled, with
-- the outgoing invoice it became (external_ref `<type>:<order id>`).
CREATE TABLE marketplace_orders (
    tenant_id         UUID NOT NULL,
    id                UUID NOT NULL,
    integration_id    UUID NOT NULL,
    kind              TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    state             TEXT NOT NULL,
    raw_status        TEXT NOT NULL,
    reason            TEXT,
    invoice_id        UUID,
    total             BIGINT NOT NULL,
    payload           JSONB NOT NULL,
    attempts          BIGINT NOT NULL,
    confirmed_at      BIGINT,
    confirm_error     TEXT,
    confirm_attempts  BIGINT NOT NULL DEFAULT 0,
    cancelled_at      BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, integration_id, external_id)
);
CREATE INDEX marketplace_orders_state ON marketplace_orders(tenant_id, integration_id, state, id);

-- The order poller's place per integration (cursors survive restarts) and its lease, so one
-- process at a time polls an integration.
CREATE TABLE marketplace_order_polls (
    tenant_id       UUID NOT NULL,
    integration_id  UUID NOT NULL,
    new_since       BIGINT,
    cancel_since    BIGINT,
    next_poll_at    BIGINT NOT NULL,
    lease_owner     UUID,
    lease_until     BIGINT,
    last_polled_at  BIGINT,
    last_error      TEXT,
    PRIMARY KEY (tenant_id, integration_id)
);
CREATE INDEX marketplace_order_polls_due ON marketplace_order_polls(next_poll_at);
