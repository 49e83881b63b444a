//! Webhooks in order (SPEC "The lifecycle rules"): Persona delivers events in any order, and
//! the daemon applies them by their `created-at`, never moving a status backwards.

use chrono::{Duration, Utc};

use inquiry_mailer::daemon::signature::sign;

use crate::support::daemon::Daemon;
use crate::webhooks::{SECRET, daemon_with_users, event_at, history, inquiry_of, now, result_of};

async fn deliver(daemon: &Daemon, fixture: &str, inquiry: &str, at: chrono::DateTime<Utc>) {
    let (_, body) = event_at(fixture, inquiry, at);
    let answer = daemon
        .post_webhook(&body, Some(&sign(SECRET, now(), &body)))
        .await;
    assert_eq!(result_of(&answer), "accepted", "{fixture}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_never_move_a_status_backwards() {
    let (stack, mut daemon) = daemon_with_users(2).await;
    let t0 = Utc::now();

    // usr_0 started; the `inquiry.created` from before that arrives last.
    let first = inquiry_of(&stack, "usr_0");
    deliver(
        &daemon,
        "inquiry-started",
        &first,
        t0 + Duration::seconds(2),
    )
    .await;
    deliver(
        &daemon,
        "inquiry-created",
        &first,
        t0 + Duration::seconds(1),
    )
    .await;
    let h = history(&stack, "usr_0");
    assert_eq!(h["user"]["state"], "started", "{h:#}");
    assert_eq!(h["inquiries"][0]["status"], "pending", "{h:#}");

    // usr_1 was approved after completing; the two arrive the other way round, and a stray
    // `inquiry.started` from before both comes after them.
    let second = inquiry_of(&stack, "usr_1");
    deliver(
        &daemon,
        "inquiry-approved",
        &second,
        t0 + Duration::seconds(5),
    )
    .await;
    deliver(
        &daemon,
        "inquiry-completed",
        &second,
        t0 + Duration::seconds(4),
    )
    .await;
    deliver(
        &daemon,
        "inquiry-started",
        &second,
        t0 + Duration::seconds(3),
    )
    .await;
    let h = history(&stack, "usr_1");
    assert_eq!(h["user"]["state"], "finished", "{h:#}");
    assert_eq!(h["user"]["outcome"], "approved", "{h:#}");
    assert_eq!(h["inquiries"][0]["status"], "approved", "{h:#}");

    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
}
