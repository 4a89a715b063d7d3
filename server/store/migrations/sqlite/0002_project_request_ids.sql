-- Idempotency keys of CreateProject: a retried request with the same key and the
-- same content gets the project the first one created. Kept 24 hours. No foreign
-- key: a key outlives the deletion of its project, so a late retry is told the
-- project is gone instead of quietly creating another.
CREATE TABLE project_request_ids (
    request_id TEXT PRIMARY KEY,
    -- SHA-256 of the canonical request without its request_id.
    fingerprint TEXT NOT NULL,
    project_id TEXT NOT NULL,
    create_time INTEGER NOT NULL
);

CREATE INDEX project_request_ids_by_age ON project_request_ids (create_time);
