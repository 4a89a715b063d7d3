-- Project ids are unique per tenant, not across tenants: a project's key is
-- (tenant, id), and so is the project an episode belongs to. Tenants choosing
-- the same id never meet, and ALREADY_EXISTS no longer tells one tenant that
-- another holds an id. SQLite cannot change a primary key in place, so both
-- tables are rebuilt: every row keeps its tenant, every episode takes its
-- project's. Children are copied and dropped before their parents, so the
-- ON DELETE CASCADE of the old tables never fires.
CREATE TABLE projects_v5 (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    type INTEGER NOT NULL,
    logline TEXT NOT NULL,
    description TEXT NOT NULL,
    language TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    next_episode_number INTEGER NOT NULL DEFAULT 1,
    audience TEXT NOT NULL DEFAULT '',
    tone TEXT NOT NULL DEFAULT '',
    target_episode_minutes INTEGER NOT NULL DEFAULT 0,
    status INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant, id)
);
INSERT INTO projects_v5 (
    tenant, id, title, type, logline, description, language, create_time, update_time,
    next_episode_number, audience, tone, target_episode_minutes, status
)
SELECT
    tenant, id, title, type, logline, description, language, create_time, update_time,
    next_episode_number, audience, tone, target_episode_minutes, status
FROM projects;

CREATE TABLE episodes_v5 (
    tenant TEXT NOT NULL,
    project_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    title TEXT NOT NULL,
    script TEXT NOT NULL,
    outline TEXT NOT NULL,
    generation TEXT NOT NULL,
    scene_count INTEGER NOT NULL,
    word_count INTEGER NOT NULL,
    cast_json TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    character_count INTEGER NOT NULL DEFAULT 0,
    usage_json TEXT NOT NULL DEFAULT '[]',
    prompt_snapshot_json TEXT NOT NULL DEFAULT '{}',
    quality_json TEXT NOT NULL DEFAULT '{}',
    update_time INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, project_id, number),
    FOREIGN KEY (tenant, project_id) REFERENCES projects_v5 (tenant, id) ON DELETE CASCADE
);
INSERT INTO episodes_v5 (
    tenant, project_id, number, title, script, outline, generation, scene_count, word_count,
    cast_json, create_time, character_count, usage_json, prompt_snapshot_json, quality_json,
    update_time
)
SELECT
    projects.tenant, episodes.project_id, episodes.number, episodes.title, episodes.script,
    episodes.outline, episodes.generation, episodes.scene_count, episodes.word_count,
    episodes.cast_json, episodes.create_time, episodes.character_count, episodes.usage_json,
    episodes.prompt_snapshot_json, episodes.quality_json, episodes.update_time
FROM episodes JOIN projects ON projects.id = episodes.project_id;

DROP TABLE episodes;
DROP TABLE projects;
-- Renaming also renames the reference episodes_v5 holds.
ALTER TABLE projects_v5 RENAME TO projects;
ALTER TABLE episodes_v5 RENAME TO episodes;
CREATE INDEX projects_newest_first ON projects (create_time DESC, id DESC);
CREATE INDEX projects_of_tenant ON projects (tenant, create_time DESC, id DESC);

-- A kept idempotency key names a project of its own tenant. Keys are stored as
-- `{tenant}/{request_id}` (bare for the default tenant) and request ids never
-- hold a '/', so the tenant is read back from the key.
ALTER TABLE project_request_ids ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
UPDATE project_request_ids SET tenant = substr(request_id, 1, instr(request_id, '/') - 1)
WHERE instr(request_id, '/') > 0
