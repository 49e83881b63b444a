-- The application's side of the contract (SPEC.md): the application inserts and may update rows;
-- the daemon only reads them and never deletes them. IF NOT EXISTS: the application may have made it.
CREATE TABLE IF NOT EXISTS users (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    name_first   TEXT NULL,
    name_last    TEXT NULL,
    birthdate    TEXT NULL,
    phone_number TEXT NULL,
    created_at   TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
