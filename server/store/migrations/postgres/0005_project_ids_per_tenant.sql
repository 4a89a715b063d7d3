-- Project ids are unique per tenant, not across tenants: a project's key is
-- (tenant, id), and so is the project an episode belongs to. Tenants choosing
-- the same id never meet, and ALREADY_EXISTS no longer tells one tenant that
-- another holds an id. Every row keeps its tenant; every episode takes its
-- project's.
ALTER TABLE episodes DROP CONSTRAINT episodes_project_id_fkey;
ALTER TABLE episodes DROP CONSTRAINT episodes_pkey;
ALTER TABLE episodes ADD COLUMN tenant TEXT COLLATE "C" NOT NULL DEFAULT 'default';
UPDATE episodes SET tenant = projects.tenant FROM projects WHERE projects.id = episodes.project_id;
ALTER TABLE episodes ALTER COLUMN tenant DROP DEFAULT;

ALTER TABLE projects DROP CONSTRAINT projects_pkey;
ALTER TABLE projects ADD PRIMARY KEY (tenant, id);
ALTER TABLE episodes ADD PRIMARY KEY (tenant, project_id, number);
ALTER TABLE episodes ADD FOREIGN KEY (tenant, project_id)
    REFERENCES projects (tenant, id) ON DELETE CASCADE;

-- A kept idempotency key names a project of its own tenant. Keys are stored as
-- `{tenant}/{request_id}` (bare for the default tenant) and request ids never
-- hold a '/', so the tenant is read back from the key.
ALTER TABLE project_request_ids ADD COLUMN tenant TEXT COLLATE "C" NOT NULL DEFAULT 'default';
UPDATE project_request_ids SET tenant = split_part(request_id, '/', 1)
WHERE strpos(request_id, '/') > 0;
