//! The refresh invariant for the other link kinds: one-time links are renewed with a fresh
//! single-use link; static links are never renewed, and a user who opened theirs and finished
//! is marked finished.

use std::collections::HashSet;
use std::time::Duration;

use inquiry_mailer::domain::InquiryId;
use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

use crate::provisioning::link_in;
use crate::support::refresh::{by_recipient, provisioned, recipient_of, user_status};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_links_are_renewed_with_a_fresh_link_that_opens_once() {
    const USERS: usize = 10;
    let stack = Stack::start("one-time", &[]).await;
    let ctx = provisioned(&stack, USERS).await;

    // Half the users open their link (spending it) and start.
    let invites = stack.smtp.messages();
    let mut started = HashSet::new();
    for mail in invites.iter().take(USERS / 2) {
        let opened = open_link(&link_in(mail)).await;
        assert_eq!(opened.status, 200, "{}", opened.body);
        let id = opened.body["inquiry-id"].as_str().unwrap().to_owned();
        stack
            .sim
            .act(id.parse::<InquiryId>().unwrap(), Action::Start)
            .unwrap();
        started.insert(id);
    }

    stack.clock.advance(6 * DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(
        (report.resumed, report.recreated),
        (USERS / 2, USERS / 2),
        "{report}"
    );
    assert_eq!(report.mails_sent, USERS, "{report}");

    let all = stack.smtp.wait_for_messages(2 * USERS).await;
    assert_eq!(all.len(), 2 * USERS);
    let mut resumed_seen = 0;
    for (who, mails) in by_recipient(&all) {
        assert_eq!(mails.len(), 2, "{who}");
        let link = link_in(mails[1]);
        assert!(link.contains("code="), "{who}: not a one-time link: {link}");
        let opened = open_link(&link).await;
        assert_eq!(opened.status, 200, "{who}: {link}: {}", opened.body);
        assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
        if started.contains(opened.body["inquiry-id"].as_str().unwrap()) {
            resumed_seen += 1;
        }
        let again = open_link(&link).await;
        assert_eq!(again.status, 403, "{who}: a one-time link opened twice");
    }
    assert_eq!(
        resumed_seen,
        USERS / 2,
        "the started users keep their inquiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_users_get_no_renewed_mail_and_finishing_is_noticed() {
    const USERS: usize = 6;
    let stack = Stack::start("static", &[]).await;
    let ctx = provisioned(&stack, USERS).await;
    let invites = stack.smtp.messages();
    let per_user = by_recipient(&invites);

    // usr_0 opens the link and finishes before any refresh sees the inquiry; usr_1 opens it
    // and stops half-way; the others never open it.
    let opened = open_link(&link_in(per_user[&recipient_of("usr_0")][0])).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let finished: inquiry_mailer::domain::InquiryId =
        opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    stack.sim.act(&finished, Action::Complete).unwrap();
    let opened = open_link(&link_in(per_user[&recipient_of("usr_1")][0])).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let halfway: inquiry_mailer::domain::InquiryId =
        opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    stack.sim.act(&halfway, Action::Start).unwrap();

    stack.clock.advance(HOUR);
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    let status = user_status(&stack, "usr_0");
    assert_eq!(status["user"]["state"], "finished", "{status}");
    assert_eq!(status["user"]["outcome"], "completed", "{status}");
    let status = user_status(&stack, "usr_1");
    assert_eq!(status["user"]["state"], "started", "{status}");

    // usr_2 opens and finishes after that run: the next run lists from where this one did.
    let opened = open_link(&link_in(per_user[&recipient_of("usr_2")][0])).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let late: inquiry_mailer::domain::InquiryId =
        opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    stack.sim.act(&late, Action::Fail).unwrap();

    // Long past any expiry: static links are never renewed, and nothing is created.
    for _ in 0..2 {
        stack.clock.advance(8 * DAY);
        let report = refresh::run(&ctx).await.unwrap();
        assert_eq!(report.mails_sent, 0, "{report}");
    }
    for route in [
        "/inquiries",
        "/inquiries/{inquiry-id}/resume",
        "/inquiries/{inquiry-id}/expire",
    ] {
        assert_eq!(stack.sim.count_requests("POST", route), 0, "POST {route}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.smtp.messages().len(), USERS);
    let counts = stack.run(&["status", "--json"]).assert_code(0).json();
    assert_eq!(counts["users"]["finished"], 2, "{counts}");
    let status = user_status(&stack, "usr_2");
    assert_eq!(status["user"]["outcome"], "failed", "{status}");
}
