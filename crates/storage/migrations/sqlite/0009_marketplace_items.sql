-- Marketplace catalogues as last pulled, one row per item on the marketplace (Uzum skuId,
-- Wildberries chrtId, Ozon offer_id), and the link to our product (NULL while unmapped).
CREATE TABLE marketplace_items (
    tenant_id       BLOB NOT NULL,
    integration_id  BLOB NOT NULL,
    external_id     TEXT NOT NULL,
    product_ext_id  TEXT,
    title           TEXT NOT NULL,
    barcodes        TEXT NOT NULL,
    price           INTEGER,
    remote_stock    INTEGER,
    product_id      BLOB,
    mapped_by       TEXT,
    seen_at         INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, integration_id, external_id)
);
CREATE INDEX marketplace_items_product ON marketplace_items(tenant_id, product_id);
