//! A replica that loses its database connection while it runs a job stops acting before another
//! replica takes the job over: its connections are killed (`pg_terminate_backend`) and its role
//! may not log in again until the other replica has finished the job, then it may. What it says
//! to Persona and to the SMTP server goes through relays of its own that note when it spoke.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::support::relay::CountingRelay;
use crate::support::replica::Replica;
use crate::support::stack::{Backend, Stack};

const USERS: usize = 40;
/// The role the cut-off replica connects as, so its connections alone can be refused.
const ROLE: &str = "replica_cut_off";
/// What the cut-off replica logs when it drops its run.
const STOPS: &str = "this run stops";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_the_database_stops_its_run_before_another_takes_the_job() {
    let Some(stack) = Stack::start_on(
        Backend::Postgres,
        "session",
        &[
            (
                "provision = \"0 * * * * *\"",
                "provision = \"*/2 * * * * *\"",
            ),
            // No refresh during the test: only provisioning talks to Persona.
            ("refresh = \"0 */15 * * * *\"", "refresh = \"0 0 0 1 1 *\""),
        ],
    )
    .await
    else {
        return;
    };
    // Slow answers, so provisioning is still going when the replica is cut off.
    stack.sim.set_faults(persona_sim::Faults {
        extra_latency_ms: 400,
        ..persona_sim::Faults::default()
    });
    stack
        .execute(&format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"))
        .await;
    let database = stack.database.clone().expect("a PostgreSQL stack");
    let cut_url = database.url_as(ROLE);
    let sim_addr = stack.sim.api_base().socket_addrs(|| None).unwrap()[0];
    let persona = CountingRelay::start(sim_addr).await;
    let smtp = CountingRelay::start(stack.smtp.addr()).await;
    stack.add_users(USERS);
    let a = Replica::start_with(
        &stack,
        "a",
        &["run"],
        &[
            ("url = ", format!("url = \"{cut_url}\"")),
            (
                "api_base = ",
                format!("api_base = \"{}\"", persona.http_url("/api/v1")),
            ),
            ("smtp_url = ", format!("smtp_url = \"{}\"", smtp.smtp_url())),
        ],
    );

    // Once a is provisioning and has invited a few, b joins, and a is cut off.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let holder = stack
            .text_rows(
                "SELECT owner FROM job_fires WHERE job = 'provision' AND lease_until IS NOT NULL",
            )
            .await;
        let held_by_a = holder
            .first()
            .and_then(|r| r[0].as_deref())
            .is_some_and(|owner| owner.starts_with(&format!("{}:", a.pid())));
        if held_by_a && invited(&stack).await >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a never got provisioning going; stderr:\n{}",
            a.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Replica::start(&stack, "b");
    stack.execute(&format!("ALTER ROLE {ROLE} NOLOGIN")).await;
    let cut_at = Utc::now();
    let killed = stack
        .text_rows(&format!(
            "SELECT CAST(pg_terminate_backend(pid) AS TEXT) FROM pg_stat_activity WHERE usename = '{ROLE}'"
        ))
        .await;
    let invited_at_cut = invited(&stack).await;
    assert!(!killed.is_empty(), "a had connections to kill");
    assert!(
        invited_at_cut < USERS as i64,
        "cut off mid-provisioning: {invited_at_cut} of {USERS} invited"
    );

    // b takes the job once a's lease has lapsed, and finishes everyone.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while invited(&stack).await < USERS as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "b finished only {} of {USERS}; b's stderr:\n{}",
            invited(&stack).await,
            b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let taken_over = stack
        .text_rows(&format!(
            "SELECT CAST(EXTRACT(EPOCH FROM MIN(started_at)) AS TEXT) FROM job_runs \
             WHERE job = 'provision' AND started_at > '{}'",
            cut_at.to_rfc3339()
        ))
        .await[0][0]
        .as_deref()
        .map(epoch)
        .expect("b recorded its run");

    // a may connect again; a run it had kept going would now get its Persona budget back.
    let restored_at = Utc::now();
    stack.execute(&format!("ALTER ROLE {ROLE} LOGIN")).await;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let log = a.stderr();
    let stopped_at = log
        .lines()
        .find(|l| l.contains(STOPS))
        .map(|l| {
            DateTime::parse_from_rfc3339(l.split_whitespace().next().unwrap())
                .unwrap()
                .to_utc()
        })
        .unwrap_or_else(|| panic!("a says its run stopped; stderr:\n{log}"));
    let spoke = |relay: &CountingRelay| {
        let at = relay.client_sent_at();
        (
            at.iter().filter(|t| **t > cut_at).max().copied(),
            at.iter().filter(|t| **t >= restored_at).count(),
        )
    };
    let (persona_last, persona_after) = spoke(&persona);
    let (smtp_last, smtp_after) = spoke(&smtp);
    eprintln!(
        "cut off at {cut_at} with {invited_at_cut} of {USERS} invited; a stopped its run {:?} later, \
         b took the job {:?} later; a's last bytes to Persona {:?}, to SMTP {:?} after the cut; \
         after a could connect again: {persona_after} to Persona, {smtp_after} to SMTP",
        (stopped_at - cut_at).to_std().unwrap(),
        (taken_over - cut_at).to_std().unwrap(),
        persona_last.map(|t| (t - cut_at).to_std().unwrap()),
        smtp_last.map(|t| (t - cut_at).to_std().unwrap()),
    );
    assert!(
        stopped_at < taken_over,
        "a stopped ({stopped_at}) before b took the job ({taken_over})"
    );
    for (what, last) in [("Persona", persona_last), ("SMTP", smtp_last)] {
        if let Some(last) = last {
            assert!(
                last < taken_over,
                "a's last bytes to {what} ({last}) came before b took the job ({taken_over})"
            );
        }
    }
    assert_eq!(
        (persona_after, smtp_after),
        (0, 0),
        "a, connected again, did nothing of its dropped run"
    );

    // Everyone has one inquiry and at least one invite.
    let mut per_user = std::collections::HashMap::<String, usize>::new();
    for inquiry in stack.sim.inquiries() {
        *per_user
            .entry(inquiry.reference_id.clone().unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_user.len(), USERS, "every user has an inquiry");
    assert!(
        per_user.values().all(|n| *n == 1),
        "nobody has two: {per_user:?}"
    );
    let mut mails = std::collections::HashMap::<String, usize>::new();
    for mail in stack.smtp.messages() {
        *mails.entry(mail.rcpt_to.clone()).or_default() += 1;
    }
    assert_eq!(mails.len(), USERS, "every user got an invite");
    drop((a, b));
}

async fn invited(stack: &Stack) -> i64 {
    stack
        .text_rows("SELECT CAST(COUNT(*) AS TEXT) FROM user_states WHERE state = 'invited'")
        .await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn epoch(text: &str) -> DateTime<Utc> {
    let secs: f64 = text.parse().unwrap();
    DateTime::from_timestamp_micros((secs * 1e6) as i64).unwrap()
}
