//! Job runs: when each job started and how it ended (for `/healthz` and `status`), and the
//! refresh job's bookmark of how far its static-link sync has listed.

use chrono::{DateTime, Utc};

use super::{Result, Store};
use crate::clock::format_ts;

pub async fn record_start(store: &Store, job: &str, at: DateTime<Utc>) -> Result<i64> {
    Ok(
        sqlx::query_scalar("INSERT INTO job_runs (job, started_at) VALUES (?, ?) RETURNING id")
            .bind(job)
            .bind(format_ts(at))
            .fetch_one(store.writer())
            .await?,
    )
}

pub async fn record_finish(
    store: &Store,
    id: i64,
    at: DateTime<Utc>,
    outcome: &str,
    detail: &str,
) -> Result<()> {
    sqlx::query("UPDATE job_runs SET finished_at = ?, outcome = ?, detail = ? WHERE id = ?")
        .bind(format_ts(at))
        .bind(outcome)
        .bind(detail)
        .bind(id)
        .execute(store.writer())
        .await?;
    Ok(())
}

/// The latest run of `job`: (started_at, finished_at, outcome).
pub async fn latest(
    store: &Store,
    job: &str,
) -> Result<Option<(String, Option<String>, Option<String>)>> {
    Ok(sqlx::query_as("SELECT started_at, finished_at, outcome FROM job_runs WHERE job = ? ORDER BY id DESC LIMIT 1")
        .bind(job)
        .fetch_optional(store.reader())
        .await?)
}

/// When the last successful run of `job` started.
pub async fn last_ok_start(store: &Store, job: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT MAX(started_at) FROM job_runs WHERE job = ? AND outcome = 'ok'")
            .bind(job)
            .fetch_one(store.reader())
            .await?,
    )
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
    sqlx::query("DELETE FROM job_runs WHERE job = ?")
        .bind(job)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO job_runs (job, started_at, finished_at, outcome, detail) VALUES (?, ?, ?, 'ok', ?)")
        .bind(job)
        .bind(format_ts(started))
        .bind(format_ts(finished))
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
