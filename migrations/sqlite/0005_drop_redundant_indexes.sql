-- Two indexes that only cost writes. `inquiries_user` repeats the index SQLite already keeps
-- for UNIQUE (user_id, generation); `user_states_state` is a prefix-equal twin of
-- `user_states_pending` (state, created_at, user_id), which answers every lookup by state and
-- carries user_id too. Each state change and each new inquiry wrote a page of each.
DROP INDEX IF EXISTS inquiries_user;
DROP INDEX IF EXISTS user_states_state;
