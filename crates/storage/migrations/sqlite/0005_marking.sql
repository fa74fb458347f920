-- The tenant's registry of marking codes (Asl Belgisi), keyed by label (GTIN + serial): the
-- key is what stops two tills from selling the same unit.
-- state: sold | returned. online_check: none | ok | pending | failed.
CREATE TABLE marking_codes (
    tenant_id           BLOB NOT NULL,
    label               TEXT NOT NULL,
    gtin                TEXT NOT NULL,
    code                TEXT NOT NULL,
    product_id          BLOB NOT NULL,
    state               TEXT NOT NULL,
    sale_receipt_id     BLOB NOT NULL,
    sale_line_no        INTEGER NOT NULL,
    refund_receipt_id   BLOB,
    online_check        TEXT NOT NULL,
    check_note          TEXT,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, label)
);
CREATE INDEX marking_codes_sale ON marking_codes(tenant_id, sale_receipt_id);
