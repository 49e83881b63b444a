-- Who holds a user's lease ("<pid>:<nonce>"), so a restarted daemon can take back at once the
-- users that a killed process was working on instead of waiting for the lease to lapse.
ALTER TABLE user_states ADD COLUMN lease_owner TEXT;
