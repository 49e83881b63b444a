//! A run's writes are fenced by its claim on the job (`job_fires.term`): once another run has
//! taken the job, or the run's hold went unrenewed too long, nothing it writes commits. Each
//! body runs on a real SQLite file and on the real PostgreSQL server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use inquiry_mailer::store::coordination::{self, Fence, Fire};
use inquiry_mailer::store::{Store, StoreError, job_runs};

use crate::on_postgres::bare_store;
use crate::support::stack::Backend;

const JOB: &str = "provision";
/// How long a hold lets its run act after a renewal, as the daemon's: long enough that only
/// the term decides in the first test.
const ACT_FOR: Duration = Duration::from_secs(20);

fn seconds(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// Now in whole seconds, so times read back compare equal.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

/// When the latest recorded run of the job started.
async fn latest_run(store: &Store) -> Option<DateTime<Utc>> {
    job_runs::latest(store, JOB)
        .await
        .unwrap()
        .map(|r| r.started_at)
}

fn assert_fenced<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Fenced { job }) => assert_eq!(job, JOB, "{what}"),
        other => panic!("{what}: refused as fenced, not {other:?}"),
    }
}

on_both!(a_run_whose_job_another_run_took_writes_nothing);
async fn a_run_whose_job_another_run_took_writes_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = bare_store(backend, dir.path()).await else {
        return;
    };
    let t0 = now();
    let x = coordination::claim(&store, JOB, Fire::Unscheduled, "x", t0, t0 + seconds(30))
        .await
        .unwrap()
        .expect("a free job is claimed");
    let fence_x = Arc::new(Fence::new(JOB, x, ACT_FOR, Instant::now()));
    let run_x = store.fenced(fence_x.clone());

    // While x holds the job its writes go through, and nobody else may take the job.
    job_runs::record_start(&run_x, JOB, t0).await.unwrap();
    run_x.begin_write().await.expect("a write transaction");
    assert!(
        coordination::claim(
            &store,
            JOB,
            Fire::Unscheduled,
            "y",
            t0 + seconds(1),
            t0 + seconds(31)
        )
        .await
        .unwrap()
        .is_none(),
        "the job is held"
    );
    assert!(
        coordination::renew(&store, &fence_x, t0 + seconds(40))
            .await
            .unwrap()
    );

    // x stalls past its lease; y takes the job.
    let y = coordination::claim(
        &store,
        JOB,
        Fire::Unscheduled,
        "y",
        t0 + seconds(41),
        t0 + seconds(71),
    )
    .await
    .unwrap()
    .expect("a lapsed lease frees the job");
    assert!(y > x, "a later claim has a later term: {y:?} after {x:?}");

    // Every write of x is refused now, single statements and transactions alike.
    assert_fenced(
        job_runs::record_start(&run_x, JOB, t0 + seconds(42)).await,
        "a single write",
    );
    assert_fenced(run_x.begin_write().await.map(drop), "a transaction");
    assert!(fence_x.is_lost(), "x knows it lost the job");
    assert_eq!(
        latest_run(&store).await,
        Some(t0),
        "nothing of x's was written after y took the job"
    );

    // x's renewal and its release leave y's claim as it is.
    assert!(
        !coordination::renew(&store, &fence_x, t0 + seconds(100))
            .await
            .unwrap(),
        "x's renewal finds the job taken"
    );
    coordination::release(&store, &fence_x).await.unwrap();
    assert!(
        coordination::claim(
            &store,
            JOB,
            Fire::Unscheduled,
            "z",
            t0 + seconds(50),
            t0 + seconds(80)
        )
        .await
        .unwrap()
        .is_none(),
        "y still holds the job"
    );
    let fence_y = Arc::new(Fence::new(JOB, y, ACT_FOR, Instant::now()));
    job_runs::record_start(&store.fenced(fence_y), JOB, t0 + seconds(43))
        .await
        .expect("y writes");
}

on_both!(a_run_whose_hold_was_not_renewed_in_time_writes_nothing);
async fn a_run_whose_hold_was_not_renewed_in_time_writes_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = bare_store(backend, dir.path()).await else {
        return;
    };
    let t0 = now();
    let term = coordination::claim(&store, JOB, Fire::Unscheduled, "x", t0, t0 + seconds(30))
        .await
        .unwrap()
        .expect("a free job is claimed");
    // Claimed (or last renewed) longer ago than the hold lets a run act: a stall, or the
    // database out of reach. The term is still the job's, but the run must not act on it,
    // since its lease may lapse any moment.
    let long_ago = Instant::now()
        .checked_sub(ACT_FOR + Duration::from_secs(1))
        .unwrap();
    let fence = Arc::new(Fence::new(JOB, term, ACT_FOR, long_ago));
    let run = store.fenced(fence.clone());
    assert!(fence.is_lost());
    assert_fenced(
        job_runs::record_start(&run, JOB, t0).await,
        "a single write",
    );
    assert_fenced(run.begin_write().await.map(drop), "a transaction");
    assert_eq!(latest_run(&store).await, None);

    // A renewal that gets through in time gives the run its writes back.
    assert!(
        coordination::renew(&store, &fence, Utc::now() + seconds(30))
            .await
            .unwrap()
    );
    fence.renewed(Instant::now());
    assert!(!fence.is_lost());
    job_runs::record_start(&run, JOB, t0)
        .await
        .expect("writes again");
    assert_eq!(latest_run(&store).await, Some(t0));
}

on_both!(a_claim_waits_for_the_write_the_old_holder_has_in_flight);
async fn a_claim_waits_for_the_write_the_old_holder_has_in_flight(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = bare_store(backend, dir.path()).await else {
        return;
    };
    let t0 = now();
    let x = coordination::claim(&store, JOB, Fire::Unscheduled, "x", t0, t0 + seconds(1))
        .await
        .unwrap()
        .expect("a free job is claimed");
    let run_x = store.fenced(Arc::new(Fence::new(JOB, x, ACT_FOR, Instant::now())));
    // x's write transaction passed its fence check before y claims: y's claim must not
    // commit until x's write has, or x's write would land in y's term.
    let tx = run_x.begin_write().await.expect("x still holds the job");
    let claiming = tokio::spawn({
        let store = store.clone();
        async move {
            coordination::claim(
                &store,
                JOB,
                Fire::Unscheduled,
                "y",
                t0 + seconds(2),
                t0 + seconds(32),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !claiming.is_finished(),
        "the claim waits while x's checked write is open"
    );
    tx.commit().await.unwrap();
    let y = claiming
        .await
        .unwrap()
        .unwrap()
        .expect("then the lapsed job is taken");
    assert!(y > x);
    assert_fenced(run_x.begin_write().await.map(drop), "x after y's claim");
}
