-- Projects and their episodes. Times are microseconds since the Unix epoch.
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    type INTEGER NOT NULL,
    logline TEXT NOT NULL,
    description TEXT NOT NULL,
    language TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    -- Handed out and incremented in one statement, so numbers are never reused.
    next_episode_number INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX projects_newest_first ON projects (create_time DESC, id DESC);

CREATE TABLE episodes (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    title TEXT NOT NULL,
    script TEXT NOT NULL,
    outline TEXT NOT NULL,
    generation TEXT NOT NULL,
    scene_count INTEGER NOT NULL,
    word_count INTEGER NOT NULL,
    cast_json TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (project_id, number)
);
