//! A new published template version: every live inquiry nobody started is replaced exactly once
//! by one on the latest version, the old ones are expired at Persona, and each of those users
//! gets exactly one mail. Started inquiries are left alone (SPEC release 2: a started user is
//! never cut off); `lifecycle_started_users` follows them to their natural expiry.

use std::collections::HashSet;
use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

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
    let mut started = HashSet::new();
    for inq in stack.sim.inquiries().iter().take(USERS / 4) {
        stack.sim.act(&inq.id, Action::Start).unwrap();
        started.insert(inq.id.to_string());
    }
    const REPLACED: usize = USERS - USERS / 4;
    let latest = stack.sim.publish_template_version(&template).unwrap();
    assert_ne!(latest, first_version);

    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.recreated, REPLACED, "{report}");
    assert_eq!(report.resumed, 0, "{report}");
    assert_eq!(report.mails_sent, REPLACED, "{report}");
    assert_eq!(report.old_inquiries_expired, REPLACED, "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), REPLACED);
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/expire"),
        REPLACED,
        "each replaced inquiry is expired once, no started one"
    );

    // At the simulator: the old inquiries are expired, each user holds exactly one live
    // inquiry, on the latest version.
    for (user, inquiries) in inquiries_by_user(&stack).await {
        assert_eq!(live_count(&inquiries), 1, "{user}: {inquiries:?}");
        if started.contains(inquiries[0].id.as_str()) {
            assert_eq!(
                inquiries.len(),
                1,
                "{user}: started, left alone: {inquiries:?}"
            );
            assert_eq!(inquiries[0].status.as_str(), "pending", "{user}");
            continue;
        }
        assert_eq!(inquiries.len(), 2, "{user}: {inquiries:?}");
        for inq in &inquiries {
            if originals.contains(inq.id.as_str()) {
                assert_eq!(inq.status.as_str(), "expired", "{user}: {inq:?}");
            } else {
                assert_eq!(inq.template_version_id, latest, "{user}: {inq:?}");
            }
        }
    }

    let all = stack.smtp.wait_for_messages(USERS + REPLACED).await;
    assert_eq!(all.len(), USERS + REPLACED);
    let invite_only = by_recipient(&all).values().filter(|m| m.len() == 1).count();
    assert_eq!(
        invite_only,
        USERS / 4,
        "the started users got no renewed mail"
    );
    for (who, mails) in by_recipient(&all) {
        if mails.len() == 1 {
            continue;
        }
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
    assert_eq!(stack.smtp.messages().len(), USERS + REPLACED);
}
