-- Payments by QR (Payme, Click): our payment, Payme's transactions with every timestamp they
-- report (so each answer is reproducible after a restart) and Click's prepare/complete pairs.
CREATE TABLE payments (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    provider        TEXT NOT NULL,
    integration_id  UUID NOT NULL,
    amount          BIGINT NOT NULL,
    store_id        UUID NOT NULL,
    terminal_id     UUID NOT NULL,
    receipt_id      UUID,
    description     TEXT NOT NULL,
    status          TEXT NOT NULL,
    checkout_url    TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_by_receipt UUID,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX payments_tenant ON payments (tenant_id, created_at);

CREATE TABLE payme_transactions (
    integration_id  UUID NOT NULL,
    payme_id        TEXT NOT NULL,
    tenant_id       UUID NOT NULL,
    payment_id      UUID NOT NULL,
    time            BIGINT NOT NULL,
    amount          BIGINT NOT NULL,
    create_time     BIGINT NOT NULL,
    perform_time    BIGINT NOT NULL,
    cancel_time     BIGINT NOT NULL,
    state           INTEGER NOT NULL,
    reason          INTEGER,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (integration_id, payme_id)
);
CREATE INDEX payme_transactions_payment ON payme_transactions (payment_id);
CREATE INDEX payme_transactions_time ON payme_transactions (integration_id, create_time);

CREATE TABLE click_transactions (
    integration_id      UUID NOT NULL,
    click_trans_id      BIGINT NOT NULL,
    tenant_id           UUID NOT NULL,
    payment_id          UUID NOT NULL,
    click_paydoc_id     BIGINT NOT NULL,
    amount              TEXT NOT NULL,
    merchant_prepare_id BIGINT NOT NULL,
    merchant_confirm_id BIGINT,
    status              TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (integration_id, click_trans_id)
);
CREATE UNIQUE INDEX click_transactions_prepare ON click_transactions (integration_id, merchant_prepare_id);
