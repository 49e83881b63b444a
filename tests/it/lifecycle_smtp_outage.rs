//! Mail retries cost no resumes (SPEC "The lifecycle rules"): refresh runs through an SMTP
//! outage without spending resumes or sessions on mails that cannot go out, so when the server
//! is back each user gets one renewed mail from the inquiry they already hold.

use std::collections::HashMap;
use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

use crate::provisioning::link_in;
use crate::support::refresh::{by_recipient, provisioned};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_over_four_refresh_runs_costs_no_resumes_and_no_new_inquiry() {
    const USERS: usize = 3;
    let mut stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, USERS).await;
    for inq in stack.sim.inquiries() {
        stack.sim.act(&inq.id, Action::Start).unwrap();
    }
    // Near expiry: every user is due for a fresh link, and the mail server is down.
    stack.clock.advance(6 * DAY + HOUR);
    stack.smtp.stop();
    stack.sim.clear_requests();
    for run in 0..4 {
        let report = refresh::run(&ctx).await.unwrap();
        eprintln!("outage run {run}: {report}");
        assert_eq!(report.mails_sent, 0, "{report}");
        assert_eq!(report.recreated, 0, "{report}");
        stack.clock.advance(HOUR);
    }
    stack.smtp.restart();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("after the outage: {report}");
    assert_eq!(report.mails_sent, USERS, "{report}");

    assert_eq!(
        stack.sim.count_requests("POST", "/inquiries"),
        0,
        "no user got a new inquiry"
    );
    let mut resumes: HashMap<String, usize> = HashMap::new();
    for r in stack.sim.requests() {
        if r.route.as_deref() == Some("/inquiries/{inquiry-id}/resume") {
            *resumes.entry(r.path.clone()).or_default() += 1;
        }
    }
    assert_eq!(resumes.len(), USERS, "{resumes:?}");
    assert!(resumes.values().all(|&n| n <= 2), "{resumes:?}");

    let mails = stack.smtp.wait_for_messages(2 * USERS).await;
    assert_eq!(mails.len(), 2 * USERS);
    for (who, mails) in by_recipient(&mails) {
        assert_eq!(mails.len(), 2, "{who}: the invite and one renewed mail");
        let opened = open_link(&link_in(mails[1])).await;
        assert_eq!(opened.status, 200, "{who}: {}", opened.body);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.smtp.messages().len(), 2 * USERS);
}
