-- Events are read by tenant through `outbox_pub`; the index on the outbox itself only cost the
-- writer an index update per event.
DROP INDEX IF EXISTS outbox_tenant;
