//! Refresh end to end, on the simulator's clock: every unfinished user keeps a link that works
//! now, finished users get nothing more, and a run with nothing due costs no resume.

use std::collections::HashMap;
use std::time::Duration;

use inquiry_mailer::jobs::{provision, refresh};
use persona_sim::Action;

use crate::provisioning::link_in;
use crate::support::sim::open_link;
use crate::support::smtp::ReceivedMail;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// recipient → mails, in arrival order.
fn by_recipient(mails: &[ReceivedMail]) -> HashMap<String, Vec<&ReceivedMail>> {
    let mut map: HashMap<String, Vec<&ReceivedMail>> = HashMap::new();
    for m in mails {
        map.entry(m.rcpt_to.clone()).or_default().push(m);
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_expiry_every_user_gets_one_working_renewed_link_and_then_nothing_for_a_while() {
    let stack = Stack::start("session", &[]).await;
    stack.add_users(100);
    let ctx = stack.context().await;
    let report = provision::run(&ctx).await.unwrap();
    assert_eq!(report.mails_sent, 100, "{report}");
    let invites = stack.smtp.wait_for_messages(100).await;
    assert_eq!(invites.len(), 100);

    // Half the users start their inquiry (it becomes pending and needs a token from now on).
    let started: Vec<_> = stack.sim.inquiries().into_iter().take(50).collect();
    for inq in &started {
        stack.sim.act(&inq.id, Action::Start).unwrap();
    }

    // Past expires_at − refresh_before_expiry (7 d − 24 h).
    stack.clock.advance(6 * DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.resumed, 50, "{report}");
    assert_eq!(report.recreated, 50, "{report}");
    assert_eq!(report.mails_sent, 100, "{report}");

    let all = stack.smtp.wait_for_messages(200).await;
    assert_eq!(all.len(), 200);
    let started_ids: std::collections::HashSet<String> =
        started.iter().map(|i| i.id.to_string()).collect();
    for (who, mails) in by_recipient(&all) {
        assert_eq!(
            mails.len(),
            2,
            "{who} should have one invite and one renewed mail"
        );
        let link = link_in(mails[1]);
        let opened = open_link(&link).await;
        assert_eq!(
            opened.status, 200,
            "{who}: renewed link {link} does not open: {}",
            opened.body
        );
        assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
        let id = opened.body["inquiry-id"].as_str().unwrap();
        if started_ids.contains(id) {
            assert!(
                link.contains("session-token="),
                "a resumed inquiry needs its token: {link}"
            );
        }
    }
    // The never-started inquiries were replaced, and the replaced ones expired at Persona.
    let expired = stack
        .sim
        .inquiries()
        .into_iter()
        .filter(|i| i.status.as_str() == "expired")
        .count();
    assert_eq!(expired, 50);

    // An hour later, still inside min_resend_interval: no mail, no resume, no create.
    stack.sim.clear_requests();
    stack.clock.advance(HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(report.mails_sent, 0, "{report}");
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/resume"),
        0
    );
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.smtp.messages().len(), 200);
}
