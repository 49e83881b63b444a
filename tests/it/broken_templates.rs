//! A template with a syntax error is named (file and line) by `check` and at start-up, and a
//! running daemon told to reload it keeps mailing with the templates it has.

use crate::support::daemon::{Daemon, free_port, listen_on};
use crate::support::safety::insert_user;
use crate::support::stack::Stack;

const BROKEN: &str = "Hello {{ name_first }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_once_name_the_broken_template_and_send_nothing() {
    let stack = Stack::start("session", &[]).await;
    stack.add_users(3);
    std::fs::write(stack.app.path().join("templates/invite.txt.tera"), BROKEN).unwrap();

    let check = stack.run(&["check"]);
    check.assert_code(1);
    assert!(
        check.stdout.contains("FAIL templates") && check.stdout.contains("invite.txt.tera line 1"),
        "{}",
        check.stdout
    );
    stack.sim.clear_requests(); // check asked Persona for its rate limits
    let once = stack.run(&["once", "--job", "provision"]);
    once.assert_code(1);
    assert!(
        once.stderr.contains("invite.txt.tera line 1"),
        "{}",
        once.stderr
    );
    assert!(
        stack.sim.requests().is_empty(),
        "nothing was started with a broken template"
    );
    assert!(stack.smtp.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_broken_template_keeps_the_working_ones() {
    let port = free_port();
    let (old, new) = listen_on(port);
    let stack = Stack::start(
        "session",
        &[
            (old, new.as_str()),
            (
                "provision = \"0 * * * * *\"",
                "provision = \"*/1 * * * * *\"",
            ),
        ],
    )
    .await;
    stack.add_users(1);
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;
    stack.smtp.wait_for_messages(1).await;

    std::fs::write(stack.app.path().join("templates/renewed.html.tera"), BROKEN).unwrap();
    let before = daemon.notifications().len();
    daemon.signal(libc::SIGHUP);
    let reloading = daemon.wait_for_note(before, "RELOADING=1").await;
    daemon.wait_for_note(reloading + 1, "READY=1").await;
    let stderr = daemon.stderr();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("renewed.html.tera")),
        "the refusal names the file:\n{stderr}"
    );
    insert_user(&stack, "usr_late", "late@example.com", None).await;
    let mails = stack.smtp.wait_for_messages(2).await;
    assert_eq!(mails.len(), 2, "still mailing with the templates it had");
    assert_eq!(daemon.stop().await.code(), Some(0));
}
