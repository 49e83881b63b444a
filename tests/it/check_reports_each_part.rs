//! `check` against a live stack: every part passes and exit is 0; a stopped mail server or a
//! wrong API key fails it with exit 1, naming the part, without printing the key.

use crate::support::app::Run;
use crate::support::sim::API_KEY;
use crate::support::stack::Stack;

const PARTS: [&str; 5] = ["config", "templates", "database", "persona", "mail"];

fn assert_only_failing(run: &Run, failing: &str) {
    run.assert_code(1);
    for part in PARTS {
        let verdict = run.check_line(part).split_whitespace().next().unwrap();
        let expected = if part == failing { "FAIL" } else { "ok" };
        assert_eq!(verdict, expected, "{part}:\n{}", run.stdout);
    }
    assert!(
        run.stderr.contains("1 of 5 parts failed"),
        "stderr says how many failed: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_against_the_stack_and_names_the_part_that_fails() {
    let mut stack = Stack::start("session", &[]).await;
    stack.run(&["migrate"]).assert_code(0);

    let ok = stack.run(&["check"]);
    ok.assert_code(0);
    for part in PARTS {
        assert!(
            ok.check_line(part).starts_with("ok "),
            "{part}:\n{}",
            ok.stdout
        );
    }
    assert!(ok.check_line("persona").contains("the API key works"));
    assert!(
        ok.check_line("mail")
            .contains(&stack.smtp.addr().to_string())
    );
    assert!(ok.check_line("database").contains("schema up to date"));
    assert_eq!(stack.sim.count_requests("GET", "/rate-limits"), 1);

    // A wrong key: Persona answers 401, and the key itself is printed nowhere.
    let wrong_key = "sim-wrong-key-that-must-not-be-printed";
    let out = stack
        .command(&["check"])
        .env("PERSONA_API_KEY", wrong_key)
        .output()
        .unwrap();
    let bad_key = Run::from(out);
    assert_only_failing(&bad_key, "persona");
    assert!(
        bad_key.check_line("persona").contains("401"),
        "{}",
        bad_key.stdout
    );
    for printed in [&bad_key.stdout, &bad_key.stderr] {
        assert!(!printed.contains(wrong_key));
        assert!(!printed.contains(API_KEY));
    }

    stack.smtp.stop();
    let no_smtp = stack.run(&["check"]);
    assert_only_failing(&no_smtp, "mail");
    assert!(
        no_smtp
            .check_line("mail")
            .contains(&stack.smtp.addr().to_string()),
        "the failing line names the server: {}",
        no_smtp.stdout
    );

    // Nothing was created or sent by any of these checks.
    assert!(stack.sim.inquiries().is_empty());
    stack.smtp.restart();
    assert!(stack.smtp.messages().is_empty());
    stack.run(&["check"]).assert_code(0);
}
