//! `preview --user ID` prints the user's next mail as it would go out, sends nothing, spends no
//! Persona call, and says on stderr which parts are placeholders.

use crate::provisioning::{link_in, reference_ids};
use crate::support::app::Run;
use crate::support::stack::Stack;

/// The first loopback or Persona link of the text part of a preview.
fn previewed_link(run: &Run) -> String {
    let text = run
        .stdout
        .split("--- text/plain ---")
        .nth(1)
        .expect("a text part");
    let start = text
        .find("http://127.0.0.1:")
        .or_else(|| text.find("https://"))
        .expect("a link in the text part");
    text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['.', ',', ')', '>'])
        .to_owned()
}

fn preview(stack: &Stack, user: &str) -> Run {
    let run = stack.run(&["preview", "--user", user]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("invite mail for {user} (not sent)")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Subject: "), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("To: user{}@example.com", &user[4..])),
        "{}",
        run.stdout
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_preview_shows_the_link_that_will_be_sent_and_sends_nothing() {
    let mut stack = Stack::start("static", &[]).await;
    stack.add_users(2);
    // usr_0 is seen by a run that cannot mail it: pending, with its invite queued.
    stack.smtp.stop();
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    stack.smtp.restart();
    stack.sim.clear_requests();

    let run = preview(&stack, "usr_0");
    let refs = reference_ids(&stack).await;
    let link = previewed_link(&run);
    assert!(
        link.contains(&format!("reference-id={}", refs["usr_0"])),
        "{link}"
    );
    assert!(!run.stderr.contains("placeholder"), "{}", run.stderr);
    assert!(stack.smtp.messages().is_empty(), "preview sent a mail");
    assert_eq!(stack.sim.requests().len(), 0, "preview called Persona");

    // The mail that then goes out is the one previewed.
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    let mails = stack.smtp.wait_for_messages(2).await;
    let sent = mails
        .iter()
        .find(|m| m.rcpt_to.contains("user0@"))
        .expect("usr_0 mailed");
    assert_eq!(link_in(sent), link);
    assert!(
        run.stdout
            .contains(&format!("Message-ID: {}", sent.message_id)),
        "the preview shows the queued mail's Message-ID {}:\n{}",
        sent.message_id,
        run.stdout
    );

    // A user the daemon has not seen yet has no reference id: the preview says it shows a
    // placeholder.
    stack
        .run(&[
            "users",
            "add",
            "--id",
            "usr_7",
            "--email",
            "user7@example.com",
        ])
        .assert_code(0);
    let unseen = preview(&stack, "usr_7");
    assert!(
        unseen.stderr.contains("placeholder"),
        "stderr explains the placeholder: {}",
        unseen.stderr
    );
    assert_eq!(stack.smtp.messages().len(), 2);
    assert_eq!(stack.sim.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_preview_shows_a_placeholder_link_and_spends_no_session() {
    let mut stack = Stack::start("one-time", &[]).await;
    stack.add_users(1);
    stack.smtp.stop();
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    stack.smtp.restart();
    stack.sim.clear_requests();

    let run = preview(&stack, "usr_0");
    let link = previewed_link(&run);
    assert!(
        link.contains("ONE-TIME-CODE-OBTAINED-AT-SEND-TIME"),
        "{link}"
    );
    assert!(
        run.stderr
            .contains("a one-time link is made by Persona at send time"),
        "{}",
        run.stderr
    );
    assert_eq!(
        stack.sim.requests().len(),
        0,
        "no one-time link generated for a preview"
    );
    assert_eq!(
        stack.sim.inquiries()[0].session_count,
        1,
        "the create's own"
    );
    assert!(stack.smtp.messages().is_empty(), "preview sent a mail");

    // A user with no inquiry yet: the inquiry id and the link are both placeholders.
    stack
        .run(&[
            "users",
            "add",
            "--id",
            "usr_7",
            "--email",
            "user7@example.com",
        ])
        .assert_code(0);
    let unseen = preview(&stack, "usr_7");
    assert!(
        unseen.stderr.contains("placeholder"),
        "stderr explains the placeholders: {}",
        unseen.stderr
    );
    assert_eq!(stack.sim.requests().len(), 0);
    assert_eq!(stack.sim.inquiries().len(), 1);
    assert!(stack.smtp.messages().is_empty());
}
