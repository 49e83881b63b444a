//! Provisioning end to end: users in SQLite → inquiries in the simulator → mails in a real SMTP
//! server, each carrying a link that opens that user's own inquiry.

use std::collections::{HashMap, HashSet};

use inquiry_mailer::domain::InquiryId;

use crate::support::sim::{Api, open_link};
use crate::support::smtp::ReceivedMail;
use crate::support::stack::Stack;

/// The first hosted-flow or one-time URL in a mail's text part.
pub fn link_in(mail: &ReceivedMail) -> String {
    let text = mail.text_part.as_deref().expect("text part");
    let start = text
        .find("http://127.0.0.1:")
        .expect("a loopback link in the mail");
    text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['.', ',', ')', '>'])
        .to_owned()
}

/// user id → reference id, from the daemon's store.
pub async fn reference_ids(stack: &Stack) -> HashMap<String, String> {
    let db = stack.db().await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, reference_id FROM user_states")
            .fetch_all(&db)
            .await
            .unwrap();
    rows.into_iter().collect()
}

async fn provision_fifty(kind: &str, calls_per_user: usize) {
    let stack = Stack::start(kind, &[]).await;
    stack.add_users(50);
    stack.sim.clear_requests();

    let run = stack.run(&["once", "--job", "provision"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("50 mails sent"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );

    let mails = stack.smtp.wait_for_messages(50).await;
    assert_eq!(mails.len(), 50);
    let recipients: HashSet<_> = mails.iter().map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(recipients.len(), 50, "one mail per user");

    let api_calls = stack.sim.requests().len();
    assert_eq!(
        api_calls,
        50 * calls_per_user,
        "Persona calls for 50 {kind} users"
    );

    let refs = reference_ids(&stack).await;
    let user_of_ref: HashMap<&str, &str> =
        refs.iter().map(|(u, r)| (r.as_str(), u.as_str())).collect();
    let api = Api::new(&stack.sim);
    if kind != "static" {
        let inquiries = stack.sim.inquiries();
        assert_eq!(inquiries.len(), 50, "one inquiry per user");
        for inq in &inquiries {
            let user = user_of_ref[inq.reference_id.as_deref().expect("reference id set")];
            let n: usize = user.trim_start_matches("usr_").parse().unwrap();
            let body = api.get(&format!("/inquiries/{}", inq.id)).await.body;
            let fields = &body["data"]["attributes"]["fields"];
            assert_eq!(fields["name-first"]["value"], format!("First{n}"), "{body}");
            assert_eq!(fields["name-last"]["value"], format!("Last{n}"));
            assert_eq!(
                fields["email-address"]["value"],
                format!("user{n}@example.com")
            );
            assert!(
                fields["birthdate"]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with("19")
            );
            assert!(
                fields["phone-number"]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with("+1 415")
            );
        }
    }
    for mail in &mails {
        let link = link_in(mail);
        let user = mail
            .rcpt_to
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap()
            .replace("user", "usr_");
        let opened = open_link(&link).await;
        assert_eq!(opened.status, 200, "{link} should open: {}", opened.body);
        let inquiry = opened.body["inquiry-id"].as_str().unwrap().to_owned();
        let reference = stack
            .sim
            .inquiry(inquiry.parse::<InquiryId>().unwrap())
            .unwrap()
            .reference_id
            .unwrap();
        assert_eq!(
            reference, refs[&user],
            "{user}'s link opened someone else's inquiry"
        );
        assert!(
            !link.contains(&user),
            "the user id must never appear in a link"
        );
    }

    // Running again finds nothing to do: no new inquiry, no second mail.
    stack.sim.clear_requests();
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    assert_eq!(stack.sim.requests().len(), 0);
    assert_eq!(stack.smtp.messages().len(), 50);
    let status = stack.run(&["status", "--json"]).json();
    assert_eq!(status["users"]["invited"], 50, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_links_cost_one_call_per_user_and_open_the_users_inquiry() {
    provision_fifty("session", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_links_cost_one_call_per_user_and_open_the_users_inquiry() {
    provision_fifty("one-time", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_links_cost_no_call_and_carry_the_opaque_reference_id() {
    provision_fifty("static", 0).await;
}
