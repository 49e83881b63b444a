//! `[reminders]`: unfinished users get one reminder at each time of the cadence, with a link
//! that works then (for every link kind), never when they finished, never within
//! `min_resend_interval` of another mail, and never twice — not even when `run` is killed
//! between the send and its record.

use std::time::Duration;

use inquiry_mailer::domain::InquiryId;
use inquiry_mailer::faults::CRASH_AT_VAR;
use inquiry_mailer::jobs::{JobContext, refresh};
use persona_sim::Action;

use crate::provisioning::link_in;
use crate::support::app::SHIPPED_REMINDERS;
use crate::support::refresh::{
    by_recipient, provisioned, recipient_of, user_status, user_status_text,
};
use crate::support::sim::open_link;
use crate::support::smtp::ReceivedMail;
use crate::support::stack::Stack;

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

fn is_reminder(mail: &ReceivedMail) -> bool {
    mail.subject.contains("a reminder to verify your identity")
}

fn reminders_to(mails: &[ReceivedMail], user_id: &str) -> Vec<ReceivedMail> {
    by_recipient(mails)
        .remove(&recipient_of(user_id))
        .unwrap_or_default()
        .into_iter()
        .filter(|m| is_reminder(m))
        .cloned()
        .collect()
}

/// Runs refresh at the stack's current time and returns how many reminders it sent.
async fn refresh_now(ctx: &JobContext) -> usize {
    let report = refresh::run(ctx).await.unwrap();
    eprintln!("refresh: {report}");
    report.reminders.sent
}

/// The cadence of this file's tests: at 2 and 4 days, well before the renewal near the
/// 7-day expiry.
const CADENCE: (&str, &str) = (SHIPPED_REMINDERS, "after = [\"2d\", \"4d\"]");

/// Four users of `kind`: usr_0 finishes on day 1, usr_1 starts the flow, usr_2 and usr_3 never
/// open their link. At each time of the cadence the three unfinished users get one reminder
/// whose link opens, and a second run at the same time sends nothing.
async fn reminders_follow_the_cadence(kind: &str) {
    const USERS: usize = 4;
    let stack = Stack::start(kind, &[CADENCE]).await;
    let ctx = provisioned(&stack, USERS).await;
    let invites = by_recipient(&stack.smtp.messages())
        .into_iter()
        .map(|(who, mails)| (who, link_in(mails[0])))
        .collect::<std::collections::HashMap<_, _>>();
    let opened = open_link(&invites[&recipient_of("usr_0")]).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let usr_0_inquiry: InquiryId = opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    stack.sim.act(&usr_0_inquiry, Action::Complete).unwrap();
    let opened = open_link(&invites[&recipient_of("usr_1")]).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let usr_1_inquiry: InquiryId = opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    stack.sim.act(&usr_1_inquiry, Action::Start).unwrap();

    stack.clock.advance(DAY + MINUTE);
    assert_eq!(refresh_now(&ctx).await, 0, "{kind}: nothing due on day 1");
    let status = user_status(&stack, "usr_2");
    assert_eq!(status["reminders"]["next"]["after"], "2days", "{status}");

    let mut received = USERS;
    // Each at a minute past its time (day 2, then day 4).
    for (round, after, wait) in [(1, "2days", DAY), (2, "4days", DAY * 2)] {
        stack.clock.advance(wait);
        assert_eq!(refresh_now(&ctx).await, 3, "{kind}: reminder {round}");
        assert_eq!(refresh_now(&ctx).await, 0, "{kind}: reminder {round} again");
        received += 3;
        let mails = stack.smtp.wait_for_messages(received).await;
        assert_eq!(mails.len(), received, "{kind}");
        for user in ["usr_1", "usr_2", "usr_3"] {
            let got = reminders_to(&mails, user);
            assert_eq!(got.len(), round as usize, "{kind}: {user}");
            let link = link_in(&got[round as usize - 1]);
            let opened = open_link(&link).await;
            assert_eq!(
                opened.status, 200,
                "{kind}: {user}'s reminder {round} link {link}: {}",
                opened.body
            );
            let status = user_status(&stack, user);
            let recorded = status["reminders"]["recorded"].as_array().unwrap();
            assert_eq!(recorded.len(), round as usize, "{status}");
            assert_eq!(recorded[round as usize - 1]["after"], after, "{status}");
            assert_eq!(recorded[round as usize - 1]["status"], "sent", "{status}");
        }
        assert!(
            reminders_to(&mails, "usr_0").is_empty(),
            "{kind}: the finished user got a reminder"
        );
        if round == 1 {
            let text = user_status_text(&stack, "usr_2");
            assert!(
                text.contains("reminders (2days, 4days after the invite):")
                    && text.contains("  2days sent ")
                    && text.contains("  next: 4days after the invite, due "),
                "{text}"
            );
        }
        if kind == "one-time" {
            // A fresh single-use link each time, not the invite's (spent) one.
            let got = reminders_to(&mails, "usr_2");
            assert!(link_in(&got[0]).contains("code="), "{}", link_in(&got[0]));
            assert_ne!(link_in(&got[0]), invites[&recipient_of("usr_2")]);
        }
    }
    let status = user_status(&stack, "usr_3");
    assert!(status["reminders"]["next"].is_null(), "{status}");
    let status = user_status(&stack, "usr_0");
    assert_eq!(status["reminders"]["recorded"], serde_json::json!([]));
    assert!(
        status["reminders"]["none_because"]
            .as_str()
            .is_some_and(|w| w.contains("finished")),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reminders_follow_the_cadence_with_working_links() {
    reminders_follow_the_cadence("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_reminders_carry_a_fresh_single_use_link() {
    reminders_follow_the_cadence("one-time").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_reminders_follow_the_cadence_with_working_links() {
    reminders_follow_the_cadence("static").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_that_falls_due_close_to_another_mail_is_not_sent() {
    // Reminder 1 falls due 30 hours after the invite, which is closer than 36 hours: the
    // invite stands for it. Reminder 2 falls due half a day after the renewal near expiry
    // (at 6 days), so the renewed mail stands for it.
    let stack = Stack::start(
        "session",
        &[
            (SHIPPED_REMINDERS, "after = [\"30h\", \"6d12h\"]"),
            (
                "min_resend_interval = \"24h\"",
                "min_resend_interval = \"36h\"",
            ),
        ],
    )
    .await;
    let ctx = provisioned(&stack, 2).await;
    for days in [1, 2, 3] {
        stack.clock.advance(DAY);
        assert_eq!(refresh_now(&ctx).await, 0, "day {days}");
    }
    stack.clock.advance(DAY * 3 + MINUTE);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(report.mails_sent, 2, "the renewal near expiry: {report}");
    for hours in [12, 24, 72] {
        stack.clock.advance(Duration::from_secs(12 * 3600));
        assert_eq!(
            refresh_now(&ctx).await,
            0,
            "{hours} hours after the renewal"
        );
    }
    let mails = stack.smtp.wait_for_messages(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.smtp.messages().len(),
        4,
        "an invite and a renewal each"
    );
    for user in ["usr_0", "usr_1"] {
        assert!(reminders_to(&mails, user).is_empty(), "{user}");
        let status = user_status(&stack, user);
        assert!(status["reminders"]["next"].is_null(), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_between_the_send_and_its_record_sends_no_second_reminder() {
    // The binary runs on the wall clock, so the cadence is seconds long.
    let stack = Stack::start(
        "session",
        &[
            (SHIPPED_REMINDERS, "after = [\"2s\"]"),
            (
                "min_resend_interval = \"24h\"",
                "min_resend_interval = \"1s\"",
            ),
        ],
    )
    .await;
    stack.add_users(1);
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    stack.smtp.wait_for_messages(1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let killed = stack
        .command(&["once", "--job", "refresh"])
        .env(CRASH_AT_VAR, "deliver.after-send:1")
        .output()
        .unwrap();
    assert_eq!(
        killed.status.code(),
        None,
        "the run died at the crash point"
    );
    let mails = stack.smtp.wait_for_messages(2).await;
    assert_eq!(reminders_to(&mails, "usr_0").len(), 1, "the server took it");

    for run in 0..2 {
        let after = stack.run(&["once", "--job", "refresh"]);
        after.assert_code(0);
        eprintln!("run {run}: {}", after.stdout);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = stack.smtp.messages();
    assert_eq!(
        reminders_to(&mails, "usr_0").len(),
        1,
        "a reminder caught mid-send is not sent again"
    );
    let status = user_status(&stack, "usr_0");
    let recorded = &status["reminders"]["recorded"][0];
    assert_eq!(recorded["status"], "cancelled", "{status}");
    assert!(
        recorded["note"]
            .as_str()
            .is_some_and(|n| n.contains("never sent twice")),
        "{status}"
    );
    assert!(status["reminders"]["next"].is_null(), "{status}");
}
