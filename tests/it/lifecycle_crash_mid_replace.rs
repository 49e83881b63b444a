//! A crash between deciding to replace an inquiry and expiring it leaves the old one live. If
//! its user starts it before the next run, that run keeps it (a started user is never cut
//! off): the replacement is abandoned, nothing is expired or created, nobody is mailed.

use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

use crate::refresh_crash_recovery::crash_after_supersede;
use crate::support::refresh::{provisioned, user_status};
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inquiry_started_after_a_crash_mid_replace_is_kept() {
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, 1).await;
    let (template, _) = stack.sim.templates()[0].clone();
    let old = stack.sim.inquiries()[0].id.clone();
    stack.clock.advance(DAY + HOUR);
    stack.sim.publish_template_version(&template).unwrap();
    crash_after_supersede(&ctx, "usr_0").await;
    stack.sim.act(&old, Action::Start).unwrap();

    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.mails_sent), (0, 0), "{report}");
    for route in ["/inquiries", "/inquiries/{inquiry-id}/expire"] {
        assert_eq!(stack.sim.count_requests("POST", route), 0, "POST {route}");
    }
    assert_eq!(stack.sim.inquiry(&old).unwrap().status.as_str(), "pending");
    assert_eq!(stack.sim.inquiries().len(), 1);

    let status = user_status(&stack, "usr_0");
    assert_eq!(status["user"]["state"], "started", "{status:#}");
    let current: Vec<&serde_json::Value> = status["inquiries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["superseded_reason"].is_null())
        .collect();
    assert_eq!(current.len(), 1, "{status:#}");
    assert_eq!(current[0]["inquiry_id"], old.as_str(), "{status:#}");

    // The next run leaves it running too.
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.resumed), (0, 0), "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
    assert_eq!(stack.smtp.messages().len(), 1, "only the invite");
}
