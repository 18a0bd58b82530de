-- What each process may ask a human for (human.request_permission): the operator's ceiling,
-- sealed like a grant. A process with no row may ask for nothing.
CREATE TABLE requestable (
    pid         INTEGER PRIMARY KEY REFERENCES processes(pid),
    specs       TEXT    NOT NULL,             -- JSON array of capability specs
    mac         TEXT
);

-- The invocation (tool call or keyed call) a human request was raised by, so that whoever
-- runs that call can name its own request.
ALTER TABLE human_requests ADD COLUMN invocation TEXT;
