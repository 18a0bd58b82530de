-- JIT tool validation results and the per-process console log.

CREATE TABLE tool_validations (
    object_id    TEXT PRIMARY KEY REFERENCES objects(id),
    ok           INTEGER NOT NULL,
    report       TEXT    NOT NULL,             -- JSON: findings and declared-test results
    validated_at INTEGER NOT NULL
);

CREATE TABLE process_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pid           INTEGER NOT NULL,
    invocation_id TEXT,
    level         TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    ts            INTEGER NOT NULL
);
-- serves: the console output of one process
CREATE INDEX process_log_pid ON process_log(pid, id);
