-- Savdo core schema (SQLite). Ids are UUIDv7 as 16-byte BLOBs; times are Unix microseconds;
-- money is integer tiyin; quantities are integer thousandths.

CREATE TABLE tenants (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);

CREATE TABLE tokens (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    store_id    BLOB,
    token_hash  BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tokens_tenant ON tokens(tenant_id);

CREATE TABLE stores (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    address         TEXT,
    active          INTEGER NOT NULL DEFAULT 1,
    next_receipt_no INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL
);
CREATE INDEX stores_tenant ON stores(tenant_id, id);

CREATE TABLE terminals (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants(id),
    store_id        BLOB NOT NULL REFERENCES stores(id),
    name            TEXT NOT NULL,
    open_shift_id   BLOB,
    created_at      INTEGER NOT NULL
);
CREATE INDEX terminals_tenant ON terminals(tenant_id, id);

CREATE TABLE shifts (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    terminal_id     BLOB NOT NULL REFERENCES terminals(id),
    opened_at       INTEGER NOT NULL,
    closed_at       INTEGER,
    opened_by       BLOB,
    closed_by       BLOB
);
CREATE INDEX shifts_terminal ON shifts(tenant_id, terminal_id);

CREATE TABLE products (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants(id),
    sku             TEXT NOT NULL,
    name            TEXT NOT NULL,
    barcodes        TEXT NOT NULL DEFAULT '[]',
    price           INTEGER NOT NULL,
    vat_percent     INTEGER NOT NULL,
    mxik            TEXT,
    package_code    TEXT,
    unit            INTEGER NOT NULL DEFAULT 1,
    marked          INTEGER NOT NULL DEFAULT 0,
    active          INTEGER NOT NULL DEFAULT 1,
    deleted         INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, sku)
);
CREATE INDEX products_tenant ON products(tenant_id, id);

CREATE TABLE product_barcodes (
    tenant_id   BLOB NOT NULL,
    barcode     TEXT NOT NULL,
    product_id  BLOB NOT NULL REFERENCES products(id),
    PRIMARY KEY (tenant_id, barcode)
);

CREATE TABLE customers (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    phone           TEXT,
    loyalty_card    TEXT,
    external_ids    TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX customers_tenant ON customers(tenant_id, id);
CREATE INDEX customers_phone ON customers(tenant_id, phone);
CREATE INDEX customers_card ON customers(tenant_id, loyalty_card);

CREATE TABLE stock_levels (
    tenant_id   BLOB NOT NULL,
    store_id    BLOB NOT NULL,
    product_id  BLOB NOT NULL,
    on_hand     INTEGER NOT NULL DEFAULT 0,
    reserved    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, store_id, product_id)
);

CREATE TABLE stock_movements (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL,
    store_id    BLOB NOT NULL,
    product_id  BLOB NOT NULL,
    doc_type    TEXT NOT NULL,
    doc_id      BLOB NOT NULL,
    delta       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX stock_movements_item ON stock_movements(tenant_id, store_id, product_id);

CREATE TABLE stock_documents (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL,
    kind        TEXT NOT NULL,
    store_id    BLOB NOT NULL,
    to_store_id BLOB,
    note        TEXT,
    lines       TEXT NOT NULL,
    created_by  BLOB,
    created_at  INTEGER NOT NULL
);
CREATE INDEX stock_documents_tenant ON stock_documents(tenant_id, id);

CREATE TABLE receipts (
    tenant_id       BLOB NOT NULL,
    id              BLOB NOT NULL,
    number          INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    refund_of       BLOB,
    store_id        BLOB NOT NULL,
    terminal_id     BLOB NOT NULL,
    total           INTEGER NOT NULL,
    request_hash    TEXT NOT NULL,
    doc             TEXT NOT NULL,
    sold_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, store_id, number)
);
CREATE INDEX receipts_created ON receipts(tenant_id, created_at);
CREATE INDEX receipts_refund_of ON receipts(tenant_id, refund_of);

CREATE TABLE receipt_lines (
    tenant_id   BLOB NOT NULL,
    receipt_id  BLOB NOT NULL,
    line_no     INTEGER NOT NULL,
    product_id  BLOB NOT NULL,
    qty         INTEGER NOT NULL,
    amount      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, receipt_id, line_no)
);

CREATE TABLE invoices (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    number          INTEGER NOT NULL,
    store_id        BLOB NOT NULL,
    customer_id     BLOB,
    channel         TEXT,
    external_ref    TEXT,
    status          TEXT NOT NULL,
    lines           TEXT NOT NULL,
    total           INTEGER NOT NULL,
    note            TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (tenant_id, external_ref)
);
CREATE INDEX invoices_tenant ON invoices(tenant_id, id);

CREATE TABLE counters (
    tenant_id   BLOB NOT NULL,
    name        TEXT NOT NULL,
    value       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE audit_log (
    id          BLOB PRIMARY KEY,
    tenant_id   BLOB NOT NULL,
    token_id    BLOB,
    action      TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT,
    details     TEXT NOT NULL DEFAULT '{}',
    at          INTEGER NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

CREATE TABLE idempotency_keys (
    tenant_id       BLOB NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          INTEGER,
    response        BLOB,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL UNIQUE,
    tenant_id   BLOB NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    published_at INTEGER
);
CREATE INDEX outbox_tenant ON outbox(tenant_id, seq);
CREATE INDEX outbox_unpublished ON outbox(published_at, seq);
