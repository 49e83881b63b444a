-- Release 2 lifecycle: when Persona last said what an inquiry's status is (a webhook's
-- created-at, or the moment of a fresh read), so older news never moves a status backwards;
-- and when it first reached a finished status, so `completed`/`needs_review` inquiries are
-- followed (bounded) until decided.
ALTER TABLE inquiries ADD COLUMN status_observed_at TEXT;
ALTER TABLE inquiries ADD COLUMN finished_at TEXT;

-- The application's read side (SPEC "The verifications view"): one row per user the daemon
-- knows; its columns are a contract.
CREATE VIEW verifications AS
SELECT user_id,
       state,
       CASE WHEN state = 'finished' THEN outcome END AS outcome,
       CASE WHEN state = 'skipped' THEN reason END AS reason,
       updated_at
FROM user_states;
