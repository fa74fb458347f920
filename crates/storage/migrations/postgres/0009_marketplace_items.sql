-- Marketplace catalogues as last pulled, one row per item on the marketplace (Uzum skuId,
-- Wildberries chrtId, Ozon offer_id), and the link to our product (NULL while unmapped).
CREATE TABLE marketplace_items (
    tenant_id       UUID NOT NULL,
    integration_id  UUID NOT NULL,
    external_id     TEXT NOT NULL,
    product_ext_id  TEXT,
    title           TEXT NOT NULL,
    barcodes        TEXT NOT NULL,
    price           BIGINT,
    remote_stock    BIGINT,
    product_id      UUID,
    mapped_by       TEXT,
    seen_at         BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, integration_id, external_id)
);
CREATE INDEX marketplace_items_product ON marketplace_items(tenant_id, product_id);
