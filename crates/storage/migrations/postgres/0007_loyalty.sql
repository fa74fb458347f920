-- Loyalty (JOWi Club): quotes a till may apply to a receipt, and the journal of every call to
-- the provider and its outcome. Points live with the provider only.
CREATE TABLE loyalty_quotes (
    tenant_id             UUID NOT NULL,
    id                    UUID NOT NULL,
    store_id              UUID NOT NULL,
    customer_id           UUID,
    external_customer_id  TEXT NOT NULL,
    lines                 TEXT NOT NULL,
    discounts             TEXT NOT NULL,
    points                TEXT NOT NULL,
    expires_at            BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE loyalty_journal (
    tenant_id     UUID NOT NULL,
    id            UUID NOT NULL,
    kind          TEXT NOT NULL,
    receipt_id    UUID,
    customer_ref  TEXT,
    request       TEXT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    result        TEXT NOT NULL,
    at            BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX loyalty_journal_receipt ON loyalty_journal(tenant_id, receipt_id);
