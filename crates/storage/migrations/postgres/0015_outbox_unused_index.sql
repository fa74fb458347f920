-- Nothing reads the outbox by publishing time; the index only cost the relay an index update
-- for every row it marked.
DROP INDEX IF EXISTS outbox_unpublished;
