//! Set-up and look-ups for the refresh tests: users provisioned on a stack, who got which mail,
//! which inquiries each user holds at the simulator, and `status --user` as JSON.

use std::collections::HashMap;

use inquiry_mailer::jobs::{JobContext, provision};
use persona_sim::InquirySnapshot;
use serde_json::Value;

use super::smtp::ReceivedMail;
use super::stack::Stack;

/// Bare recipient address (`user0@example.com`) → mails, in arrival order.
pub fn by_recipient(mails: &[ReceivedMail]) -> HashMap<String, Vec<&ReceivedMail>> {
    let mut map: HashMap<String, Vec<&ReceivedMail>> = HashMap::new();
    for m in mails {
        let address = m.rcpt_to.trim_matches(['<', '>', ' ']).to_owned();
        map.entry(address).or_default().push(m);
    }
    map
}

/// The envelope recipient of user `usr_N` (see `Stack::add_users`).
pub fn recipient_of(user_id: &str) -> String {
    format!("user{}@example.com", user_id.trim_start_matches("usr_"))
}

/// `n` users provisioned in-process; returns the context, after every invite arrived.
pub async fn provisioned(stack: &Stack, n: usize) -> JobContext {
    stack.add_users(n);
    let ctx = stack.context().await;
    let report = provision::run(&ctx).await.unwrap();
    assert_eq!(report.mails_sent, n, "{report}");
    assert_eq!(stack.smtp.wait_for_messages(n).await.len(), n);
    ctx
}

/// user id → reference id, and back.
pub async fn references(stack: &Stack) -> (HashMap<String, String>, HashMap<String, String>) {
    let by_user: HashMap<String, String> = stack
        .text_rows("SELECT user_id, reference_id FROM user_states")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].clone().expect("user_id"),
                r[1].clone().expect("reference_id"),
            )
        })
        .collect();
    let by_ref = by_user
        .iter()
        .map(|(u, r)| (r.clone(), u.clone()))
        .collect();
    (by_user, by_ref)
}

/// The simulator's inquiries grouped by the user they belong to.
pub async fn inquiries_by_user(stack: &Stack) -> HashMap<String, Vec<InquirySnapshot>> {
    let (_, user_of) = references(stack).await;
    let mut map: HashMap<String, Vec<InquirySnapshot>> = HashMap::new();
    for inq in stack.sim.inquiries() {
        let user = inq
            .reference_id
            .as_ref()
            .and_then(|r| user_of.get(r))
            .cloned()
            .unwrap_or_else(|| panic!("{} has no known reference id", inq.id));
        map.entry(user).or_default().push(inq);
    }
    map
}

/// How many of a user's inquiries are live (created or pending) at the simulator.
pub fn live_count(inquiries: &[InquirySnapshot]) -> usize {
    inquiries
        .iter()
        .filter(|i| matches!(i.status.as_str(), "created" | "pending"))
        .count()
}

/// `status --user ID --json`, through the real binary.
pub fn user_status(stack: &Stack, user_id: &str) -> Value {
    stack
        .run(&["status", "--user", user_id, "--json"])
        .assert_code(0)
        .json()
}

/// `status --user ID`, the text people read.
pub fn user_status_text(stack: &Stack, user_id: &str) -> String {
    let run = stack.run(&["status", "--user", user_id]);
    run.assert_code(0);
    run.stdout.clone()
}

/// The `detail` of every event of `kind` in a `status --user --json` answer.
pub fn event_details(status: &Value, kind: &str) -> Vec<String> {
    status["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}
