-- Fiscal registration: a till's fiscal device (a savdo-fiscal gateway and a device on it).
-- A receipt's fiscal state is kept in its document (receipts.doc -> fiscal).
CREATE TABLE terminal_fiscal (
    tenant_id       UUID NOT NULL,
    terminal_id     UUID NOT NULL REFERENCES terminals(id),
    gateway_url     TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, terminal_id)
);
