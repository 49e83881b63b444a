-- Provisioning claims pending users oldest first; with this index a claim reads its batch off the
-- index instead of sorting every pending user, so a backlog of a million costs the same per batch
-- as a backlog of ten.
CREATE INDEX user_states_pending ON user_states (state, created_at, user_id);
