-- The tokens of mailed redirect links (`[links] kind = "redirect"`). Only a SHA-256 of each token
-- is kept: the database alone cannot open anyone's link. A user may hold several (one per mail);
-- each works while the user is unfinished.
CREATE TABLE redirect_tokens (
    token_hash  BLOB PRIMARY KEY,                 -- SHA-256 of the token in the link
    user_id     TEXT NOT NULL REFERENCES user_states(user_id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    last_used_at TEXT                              -- the last click, for `status --user`
) WITHOUT ROWID;
CREATE INDEX redirect_tokens_user ON redirect_tokens (user_id);
