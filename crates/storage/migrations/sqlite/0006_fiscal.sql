-- Fiscal registration: a till's fiscal device (a savdo-fiscal gateway and a device on it).
-- A receipt's fiscal state is kept in its document (receipts.doc -> fiscal).
CREATE TABLE terminal_fiscal (
    tenant_id       BLOB NOT NULL,
    terminal_id     BLOB NOT NULL REFERENCES terminals(id),
    gateway_url     TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, terminal_id)
);
