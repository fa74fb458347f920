-- The relay numbers what it published in a narrow table of its own instead of locking and
-- rewriting every outbox row (its JSON document and an entry in each of four indexes) while the
-- tills commit beside it. Outbox rows do not commit in `seq` order here, so each row records
-- the transaction that wrote it: every transaction older than the oldest one still running has
-- finished, and once all of their rows are numbered the relay raises `outbox_relay.floor` past
-- them and never looks at them again. (A transaction id as a plain number: it is compared with
-- bound values, which the planner can then see.)
ALTER TABLE outbox ADD COLUMN txid BIGINT;
UPDATE outbox SET txid = pg_current_xact_id()::text::bigint WHERE pub_seq IS NULL;
ALTER TABLE outbox ALTER COLUMN txid SET DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX outbox_txid ON outbox(txid);

CREATE TABLE outbox_pub (
    pub_seq      BIGINT PRIMARY KEY,
    seq          BIGINT NOT NULL UNIQUE,
    tenant_id    UUID NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE INDEX outbox_pub_tenant ON outbox_pub(tenant_id, pub_seq);
INSERT INTO outbox_pub (pub_seq, seq, tenant_id, published_at)
    SELECT pub_seq, seq, tenant_id, COALESCE(published_at, created_at) FROM outbox WHERE pub_seq IS NOT NULL;

CREATE TABLE outbox_relay (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    floor BIGINT NOT NULL
);
INSERT INTO outbox_relay (id, floor) VALUES (1, 0);

-- Events are read by tenant through `outbox_pub` now; nothing reads the outbox by tenant.
DROP INDEX IF EXISTS outbox_pub_seq;
DROP INDEX IF EXISTS outbox_tenant_pub;
DROP INDEX IF EXISTS outbox_tenant;
ALTER TABLE outbox DROP COLUMN pub_seq, DROP COLUMN published_at;
DROP SEQUENCE IF EXISTS outbox_pub_seq_gen;
