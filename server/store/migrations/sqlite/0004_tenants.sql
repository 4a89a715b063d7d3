-- Tenants: every project (and through it every episode, knowledge document and
-- job) belongs to one, and API keys authenticate as one. Rows from before tenants
-- belong to 'default', the tenant of a core running with auth disabled.
ALTER TABLE projects ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX projects_of_tenant ON projects (tenant, create_time DESC, id DESC);

-- A tenant's own limits, where 0 means the core's default.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    requests_per_window INTEGER NOT NULL DEFAULT 0,
    window_seconds INTEGER NOT NULL DEFAULT 0,
    max_streams INTEGER NOT NULL DEFAULT 0,
    daily_tokens INTEGER NOT NULL DEFAULT 0,
    create_time INTEGER NOT NULL
);

-- API keys, of which only the SHA-256 of the secret is kept. Scopes are comma-separated.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    create_time INTEGER NOT NULL,
    revoke_time INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_of_tenant ON api_keys (tenant, create_time);

-- Secrets every core must share, e.g. the job-token HMAC key (unless configured).
CREATE TABLE shared_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    create_time INTEGER NOT NULL
)
