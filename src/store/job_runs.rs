//! Job runs: when each job started and how it ended (for `/healthz` and `status`), and the
//! refresh job's bookmark of how far its static-link sync has listed.

use chrono::{DateTime, Utc};

use super::row::Place;
use super::{Result, Store, Stored, Ts, ts};

pub async fn record_start(store: &Store, job: &str, at: DateTime<Utc>) -> Result<i64> {
    Ok(on_write!(store, |c| sqlx::query_scalar(
        "INSERT INTO job_runs (job, started_at) VALUES ($1, $2) RETURNING id"
    )
    .bind(job)
    .bind(ts(at))
    .fetch_one(c)
    .await?))
}

pub async fn record_finish(
    store: &Store,
    id: i64,
    at: DateTime<Utc>,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE job_runs SET finished_at = $1, outcome = $2, detail = $3 WHERE id = $4"
    )
    .bind(ts(at))
    .bind(outcome)
    .bind(detail)
    .bind(id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// The latest run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    /// What the run covered (a bookmark's note).
    pub detail: Option<String>,
}

/// The latest run of `job`.
pub async fn latest(store: &Store, job: &str) -> Result<Option<Run>> {
    on_read!(store, |c| {
        let found = {
            sqlx::query(
        "SELECT id, started_at, finished_at, outcome, detail FROM job_runs WHERE job = $1 ORDER BY id DESC LIMIT 1"
    )
    .bind(job)
    .fetch_optional(c)
    .await?
        };
        found
            .as_ref()
            .map(|r| {
                let at = Place {
                    row: r,
                    table: "job_runs",
                    key: "id",
                };
                Ok(Run {
                    started_at: at.get::<Ts>("started_at")?.value(),
                    finished_at: at.get::<Option<Ts>>("finished_at")?.value(),
                    outcome: at.get("outcome")?,
                    detail: at.get("detail")?,
                })
            })
            .transpose()
    })
}

/// When the last successful run of `job` started.
pub async fn last_ok_start(store: &Store, job: &str) -> Result<Option<DateTime<Utc>>> {
    let found: Option<Ts> = on_read!(store, |c| sqlx::query_scalar(
        "SELECT MAX(started_at) FROM job_runs WHERE job = $1 AND outcome = 'ok'"
    )
    .bind(job)
    .fetch_one(c)
    .await?);
    Ok(found.value())
}

/// Replaces `job`'s single bookmark row with one run that started at `started` and covered `detail`.
pub async fn set_bookmark(
    store: &Store,
    job: &str,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    detail: &str,
) -> Result<()> {
    let mut tx = store.begin_write().await?;
    on_tx!(tx, |c| {
        sqlx::query("DELETE FROM job_runs WHERE job = $1")
            .bind(job)
            .execute(&mut *c)
            .await?;
        sqlx::query(
            "INSERT INTO job_runs (job, started_at, finished_at, outcome, detail) VALUES ($1, $2, $3, 'ok', $4)",
        )
        .bind(job)
        .bind(ts(started))
        .bind(ts(finished))
        .bind(detail)
        .execute(&mut *c)
        .await?;
    });
    tx.commit().await
}
