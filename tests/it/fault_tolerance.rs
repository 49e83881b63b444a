//! The pipeline under a misbehaving Persona: 500s, dropped connections, added latency and a
//! 429 storm. Every user still ends with one delivered link, and the client's rate stays within
//! its budget.

use std::collections::HashMap;
use std::time::Duration;

use inquiry_mailer::jobs::provision;
use persona_sim::Faults;

use crate::support::sim::Api;
use crate::support::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_still_deliver_every_link_once_within_the_rate() {
    let stack = Stack::start(
        "session",
        &[
            ("requests_per_minute = 240", "requests_per_minute = 600"),
            ("retry_base_delay = \"1s\"", "retry_base_delay = \"20ms\""),
        ],
    )
    .await;
    stack.add_users(60);
    let ctx = stack.context().await;

    // Open the simulator's minute window and move to its end, so the 429 storm below tells the
    // client to wait only a few seconds (Persona's RateLimit-Reset counts to the window's end).
    Api::new(&stack.sim).get("/rate-limits").await;
    stack.clock.advance(Duration::from_secs(57));
    stack.sim.set_faults(Faults {
        rate_limited_next: 3,
        server_error_share: 0.15,
        drop_share: 0.15,
        extra_latency_ms: 15,
        ..Faults::default()
    });

    let mut runs = 0;
    loop {
        runs += 1;
        let report = provision::run(&ctx)
            .await
            .expect("a run survives the faults");
        eprintln!("run {runs}: {report}");
        let status = stack.run(&["status", "--json"]).json();
        if status["users"]["invited"] == 60 {
            break;
        }
        assert!(
            runs < 40,
            "users still not invited after {runs} runs: {status}"
        );
    }
    stack.sim.set_faults(Faults::default());

    // One delivered link each.
    let mails = stack.smtp.wait_for_messages(60).await;
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        *per_user.entry(m.rcpt_to.clone()).or_default() += 1;
    }
    assert_eq!(per_user.len(), 60);
    assert!(
        per_user.values().all(|n| *n == 1),
        "a user was mailed twice: {per_user:?}"
    );
    // Never two live inquiries for one user.
    let mut live: HashMap<String, usize> = HashMap::new();
    for inq in stack.sim.inquiries() {
        if matches!(inq.status.as_str(), "created" | "pending") {
            *live.entry(inq.reference_id.unwrap()).or_default() += 1;
        }
    }
    assert_eq!(live.len(), 60);
    assert!(live.values().all(|n| *n == 1), "{live:?}");

    // The rate: the client's limiter allows `rpm/60` a second plus a burst of at most 10, so no
    // 5-second stretch may hold more than 50 + 10 requests as sent; counted here as they arrive
    // at the simulator (its clock moved only once, before the run), where the added latency's
    // scheduling can bunch two neighbours, hence a margin of 2.
    let times: Vec<chrono::DateTime<chrono::Utc>> = stack
        .sim
        .requests()
        .iter()
        .filter_map(|r| inquiry_mailer::clock::parse_ts(&r.at))
        .collect();
    let requests = times.len();
    let mut worst = 0;
    for (i, start) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|t| **t - *start < chrono::Duration::seconds(5))
            .count();
        worst = worst.max(n);
    }
    eprintln!("{requests} Persona requests in {runs} runs; at most {worst} in any 5 s");
    assert!(
        worst <= 62,
        "{worst} requests within 5 s exceed 600/min plus burst"
    );
    let rejected = stack
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert!(rejected >= 3, "the 429 storm happened ({rejected})");
}
