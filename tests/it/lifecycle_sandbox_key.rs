//! Under a sandbox key Persona refuses the template endpoint; refresh then reads the template's
//! latest version from one inquiry, so a new version still moves every `created` inquiry,
//! including the ones that are nowhere near expiry.

use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Switches;

use crate::provisioning::link_in;
use crate::support::refresh::{by_recipient, inquiries_by_user, live_count, provisioned};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_under_a_sandbox_key_moves_outdated_created_inquiries() {
    const USERS: usize = 3;
    let stack = Stack::start_with("session", &[], |c| {
        c.switches = Switches {
            sandbox: true,
            ..Switches::default()
        };
    })
    .await;
    let ctx = provisioned(&stack, USERS).await;
    let (template, _) = stack.sim.templates()[0].clone();
    stack.clock.advance(DAY + HOUR);
    let latest = stack.sim.publish_template_version(&template).unwrap();

    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.template_version_source, "inquiry", "{report}");
    assert_eq!(report.recreated, USERS, "{report}");
    assert_eq!(report.mails_sent, USERS, "{report}");
    let refused = stack
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.route.as_deref() == Some("/inquiry-templates/{inquiry-template-id}"))
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert_eq!(
        refused,
        [Some(403)],
        "one try of the production-only endpoint"
    );
    assert_eq!(
        stack.sim.count_requests("GET", "/inquiries/{inquiry-id}"),
        1 + USERS,
        "the version from one inquiry, then a fresh read of each one replaced"
    );

    for (user, inquiries) in inquiries_by_user(&stack).await {
        assert_eq!(inquiries.len(), 2, "{user}: {inquiries:?}");
        assert_eq!(live_count(&inquiries), 1, "{user}: {inquiries:?}");
        let live = inquiries
            .iter()
            .find(|i| i.status.as_str() == "created")
            .unwrap();
        assert_eq!(live.template_version_id, latest, "{user}");
    }
    let mails = stack.smtp.wait_for_messages(2 * USERS).await;
    for (who, mails) in by_recipient(&mails) {
        assert_eq!(mails.len(), 2, "{who}");
        let opened = open_link(&link_in(mails[1])).await;
        assert_eq!(opened.status, 200, "{who}: {}", opened.body);
        assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
    }
}
