//! Finishing wins every race (SPEC "The lifecycle rules"): a user who completes the inquiry
//! refresh is replacing is finished with Persona's outcome, gets nothing more and holds no live
//! inquiry; and `once` beside `run` renews each due user at most once.

use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::{Action, Faults};

use crate::support::daemon::{Daemon, free_port, listen_on};
use crate::support::refresh::{
    by_recipient, inquiries_by_user, live_count, provisioned, user_status,
};
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_completes_while_refresh_replaces_their_inquiry_is_finished_and_mailed_nothing()
{
    const USERS: usize = 4;
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, USERS).await;
    let (template, _) = stack.sim.templates()[0].clone();
    stack.clock.advance(DAY + HOUR);
    stack.sim.publish_template_version(&template).unwrap();
    // Persona answers slowly, and each user completes their old inquiry after refresh decided
    // to replace it and before Persona applies its expire, which then answers 409.
    stack.sim.set_faults(Faults {
        extra_latency_ms: 200,
        ..Faults::default()
    });
    for inq in stack.sim.inquiries() {
        stack.sim.before_expire(&inq.id, Action::Complete).unwrap();
    }
    stack.sim.clear_requests();

    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.recreated, 0, "{report}");
    assert_eq!(report.users_finished, USERS, "{report}");
    assert_eq!(report.mails_sent, 0, "{report}");
    assert_eq!(
        stack.sim.count_requests("POST", "/inquiries"),
        0,
        "no replacement is created for a user who finished"
    );

    for (user, inquiries) in inquiries_by_user(&stack).await {
        assert_eq!(inquiries.len(), 1, "{user}: {inquiries:?}");
        assert_eq!(live_count(&inquiries), 0, "{user}: {inquiries:?}");
        assert_eq!(inquiries[0].status.as_str(), "completed", "{user}");
        let status = user_status(&stack, &user);
        assert_eq!(status["user"]["state"], "finished", "{status:#}");
        assert_eq!(status["user"]["outcome"], "completed", "{status:#}");
    }

    // A later run changes nothing and mails nobody: only the invites ever went out.
    stack.sim.set_faults(Faults::default());
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.mails_sent), (0, 0), "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.smtp.messages().len(), USERS);
}

// One thread: the first worker's tasks then take their users in its decision order (usr_0
// first), so the interleaving below is the same on every run.
#[tokio::test]
async fn a_worker_that_reaches_a_user_another_just_renewed_does_nothing_again() {
    // Two workers on one database (what `once` beside `run` is). The first decides for both
    // users, then spends seconds on usr_0 (Persona is slow on that inquiry); meanwhile the
    // second renews usr_1. When the first reaches usr_1 it must see so on a fresh read, not
    // act on what it decided before.
    let stack = Stack::start("session", &[("concurrency = 16", "concurrency = 1")]).await;
    let first = provisioned(&stack, 2).await;
    let second = stack.context().await;
    let (template, _) = stack.sim.templates()[0].clone();
    stack.clock.advance(DAY + HOUR);
    stack.sim.publish_template_version(&template).unwrap();
    let (by_user, _) = crate::support::refresh::references(&stack).await;
    let slow = stack
        .sim
        .inquiries()
        .into_iter()
        .find(|i| i.reference_id.as_deref() == Some(by_user["usr_0"].as_str()))
        .unwrap()
        .id;
    stack.sim.set_faults(Faults {
        inquiry_latency_ms: [(slow.to_string(), 2500)].into_iter().collect(),
        ..Faults::default()
    });
    stack.sim.clear_requests();

    let slow_run = tokio::spawn(async move { refresh::run(&first).await.unwrap() });
    // The first worker holds usr_0 (its lease shows it) and waits on Persona.
    let db = stack.db().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leased: Option<String> =
            sqlx::query_scalar("SELECT user_id FROM user_states WHERE lease_until IS NOT NULL")
                .fetch_optional(&db)
                .await
                .unwrap();
        if leased.is_some() {
            assert_eq!(leased.as_deref(), Some("usr_0"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first worker never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    db.close().await;
    let quick = refresh::run(&second).await.unwrap();
    assert_eq!(
        quick.recreated, 1,
        "the second worker renews usr_1: {quick}"
    );
    let slow_report = slow_run.await.unwrap();
    assert_eq!(
        slow_report.recreated, 1,
        "the first worker renews usr_0 only: {slow_report}"
    );

    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 2);
    let mails = stack.smtp.wait_for_messages(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.smtp.messages().len(),
        4,
        "one invite and one renewed mail each"
    );
    for (who, mails) in by_recipient(&mails) {
        assert_eq!(mails.len(), 2, "{who}");
    }
    for (user, inquiries) in inquiries_by_user(&stack).await {
        assert_eq!(inquiries.len(), 2, "{user}: {inquiries:?}");
        assert_eq!(live_count(&inquiries), 1, "{user}: {inquiries:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_beside_run_creates_and_mails_each_due_user_at_most_once() {
    // More due users than either process works on at once, so each one reaches users the other
    // has just renewed, with what it read before that.
    const USERS: usize = 16;
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
            (
                "min_resend_interval = \"24h\"",
                "min_resend_interval = \"1s\"",
            ),
            ("concurrency = 16", "concurrency = 3"),
        ],
    )
    .await;
    provisioned(&stack, USERS).await;
    let (template, _) = stack.sim.templates()[0].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;
    // Every invite now pins an outdated version: each user is due for one replacement, and
    // Persona is slow enough that both processes are working on the same users at once.
    stack.sim.set_faults(Faults {
        extra_latency_ms: 150,
        ..Faults::default()
    });
    stack.sim.clear_requests();
    stack.sim.publish_template_version(&template).unwrap();
    let mut once = stack.command(&["once", "--job", "refresh"]);
    let once = tokio::task::spawn_blocking(move || once.output().expect("run once"));

    let all = stack.smtp.wait_for_messages(2 * USERS).await;
    let once = once.await.unwrap();
    assert!(
        once.status.success(),
        "once: {}",
        String::from_utf8_lossy(&once.stderr)
    );
    // A few more ticks of `run` must not add anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());

    assert_eq!(
        stack.sim.count_requests("POST", "/inquiries"),
        USERS,
        "one replacement per user, whichever process made it"
    );
    let all = stack.smtp.messages().len().max(all.len());
    assert_eq!(all, 2 * USERS, "one invite and one renewed mail each");
    for (who, mails) in by_recipient(&stack.smtp.messages()) {
        assert_eq!(mails.len(), 2, "{who}");
    }
    for (user, inquiries) in inquiries_by_user(&stack).await {
        assert_eq!(inquiries.len(), 2, "{user}: {inquiries:?}");
        assert_eq!(live_count(&inquiries), 1, "{user}: {inquiries:?}");
    }
}
