-- Checkpoints: a snapshot of one process's runtime state (process fields, live
-- capabilities, tool table, the object memory of the namespaces it owns, its children),
-- built inside SQLite as one JSON document.

CREATE TABLE checkpoints (
    id           TEXT    PRIMARY KEY,
    pid          INTEGER NOT NULL REFERENCES processes(pid),
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    audit_seq    INTEGER NOT NULL,           -- seq of its checkpoint.create audit record
    objects      INTEGER NOT NULL,
    capabilities INTEGER NOT NULL,
    tools        INTEGER NOT NULL,
    data         TEXT    NOT NULL            -- JSON snapshot (last: the large column)
);
-- serves: the checkpoints of one process
CREATE INDEX checkpoints_pid ON checkpoints(pid, created_at);
