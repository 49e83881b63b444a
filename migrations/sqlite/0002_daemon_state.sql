-- The daemon's own tables. Every outside call (Persona, SMTP) is bracketed by commits: the intent is
-- written before the call (inquiries.status = 'creating' with its idempotency key, mails.status =
-- 'queued'), the outcome after it. A crash at any instant leaves a row that says what to redo.
-- All timestamps are RFC 3339 UTC text with milliseconds and 'Z', so text order is time order.

-- One row per user the daemon has seen. state: pending | invited | started | finished | skipped.
CREATE TABLE user_states (
    user_id         TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    reference_id    TEXT NOT NULL UNIQUE,          -- opaque, random, stable; what Persona sees
    state           TEXT NOT NULL CHECK (state IN ('pending', 'invited', 'started', 'finished', 'skipped')),
    reason          TEXT,                          -- why skipped, or which limit holds the user back
    outcome         TEXT,                          -- the finished inquiry's status
    row_fingerprint TEXT NOT NULL,                 -- of the users row when last validated: an edited row is re-validated
    generation      INTEGER NOT NULL DEFAULT 0,    -- how many inquiries were started for this user
    last_mailed_at  TEXT,                          -- for min_resend_interval
    lease_until     TEXT,                          -- a worker's claim; a crashed worker's lease simply runs out
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX user_states_state ON user_states (state, user_id);

-- One row per inquiry the daemon started (or adopted). status is Persona's status, or 'creating'
-- between the commit of the idempotency key and the answer of the create call.
CREATE TABLE inquiries (
    id                  INTEGER PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    generation          INTEGER NOT NULL,
    idempotency_key     TEXT NOT NULL UNIQUE,
    key_created_at      TEXT NOT NULL,             -- Persona prunes keys after 24 h: older means look before re-creating
    inquiry_id          TEXT UNIQUE,               -- Persona's inq_…; NULL while 'creating'
    status              TEXT NOT NULL,
    template_id         TEXT NOT NULL,
    template_version_id TEXT,
    persona_created_at  TEXT,
    expires_at          TEXT,
    resume_count        INTEGER NOT NULL DEFAULT 0,
    session_count       INTEGER NOT NULL DEFAULT 0,
    superseded_at       TEXT,                      -- replaced by a newer generation; expire it at Persona
    superseded_reason   TEXT,
    expired_remotely_at TEXT,                      -- the expire call for a superseded inquiry succeeded
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (user_id, generation)
);
CREATE INDEX inquiries_user ON inquiries (user_id, generation);
CREATE INDEX inquiries_status ON inquiries (status);

-- The outbox. A mail is queued in the same transaction that records the inquiry it links to. It holds
-- no link: links with secrets are rebuilt from Persona at send time and never stored.
CREATE TABLE mails (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    inquiry_row     INTEGER REFERENCES inquiries(id),
    kind            TEXT NOT NULL CHECK (kind IN ('invite', 'renewed')),
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    message_id      TEXT NOT NULL UNIQUE,          -- stable, so a resend after a crash carries the same id
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    link_expires_at TEXT,
    sent_at         TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX mails_due ON mails (status, next_attempt_at);
CREATE INDEX mails_user ON mails (user_id, id);

-- What happened and why, per user: every decision the jobs take, readable by `status --user`.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    user_id    TEXT,
    inquiry_id TEXT,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    at         TEXT NOT NULL
);
CREATE INDEX events_user ON events (user_id, id);

-- Webhook event ids already applied (Persona may deliver one event several times).
CREATE TABLE webhook_events (
    event_id    TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    inquiry_id  TEXT,
    received_at TEXT NOT NULL
);

-- Job runs, for /healthz and status.
CREATE TABLE job_runs (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    outcome     TEXT,
    detail      TEXT
);
CREATE INDEX job_runs_job ON job_runs (job, id);
