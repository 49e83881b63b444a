-- Several replicas on one database: which replica runs each job, and the last cron tick taken.
-- A replica claims a tick by the one statement that records it (compare-and-swap on fire_at),
-- and only while no run of the job holds lease_until (a lease renewed while the run goes on, so
-- a killed replica's run stops blocking the job once it lapses).
CREATE TABLE job_fires (
    job        text PRIMARY KEY,
    fire_at    timestamptz,          -- the latest cron tick claimed; NULL before the first
    owner      text NOT NULL,        -- the replica (pid:nonce) that claimed it
    lease_until timestamptz           -- the running run's lease; NULL when none runs
);

-- The Persona request budget shared by the replicas: one GCRA, its theoretical arrival time
-- advanced by one emission period per request in the statement that admits it.
CREATE TABLE persona_budget (
    name       text PRIMARY KEY,
    arrival_at timestamptz NOT NULL
);
