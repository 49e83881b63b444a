//! Rows the application wrote that cannot be used (an invalid e-mail, an impossible birthdate)
//! are skipped with a readable reason; everyone else is mailed in the same run.

use crate::support::safety::{UNPACED, insert_user, mails_per_user};
use crate::support::stack::Stack;

const BAD_EMAIL: (&str, &str) = ("usr_badmail", "not-an-email");
const BAD_BIRTHDATE: (&str, &str) = ("usr_baddate", "1990-02-30");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_rows_are_skipped_with_their_reason_and_everyone_else_is_mailed() {
    let stack = Stack::start("session", &UNPACED).await;
    stack.add_users(6);
    // `users import` refuses such rows, so they go in the way an application would write them.
    insert_user(&stack, BAD_EMAIL.0, BAD_EMAIL.1, Some("1990-01-01")).await;
    insert_user(
        &stack,
        BAD_BIRTHDATE.0,
        "dee@example.com",
        Some(BAD_BIRTHDATE.1),
    )
    .await;

    let run = stack.run(&["once", "--job", "provision"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("2 skipped") && run.stdout.contains("6 mails sent"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );

    let mails = stack.smtp.wait_for_messages(6).await;
    let per_user = mails_per_user(&mails);
    let expected: Vec<String> = (0..6).map(|i| format!("usr_{i}")).collect();
    assert_eq!(per_user.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(per_user.values().all(|&n| n == 1), "{per_user:?}");
    assert_eq!(
        stack.sim.count_requests("POST", "/inquiries"),
        6,
        "no inquiry for a skipped user"
    );

    let counts = stack.run(&["status", "--json"]).json();
    assert_eq!(counts["users"]["skipped"], 2, "{counts}");
    assert_eq!(counts["users"]["invited"], 6, "{counts}");
    assert_eq!(counts["users"]["pending"], 0, "{counts}");

    for (id, reason) in [
        (BAD_EMAIL.0, "e-mail \"not-an-email\" is not valid"),
        (
            BAD_BIRTHDATE.0,
            "birthdate \"1990-02-30\" is not a real date",
        ),
    ] {
        let text = stack.run(&["status", "--user", id]);
        text.assert_code(0);
        assert!(text.stdout.contains(": skipped"), "{}", text.stdout);
        assert!(
            text.stdout.contains(&format!("reason: {reason}")),
            "{id}: {}",
            text.stdout
        );

        let json = stack.run(&["status", "--json", "--user", id]).json();
        assert_eq!(json["user"]["id"], id, "{json}");
        assert_eq!(json["user"]["state"], "skipped", "{json}");
        let stated = json["user"]["reason"].as_str().expect("a reason");
        assert!(stated.contains(reason), "{id}: {stated}");
        assert_eq!(json["inquiries"], serde_json::json!([]), "{json}");
        assert_eq!(json["mails"], serde_json::json!([]), "{json}");
        let skipped_event =
            json["events"].as_array().unwrap().iter().any(|e| {
                e["kind"] == "user.skipped" && e["detail"].as_str().unwrap().contains(reason)
            });
        assert!(skipped_event, "{json}");
    }

    // A second run leaves them skipped and mails nobody again.
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    assert_eq!(stack.smtp.messages().len(), 6);
    assert_eq!(
        stack.run(&["status", "--json"]).json()["users"]["skipped"],
        2
    );
}
