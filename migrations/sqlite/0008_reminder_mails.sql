-- Reminder mails (SPEC.md "[reminders]"). SQLite cannot change a CHECK constraint in place, so the
-- outbox is rebuilt with 'reminder' among the kinds and `reminder_after`: which `[reminders] after`
-- entry (in seconds since the invite) the reminder stands for. The unique index is the "once": a
-- reminder is recorded before it is sent, and a second row for the same entry cannot be written.
CREATE TABLE mails_rebuilt (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    inquiry_row     INTEGER REFERENCES inquiries(id),
    kind            TEXT NOT NULL CHECK (kind IN ('invite', 'renewed', 'reminder')),
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')),
    message_id      TEXT NOT NULL UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    link_expires_at TEXT,
    sent_at         TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    reminder_after  INTEGER CHECK ((kind = 'reminder') = (reminder_after IS NOT NULL))
);
INSERT INTO mails_rebuilt (id, user_id, inquiry_row, kind, status, message_id, attempts,
    next_attempt_at, link_expires_at, sent_at, last_error, created_at, updated_at)
SELECT id, user_id, inquiry_row, kind, status, message_id, attempts,
    next_attempt_at, link_expires_at, sent_at, last_error, created_at, updated_at
FROM mails;
DROP TABLE mails;
ALTER TABLE mails_rebuilt RENAME TO mails;
CREATE INDEX mails_due ON mails (status, next_attempt_at);
CREATE INDEX mails_user ON mails (user_id, id);
CREATE UNIQUE INDEX mails_reminder_once ON mails (user_id, reminder_after) WHERE reminder_after IS NOT NULL;
