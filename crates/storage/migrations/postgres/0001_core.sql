-- Savdo core schema (PostgreSQL). Ids are UUIDv7; times are Unix microseconds (shared with SQLite);
-- money is integer tiyin; quantities are integer thousandths.

CREATE TABLE tenants (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    settings    JSONB NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL
);

CREATE TABLE tokens (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    store_id    UUID,
    token_hash  BYTEA NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tokens_tenant ON tokens(tenant_id);

CREATE TABLE stores (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    address         TEXT,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    next_receipt_no BIGINT NOT NULL DEFAULT 1,
    created_at      BIGINT NOT NULL
);
CREATE INDEX stores_tenant ON stores(tenant_id, id);

CREATE TABLE terminals (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants(id),
    store_id        UUID NOT NULL REFERENCES stores(id),
    name            TEXT NOT NULL,
    open_shift_id   UUID,
    created_at      BIGINT NOT NULL
);
CREATE INDEX terminals_tenant ON terminals(tenant_id, id);

CREATE TABLE shifts (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    terminal_id     UUID NOT NULL REFERENCES terminals(id),
    opened_at       BIGINT NOT NULL,
    closed_at       BIGINT,
    opened_by       UUID,
    closed_by       UUID
);
CREATE INDEX shifts_terminal ON shifts(tenant_id, terminal_id);

CREATE TABLE products (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants(id),
    sku             TEXT NOT NULL,
    name            TEXT NOT NULL,
    barcodes        JSONB NOT NULL DEFAULT '[]',
    price           BIGINT NOT NULL,
    vat_percent     BIGINT NOT NULL,
    mxik            TEXT,
    package_code    TEXT,
    unit            BIGINT NOT NULL DEFAULT 1,
    marked          BOOLEAN NOT NULL DEFAULT FALSE,
    active          BOOLEAN NOT NULL DEFAULT TRUE,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, sku)
);
CREATE INDEX products_tenant ON products(tenant_id, id);

CREATE TABLE product_barcodes (
    tenant_id   UUID NOT NULL,
    barcode     TEXT NOT NULL,
    product_id  UUID NOT NULL REFERENCES products(id),
    PRIMARY KEY (tenant_id, barcode)
);

CREATE TABLE customers (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants(id),
    name            TEXT NOT NULL,
    phone           TEXT,
    loyalty_card    TEXT,
    external_ids    JSONB NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX customers_tenant ON customers(tenant_id, id);
CREATE INDEX customers_phone ON customers(tenant_id, phone);
CREATE INDEX customers_card ON customers(tenant_id, loyalty_card);

CREATE TABLE stock_levels (
    tenant_id   UUID NOT NULL,
    store_id    UUID NOT NULL,
    product_id  UUID NOT NULL,
    on_hand     BIGINT NOT NULL DEFAULT 0,
    reserved    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, store_id, product_id)
);

CREATE TABLE stock_movements (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    store_id    UUID NOT NULL,
    product_id  UUID NOT NULL,
    doc_type    TEXT NOT NULL,
    doc_id      UUID NOT NULL,
    delta       BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX stock_movements_item ON stock_movements(tenant_id, store_id, product_id);

CREATE TABLE stock_documents (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    kind        TEXT NOT NULL,
    store_id    UUID NOT NULL,
    to_store_id UUID,
    note        TEXT,
    lines       JSONB NOT NULL,
    created_by  UUID,
    created_at  BIGINT NOT NULL
);
CREATE INDEX stock_documents_tenant ON stock_documents(tenant_id, id);

CREATE TABLE receipts (
    tenant_id       UUID NOT NULL,
    id              UUID NOT NULL,
    number          BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    refund_of       UUID,
    store_id        UUID NOT NULL,
    terminal_id     UUID NOT NULL,
    total           BIGINT NOT NULL,
    request_hash    TEXT NOT NULL,
    doc             JSONB NOT NULL,
    sold_at         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, store_id, number)
);
CREATE INDEX receipts_created ON receipts(tenant_id, created_at);
CREATE INDEX receipts_refund_of ON receipts(tenant_id, refund_of);

CREATE TABLE receipt_lines (
    tenant_id   UUID NOT NULL,
    receipt_id  UUID NOT NULL,
    line_no     BIGINT NOT NULL,
    product_id  UUID NOT NULL,
    qty         BIGINT NOT NULL,
    amount      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, receipt_id, line_no)
);

CREATE TABLE invoices (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    number          BIGINT NOT NULL,
    store_id        UUID NOT NULL,
    customer_id     UUID,
    channel         TEXT,
    external_ref    TEXT,
    status          TEXT NOT NULL,
    lines           JSONB NOT NULL,
    total           BIGINT NOT NULL,
    note            TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, external_ref)
);
CREATE INDEX invoices_tenant ON invoices(tenant_id, id);

CREATE TABLE counters (
    tenant_id   UUID NOT NULL,
    name        TEXT NOT NULL,
    value       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE audit_log (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL,
    token_id    UUID,
    action      TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT,
    details     JSONB NOT NULL DEFAULT '{}',
    at          BIGINT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

CREATE TABLE idempotency_keys (
    tenant_id       UUID NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          BIGINT,
    response        BYTEA,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE outbox (
    seq         BIGSERIAL PRIMARY KEY,
    id          UUID NOT NULL UNIQUE,
    tenant_id   UUID NOT NULL,
    type        TEXT NOT NULL,
    data        JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_tenant ON outbox(tenant_id, seq);
CREATE INDEX outbox_unpublished ON outbox(published_at, seq);
