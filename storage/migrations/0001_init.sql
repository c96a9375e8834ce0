-- sdbot schema, version 1: jobs, per-user defaults, rate-limit usage.
-- Times are epoch seconds (REAL); Discord ids (snowflakes) are INTEGER.

CREATE TABLE jobs (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id                INTEGER NOT NULL,
    guild_id               INTEGER,            -- NULL in DMs
    channel_id             INTEGER NOT NULL,
    interaction_id         INTEGER,
    interaction_token      TEXT,
    interaction_created_at REAL,
    request_json           TEXT NOT NULL,      -- the request as a JSON object
    init_image             BLOB,
    parent_job_id          INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    parent_index           INTEGER,
    action                 TEXT NOT NULL
        CHECK (action IN ('imagine', 'upscale', 'variation', 'reroll', 'remix')),
    state                  TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts               INTEGER NOT NULL DEFAULT 0,  -- times it went to running
    created_at             REAL NOT NULL,
    started_at             REAL,
    finished_at            REAL,
    error                  TEXT,
    seeds_json             TEXT,               -- JSON list of the seeds used
    delivered_at           REAL                -- NULL until the result was posted
);

CREATE INDEX jobs_by_user ON jobs (user_id, id);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX jobs_by_parent ON jobs (parent_job_id);

CREATE TABLE user_defaults (
    user_id         INTEGER PRIMARY KEY,
    model           TEXT,
    aspect          TEXT,
    steps           INTEGER,
    guidance        REAL,
    negative_prompt TEXT,
    count           INTEGER,
    updated_at      REAL NOT NULL
);

-- One row per reservation of images against a user's quota.
CREATE TABLE rate_usage (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id  INTEGER NOT NULL,
    guild_id INTEGER,
    images   INTEGER NOT NULL CHECK (images > 0),
    at       REAL NOT NULL,
    job_id   INTEGER REFERENCES jobs (id) ON DELETE SET NULL
);

CREATE INDEX rate_usage_by_user ON rate_usage (user_id, at);
CREATE INDEX rate_usage_by_job ON rate_usage (job_id);
