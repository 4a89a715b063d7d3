-- Projects and their episodes. Times are microseconds since the Unix epoch.
-- Ids compare byte-wise (COLLATE "C"), as in SQLite, so keyset pages agree.
CREATE TABLE projects (
    id TEXT COLLATE "C" PRIMARY KEY,
    title TEXT NOT NULL,
    type INTEGER NOT NULL,
    logline TEXT NOT NULL,
    description TEXT NOT NULL,
    language TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    -- Handed out and incremented in one UPDATE whose row lock lasts until the
    -- episode is saved, so two cores never hand out one number.
    next_episode_number INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX projects_newest_first ON projects (create_time DESC, id DESC);

CREATE TABLE episodes (
    project_id TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    title TEXT NOT NULL,
    script TEXT NOT NULL,
    outline TEXT NOT NULL,
    generation TEXT NOT NULL,
    scene_count INTEGER NOT NULL,
    word_count INTEGER NOT NULL,
    cast_json TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (project_id, number)
);
