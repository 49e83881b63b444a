//! The two jobs on their cron schedules (tokio-cron-scheduler), and provisioning as soon as new
//! users are signalled, each job behind a guard so a run never overlaps itself:
//! tokio-cron-scheduler starts a job whenever it is due, even while the last run is still going.
//! Each run is recorded in `job_runs` for `/healthz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard, RwLock};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::new_users::NewUserSignal;
use super::notify::Notifier;
use crate::clock::format_ts;
use crate::jobs::{JobContext, provision, refresh};
use crate::store::job_runs;

/// The daemon's two jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Provision,
    Refresh,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Provision, JobKind::Refresh];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Provision => "provision",
            JobKind::Refresh => "refresh",
        }
    }
}

/// Swapped as a whole on reload; a run keeps the context it started with.
pub type SharedContext = Arc<RwLock<Arc<JobContext>>>;

/// Runs jobs, one at a time per kind.
#[derive(Clone)]
pub struct Runner {
    context: SharedContext,
    notifier: Notifier,
    guards: Arc<[Mutex<()>; 2]>,
}

/// How a requested run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Finished(String),
    Failed(String),
    /// The previous run of the same job was still going.
    SkippedOverlap,
    /// The daemon is stopping: no new runs.
    Stopping,
}

impl Runner {
    pub fn new(context: SharedContext, notifier: Notifier) -> Runner {
        Runner {
            context,
            notifier,
            guards: Arc::new([Mutex::new(()), Mutex::new(())]),
        }
    }

    fn guard(&self, kind: JobKind) -> &Mutex<()> {
        &self.guards[kind as usize]
    }

    /// Runs `kind` now unless a run of it is in progress (a cron tick: the next one comes).
    pub async fn run(&self, kind: JobKind) -> RunOutcome {
        let Ok(held) = self.guard(kind).try_lock() else {
            tracing::warn!(
                job = kind.as_str(),
                "previous run still going; this one is skipped"
            );
            metrics::counter!("job_runs_total", "job" => kind.as_str(), "outcome" => "skipped_overlap").increment(1);
            return RunOutcome::SkippedOverlap;
        };
        self.run_holding(kind, held).await
    }

    /// Runs `kind` as soon as the run in progress, if any, has ended: for work that must not be
    /// dropped, such as rows the run in progress may have read past.
    pub async fn run_when_free(&self, kind: JobKind) -> RunOutcome {
        let held = self.guard(kind).lock().await;
        self.run_holding(kind, held).await
    }

    async fn run_holding(&self, kind: JobKind, _held: MutexGuard<'_, ()>) -> RunOutcome {
        let ctx = self.context.read().await.clone();
        if ctx.stop.is_cancelled() {
            return RunOutcome::Stopping;
        }
        let started = ctx.clock.now();
        let run_id = match job_runs::record_start(&ctx.store, kind.as_str(), started).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(job = kind.as_str(), error = %e, "cannot record the job run");
                return RunOutcome::Failed(e.to_string());
            }
        };
        self.notifier.status(&format!("{}: running", kind.as_str()));
        let clock = Instant::now();
        let result = match kind {
            JobKind::Provision => provision::run(&ctx).await.map(|r| r.to_string()),
            JobKind::Refresh => refresh::run(&ctx).await.map(|r| r.to_string()),
        };
        let secs = clock.elapsed().as_secs_f64();
        metrics::histogram!("job_duration_seconds", "job" => kind.as_str()).record(secs);
        let (outcome, detail, ret) = match result {
            Ok(summary) => {
                tracing::info!(job = kind.as_str(), seconds = secs, "{summary}");
                ("ok", summary.clone(), RunOutcome::Finished(summary))
            }
            Err(e) => {
                tracing::error!(job = kind.as_str(), error = %e, "job run failed");
                ("failed", e.to_string(), RunOutcome::Failed(e.to_string()))
            }
        };
        metrics::counter!("job_runs_total", "job" => kind.as_str(), "outcome" => outcome)
            .increment(1);
        if let Err(e) =
            job_runs::record_finish(&ctx.store, run_id, ctx.clock.now(), outcome, &detail).await
        {
            tracing::error!(job = kind.as_str(), error = %e, "cannot record the end of the job run");
        }
        self.notifier.status(&format!(
            "idle; last {} {} at {}",
            kind.as_str(),
            outcome,
            format_ts(ctx.clock.now())
        ));
        ret
    }

    /// Waits until no run is in progress (shutdown); returns false when `within` ran out.
    pub async fn wait_idle(&self, within: std::time::Duration) -> bool {
        let all = async {
            for kind in JobKind::ALL {
                let _ = self.guard(kind).lock().await;
            }
        };
        tokio::time::timeout(within, all).await.is_ok()
    }
}

/// How long new-user signals must pause before provisioning starts, so a burst of commits (an
/// import writing batch after batch) is one run; and the most a steady stream may delay it.
const SETTLE_QUIET: Duration = Duration::from_millis(150);
const SETTLE_AT_MOST: Duration = Duration::from_millis(500);

/// Provisions whenever `signal` is raised, until `stop`: after a burst settles, and after the
/// run in progress (cron or its own) when there is one. A raise during a run is kept by the
/// signal, so it leads to one more run once this one ends: a row the run read past is not
/// left for the cron.
pub fn provision_on_new_users(
    runner: &Runner,
    signal: NewUserSignal,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let runner = runner.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = signal.raised() => {}
            }
            let settled = tokio::time::sleep(SETTLE_AT_MOST);
            tokio::pin!(settled);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = &mut settled => break,
                    _ = tokio::time::sleep(SETTLE_QUIET) => break,
                    _ = signal.raised() => {}
                }
            }
            if runner.run_when_free(JobKind::Provision).await == RunOutcome::Stopping {
                return;
            }
        }
    })
}

/// The cron schedule around a `Runner`.
pub struct Schedule {
    scheduler: JobScheduler,
    jobs: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
#[error("scheduler: {0}")]
pub struct ScheduleError(String);

impl Schedule {
    pub async fn start(
        runner: &Runner,
        provision_cron: &str,
        refresh_cron: &str,
    ) -> Result<Schedule, ScheduleError> {
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| ScheduleError(e.to_string()))?;
        let mut schedule = Schedule {
            scheduler,
            jobs: Vec::new(),
        };
        schedule.set(runner, provision_cron, refresh_cron).await?;
        schedule
            .scheduler
            .start()
            .await
            .map_err(|e| ScheduleError(e.to_string()))?;
        Ok(schedule)
    }

    /// Replaces the cron expressions (reload).
    pub async fn set(
        &mut self,
        runner: &Runner,
        provision_cron: &str,
        refresh_cron: &str,
    ) -> Result<(), ScheduleError> {
        for id in self.jobs.drain(..) {
            self.scheduler
                .remove(&id)
                .await
                .map_err(|e| ScheduleError(e.to_string()))?;
        }
        for (kind, cron) in [
            (JobKind::Provision, provision_cron),
            (JobKind::Refresh, refresh_cron),
        ] {
            let runner = runner.clone();
            let job = Job::new_async(cron, move |_id, _lock| {
                let runner = runner.clone();
                Box::pin(async move {
                    runner.run(kind).await;
                })
            })
            .map_err(|e| ScheduleError(format!("[schedule] {} = {cron:?}: {e}", kind.as_str())))?;
            let id = self
                .scheduler
                .add(job)
                .await
                .map_err(|e| ScheduleError(e.to_string()))?;
            self.jobs.push(id);
        }
        Ok(())
    }

    pub async fn shutdown(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(error = %e, "scheduler did not stop cleanly");
        }
    }
}
