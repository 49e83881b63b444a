//! Several `run` replicas on one PostgreSQL database: each cron tick runs on exactly one of
//! them and no two runs of a job overlap, counted from `job_runs`.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::support::daemon::wait_for_status;
use crate::support::replica::Replica;
use crate::support::runs::{job_runs_between, overlaps, runs_per_tick};
use crate::support::stack::{Backend, Stack};

/// Cron every two seconds for both jobs: several ticks in a short test.
const EVERY_TWO_SECONDS: &str = "*/2 * * * * *";
const TICK_SECONDS: i64 = 2;
/// What the scheduler logs when another replica claimed the tick.
const TAKEN_ELSEWHERE: &str = "another replica has this tick";
/// What the Persona client logs (at debug) for each answer it got.
const PERSONA_ANSWERED: &str = "Persona answered";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_each_cron_tick_once_and_never_at_the_same_time() {
    let provision = format!("provision = \"{EVERY_TWO_SECONDS}\"");
    let refresh = format!("refresh = \"{EVERY_TWO_SECONDS}\"");
    let Some(stack) = Stack::start_on(
        Backend::Postgres,
        "session",
        &[
            ("provision = \"0 * * * * *\"", provision.as_str()),
            ("refresh = \"0 */15 * * * *\"", refresh.as_str()),
        ],
    )
    .await
    else {
        return;
    };
    stack.add_users(4);
    let mut a = Replica::start(&stack, "a");
    let mut b = Replica::start(&stack, "b");
    wait_for_status(&stack, &[], "every user invited", |s| {
        s["users"]["invited"].as_i64() == Some(4)
    })
    .await;
    // The start-up runs are behind us; from here on every run is a cron tick's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = first_tick_after(chrono::Utc::now());
    let ticks = 8;
    let until = from + chrono::Duration::seconds(TICK_SECONDS * ticks);
    let wait = (until - chrono::Utc::now()).to_std().unwrap() + Duration::from_secs(2);
    tokio::time::sleep(wait).await;
    for r in [&mut a, &mut b] {
        let status = r.stop().await;
        assert_eq!(status.code(), Some(0), "{} stderr:\n{}", r.name, r.stderr());
    }

    let runs = job_runs_between(&stack, from, until).await;
    let unfinished: Vec<_> = runs.iter().filter(|r| r.finished.is_none()).collect();
    assert!(unfinished.is_empty(), "runs never finished: {unfinished:?}");
    for job in ["provision", "refresh"] {
        let per_tick = runs_per_tick(&runs, job, TICK_SECONDS);
        eprintln!(
            "{job}: {} runs over {ticks} ticks: {per_tick:?}",
            per_tick.values().sum::<usize>()
        );
        assert_eq!(
            per_tick.len(),
            ticks as usize,
            "{job}: every tick ran: {per_tick:?}"
        );
        assert!(
            per_tick.values().all(|n| *n == 1),
            "{job}: each tick ran once, not on both replicas: {per_tick:?}"
        );
    }
    // Never overlapping: each run finished before the next one of its job started.
    let overlapping = overlaps(&runs);
    assert!(overlapping.is_empty(), "runs overlap: {overlapping:?}");
    // Both replicas were there to contend: each tick's loser logged the winner's claim.
    let lost: usize = [&a, &b]
        .iter()
        .map(|r| r.stderr().matches(TAKEN_ELSEWHERE).count())
        .sum();
    eprintln!("ticks lost to the other replica: {lost}");
    assert!(
        lost >= 2 * ticks as usize,
        "each of {ticks} ticks of both jobs had a loser: {lost}"
    );
    let owners = stack
        .text_rows("SELECT job, owner, CAST(lease_until AS TEXT) FROM job_fires ORDER BY job")
        .await;
    assert_eq!(owners.len(), 2, "{owners:?}");
    assert!(
        owners.iter().all(|r| r[2].is_none()),
        "stopped replicas hold no job: {owners:?}"
    );
}

/// The first tick of the two-second schedule strictly after `t`.
fn first_tick_after(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    let secs = t.timestamp().div_euclid(TICK_SECONDS) * TICK_SECONDS + TICK_SECONDS;
    chrono::DateTime::from_timestamp(secs, 0).unwrap()
}

/// Persona's budget in the budget test: the daemon's `requests_per_minute` and the simulator's
/// limit alike.
const BUDGET_PER_MINUTE: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_persona_budget() {
    let rpm = format!("requests_per_minute = {BUDGET_PER_MINUTE}");
    let Some(stack) = Stack::start_on_with(
        Backend::Postgres,
        "session",
        &[("requests_per_minute = 240", rpm.as_str())],
        |sim| sim.rate_limit_per_minute = Some(BUDGET_PER_MINUTE as u32),
    )
    .await
    else {
        return;
    };
    // More users than the budget allows in the test's minute: both replicas are held back
    // by it all along, so without sharing they would spend twice the budget.
    let users = 2 * BUDGET_PER_MINUTE;
    stack.add_users(users);
    // Two `run` replicas (one of them provisions: a job runs on one replica at a time) and a
    // `once` beside them, provisioning the same backlog at the same time (users are leased
    // row by row): two processes spend the budget at once all along.
    let mut a = Replica::start(&stack, "a");
    let mut b = Replica::start(&stack, "b");
    let mut c = Replica::spawn(&stack, "c", &["once", "--job", "provision"]);
    // Past one full window of Persona's, so the first window is filled and the next begun.
    tokio::time::sleep(Duration::from_secs(70)).await;
    for r in [&mut a, &mut b] {
        let status = r.stop().await;
        assert_eq!(status.code(), Some(0), "{} stderr:\n{}", r.name, r.stderr());
    }
    // `once` has no graceful stop: SIGTERM ends it where it is (users leased row by row).
    let status = c.stop().await;
    assert!(
        status.success() || status.signal() == Some(libc::SIGTERM),
        "once: {status}; stderr:\n{}",
        c.stderr()
    );

    let log = stack.sim.requests();
    let refused = log.iter().filter(|r| r.status == Some(429)).count();
    let arrivals: Vec<chrono::DateTime<chrono::Utc>> = log
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.at)
                .unwrap()
                .to_utc()
        })
        .collect();
    let minute = chrono::Duration::seconds(60);
    let busiest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t < arrivals[i] + minute)
                .count()
        })
        .max()
        .unwrap_or(0);
    let answered: Vec<usize> = [&a, &b, &c]
        .iter()
        .map(|r| r.stderr().matches(PERSONA_ANSWERED).count())
        .collect();
    let invited = stack
        .text_rows("SELECT CAST(COUNT(*) AS TEXT) FROM user_states WHERE state = 'invited'")
        .await[0][0]
        .clone()
        .unwrap();
    eprintln!(
        "{} requests, {refused} refused with 429, busiest 60 s: {busiest} (budget {BUDGET_PER_MINUTE}), \
         answers per process (run a, run b, once c) {answered:?}, {invited} of {users} users invited",
        log.len()
    );
    assert_eq!(refused, 0, "no 429: the replicas kept to the shared budget");
    assert!(
        busiest <= BUDGET_PER_MINUTE,
        "at most {BUDGET_PER_MINUTE} requests in any 60 s, not {busiest}"
    );
    // The `run` replicas and the `once` each made a good share of the calls.
    let (runs, once) = (answered[0] + answered[1], answered[2]);
    assert!(
        runs >= BUDGET_PER_MINUTE / 10 && once >= BUDGET_PER_MINUTE / 10,
        "both sides called Persona: {answered:?}"
    );
    assert!(
        invited.parse::<usize>().unwrap() < users,
        "the budget, not the users, bounded the calls: {invited} of {users} invited"
    );
}

const FAILOVER_USERS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_provisioning_leaves_its_users_to_the_other() {
    let provision = "provision = \"*/5 * * * * *\"";
    let Some(stack) = Stack::start_on(
        Backend::Postgres,
        "session",
        &[("provision = \"0 * * * * *\"", provision)],
    )
    .await
    else {
        return;
    };
    // Slow answers, so provisioning is still going when one replica dies.
    stack.sim.set_faults(persona_sim::Faults {
        extra_latency_ms: 400,
        ..persona_sim::Faults::default()
    });
    stack.add_users(FAILOVER_USERS);
    let mut replicas = [Replica::start(&stack, "a"), Replica::start(&stack, "b")];

    // Kill -9 whichever replica is provisioning, once it has invited a few users.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let victim = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "provisioning never got going"
        );
        let invited = count(
            &stack,
            "SELECT COUNT(*) FROM user_states WHERE state = 'invited'",
        )
        .await;
        let holder = stack
            .text_rows(
                "SELECT owner FROM job_fires WHERE job = 'provision' AND lease_until IS NOT NULL",
            )
            .await;
        let pid = holder
            .first()
            .and_then(|r| r[0].as_deref())
            .and_then(|owner| owner.split(':').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        if let (true, Some(pid)) = (invited >= 3, pid)
            && let Some(i) = replicas.iter().position(|r| r.pid() == pid)
        {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let invited_at_kill = count(
        &stack,
        "SELECT COUNT(*) FROM user_states WHERE state = 'invited'",
    )
    .await;
    let leased_at_kill = count(
        &stack,
        "SELECT COUNT(*) FROM user_states WHERE lease_until IS NOT NULL",
    )
    .await;
    replicas[victim].kill();
    let killed_at = std::time::Instant::now();
    assert!(
        invited_at_kill < FAILOVER_USERS as i64,
        "killed mid-provisioning: {invited_at_kill} of {FAILOVER_USERS} invited"
    );

    // The survivor takes the job and the dead one's users once their leases lapse (30 s).
    let deadline = killed_at + Duration::from_secs(120);
    loop {
        let invited = count(
            &stack,
            "SELECT COUNT(*) FROM user_states WHERE state = 'invited'",
        )
        .await;
        if invited == FAILOVER_USERS as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor finished only {invited} of {FAILOVER_USERS}; stderr:\n{}",
            replicas[1 - victim].stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = killed_at.elapsed();
    let survivor = &mut replicas[1 - victim];
    let status = survivor.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", survivor.stderr());

    let mut per_user = std::collections::HashMap::<String, usize>::new();
    for inq in stack.sim.inquiries() {
        *per_user
            .entry(inq.reference_id.clone().unwrap())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "killed {} with {invited_at_kill} invited and {leased_at_kill} leased; the other \
         finished all {FAILOVER_USERS} {took:?} later; {} inquiries for {} users",
        replicas[victim].name,
        per_user.values().sum::<usize>(),
        per_user.len()
    );
    assert_eq!(per_user.len(), FAILOVER_USERS, "every user has an inquiry");
    assert!(twice.is_empty(), "nobody got two inquiries: {twice:?}");
}

async fn count(stack: &Stack, query: &str) -> i64 {
    let sql = query.replacen("COUNT(*)", "CAST(COUNT(*) AS TEXT)", 1);
    stack.text_rows(&sql).await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}
