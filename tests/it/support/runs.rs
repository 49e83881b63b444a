//! The `job_runs` table read back as spans, for tests that check how often a cron job ran and
//! that no two runs of one job overlapped, across all the replicas on one PostgreSQL database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::stack::Stack;

/// One row of `job_runs`: the job and its span in seconds since the epoch; `finished` is
/// `None` for a run that never ended (its replica was killed mid-run).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    pub job: String,
    pub started: f64,
    pub finished: Option<f64>,
}

/// Every run of every job, by job and start.
pub async fn job_runs(stack: &Stack) -> Vec<JobRun> {
    read(stack, "").await
}

/// The runs that started in `[from, until)`, by job and start.
pub async fn job_runs_between(
    stack: &Stack,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<JobRun> {
    read(
        stack,
        &format!(
            "WHERE started_at >= '{}' AND started_at < '{}'",
            from.to_rfc3339(),
            until.to_rfc3339()
        ),
    )
    .await
}

/// PostgreSQL's spelling (`EXTRACT(EPOCH …)`): the replica tests run on PostgreSQL only.
async fn read(stack: &Stack, filter: &str) -> Vec<JobRun> {
    let rows = stack
        .text_rows(&format!(
            "SELECT job, CAST(EXTRACT(EPOCH FROM started_at) AS TEXT), \
             CAST(EXTRACT(EPOCH FROM finished_at) AS TEXT) FROM job_runs {filter} \
             ORDER BY job, started_at"
        ))
        .await;
    rows.into_iter()
        .map(|r| {
            let seconds = |i: usize| r[i].as_deref().map(|s| s.parse::<f64>().expect("epoch"));
            JobRun {
                job: r[0].clone().expect("job"),
                started: seconds(1).expect("started_at"),
                finished: seconds(2),
            }
        })
        .collect()
}

/// How many runs of `job` started in each tick of a `tick_seconds` schedule, by tick number
/// (seconds since the epoch divided by `tick_seconds`, rounded down).
pub fn runs_per_tick(runs: &[JobRun], job: &str, tick_seconds: i64) -> BTreeMap<i64, usize> {
    let mut per_tick = BTreeMap::new();
    for run in runs.iter().filter(|r| r.job == job) {
        let tick = (run.started / tick_seconds as f64).floor() as i64;
        *per_tick.entry(tick).or_default() += 1;
    }
    per_tick
}

/// Each pair of consecutive runs of one job where the first finished after the next started.
/// A run that never finished is passed over: it ended at its replica's kill, and the job's
/// next run could only start once that replica's lease had lapsed.
pub fn overlaps(runs: &[JobRun]) -> Vec<(JobRun, JobRun)> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.job.cmp(&b.job).then(a.started.total_cmp(&b.started)));
    sorted
        .windows(2)
        .filter(|pair| pair[0].job == pair[1].job)
        .filter(|pair| pair[0].finished.is_some_and(|end| end > pair[1].started))
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect()
}
