-- sdbot schema, version 2: delivery messages, image files, per-guild config.

ALTER TABLE jobs ADD COLUMN progress_message_id INTEGER;
ALTER TABLE jobs ADD COLUMN result_message_id INTEGER;

CREATE INDEX jobs_undelivered ON jobs (state, id) WHERE delivered_at IS NULL;

-- One row per output image; `path` is relative to the images directory.
-- Retention removes the file and sets deleted_at; the row (and the job) stay.
CREATE TABLE images (
    job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    path       TEXT NOT NULL,
    seed       INTEGER,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    nsfw       INTEGER NOT NULL DEFAULT 0,
    deleted_at REAL,
    PRIMARY KEY (job_id, idx)
);

CREATE INDEX images_live_by_age ON images (created_at) WHERE deleted_at IS NULL;

-- Lists are JSON arrays of snowflakes or words.
CREATE TABLE guild_config (
    guild_id            INTEGER PRIMARY KEY,
    showcase_channel_id INTEGER,
    allowed_channel_ids TEXT NOT NULL DEFAULT '[]',
    banned_words        TEXT NOT NULL DEFAULT '[]',
    nsfw_policy         TEXT NOT NULL DEFAULT 'withhold'
        CHECK (nsfw_policy IN ('withhold', 'spoiler', 'allow')),
    images_per_hour     INTEGER,
    images_per_day      INTEGER,
    max_steps           INTEGER,
    exempt_role_ids     TEXT NOT NULL DEFAULT '[]',
    updated_at          REAL NOT NULL
);
