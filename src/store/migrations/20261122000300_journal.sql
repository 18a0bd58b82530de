-- The exactly-once syscall journal of tool invocations.

CREATE TABLE invocations (
    id          TEXT PRIMARY KEY,
    pid         INTEGER NOT NULL REFERENCES processes(pid),
    tool        TEXT    NOT NULL,
    args        TEXT    NOT NULL,             -- JSON
    start_time  INTEGER NOT NULL,             -- what Date.now() starts from inside the call
    seed        TEXT    NOT NULL,             -- Math.random() seed (u64 as text)
    status      TEXT    NOT NULL,             -- running | waiting_human | done | failed
    outcome     TEXT,                         -- JSON {"ok": value} or {"err": wire error}
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);
-- serves: invocations to re-run at resume
CREATE INDEX invocations_status ON invocations(status);

CREATE TABLE journal (
    invocation_id TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    primitive     TEXT    NOT NULL,
    args_hash     TEXT    NOT NULL,
    status        TEXT    NOT NULL,           -- intent | done
    outcome       TEXT,                       -- JSON {"ok": value} or {"err": wire error}
    PRIMARY KEY (invocation_id, seq)
);

-- An approval is consumed by the call it was given for.
ALTER TABLE human_requests ADD COLUMN used INTEGER NOT NULL DEFAULT 0;
