//! `/healthz`: the database answers and each job ran when its schedule said it should.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::scheduler::JobKind;
use crate::clock::format_ts;
use crate::store::Store;

#[derive(Debug, Serialize)]
pub struct Health {
    pub healthy: bool,
    pub database: String,
    pub jobs: Vec<JobHealth>,
}

#[derive(Debug, Serialize)]
pub struct JobHealth {
    pub job: &'static str,
    pub on_schedule: bool,
    pub last_started: Option<String>,
    pub last_outcome: Option<String>,
    pub why: Option<String>,
}

/// A run may start this late after its cron time (scheduler tick, a busy machine).
const GRACE: chrono::Duration = chrono::Duration::seconds(90);

pub async fn check(
    store: &Store,
    schedules: &[(JobKind, String)],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Health {
    let database = match store.ping().await {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("database does not answer: {e}"),
    };
    let mut jobs = Vec::new();
    for (kind, cron) in schedules {
        jobs.push(job_health(store, *kind, cron, since, now).await);
    }
    Health {
        healthy: database == "ok" && jobs.iter().all(|j| j.on_schedule),
        database,
        jobs,
    }
}

async fn job_health(
    store: &Store,
    kind: JobKind,
    cron: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> JobHealth {
    let last = crate::store::job_runs::latest(store, kind.as_str())
        .await
        .ok()
        .flatten();
    let last_started = last.as_ref().map(|r| r.started_at);
    let running = last.as_ref().is_some_and(|r| r.finished_at.is_none());
    // The latest time the schedule wanted a run to have started by now (runs at start-up count).
    let due = crate::config::parse_cron(cron)
        .ok()
        .and_then(|c| c.find_previous_occurrence(&(now - GRACE), false).ok())
        .filter(|t| *t > since)
        .unwrap_or(since);
    let (on_schedule, why) = match last_started {
        _ if running => (true, None),
        Some(t) if t >= due - GRACE => (true, None),
        Some(t) => (
            false,
            Some(format!("last run started {t}, a run was due at {due}")),
        ),
        None if now - since <= GRACE => (true, None),
        None => (false, Some("no run yet".to_owned())),
    };
    JobHealth {
        job: kind.as_str(),
        on_schedule,
        last_started: last.as_ref().map(|r| format_ts(r.started_at)),
        last_outcome: last.and_then(|r| r.outcome),
        why,
    }
}
