//! The limits that turn a resume into a recreate (max_resumes, max_age) and the one that holds a
//! due user back (min_resend_interval): each is visible in `status --user`, text and JSON.

use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

use crate::provisioning::link_in;
use crate::support::refresh::{
    by_recipient, event_details, inquiries_by_user, live_count, provisioned, recipient_of,
    user_status, user_status_text,
};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The last mail of `user` opens a live inquiry now.
async fn last_link_opens(stack: &Stack, user: &str) {
    let mails = stack.smtp.messages();
    let per_user = by_recipient(&mails);
    let last = per_user[&recipient_of(user)].last().copied().unwrap();
    let link = link_in(last);
    let opened = open_link(&link).await;
    assert_eq!(opened.status, 200, "{user}: {link}: {}", opened.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_resumes_the_inquiry_is_recreated_and_status_says_why() {
    let stack = Stack::start("session", &[("max_resumes = 5", "max_resumes = 1")]).await;
    let ctx = provisioned(&stack, 1).await;
    let first = stack.sim.inquiries()[0].id.clone();
    stack.sim.act(&first, Action::Start).unwrap();

    // The started inquiry expires; the first refresh resumes it (1 of 1).
    stack.clock.advance(6 * DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.resumed, report.recreated), (1, 0), "{report}");
    assert_eq!(stack.smtp.wait_for_messages(2).await.len(), 2);

    // The resumed inquiry expires too (a day later); no resume is left, so a new inquiry.
    stack.clock.advance(DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.resumed, report.recreated), (0, 1), "{report}");
    assert_eq!(stack.smtp.wait_for_messages(3).await.len(), 3);
    last_link_opens(&stack, "usr_0").await;
    let held = inquiries_by_user(&stack).await.remove("usr_0").unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(live_count(&held), 1, "{held:?}");

    let status = user_status(&stack, "usr_0");
    let recreates = event_details(&status, "refresh.recreate");
    assert_eq!(recreates.len(), 1, "{status}");
    assert!(
        recreates[0].contains("out of resumes (1 of 1)"),
        "{recreates:?}"
    );
    let replaced = &status["inquiries"][0];
    assert!(
        replaced["superseded_reason"]
            .as_str()
            .unwrap()
            .contains("out of resumes"),
        "{status}"
    );
    let text = user_status_text(&stack, "usr_0");
    assert!(text.contains("refresh.recreate"), "{text}");
    assert!(
        text.contains("replaced: near expiry and out of resumes"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_age_the_inquiry_is_recreated_and_status_says_why() {
    // max_age shorter than the inquiry's own lifetime: age, not expiry, is what is due.
    let stack = Stack::start("session", &[("max_age = \"30d\"", "max_age = \"3d\"")]).await;
    let ctx = provisioned(&stack, 1).await;

    stack.clock.advance(2 * DAY);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.resumed, report.recreated), (0, 0), "{report}");

    stack.clock.advance(DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.resumed, report.recreated), (0, 1), "{report}");
    assert_eq!(stack.smtp.wait_for_messages(2).await.len(), 2);
    last_link_opens(&stack, "usr_0").await;

    let status = user_status(&stack, "usr_0");
    let recreates = event_details(&status, "refresh.recreate");
    assert_eq!(
        recreates,
        vec!["older than max_age (3days)".to_owned()],
        "{status}"
    );
    let text = user_status_text(&stack, "usr_0");
    assert!(text.contains("older than max_age"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_min_resend_interval_a_due_user_is_held_and_status_says_until_when() {
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, 1).await;
    let (template, _) = stack.sim.templates()[0].clone();

    // Due (a new template version), but the invite went out an hour ago.
    stack.clock.advance(HOUR);
    stack.sim.publish_template_version(&template).unwrap();
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(report.held_back, 1, "{report}");
    assert_eq!((report.recreated, report.mails_sent), (0, 0), "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);

    let status = user_status(&stack, "usr_0");
    let reason = status["user"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("pinned to template version"), "{status}");
    assert!(
        reason.contains("waiting for min_resend_interval until"),
        "{status}"
    );
    assert_eq!(event_details(&status, "refresh.hold").len(), 1, "{status}");
    let text = user_status_text(&stack, "usr_0");
    assert!(
        text.contains("reason: ") && text.contains("waiting for min_resend_interval"),
        "{text}"
    );

    // Held again an hour later: recorded once, not once per run.
    stack.clock.advance(HOUR);
    refresh::run(&ctx).await.unwrap();
    let status = user_status(&stack, "usr_0");
    assert_eq!(event_details(&status, "refresh.hold").len(), 1, "{status}");

    // Once the interval has passed the recreate goes ahead, and the reason is gone.
    stack.clock.advance(DAY);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.mails_sent), (1, 1), "{report}");
    assert_eq!(stack.smtp.wait_for_messages(2).await.len(), 2);
    last_link_opens(&stack, "usr_0").await;
    let status = user_status(&stack, "usr_0");
    assert!(status["user"]["reason"].is_null(), "{status}");
}
