//! The mail server is down for a whole run: every inquiry is created once, every invite waits in
//! the outbox, and the run after the server is back delivers each exactly once with a working link.

use std::collections::HashSet;

use crate::provisioning::link_in;
use crate::support::safety::{UNPACED, mails_per_user};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const USERS: usize = 20;

async fn outage_then_recovery(kind: &str, link_calls_after_recovery: usize) {
    let mut stack = Stack::start(kind, &UNPACED).await;
    stack.add_users(USERS);
    stack.smtp.stop();

    // An unreachable mail server is an outage to wait out, not a failure of the run: the work is
    // saved and the next scheduled run picks it up, so `once` exits 0 and says what waits.
    let down = stack.run(&["once", "--job", "provision"]);
    down.assert_code(0);
    assert!(
        down.stdout.contains(&format!(
            "{USERS} inquiries created, 0 adopted, 0 mails sent, {USERS} waiting for a retry, 0 failed"
        )),
        "{}\n{}",
        down.stdout,
        down.stderr
    );
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), USERS);
    assert_eq!(stack.sim.inquiries().len(), USERS);

    let counts = stack.run(&["status", "--json"]).json();
    assert_eq!(counts["users"]["pending"], USERS, "{counts}");
    assert_eq!(counts["mails"]["queued"], USERS, "{counts}");
    assert_eq!(counts["mails"]["sent"], 0, "{counts}");

    // Every user shows an inquiry and an invite waiting; the ones the run tried show why.
    let mut tried = 0;
    for i in 0..USERS {
        let id = format!("usr_{i}");
        let h = stack.run(&["status", "--json", "--user", &id]).json();
        assert_eq!(h["user"]["state"], "pending", "{h}");
        assert_eq!(h["inquiries"].as_array().unwrap().len(), 1, "{h}");
        assert_eq!(h["inquiries"][0]["status"], "created", "{h}");
        let mails = h["mails"].as_array().unwrap();
        assert_eq!(mails.len(), 1, "{h}");
        assert_eq!(mails[0]["status"], "queued", "{h}");
        assert!(mails[0]["next_attempt_at"].is_string(), "{h}");
        if mails[0]["attempts"].as_i64().unwrap() > 0 {
            tried += 1;
            assert!(
                mails[0]["last_error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty()),
                "{h}"
            );
            let retry = h["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "mail.retry");
            assert!(retry, "{h}");
            let text = stack.run(&["status", "--user", &id]).stdout;
            assert!(
                text.contains("invite queued attempts 1") && text.contains("last error:"),
                "{text}"
            );
            assert!(text.contains("will retry"), "{text}");
        } else {
            // Not tried once the run knew the server was down; the user says why it waits.
            let reason = h["user"]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("mail server was unreachable"), "{h}");
        }
        let text = stack.run(&["status", "--user", &id]).stdout;
        assert!(
            text.contains("invite queued") && text.contains("next attempt"),
            "{text}"
        );
    }
    // 16 workers try at once; the users after them find the run knows the server is down.
    assert!(
        (1..USERS).contains(&tried),
        "{tried} of {USERS} sends were tried"
    );

    stack.smtp.restart();
    let up = stack.run(&["once", "--job", "provision"]);
    up.assert_code(0);
    assert!(
        up.stdout.contains(&format!(
            "0 inquiries created, 0 adopted, {USERS} mails sent, 0 waiting for a retry, 0 failed"
        )),
        "{}\n{}",
        up.stdout,
        up.stderr
    );
    // And a third run has nothing left to do.
    stack.run(&["once", "--job", "provision"]).assert_code(0);

    let mails = stack.smtp.wait_for_messages(USERS).await;
    let per_user = mails_per_user(&mails);
    assert_eq!(per_user.len(), USERS, "{per_user:?}");
    assert!(
        per_user.values().all(|&n| n == 1),
        "each user gets exactly one invite: {per_user:?}"
    );
    assert_eq!(
        stack.sim.count_requests("POST", "/inquiries"),
        USERS,
        "no inquiry is created again after the outage"
    );
    assert_eq!(stack.sim.inquiries().len(), USERS);
    assert_eq!(
        stack.sim.requests().len(),
        USERS + link_calls_after_recovery,
        "Persona calls in all"
    );

    // The delivered links work, each opening a different inquiry.
    let mut opened = HashSet::new();
    for m in &mails {
        let r = open_link(&link_in(m)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        opened.insert(r.body["inquiry-id"].as_str().unwrap().to_owned());
    }
    assert_eq!(opened.len(), USERS);

    for i in 0..USERS {
        let h = stack
            .run(&["status", "--json", "--user", &format!("usr_{i}")])
            .json();
        assert_eq!(h["user"]["state"], "invited", "{h}");
        assert!(h["user"].get("reason").is_none(), "the wait is over: {h}");
    }
    let counts = stack.run(&["status", "--json"]).json();
    assert_eq!(counts["users"]["invited"], USERS, "{counts}");
    assert_eq!(counts["mails"]["sent"], USERS, "{counts}");
    assert_eq!(counts["mails"]["queued"], 0, "{counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_invites_wait_out_an_smtp_outage_and_go_exactly_once() {
    // A created inquiry opens with its id alone: the retry needs no Persona call.
    outage_then_recovery("session", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_invites_wait_out_an_smtp_outage_and_go_exactly_once_with_a_new_link() {
    // The link from the create call was never stored; each retry asks for a new one.
    outage_then_recovery("one-time", USERS).await;
}
