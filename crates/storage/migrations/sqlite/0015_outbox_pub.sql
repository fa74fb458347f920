-- The relay numbers what it published in a narrow table of its own instead of rewriting every
-- outbox row (its whole JSON document and three indexes) on the one writer connection. A row
-- is published when it has a number here; numbers are given in outbox order (one writer: rows
-- commit in `seq` order), so the published rows are always the first ones of the outbox.
CREATE TABLE outbox_pub (
    pub_seq      INTEGER PRIMARY KEY,
    seq          INTEGER NOT NULL UNIQUE,
    tenant_id    BLOB NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE INDEX outbox_pub_tenant ON outbox_pub(tenant_id, pub_seq);
INSERT INTO outbox_pub (pub_seq, seq, tenant_id, published_at)
    SELECT pub_seq, seq, tenant_id, COALESCE(published_at, created_at) FROM outbox WHERE pub_seq IS NOT NULL;
DROP INDEX IF EXISTS outbox_unpublished;
DROP INDEX IF EXISTS outbox_pub_seq;
DROP INDEX IF EXISTS outbox_tenant_pub;
ALTER TABLE outbox DROP COLUMN pub_seq;
ALTER TABLE outbox DROP COLUMN published_at;
