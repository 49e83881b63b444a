//! `run` killed with SIGKILL at random moments, again and again, while it provisions and
//! refreshes: no user ever holds two live inquiries, no user is lost, and a mail is delivered
//! twice at most once per kill.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use persona_sim::Faults;
use rand::Rng;

use crate::support::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_of_run_lose_nothing_and_duplicate_nothing() {
    let stack = Stack::start(
        "session",
        &[
            // Every created inquiry is due for a recreate at once, so refresh works on every run.
            ("\nexpires_after = \"7d\"", "\nexpires_after = \"1h\""),
            (
                "refresh_before_expiry = \"24h\"",
                "refresh_before_expiry = \"3598s\"",
            ),
            (
                "min_resend_interval = \"24h\"",
                "min_resend_interval = \"1s\"",
            ),
            (
                "provision = \"0 * * * * *\"",
                "provision = \"*/1 * * * * *\"",
            ),
            (
                "refresh = \"0 */15 * * * *\"",
                "refresh = \"*/3 * * * * *\"",
            ),
            ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\""),
            ("concurrency = 16", "concurrency = 1"),
        ],
    )
    .await;
    stack.add_users(40);
    stack.sim.set_faults(Faults {
        extra_latency_ms: 15,
        ..Faults::default()
    });

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut kills = 0;
    let mut rng = rand::rng();
    while kills < 22 && Instant::now() < deadline {
        let mut child = stack
            .command(&["run"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start run");
        let after = Duration::from_millis(rng.random_range(250..2500));
        tokio::time::sleep(after).await;
        if child.try_wait().unwrap().is_some() {
            panic!("run exited by itself");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 20, "only {kills} kills in time");

    // A clean run finishes what the kills interrupted; it takes back the killed processes'
    // leases at once.
    stack.run(&["once", "--job", "all"]).assert_code(0);

    // No user has two live inquiries.
    let mut live: HashMap<String, usize> = HashMap::new();
    for inq in stack.sim.inquiries() {
        if matches!(inq.status.as_str(), "created" | "pending") {
            *live.entry(inq.reference_id.clone().unwrap()).or_default() += 1;
        }
    }
    let doubles: Vec<_> = live.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubles.is_empty(),
        "users with two live inquiries: {doubles:?}"
    );
    assert_eq!(live.len(), 40, "every user holds one live inquiry");

    // No user lost: everyone invited (or further) and mailed.
    let status = stack.run(&["status", "--json"]).json();
    assert_eq!(status["users"]["pending"], 0, "{status}");
    assert_eq!(status["users"]["skipped"], 0, "{status}");
    let mails = stack.smtp.messages();
    let mut per_user: HashMap<String, usize> = HashMap::new();
    let mut per_message: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        *per_user.entry(m.rcpt_to.clone()).or_default() += 1;
        *per_message.entry(m.message_id.clone()).or_default() += 1;
    }
    assert_eq!(per_user.len(), 40, "every user got mail");
    let duplicates: usize = per_message.values().map(|n| n - 1).sum();
    eprintln!(
        "{kills} SIGKILLs; {} mails delivered, {duplicates} duplicate deliveries, {} inquiries created in all",
        mails.len(),
        stack.sim.count_requests("POST", "/inquiries")
    );
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates for {kills} kills"
    );
}
