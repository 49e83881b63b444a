-- The whole schema for PostgreSQL in one file. A PostgreSQL database starts fresh (no daemon ever
-- ran on it with an older schema), so the history SQLite carries in migrations 0001-0009 is
-- folded into its end state here; a later change is a new file, 0002_…, as on SQLite.
-- How it maps, table by table:
--   users            0001, plus `locale` from 0007
--   user_states      0002, plus `lease_owner` from 0003; index from 0004 (0005 dropped the other)
--   inquiries        0002, plus `status_observed_at` and `finished_at` from 0006; 0005 dropped
--                    `inquiries_user`, which UNIQUE (user_id, generation) already provides
--   mails            as rebuilt by 0008 (the 'reminder' kind, `reminder_after`, its once-index)
--   events, webhook_events, job_runs   0002
--   redirect_tokens  0009
--   verifications    0006 (the view), made read-only as SQLite's views are
-- Types: SQLite's TEXT stays text, INTEGER counters become bigint, a rowid becomes an identity,
-- BLOB becomes bytea. The daemon's own time columns are timestamptz (the store binds
-- chrono's DateTime<Utc>); on SQLite the same columns hold RFC 3339 text with millis and 'Z'.

-- The application's side of the contract (SPEC.md): the application inserts and may update rows;
-- the daemon only reads them and never deletes them. IF NOT EXISTS: the application may have made
-- it. The columns keep SPEC's types; `created_at` defaults to what SQLite's CURRENT_TIMESTAMP
-- writes (UTC 'YYYY-MM-DD HH:MM:SS'), whatever the session's TimeZone and DateStyle.
CREATE TABLE IF NOT EXISTS users (
    id           text PRIMARY KEY,
    email        text NOT NULL,
    name_first   text NULL,
    name_last    text NULL,
    birthdate    text NULL,
    phone_number text NULL,
    created_at   text NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
);
-- Per-user language (BCP 47, e.g. `de` or `pt-BR`); added apart so that an application's own
-- `users` table with SPEC's first columns gains it too.
ALTER TABLE users ADD COLUMN IF NOT EXISTS locale text NULL;

-- The daemon's own tables. Every outside call (Persona, SMTP) is bracketed by commits: the intent is
-- written before the call (inquiries.status = 'creating' with its idempotency key, mails.status =
-- 'queued'), the outcome after it. A crash at any instant leaves a row that says what to redo.

-- One row per user the daemon has seen.
CREATE TABLE user_states (
    user_id         text PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    reference_id    text NOT NULL UNIQUE,          -- opaque, random, stable; what Persona sees
    state           text NOT NULL CHECK (state IN ('pending', 'invited', 'started', 'finished', 'skipped')),
    reason          text,                          -- why skipped, or which limit holds the user back
    outcome         text,                          -- the finished inquiry's status
    row_fingerprint text NOT NULL,                 -- of the users row when last validated: an edited row is re-validated
    generation      bigint NOT NULL DEFAULT 0,     -- how many inquiries were started for this user
    last_mailed_at  timestamptz,                   -- for min_resend_interval
    lease_until     timestamptz,                   -- a worker's claim; a crashed worker's lease simply runs out
    lease_owner     text,                          -- "<pid>:<nonce>", so a restart takes back a killed process's users at once
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- Provisioning claims pending users oldest first off this index; it answers every lookup by state.
CREATE INDEX user_states_pending ON user_states (state, created_at, user_id);

-- One row per inquiry the daemon started (or adopted). status is Persona's status, or 'creating'
-- between the commit of the idempotency key and the answer of the create call.
CREATE TABLE inquiries (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             text NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    generation          bigint NOT NULL,
    idempotency_key     text NOT NULL UNIQUE,
    key_created_at      timestamptz NOT NULL,      -- Persona prunes keys after 24 h: older means look before re-creating
    inquiry_id          text UNIQUE,               -- Persona's inq_…; NULL while 'creating'
    status              text NOT NULL,
    template_id         text NOT NULL,
    template_version_id text,
    persona_created_at  timestamptz,
    expires_at          timestamptz,
    resume_count        bigint NOT NULL DEFAULT 0,
    session_count       bigint NOT NULL DEFAULT 0,
    superseded_at       timestamptz,               -- replaced by a newer generation; expire it at Persona
    superseded_reason   text,
    expired_remotely_at timestamptz,               -- the expire call for a superseded inquiry succeeded
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    status_observed_at  timestamptz,               -- when Persona last said `status`: older news never moves it back
    finished_at         timestamptz,               -- first reached a finished status; completed/needs_review are followed from here
    UNIQUE (user_id, generation)                   -- also the index for a user's inquiries
);
CREATE INDEX inquiries_status ON inquiries (status);

-- The outbox. A mail is queued in the same transaction that records the inquiry it links to. It holds
-- no link: links with secrets are rebuilt from Persona at send time and never stored.
-- reminder_after: which `[reminders] after` entry (seconds since the invite) a reminder stands for;
-- the unique index is the "once": a second row for the same entry cannot be written.
CREATE TABLE mails (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    inquiry_row     bigint REFERENCES inquiries(id),
    kind            text NOT NULL CHECK (kind IN ('invite', 'renewed', 'reminder')),
    status          text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    message_id      text NOT NULL UNIQUE,          -- stable, so a resend after a crash carries the same id
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    link_expires_at timestamptz,
    sent_at         timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    reminder_after  bigint CHECK ((kind = 'reminder') = (reminder_after IS NOT NULL))
);
CREATE INDEX mails_due ON mails (status, next_attempt_at);
CREATE INDEX mails_user ON mails (user_id, id);
CREATE UNIQUE INDEX mails_reminder_once ON mails (user_id, reminder_after) WHERE reminder_after IS NOT NULL;

-- What happened and why, per user: every decision the jobs take, readable by `status --user`.
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    text,
    inquiry_id text,
    kind       text NOT NULL,
    detail     text NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX events_user ON events (user_id, id);

-- Webhook event ids already applied (Persona may deliver one event several times).
CREATE TABLE webhook_events (
    event_id    text PRIMARY KEY,
    name        text NOT NULL,
    inquiry_id  text,
    received_at timestamptz NOT NULL
);

-- Job runs, for /healthz and status.
CREATE TABLE job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text,
    detail      text
);
CREATE INDEX job_runs_job ON job_runs (job, id);

-- The tokens of mailed redirect links. Only a SHA-256 of each token is kept: the database alone
-- cannot open anyone's link. A user may hold several (one per mail).
CREATE TABLE redirect_tokens (
    token_hash   bytea PRIMARY KEY,                -- SHA-256 of the token in the link
    user_id      text NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz                       -- the last click, for `status --user`
);
CREATE INDEX redirect_tokens_user ON redirect_tokens (user_id);

-- The application's read side (SPEC "The verifications view"): one row per user the daemon
-- knows; its columns are a contract. updated_at is text, not timestamptz: SPEC promises UTC
-- ISO 8601, and a timestamptz reaches the reader in the session's TimeZone and DateStyle, while
-- this rendering is the same bytes as on SQLite ('2026-03-15T18:30:00.123Z', millis truncated)
-- in every session; `updated_at::timestamptz` gives the instant back to whoever wants one.
CREATE VIEW verifications AS
SELECT user_id,
       state,
       CASE WHEN state = 'finished' THEN outcome END AS outcome,
       CASE WHEN state = 'skipped' THEN reason END AS reason,
       to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS updated_at
FROM user_states;

-- PostgreSQL would let an UPDATE or DELETE through a one-table view reach user_states (and
-- cascade to inquiries and mails); SPEC's view is read-only, as SQLite's views are.
CREATE FUNCTION verifications_read_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'verifications is a read-only view: the daemon writes the states behind it';
END
$$;
CREATE TRIGGER verifications_read_only
    INSTEAD OF INSERT OR UPDATE OR DELETE ON verifications
    FOR EACH ROW EXECUTE FUNCTION verifications_read_only();
