//! The two jobs on their cron schedules (tokio-cron-scheduler), and provisioning as soon as new
//! users are signalled, each job behind a guard so a run never overlaps itself:
//! tokio-cron-scheduler starts a job whenever it is due, even while the last run is still going.
//! Each run is recorded in `job_runs` for `/healthz`. Several replicas on one database share
//! the guard through `job_fires`: a cron tick runs on the one replica that claims it, and no
//! run starts while another replica's run of the job holds its busy lease.

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
use crate::store::coordination::{self, Fence, Fire};
use crate::store::{job_runs, user_states};

/// How long a run holds its job across replicas without renewing: a killed replica's job is
/// free again this long after its last renewal.
const JOB_LEASE: Duration = Duration::from_secs(30);
/// How often a running run renews its hold (three renewals per lease, so one slow or lost
/// renewal does not free the job while the run goes on).
const JOB_RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often a run that must not be dropped asks again while another replica runs the job.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// How long a run goes on acting after its last good renewal: well inside [`JOB_LEASE`], so a
/// run cut off from the database (or stalled) has stopped before its lease lapses and another
/// replica may take the job, even with replicas' clocks this far apart.
const ACT_FOR: Duration = Duration::from_secs(20);
/// How soon a renewal that failed (database trouble) is tried again.
const RENEW_RETRY: Duration = Duration::from_secs(1);

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
    /// Another replica took this cron tick.
    SkippedElsewhere,
    /// The daemon is stopping: no new runs.
    Stopping,
}

fn skipped_overlap(kind: JobKind, why: &'static str) -> RunOutcome {
    tracing::warn!(job = kind.as_str(), "{why}");
    metrics::counter!("job_runs_total", "job" => kind.as_str(), "outcome" => "skipped_overlap")
        .increment(1);
    RunOutcome::SkippedOverlap
}

/// Keeps `fence`'s hold on its job: renews it every [`JOB_RENEW_EVERY`] (every
/// [`RENEW_RETRY`] after a failed renewal) and returns when the hold is lost, which ends the
/// run: another run took the job, or no renewal succeeded within [`ACT_FOR`] (a stall, or the
/// database out of reach).
async fn hold(store: crate::store::Store, fence: Arc<Fence>) {
    let job = fence.job().to_owned();
    let mut wait = JOB_RENEW_EVERY;
    loop {
        let deadline = tokio::time::Instant::from_std(fence.deadline());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
        let sent = std::time::Instant::now();
        let until = chrono::Utc::now() + JOB_LEASE;
        let renewed = tokio::select! {
            r = coordination::renew(&store, &fence, until) => r,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match renewed {
            Ok(true) => {
                fence.renewed(sent);
                wait = JOB_RENEW_EVERY;
            }
            Ok(false) => {
                fence.lose();
                tracing::error!(job, "another replica took the job: this run stops");
                return;
            }
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot renew the job's hold; trying again");
                wait = RENEW_RETRY;
            }
        }
    }
    fence.lose();
    tracing::error!(
        job,
        "the job's hold was not renewed for {} s: this run stops before another replica may take the job",
        ACT_FOR.as_secs()
    );
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

    /// Runs `kind` now unless a run of it is in progress here or on another replica.
    pub async fn run(&self, kind: JobKind) -> RunOutcome {
        self.run_claimed(kind, Fire::Unscheduled).await
    }

    /// Runs the cron tick `tick` of `kind` unless a run of it is in progress, or another
    /// replica took this tick (the next one comes).
    pub async fn run_tick(&self, kind: JobKind, tick: chrono::DateTime<chrono::Utc>) -> RunOutcome {
        self.run_claimed(kind, Fire::Tick(tick)).await
    }

    async fn run_claimed(&self, kind: JobKind, fire: Fire) -> RunOutcome {
        let Ok(held) = self.guard(kind).try_lock() else {
            return skipped_overlap(kind, "previous run still going; this one is skipped");
        };
        match self.claim(kind, fire).await {
            Ok(Some(fence)) => self.run_holding(kind, held, fence).await,
            Ok(None) => match fire {
                Fire::Tick(_) => {
                    tracing::debug!(job = kind.as_str(), "another replica has this tick");
                    RunOutcome::SkippedElsewhere
                }
                Fire::Unscheduled => skipped_overlap(
                    kind,
                    "another replica's run still going; this one is skipped",
                ),
            },
            Err(e) => {
                tracing::error!(job = kind.as_str(), error = %e, "cannot claim the job run");
                RunOutcome::Failed(e.to_string())
            }
        }
    }

    /// Runs `kind` as soon as the run in progress, if any, has ended (here or on another
    /// replica): for work that must not be dropped, such as rows that run may have read past.
    pub async fn run_when_free(&self, kind: JobKind) -> RunOutcome {
        loop {
            let held = self.guard(kind).lock().await;
            match self.claim(kind, Fire::Unscheduled).await {
                Ok(Some(fence)) => return self.run_holding(kind, held, fence).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(job = kind.as_str(), error = %e, "cannot claim the job run; trying again")
                }
            }
            drop(held);
            let stop = self.context.read().await.stop.clone();
            tokio::select! {
                _ = stop.cancelled() => return RunOutcome::Stopping,
                _ = tokio::time::sleep(BUSY_RETRY) => {}
            }
        }
    }

    /// Takes `kind` in `job_fires` for this process (see [`coordination::claim`]): the hold
    /// the run will have, or `None` when the job or the tick is not to be had.
    async fn claim(&self, kind: JobKind, fire: Fire) -> crate::store::Result<Option<Arc<Fence>>> {
        let ctx = self.context.read().await.clone();
        if ctx.stop.is_cancelled() {
            return Ok(None);
        }
        let sent = std::time::Instant::now();
        // The wall clock, as the cron schedule's: the lease is compared across replicas.
        let now = chrono::Utc::now();
        let term = coordination::claim(
            &ctx.store,
            kind.as_str(),
            fire,
            user_states::lease_owner(),
            now,
            now + JOB_LEASE,
        )
        .await?;
        Ok(term.map(|term| Arc::new(Fence::new(kind.as_str(), term, ACT_FOR, sent))))
    }

    /// Runs `kind` with this process's guard and the job's claim held: every write of the run
    /// goes through the fence, the hold is renewed while the run goes on, a lost hold ends the
    /// run where it is, and the claim is given back at the end.
    async fn run_holding(
        &self,
        kind: JobKind,
        held: MutexGuard<'_, ()>,
        fence: Arc<Fence>,
    ) -> RunOutcome {
        let ctx = self.context.read().await.clone();
        let fenced = JobContext {
            store: ctx.store.fenced(fence.clone()),
            ..(*ctx).clone()
        };
        let holding = tokio::spawn(hold(ctx.store.clone(), fence.clone()));
        let outcome = self.run_guarded(kind, held, &ctx, &fenced, holding).await;
        if let Err(e) = coordination::release(&ctx.store, &fence).await {
            tracing::warn!(job = kind.as_str(), error = %e, "job kept until its lease lapses");
        }
        outcome
    }

    /// Runs the job on `fenced` (the run's context, its writes fenced) until it ends or
    /// `holding` ends (the hold is lost); `ctx` records the run's end, which is this process's
    /// own bookkeeping and is written however the run ended.
    async fn run_guarded(
        &self,
        kind: JobKind,
        _held: MutexGuard<'_, ()>,
        ctx: &JobContext,
        fenced: &JobContext,
        mut holding: tokio::task::JoinHandle<()>,
    ) -> RunOutcome {
        if ctx.stop.is_cancelled() {
            holding.abort();
            return RunOutcome::Stopping;
        }
        let started = ctx.clock.now();
        let run_id = match job_runs::record_start(&fenced.store, kind.as_str(), started).await {
            Ok(id) => id,
            Err(e) => {
                holding.abort();
                tracing::error!(job = kind.as_str(), error = %e, "cannot record the job run");
                return RunOutcome::Failed(e.to_string());
            }
        };
        self.notifier.status(&format!("{}: running", kind.as_str()));
        let clock = Instant::now();
        let job = async {
            match kind {
                JobKind::Provision => provision::run(fenced).await.map(|r| r.to_string()),
                JobKind::Refresh => refresh::run(fenced).await.map(|r| r.to_string()),
            }
        };
        // A lost hold drops the run where it is, its users' tasks with it: what it left
        // half-done is what a crash leaves, and the next holder picks it up.
        let result = tokio::select! {
            r = job => r.map_err(|e| e.to_string()),
            _ = &mut holding => Err(crate::store::StoreError::Fenced { job: kind.as_str().to_owned() }.to_string()),
        };
        holding.abort();
        let secs = clock.elapsed().as_secs_f64();
        metrics::histogram!("job_duration_seconds", "job" => kind.as_str()).record(secs);
        let (outcome, detail, ret) = match result {
            Ok(summary) => {
                tracing::info!(job = kind.as_str(), seconds = secs, "{summary}");
                ("ok", summary.clone(), RunOutcome::Finished(summary))
            }
            Err(e) => {
                tracing::error!(job = kind.as_str(), error = %e, "job run failed");
                ("failed", e.clone(), RunOutcome::Failed(e))
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
            let schedule = tick_schedule(cron).map_err(|e| {
                ScheduleError(format!("[schedule] {} = {cron:?}: {e}", kind.as_str()))
            })?;
            let job = Job::new_async(cron, move |_id, _lock| {
                let runner = runner.clone();
                let schedule = schedule.clone();
                Box::pin(async move {
                    // The tick this call is for: the latest due time, the same on every
                    // replica whose clock is within one period of the others'.
                    match due_tick(&schedule, chrono::Utc::now()) {
                        Ok(tick) => {
                            runner.run_tick(kind, tick).await;
                        }
                        Err(e) => tracing::error!(job = kind.as_str(), error = %e, "cannot tell which tick is due"),
                    }
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

/// `cron` parsed as tokio-cron-scheduler parses it (seconds field, day-of-month and day-of-week
/// both required), to name the tick a call is for.
fn tick_schedule(cron: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
}

/// The latest time at or before `now` that `schedule` names, in whole seconds (croner keeps
/// the start's fraction of a second, which differs between replicas).
fn due_tick(
    schedule: &croner::Cron,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, croner::errors::CronError> {
    let whole = chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    schedule.find_previous_occurrence(&whole, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_within_a_tick_names_the_same_tick() {
        let schedule = tick_schedule("*/2 * * * * *").unwrap();
        let tick = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:04Z")
            .unwrap()
            .to_utc();
        for late_ms in [0, 1, 450, 999, 1_999] {
            let now = tick + chrono::Duration::milliseconds(late_ms);
            assert_eq!(due_tick(&schedule, now).unwrap(), tick, "{late_ms} ms late");
        }
        let next = tick + chrono::Duration::seconds(2);
        assert_eq!(due_tick(&schedule, next).unwrap(), next);
    }
}
