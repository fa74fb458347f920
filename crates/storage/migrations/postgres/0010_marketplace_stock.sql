-- Marketplace stock and price pushes. Each item carries a change sequence per channel: a change
-- bumps `*_seq`, a push records the sequence it read as `*_pushed_seq`, so an item changed
-- while its push was in flight stays due (`*_seq > *_pushed_seq`). The value itself is read at
-- push time, which coalesces a burst of changes into one push of the latest value.
ALTER TABLE marketplace_items ADD COLUMN map_note TEXT;
ALTER TABLE marketplace_items ADD COLUMN stock_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE marketplace_items ADD COLUMN stock_pushed_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE marketplace_items ADD COLUMN stock_pushed_at BIGINT;
ALTER TABLE marketplace_items ADD COLUMN stock_pushed_value BIGINT;
ALTER TABLE marketplace_items ADD COLUMN stock_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE marketplace_items ADD COLUMN stock_next_at BIGINT;
ALTER TABLE marketplace_items ADD COLUMN stock_error TEXT;
ALTER TABLE marketplace_items ADD COLUMN price_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE marketplace_items ADD COLUMN price_pushed_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE marketplace_items ADD COLUMN price_pushed_at BIGINT;
ALTER TABLE marketplace_items ADD COLUMN price_pushed_value BIGINT;
ALTER TABLE marketplace_items ADD COLUMN price_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE marketplace_items ADD COLUMN price_next_at BIGINT;
ALTER TABLE marketplace_items ADD COLUMN price_error TEXT;
CREATE INDEX marketplace_items_due ON marketplace_items(tenant_id, integration_id)
    WHERE stock_seq > stock_pushed_seq OR price_seq > price_pushed_seq;

-- One pusher at a time per integration (several processes share the work): a lease, and the
-- moment the provider allows the next request after a 429 or an open circuit.
CREATE TABLE marketplace_push_state (
    tenant_id       UUID NOT NULL,
    integration_id  UUID NOT NULL,
    owner           UUID,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    blocked_until   BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, integration_id)
);
