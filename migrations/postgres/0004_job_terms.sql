-- Each claim of a job starts a new term; every write of the run that holds the claim checks, in
-- its own transaction, that the term is still the job's (reading the row FOR SHARE, so a claim
-- waits for those writes to commit), so a run that lost its claim (a stall past its lease, a
-- lost connection) can write nothing once another run has the job.
ALTER TABLE job_fires ADD COLUMN term bigint NOT NULL DEFAULT 0;
