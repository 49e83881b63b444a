//! Chaos on PostgreSQL (issue 17): three `run` replicas on one database, 150 users, a random
//! replica kill -9'd every few seconds and started again. Afterwards every user has exactly one
//! inquiry and at least one invite, duplicate mails are at most the kills, no two runs of a job
//! overlapped, and Persona's rate was never exceeded in any minute.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::support::replica::Replica;
use crate::support::runs::{job_runs, overlaps};
use crate::support::stack::{Backend, Stack};

const USERS: usize = 150;
const REPLICAS: usize = 3;
const KILLS: usize = 8;
/// The budget the daemon is given and the simulator enforces.
const BUDGET_PER_MINUTE: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_killed_at_random_lose_and_duplicate_nothing() {
    let rpm = format!("requests_per_minute = {BUDGET_PER_MINUTE}");
    let Some(stack) = Stack::start_on_with(
        Backend::Postgres,
        "session",
        &[
            ("requests_per_minute = 240", rpm.as_str()),
            (
                "provision = \"0 * * * * *\"",
                "provision = \"*/5 * * * * *\"",
            ),
            (
                "refresh = \"0 */15 * * * *\"",
                "refresh = \"*/7 * * * * *\"",
            ),
        ],
        |sim| sim.rate_limit_per_minute = Some(BUDGET_PER_MINUTE as u32),
    )
    .await
    else {
        return;
    };
    // Slow answers, so kills land mid-request.
    stack.sim.set_faults(persona_sim::Faults {
        extra_latency_ms: 150,
        ..persona_sim::Faults::default()
    });
    stack.add_users(USERS);
    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|i| Replica::start(&stack, &format!("r{i}-0")))
        .collect();

    let mut rng = rand::rng();
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..4000))).await;
        let i = rng.random_range(0..REPLICAS);
        replicas[i].kill();
        replicas[i] = Replica::start(&stack, &format!("r{i}-{kill}"));
    }

    // Then the survivors (restarted ones included) finish: leases lapse within 30 s.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let invited = stack
            .text_rows("SELECT CAST(COUNT(*) AS TEXT) FROM user_states WHERE state = 'invited'")
            .await[0][0]
            .as_deref()
            .unwrap()
            .parse::<usize>()
            .unwrap();
        if invited == USERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {invited} of {USERS} invited; stderr of r0:\n{}",
            replicas[0].stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for r in &mut replicas {
        let status = r.stop().await;
        assert_eq!(status.code(), Some(0), "{} stderr:\n{}", r.name, r.stderr());
    }

    // Every user exactly one inquiry; nobody two.
    let mut inquiries: HashMap<String, usize> = HashMap::new();
    for inq in stack.sim.inquiries() {
        *inquiries
            .entry(inq.reference_id.clone().unwrap())
            .or_default() += 1;
    }
    let twice: Vec<_> = inquiries.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(inquiries.len(), USERS, "every user has an inquiry");
    assert!(twice.is_empty(), "duplicate inquiries: {twice:?}");

    // At least one invite each; duplicates at most one per kill.
    let mails = stack.smtp.messages();
    let mut per_user: HashMap<String, usize> = HashMap::new();
    let mut per_message: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        *per_user.entry(m.rcpt_to.clone()).or_default() += 1;
        *per_message.entry(m.message_id.clone()).or_default() += 1;
    }
    let duplicates: usize = per_message.values().map(|n| n - 1).sum();
    assert_eq!(per_user.len(), USERS, "every user got an invite");
    assert!(
        duplicates <= KILLS,
        "{duplicates} duplicate mails for {KILLS} kills"
    );

    // No two runs of one job overlapped, across all replicas (unfinished runs are a killed
    // replica's: they end at the kill, which the next run of the job started after).
    let runs = job_runs(&stack).await;
    let mut counted: HashMap<String, usize> = HashMap::new();
    for r in &runs {
        *counted.entry(r.job.clone()).or_default() += 1;
    }
    let overlapping = overlaps(&runs);
    assert!(overlapping.is_empty(), "runs overlapped: {overlapping:?}");

    // Persona's rate: no 429, no minute over the budget.
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
    let busiest = (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t < arrivals[i] + chrono::Duration::seconds(60))
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "{KILLS} kills over {REPLICAS} replicas: {} inquiries for {USERS} users, {} mails, \
         {duplicates} duplicates; {} job runs {counted:?} none overlapping; {} Persona requests, \
         {refused} 429s, busiest minute {busiest} (budget {BUDGET_PER_MINUTE})",
        inquiries.values().sum::<usize>(),
        mails.len(),
        runs.len(),
        log.len()
    );
    assert_eq!(refused, 0, "no 429");
    assert!(busiest <= BUDGET_PER_MINUTE, "busiest minute {busiest}");
}
