-- The integration hub: integrations with vault-sealed credentials, the exchange log, sync jobs
-- and the inbox of inbound hook deliveries. `credentials` holds only vault ciphertext.
CREATE TABLE integrations (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL REFERENCES tenants(id),
    type            TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    settings        JSONB NOT NULL,
    credentials     TEXT NOT NULL,
    health          JSONB,
    health_at       BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX integrations_tenant ON integrations(tenant_id, id);

CREATE TABLE integration_log (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    integration_id  UUID NOT NULL,
    operation       TEXT,
    started_at      BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    method          TEXT NOT NULL,
    url             TEXT NOT NULL,
    status          BIGINT,
    latency_ms      BIGINT NOT NULL,
    error           TEXT,
    request_headers JSONB NOT NULL,
    request_body    TEXT,
    response_body   TEXT
);
CREATE INDEX integration_log_by ON integration_log(tenant_id, integration_id, id);
CREATE INDEX integration_log_prune ON integration_log(integration_id, id);

CREATE TABLE integration_jobs (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    integration_id  UUID NOT NULL,
    what            TEXT NOT NULL,
    status          TEXT NOT NULL,
    done            BIGINT NOT NULL DEFAULT 0,
    total           BIGINT,
    errors          JSONB NOT NULL,
    cursor          JSONB,
    lease_owner     UUID,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX integration_jobs_by ON integration_jobs(tenant_id, integration_id, id);
CREATE INDEX integration_jobs_due ON integration_jobs(status, lease_until);

CREATE TABLE hook_inbox (
    id              UUID PRIMARY KEY,
    tenant_id       UUID NOT NULL,
    integration_id  UUID NOT NULL,
    delivery_id     TEXT NOT NULL,
    body            BYTEA NOT NULL,
    headers         JSONB NOT NULL,
    received_at     BIGINT NOT NULL,
    status          TEXT NOT NULL,
    result          JSONB,
    updated_at      BIGINT NOT NULL,
    UNIQUE (integration_id, delivery_id)
);
CREATE INDEX hook_inbox_by ON hook_inbox(tenant_id, integration_id, id);
