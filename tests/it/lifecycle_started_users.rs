//! A started user is never cut off (SPEC "The lifecycle rules"): a new template version and
//! the approach of expiry leave their running inquiry alone; once it expires it is renewed
//! exactly once, onto the latest version. And a resumed inquiry lives `expires_after`, whatever
//! the template's resume interval.

use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::{Action, Switches};

use crate::provisioning::link_in;
use crate::support::refresh::{by_recipient, inquiries_by_user, live_count, provisioned};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_user_is_left_alone_by_a_new_version_and_renewed_once_after_expiry() {
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, 1).await;
    let (template, _) = stack.sim.templates()[0].clone();
    let first = stack.sim.inquiries()[0].id.clone();
    stack.clock.advance(DAY);
    stack.sim.act(&first, Action::Start).unwrap();
    let expires_at = stack.sim.inquiry(&first).unwrap().expires_at.unwrap();
    let latest = stack.sim.publish_template_version(&template).unwrap();

    // The new version, then the last day before expiry: the running inquiry is not touched.
    stack.sim.clear_requests();
    for _ in 0..3 {
        let report = refresh::run(&ctx).await.unwrap();
        assert_eq!((report.recreated, report.resumed), (0, 0), "{report}");
        stack.clock.advance(2 * DAY);
    }
    let left_at = stack.clock.now();
    assert!(left_at < expires_at + chrono::Duration::hours(1));
    stack.clock.advance(
        (expires_at - left_at - chrono::Duration::hours(2))
            .to_std()
            .unwrap_or_default(),
    );
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.resumed), (0, 0), "{report}");
    for route in [
        "/inquiries",
        "/inquiries/{inquiry-id}/expire",
        "/inquiries/{inquiry-id}/resume",
    ] {
        assert_eq!(stack.sim.count_requests("POST", route), 0, "POST {route}");
    }
    let running = stack.sim.inquiry(&first).unwrap();
    assert_eq!(running.status.as_str(), "pending", "{running:?}");
    assert_eq!(running.expires_at, Some(expires_at), "{running:?}");
    assert_eq!(stack.smtp.messages().len(), 1, "only the invite so far");

    // It expires on its own; the next run renews it once, onto the latest version.
    stack.clock.advance(3 * HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.resumed), (1, 0), "{report}");
    assert_eq!(report.mails_sent, 1, "{report}");
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(
        (report.recreated, report.resumed, report.mails_sent),
        (0, 0, 0),
        "{report}"
    );

    let mails = stack.smtp.wait_for_messages(2).await;
    assert_eq!(mails.len(), 2);
    let per_user = by_recipient(&mails);
    let renewed = per_user.values().next().unwrap()[1];
    let opened = open_link(&link_in(renewed)).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
    let held = inquiries_by_user(&stack).await.remove("usr_0").unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(live_count(&held), 1, "{held:?}");
    let current = held.iter().find(|i| i.id != first).unwrap();
    assert_eq!(current.template_version_id, latest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_inquiry_lives_expires_after_not_the_templates_resume_interval() {
    // The template resumes for an hour only; config says 7 days.
    let stack = Stack::start_with("session", &[], |c| {
        c.switches = Switches {
            default_resume_interval_seconds: 3600,
            ..Switches::default()
        };
    })
    .await;
    let ctx = provisioned(&stack, 1).await;
    let first = stack.sim.inquiries()[0].id.clone();
    let created = stack.sim.inquiry(&first).unwrap();
    assert_eq!(
        created.expires_at.unwrap() - created.created_at,
        chrono::Duration::days(7)
    );

    // Never opened, it expires; refresh resumes it and mails a fresh link.
    stack.clock.advance(7 * DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.resumed, report.mails_sent), (1, 1), "{report}");
    let resumed = stack.sim.inquiry(&first).unwrap();
    assert_eq!(resumed.status.as_str(), "pending");
    let lives = resumed.expires_at.unwrap() - stack.clock.now();
    assert!(
        lives > chrono::Duration::days(7) - chrono::Duration::minutes(5),
        "the resumed inquiry lives {lives} instead of expires_after (7 days)"
    );
    // A day later nobody needs mailing again.
    stack.clock.advance(DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.resumed, report.mails_sent), (0, 0), "{report}");
}
