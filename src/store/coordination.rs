//! Which replica runs each job (`job_fires`): several daemons on one PostgreSQL database take
//! each cron tick once, by compare-and-swap on the tick in the statement that records it, and
//! never run one job at the same time, by a short busy lease the running replica renews. No
//! session state is involved (no advisory lock), so a transaction-mode pooler cannot break it.
//! On a SQLite file the one daemon wins every claim; a lease left by a killed daemon is freed
//! at once when its pid is gone, as `user_states::release_orphaned` does for users.
//! On PostgreSQL the replicas also share one Persona request budget (`persona_budget`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Dialect, Result, Store, StoreError, WriteTx, ts, ts_opt};

/// What a claim is for: a cron tick (taken once across replicas) or a run the replica decided
/// itself (start-up, new users), which only needs the job to be free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    Tick(DateTime<Utc>),
    Unscheduled,
}

/// Takes `job` for `owner` until `lease_until` when no other run holds it (its lease ended
/// before `now`) and, for a tick, when no replica has taken this tick or a later one yet: the
/// new claim's term, or `None`. One statement: of two replicas claiming the same tick, exactly
/// one gets a term.
pub async fn claim(
    store: &Store,
    job: &str,
    fire: Fire,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Term>> {
    if let Some(term) = claim_once(store, job, fire, owner, now, lease_until).await? {
        return Ok(Some(term));
    }
    if store.dialect() == Dialect::Sqlite && free_if_owner_died(store, job).await? {
        return claim_once(store, job, fire, owner, now, lease_until).await;
    }
    Ok(None)
}

/// One claim of a job: the claims of all replicas are numbered in the order they were taken,
/// so a later claim's term is always greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Term(i64);

async fn claim_once(
    store: &Store,
    job: &str,
    fire: Fire,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Term>> {
    // The conflict arm re-reads the row under its lock, so two concurrent claims are ordered:
    // the second sees the first's fire_at and lease_until and updates nothing.
    let sql = match fire {
        Fire::Tick(_) => {
            "INSERT INTO job_fires (job, fire_at, owner, lease_until, term) VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (job) DO UPDATE SET fire_at = excluded.fire_at, owner = excluded.owner, \
             lease_until = excluded.lease_until, term = job_fires.term + 1 \
             WHERE (job_fires.fire_at IS NULL OR job_fires.fire_at < excluded.fire_at) \
             AND (job_fires.lease_until IS NULL OR job_fires.lease_until < $5) \
             RETURNING term"
        }
        Fire::Unscheduled => {
            "INSERT INTO job_fires (job, fire_at, owner, lease_until, term) VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (job) DO UPDATE SET owner = excluded.owner, \
             lease_until = excluded.lease_until, term = job_fires.term + 1 \
             WHERE job_fires.lease_until IS NULL OR job_fires.lease_until < $5 \
             RETURNING term"
        }
    };
    let tick = match fire {
        Fire::Tick(t) => ts_opt(Some(t)),
        Fire::Unscheduled => ts_opt(None),
    };
    let term: Option<i64> = on_write!(store, |c| sqlx::query_scalar(sql)
        .bind(job)
        .bind(tick)
        .bind(owner)
        .bind(ts(lease_until))
        .bind(ts(now))
        .fetch_optional(c)
        .await?);
    Ok(term.map(Term))
}

/// Extends the hold of `fence`'s claim on its job; `false` when the claim is no longer the
/// job's (its lease lapsed and another run took the job).
pub async fn renew(store: &Store, fence: &Fence, lease_until: DateTime<Utc>) -> Result<bool> {
    let changed = on_write!(store, |c| {
        sqlx::query(
            "UPDATE job_fires SET lease_until = $1 \
             WHERE job = $2 AND term = $3 AND lease_until IS NOT NULL",
        )
        .bind(ts(lease_until))
        .bind(&fence.job)
        .bind(fence.term.0)
        .execute(c)
        .await?
        .rows_affected()
    });
    Ok(changed == 1)
}

/// Ends `fence`'s claim (the run is over), so the next tick anywhere may take the job; a
/// claim another run has replaced is left alone.
pub async fn release(store: &Store, fence: &Fence) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE job_fires SET lease_until = NULL WHERE job = $1 AND term = $2"
    )
    .bind(&fence.job)
    .bind(fence.term.0)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// A run's hold on its job, checked by every write the run makes (see [`Store::fenced`]):
/// the write commits only while the claim's [`Term`] is still the job's, and only while the
/// hold was renewed within `act_for`, so a run that stalled or lost the database stops acting
/// before its lease lapses and another run may take the job.
#[derive(Debug)]
pub struct Fence {
    job: String,
    term: Term,
    act_for: Duration,
    renewed: std::sync::Mutex<Instant>,
    lost: AtomicBool,
}

impl Fence {
    /// The hold of the claim `term` on `job`, taken at `claimed` (when the claim was sent).
    pub fn new(job: &str, term: Term, act_for: Duration, claimed: Instant) -> Fence {
        Fence {
            job: job.to_owned(),
            term,
            act_for,
            renewed: std::sync::Mutex::new(claimed),
            lost: AtomicBool::new(false),
        }
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    pub fn term(&self) -> Term {
        self.term
    }

    /// A renewal sent at `sent` succeeded: the run may act until `sent + act_for`.
    pub fn renewed(&self, sent: Instant) {
        let mut at = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        *at = (*at).max(sent);
    }

    /// Until when the run may act, unless a renewal comes first.
    pub fn deadline(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) + self.act_for
    }

    /// From now on every write of the run is refused.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the run may no longer act: its claim was replaced, or not renewed in time.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst) || Instant::now() >= self.deadline()
    }

    fn refused(&self) -> StoreError {
        StoreError::Fenced {
            job: self.job.clone(),
        }
    }
}

/// Checks at the start of `tx` that `fence` may still act and its term is still its job's.
/// PostgreSQL reads the row `FOR SHARE`: a claim that would replace the term waits until `tx`
/// has ended, so no write of an older term commits after a newer claim. SQLite's write
/// transaction holds the database's one write lock, which orders claims the same way.
pub(super) async fn check_fence(tx: &mut WriteTx, fence: &Fence) -> Result<()> {
    if fence.is_lost() {
        return Err(fence.refused());
    }
    let term: Option<i64> = on_tx!(
        tx,
        sqlite
            | c
            | sqlx::query_scalar("SELECT term FROM job_fires WHERE job = $1")
                .bind(&fence.job)
                .fetch_optional(c)
                .await?,
        postgres
            | c
            | sqlx::query_scalar("SELECT term FROM job_fires WHERE job = $1 FOR SHARE")
                .bind(&fence.job)
                .fetch_optional(c)
                .await?
    );
    if term != Some(fence.term.0) {
        fence.lose();
        return Err(fence.refused());
    }
    Ok(())
}

/// SQLite only: frees `job` when the process holding it is gone (every process that can hold
/// it runs on this machine), so a restarted daemon does not wait for its dead self's lease.
async fn free_if_owner_died(store: &Store, job: &str) -> Result<bool> {
    let owner: Option<String> = on_read!(store, |c| sqlx::query_scalar(
        "SELECT owner FROM job_fires WHERE job = $1 AND lease_until IS NOT NULL"
    )
    .bind(job)
    .fetch_optional(c)
    .await?);
    let Some(owner) = owner else {
        return Ok(false);
    };
    let pid = owner.split(':').next().and_then(|p| p.parse::<i32>().ok());
    if owner == super::user_states::lease_owner() || !pid.is_some_and(|p| p > 0 && !alive(p)) {
        return Ok(false);
    }
    on_write!(store, |c| sqlx::query(
        "UPDATE job_fires SET lease_until = NULL WHERE job = $1 AND owner = $2"
    )
    .bind(job)
    .bind(&owner)
    .execute(c)
    .await?
    .rows_affected());
    Ok(true)
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence only; EPERM means it exists but is someone else's.
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether other processes elsewhere may share this database (PostgreSQL), so what they spend
/// (the Persona budget) must be counted in it. A SQLite file has one daemon.
pub fn shared_by_replicas(store: &Store) -> bool {
    store.dialect() == Dialect::Postgres
}

/// The shared budget's one row.
const BUDGET: &str = "persona";

/// Takes one request slot of the replicas' shared GCRA (emission period `period`, `burst`
/// requests at once): `Ok` when taken, `Err(wait)` until the next slot. One statement per
/// request, on the server's clock (`statement_timestamp()`), so the replicas' clocks do not
/// matter and no slot is lost when a replica dies. PostgreSQL only.
pub async fn take_budget_slot(
    store: &Store,
    period: Duration,
    burst: u32,
) -> Result<std::result::Result<(), Duration>> {
    let period_us = micros(period);
    // A slot is free when the theoretical arrival time is at most burst-1 periods ahead.
    let tolerance_us = period_us.saturating_mul(i64::from(burst.saturating_sub(1)));
    let taken: Option<i32> = on_write!(store, |c| {
        sqlx::query_scalar(
        "INSERT INTO persona_budget (name, arrival_at) \
         VALUES ($1, statement_timestamp() + $2 * interval '1 microsecond') \
         ON CONFLICT (name) DO UPDATE \
         SET arrival_at = GREATEST(persona_budget.arrival_at, statement_timestamp()) + $2 * interval '1 microsecond' \
         WHERE persona_budget.arrival_at <= statement_timestamp() + $3 * interval '1 microsecond' \
         RETURNING 1"
    )
    .bind(BUDGET)
    .bind(period_us)
    .bind(tolerance_us)
    .fetch_optional(c)
    .await?
    });
    if taken.is_some() {
        return Ok(Ok(()));
    }
    let wait_us: i64 = on_read!(store, |c| {
        sqlx::query_scalar(
        "SELECT CAST(EXTRACT(EPOCH FROM (arrival_at - statement_timestamp())) * 1000000 AS bigint) - $2 \
         FROM persona_budget WHERE name = $1"
    )
    .bind(BUDGET)
    .bind(tolerance_us)
    .fetch_one(c)
    .await?
    });
    Ok(Err(Duration::from_micros(
        u64::try_from(wait_us).unwrap_or(0),
    )))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Extends every user lease `owner` holds that has not lapsed at `now` to `until`: one
/// statement for all the users a process works on, the heartbeat that keeps leases short.
/// A lapsed lease is not revived: another worker may have taken the user since.
pub async fn renew_user_leases(
    store: &Store,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u64> {
    Ok(on_write!(store, |c| sqlx::query(
        "UPDATE user_states SET lease_until = $1 WHERE lease_owner = $2 AND lease_until > $3"
    )
    .bind(ts(until))
    .bind(owner)
    .bind(ts(now))
    .execute(c)
    .await?
    .rows_affected()))
}
