//! A new published template version: every live inquiry is replaced exactly once by one on the
//! latest version, the old ones are expired at Persona, and each user gets exactly one mail.

use std::collections::HashSet;
use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use inquiry_mailer::sim::Action;

use crate::provisioning::link_in;
use crate::support::refresh::{by_recipient, inquiries_by_user, live_count, provisioned};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_template_version_replaces_every_live_inquiry_once_with_one_mail_each() {
    const USERS: usize = 40;
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, USERS).await;
    let (template, first_version) = stack.sim.templates()[0].clone();
    let originals: HashSet<String> = stack
        .sim
        .inquiries()
        .iter()
        .map(|i| i.id.to_string())
        .collect();

    // Past min_resend_interval since the invites; a quarter of the users are mid-flow.
    stack.clock.advance(DAY + HOUR);
    for inq in stack.sim.inquiries().iter().take(USERS / 4) {
        stack.sim.act(&inq.id, Action::Start).unwrap();
    }
    let latest = stack.sim.publish_template_version(&template).unwrap();
    assert_ne!(latest, first_version);

    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.recreated, USERS, "{report}");
    assert_eq!(report.resumed, 0, "{report}");
    assert_eq!(report.mails_sent, USERS, "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), USERS);
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/expire"),
        USERS,
        "each replaced inquiry is expired once"
    );

    // At the simulator: the old inquiries are expired, each user holds exactly one live
    // inquiry, on the latest version.
    for (user, inquiries) in inquiries_by_user(&stack).await {
        assert_eq!(inquiries.len(), 2, "{user}: {inquiries:?}");
        assert_eq!(live_count(&inquiries), 1, "{user}: {inquiries:?}");
        for inq in &inquiries {
            if originals.contains(inq.id.as_str()) {
                assert_eq!(inq.status.as_str(), "expired", "{user}: {inq:?}");
            } else {
                assert_eq!(inq.template_version_id, latest, "{user}: {inq:?}");
            }
        }
    }

    let all = stack.smtp.wait_for_messages(2 * USERS).await;
    assert_eq!(all.len(), 2 * USERS);
    for (who, mails) in by_recipient(&all) {
        assert_eq!(mails.len(), 2, "{who}: one invite, one renewed mail");
        let link = link_in(mails[1]);
        let opened = open_link(&link).await;
        assert_eq!(opened.status, 200, "{who}: {link}: {}", opened.body);
        assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
        assert!(
            !originals.contains(opened.body["inquiry-id"].as_str().unwrap()),
            "{who}'s renewed link opens the replaced inquiry"
        );
    }

    // Nothing is left to do: a second run creates, resumes, expires and mails nothing.
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(
        (report.recreated, report.resumed, report.mails_sent),
        (0, 0, 0),
        "{report}"
    );
    for route in [
        "/inquiries",
        "/inquiries/{inquiry-id}/resume",
        "/inquiries/{inquiry-id}/expire",
    ] {
        assert_eq!(stack.sim.count_requests("POST", route), 0, "POST {route}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.smtp.messages().len(), 2 * USERS);
}
