-- The integration hub: integrations with vault-sealed credentials, the exchange log, sync jobs
-- and the inbox of inbound hook deliveries. `credentials` holds only vault ciphertext.
CREATE TABLE integrations (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL REFERENCES tenants(id),
    type            TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    settings        TEXT NOT NULL,
    credentials     TEXT NOT NULL,
    health          TEXT,
    health_at       INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX integrations_tenant ON integrations(tenant_id, id);

CREATE TABLE integration_log (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    integration_id  BLOB NOT NULL,
    operation       TEXT,
    started_at      INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    method          TEXT NOT NULL,
    url             TEXT NOT NULL,
    status          INTEGER,
    latency_ms      INTEGER NOT NULL,
    error           TEXT,
    request_headers TEXT NOT NULL,
    request_body    TEXT,
    response_body   TEXT
);
CREATE INDEX integration_log_by ON integration_log(tenant_id, integration_id, id);
CREATE INDEX integration_log_prune ON integration_log(integration_id, id);

CREATE TABLE integration_jobs (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    integration_id  BLOB NOT NULL,
    what            TEXT NOT NULL,
    status          TEXT NOT NULL,
    done            INTEGER NOT NULL DEFAULT 0,
    total           INTEGER,
    errors          TEXT NOT NULL,
    cursor          TEXT,
    lease_owner     BLOB,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX integration_jobs_by ON integration_jobs(tenant_id, integration_id, id);
CREATE INDEX integration_jobs_due ON integration_jobs(status, lease_until);

CREATE TABLE hook_inbox (
    id              BLOB PRIMARY KEY,
    tenant_id       BLOB NOT NULL,
    integration_id  BLOB NOT NULL,
    delivery_id     TEXT NOT NULL,
    body            BLOB NOT NULL,
    headers         TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    updated_at      INTEGER NOT NULL,
    UNIQUE (integration_id, delivery_id)
);
CREATE INDEX hook_inbox_by ON hook_inbox(tenant_id, integration_id, id);
