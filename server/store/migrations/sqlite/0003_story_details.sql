-- What a project says about its story (audience, tone, target length) and its
-- status, and what an episode records about how it was written: speaking
-- characters, provider usage, the prompts sent, the quality report, its last
-- change. Messages are kept as proto3 JSON text.
ALTER TABLE projects ADD COLUMN audience TEXT NOT NULL DEFAULT '';
ALTER TABLE projects ADD COLUMN tone TEXT NOT NULL DEFAULT '';
ALTER TABLE projects ADD COLUMN target_episode_minutes INTEGER NOT NULL DEFAULT 0;
-- 1 is PROJECT_STATUS_ACTIVE.
ALTER TABLE projects ADD COLUMN status INTEGER NOT NULL DEFAULT 1;

ALTER TABLE episodes ADD COLUMN character_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE episodes ADD COLUMN usage_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE episodes ADD COLUMN prompt_snapshot_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE episodes ADD COLUMN quality_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE episodes ADD COLUMN update_time INTEGER NOT NULL DEFAULT 0;
UPDATE episodes SET update_time = create_time, character_count = json_array_length(cast_json);
