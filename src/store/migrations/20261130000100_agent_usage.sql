-- What the agent loop of a process has used, across restarts and `run --resume`: model
-- calls, tokens and running time. Written before each model reply is acted on.

CREATE TABLE agent_usage (
    pid               INTEGER PRIMARY KEY REFERENCES processes(pid),
    steps             INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    wall_ms           INTEGER NOT NULL
);
