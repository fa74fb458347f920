-- Relay publishing order, consumer positions and the consumer inbox.
ALTER TABLE outbox ADD COLUMN pub_seq BIGINT;
CREATE UNIQUE INDEX outbox_pub_seq ON outbox(pub_seq);
CREATE INDEX outbox_tenant_pub ON outbox(tenant_id, pub_seq);

CREATE TABLE consumer_positions (
    consumer    TEXT PRIMARY KEY,
    position    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE consumer_inbox (
    consumer        TEXT NOT NULL,
    event_id        UUID NOT NULL,
    tenant_id       UUID NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at BIGINT,
    event           JSONB,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX consumer_inbox_due ON consumer_inbox(consumer, status, next_attempt_at);
CREATE SEQUENCE outbox_pub_seq_gen;
