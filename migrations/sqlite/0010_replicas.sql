-- Which process runs each job, and the last cron tick taken: the same claims as on PostgreSQL,
-- where several replicas share one database; on a SQLite file the one daemon always wins them.
CREATE TABLE job_fires (
    job        TEXT PRIMARY KEY,
    fire_at    TEXT,                 -- the latest cron tick claimed; NULL before the first
    owner      TEXT NOT NULL,        -- the process (pid:nonce) that claimed it
    lease_until TEXT                  -- the running run's lease; NULL when none runs
) WITHOUT ROWID;

-- The replicas' shared Persona budget on PostgreSQL. Unused on a SQLite file (one daemon, which
-- keeps its budget in process); here so that both schemas keep the same tables.
CREATE TABLE persona_budget (
    name       TEXT PRIMARY KEY,
    arrival_at TEXT NOT NULL
) WITHOUT ROWID;
