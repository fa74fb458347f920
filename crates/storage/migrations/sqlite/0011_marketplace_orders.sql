-- Marketplace orders as imported: one row per order (Uzum order id, Wildberries assembly task,
-- Ozon posting number) and integration, in state imported | needs_attention | cancelled, with
-- the outgoing invoice it became (external_ref `<type>:<order id>`).
CREATE TABLE marketplace_orders (
    tenant_id         BLOB NOT NULL,
    id                BLOB NOT NULL,
    integration_id    BLOB NOT NULL,
    kind              TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    state             TEXT NOT NULL,
    raw_status        TEXT NOT NULL,
    reason            TEXT,
    invoice_id        BLOB,
    total             INTEGER NOT NULL,
    payload           TEXT NOT NULL,
    attempts          INTEGER NOT NULL,
    confirmed_at      INTEGER,
    confirm_error     TEXT,
    confirm_attempts  INTEGER NOT NULL DEFAULT 0,
    cancelled_at      INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, integration_id, external_id)
);
CREATE INDEX marketplace_orders_state ON marketplace_orders(tenant_id, integration_id, state, id);

-- The order poller's place per integration (cursors survive restarts) and its lease, so one
-- process at a time polls an integration.
CREATE TABLE marketplace_order_polls (
    tenant_id       BLOB NOT NULL,
    integration_id  BLOB NOT NULL,
    new_since       INTEGER,
    cancel_since    INTEGER,
    next_poll_at    INTEGER NOT NULL,
    lease_owner     BLOB,
    lease_until     INTEGER,
    last_polled_at  INTEGER,
    last_error      TEXT,
    PRIMARY KEY (tenant_id, integration_id)
);
CREATE INDEX marketplace_order_polls_due ON marketplace_order_polls(next_poll_at);
