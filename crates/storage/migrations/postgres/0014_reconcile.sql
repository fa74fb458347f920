-- Work lists of the reconciliation passes, for effects a consumer may have given up on.
--
-- Receipts whose fiscal registration is not settled (stored `pending` or `queued`), kept by
-- set_receipt_fiscal. `next_check_at` doubles as the claim: a worker moves it past its lease
-- before it asks the gateway, so several processes never check one receipt at once.
CREATE TABLE fiscal_unsettled (
    tenant_id       UUID NOT NULL,
    receipt_id      UUID NOT NULL,
    since           BIGINT NOT NULL,
    next_check_at   BIGINT NOT NULL,
    checks          BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (tenant_id, receipt_id)
);
CREATE INDEX fiscal_unsettled_due ON fiscal_unsettled(next_check_at);

-- Receipts the fiscal consumer left unsettled before this list existed (its own state carries
-- `updated_at`; a till's own fiscal data does not).
INSERT INTO fiscal_unsettled (tenant_id, receipt_id, since, next_check_at, checks)
SELECT r.tenant_id, r.id, r.created_at, r.created_at, 0
FROM receipts r
JOIN terminal_fiscal t ON t.tenant_id = r.tenant_id AND t.terminal_id = r.terminal_id
WHERE (r.doc->'fiscal'->>'status') IN ('pending', 'queued')
  AND (r.doc->'fiscal'->>'updated_at') IS NOT NULL;

-- The claim and backoff of the marking re-check per receipt; the work itself is the codes
-- still `online_check = 'pending'`.
CREATE TABLE marking_rechecks (
    tenant_id       UUID NOT NULL,
    receipt_id      UUID NOT NULL,
    next_check_at   BIGINT NOT NULL,
    checks          BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    PRIMARY KEY (tenant_id, receipt_id)
);
CREATE INDEX marking_codes_pending ON marking_codes(updated_at) WHERE online_check = 'pending';
