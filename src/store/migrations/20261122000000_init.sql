-- Agent libOS state: processes, capabilities, images, object memory, events, tools,
-- the human queue and the hash-chained audit log.

CREATE TABLE processes (
    pid           INTEGER PRIMARY KEY,
    parent_pid    INTEGER REFERENCES processes(pid),
    image_id      TEXT    NOT NULL,
    image_version TEXT    NOT NULL,
    goal          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    cwd           TEXT    NOT NULL DEFAULT '.',
    budget        TEXT    NOT NULL,           -- JSON Budget: the allowance
    usage         TEXT    NOT NULL,           -- JSON Budget: what was used
    exit_payload  TEXT,                       -- JSON
    started_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
-- serves: list children of a process
CREATE INDEX processes_parent ON processes(parent_pid);

CREATE TABLE images (
    id            TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    manifest      TEXT    NOT NULL,           -- JSON of the parsed manifest
    registered_by INTEGER,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (id, version)
);

CREATE TABLE capabilities (
    id          INTEGER PRIMARY KEY,
    subject     INTEGER NOT NULL REFERENCES processes(pid),
    resource    TEXT    NOT NULL,
    rights      TEXT    NOT NULL,             -- JSON array of right names
    policy      TEXT    NOT NULL,
    issuer      INTEGER,
    parent      INTEGER REFERENCES capabilities(id),
    expires_at  INTEGER,
    delegable   INTEGER NOT NULL,
    revocable   INTEGER NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0,
    consumed    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX capabilities_subject ON capabilities(subject);

CREATE TABLE namespaces (
    name        TEXT PRIMARY KEY,
    owner       INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE objects (
    id          TEXT PRIMARY KEY,
    namespace   TEXT    NOT NULL REFERENCES namespaces(name),
    name        TEXT,
    type        TEXT    NOT NULL,
    title       TEXT,
    summary     TEXT,
    tags        TEXT    NOT NULL,             -- JSON array
    mime        TEXT,
    payload     TEXT    NOT NULL,             -- JSON
    appendable  INTEGER NOT NULL,
    created_by  INTEGER,
    created_at  INTEGER NOT NULL,
    UNIQUE (namespace, name)
);
CREATE INDEX objects_namespace ON objects(namespace);

CREATE TABLE object_items (
    object_id   TEXT    NOT NULL REFERENCES objects(id),
    seq         INTEGER NOT NULL,
    item        TEXT    NOT NULL,             -- JSON
    PRIMARY KEY (object_id, seq)
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    target      INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    consumed    INTEGER NOT NULL DEFAULT 0
);
-- serves: pending events of a process at open
CREATE INDEX events_pending ON events(target, consumed);

CREATE TABLE tools (
    pid           INTEGER NOT NULL REFERENCES processes(pid),
    name          TEXT    NOT NULL,
    object_id     TEXT    NOT NULL,
    source_hash   TEXT    NOT NULL,
    meta          TEXT    NOT NULL,           -- JSON tool description
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (pid, name)
);

CREATE TABLE human_requests (
    id          TEXT PRIMARY KEY,
    pid         INTEGER NOT NULL REFERENCES processes(pid),
    kind        TEXT    NOT NULL,             -- question | output | permission
    channel     TEXT    NOT NULL,
    payload     TEXT    NOT NULL,             -- JSON: what the human is shown
    args_hash   TEXT    NOT NULL,             -- SHA-256 of the exact syscall it gates
    status      TEXT    NOT NULL,             -- pending | approved | rejected | answered | delivered | cancelled
    answer      TEXT,                         -- JSON
    answered_by TEXT,
    created_at  INTEGER NOT NULL,
    answered_at INTEGER
);
CREATE INDEX human_requests_status ON human_requests(status);

CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY,
    ts              INTEGER NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    decision        TEXT    NOT NULL,
    capability_refs TEXT    NOT NULL,         -- JSON array of capability ids
    correlation_id  TEXT,
    parent_seq      INTEGER,
    detail          TEXT    NOT NULL,         -- JSON summary of request and result
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
