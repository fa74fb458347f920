-- Payments by QR (Payme, Click): our payment, Payme's transactions with every timestamp they
-- report (so each answer is reproducible after a restart) and Click's prepare/complete pairs.
CREATE TABLE payments (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    provider        TEXT NOT NULL,
    integration_id  BLOB NOT NULL,
    amount          INTEGER NOT NULL,
    store_id        BLOB NOT NULL,
    terminal_id     BLOB NOT NULL,
    receipt_id      BLOB,
    description     TEXT NOT NULL,
    status          TEXT NOT NULL,
    checkout_url    TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_by_receipt BLOB,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX payments_tenant ON payments (tenant_id, created_at);

CREATE TABLE payme_transactions (
    integration_id  BLOB NOT NULL,
    payme_id        TEXT NOT NULL,
    tenant_id       BLOB NOT NULL,
    payment_id      BLOB NOT NULL,
    time            INTEGER NOT NULL,
    amount          INTEGER NOT NULL,
    create_time     INTEGER NOT NULL,
    perform_time    INTEGER NOT NULL,
    cancel_time     INTEGER NOT NULL,
    state           INTEGER NOT NULL,
    reason          INTEGER,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (integration_id, payme_id)
);
CREATE INDEX payme_transactions_payment ON payme_transactions (payment_id);
CREATE INDEX payme_transactions_time ON payme_transactions (integration_id, create_time);

CREATE TABLE click_transactions (
    integration_id      BLOB NOT NULL,
    click_trans_id      INTEGER NOT NULL,
    tenant_id           BLOB NOT NULL,
    payment_id          BLOB NOT NULL,
    click_paydoc_id     INTEGER NOT NULL,
    amount              TEXT NOT NULL,
    merchant_prepare_id INTEGER NOT NULL,
    merchant_confirm_id INTEGER,
    status              TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (integration_id, click_trans_id)
);
CREATE UNIQUE INDEX click_transactions_prepare ON click_transactions (integration_id, merchant_prepare_id);
