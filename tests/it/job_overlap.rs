//! A job never runs twice at once: when its cron fires while the last run is still going, the
//! new run is skipped (and counted), so `job_runs` never holds two overlapping runs of one job.

use std::time::Duration;

use persona_sim::Faults;

use crate::support::daemon::{Daemon, free_port, listen_on, sample, wait_for_status};
use crate::support::stack::Stack;

const SKIPPED: &str = r#"job_runs_total{job="refresh",outcome="skipped_overlap"}"#;
const FINISHED: &str = r#"job_runs_total{job="refresh",outcome="ok"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_slower_than_its_schedule_never_overlaps_itself() {
    let port = free_port();
    let listen = listen_on(port);
    let stack = Stack::start(
        "session",
        &[
            (listen.0, &listen.1),
            (
                "refresh = \"0 */15 * * * *\"",
                "refresh = \"*/1 * * * * *\"",
            ),
        ],
    )
    .await;
    stack.add_users(3);
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;
    wait_for_status(&stack, &[], "every user invited", |s| {
        s["users"]["invited"].as_i64() == Some(3)
    })
    .await;

    // Each refresh run makes at least two Persona calls (the list, the template): with 1.5 s
    // added to each, a run spans several of its one-second ticks.
    stack.sim.set_faults(Faults {
        extra_latency_ms: 1500,
        ..Faults::default()
    });
    let finished_before = sample(&daemon.get("/metrics").await.body, FINISHED).unwrap_or(0.0);
    let metrics = daemon
        .wait_for_metrics("skipped ticks and two slow refresh runs", |m| {
            sample(m, SKIPPED).is_some_and(|n| n >= 1.0)
                && sample(m, FINISHED).is_some_and(|n| n >= finished_before + 2.0)
        })
        .await;
    eprintln!(
        "refresh runs: {} finished, {} skipped as overlapping",
        sample(&metrics, FINISHED).unwrap(),
        sample(&metrics, SKIPPED).unwrap()
    );
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
    assert!(
        daemon.stderr().contains("previous run still going"),
        "a skipped tick is logged"
    );

    let db = stack.db().await;
    let runs: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, job, started_at, finished_at FROM job_runs ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(
        runs.iter().all(|r| r.3.is_some()),
        "every run finished before the daemon exited: {runs:?}"
    );
    let slow = runs
        .iter()
        .filter(|(_, job, started, finished)| {
            job == "refresh" && span(started, finished.as_deref().unwrap()) > Duration::from_secs(1)
        })
        .count();
    assert!(slow >= 2, "refresh runs outlasted their tick: {runs:?}");
    // Timestamps are RFC 3339 UTC with milliseconds, so text order is time order.
    let overlapping: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT a.id, b.id FROM job_runs a JOIN job_runs b ON a.job = b.job AND a.id < b.id \
         WHERE b.started_at < COALESCE(a.finished_at, '9999') \
           AND a.started_at < COALESCE(b.finished_at, '9999')",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(overlapping, [], "overlapping runs of one job: {runs:?}");
    db.close().await;
}

fn span(started: &str, finished: &str) -> Duration {
    let parse = |s| inquiry_mailer::clock::parse_ts(s).expect("job_runs timestamp");
    (parse(finished) - parse(started))
        .to_std()
        .unwrap_or_default()
}
