//! On PostgreSQL, a row the application commits to `users` while `run` is up is heard through
//! LISTEN/NOTIFY (migration 0002's trigger), not found by the cron: the provision cron is set
//! to once a year here, so only the notification can explain a mail. A burst is one run (or
//! two, when commits land during the first), and a killed listening connection comes back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inquiry_mailer::store::changes::FEED_APPLICATION_NAME;

use crate::support::daemon::{Daemon, PATIENCE, free_port, listen_on};
use crate::support::stack::{Backend, Stack};

/// How long an invite may take: far below the cron (a year) and generous for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(20);

/// A provision cron that never fires during a test.
const ONCE_A_YEAR: (&str, &str) = ("provision = \"0 * * * * *\"", "provision = \"0 0 0 1 1 *\"");

/// One count on the stack's database (the query answers one text cell).
async fn count(stack: &Stack, query: &str) -> i64 {
    let rows = stack.text_rows(query).await;
    rows[0][0].as_deref().expect("a count").parse().unwrap()
}

async fn provision_runs(stack: &Stack) -> i64 {
    count(
        stack,
        "SELECT CAST(COUNT(*) AS TEXT) FROM job_runs WHERE job = 'provision'",
    )
    .await
}

/// Waits until no provision run is left unfinished, for up to [`PATIENCE`].
async fn until_runs_finish(stack: &Stack, daemon: &Daemon) {
    let deadline = Instant::now() + PATIENCE;
    while count(
        stack,
        "SELECT CAST(COUNT(*) AS TEXT) FROM job_runs WHERE job = 'provision' AND finished_at IS NULL",
    )
    .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "a provision run did not finish within {PATIENCE:?}\nstderr:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every address of `emails` has a mail, for up to [`NOTICED_WITHIN`].
async fn until_mailed(stack: &Stack, daemon: &Daemon, emails: &[String]) {
    let deadline = Instant::now() + NOTICED_WITHIN;
    loop {
        let got: HashSet<String> = stack
            .smtp
            .messages()
            .into_iter()
            .map(|m| m.rcpt_to)
            .collect();
        let missing: Vec<&String> = emails.iter().filter(|e| !got.contains(*e)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no invite for {} of {} within {NOTICED_WITHIN:?} (first: {})\nstderr:\n{}",
            missing.len(),
            emails.len(),
            missing[0],
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The backend ids of the daemon's listening sessions on the stack's database.
async fn listener_pids(stack: &Stack) -> Vec<String> {
    stack
        .text_rows(&format!(
            "SELECT CAST(pid AS TEXT) FROM pg_stat_activity \
             WHERE application_name = '{FEED_APPLICATION_NAME}' AND datname = current_database()"
        ))
        .await
        .into_iter()
        .map(|r| r[0].clone().expect("pid"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_committed_by_another_connection_are_heard_at_once_in_bursts_and_after_a_lost_connection()
 {
    let port = free_port();
    let listen = listen_on(port);
    let edits = [(listen.0, listen.1.as_str()), ONCE_A_YEAR];
    let Some(stack) = Stack::start_on(Backend::Postgres, "session", &edits).await else {
        return;
    };
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;
    let deadline = Instant::now() + PATIENCE;
    while count(
        &stack,
        "SELECT CAST(COUNT(*) AS TEXT) FROM job_runs WHERE job = 'provision' AND finished_at IS NOT NULL",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "no start-up provision run\n{}", daemon.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        listener_pids(&stack).await.len(),
        1,
        "one listening session"
    );

    // One row, committed by the application's own connection.
    stack
        .execute("INSERT INTO users (id, email, name_first) VALUES ('usr_one', 'one@example.com', 'Sam')")
        .await;
    until_mailed(&stack, &daemon, &["one@example.com".to_owned()]).await;
    until_runs_finish(&stack, &daemon).await;

    // A burst: 50 rows in 5 commits back to back on one connection.
    let before = provision_runs(&stack).await;
    let pool = stack.database.as_ref().unwrap().pool().await;
    let mut burst = Vec::new();
    for commit in 0..5 {
        let mut tx = pool.begin().await.unwrap();
        for i in 0..10 {
            let n = commit * 10 + i;
            let email = format!("burst{n}@example.com");
            sqlx::query("INSERT INTO users (id, email) VALUES ($1, $2)")
                .bind(format!("usr_burst{n}"))
                .bind(&email)
                .execute(&mut *tx)
                .await
                .unwrap();
            burst.push(email);
        }
        tx.commit().await.unwrap();
    }
    pool.close().await;
    until_mailed(&stack, &daemon, &burst).await;
    // Past the debounce's longest wait, so a run the burst still owed has started.
    tokio::time::sleep(Duration::from_secs(1)).await;
    until_runs_finish(&stack, &daemon).await;
    let runs = provision_runs(&stack).await - before;
    assert!(
        (1..=2).contains(&runs),
        "5 commits in a row made {runs} provision runs"
    );

    // The listening session is killed; the row committed right after is still found (by the
    // catch-up run after the reconnect, or by the new LISTEN), and so is a later one.
    let killed = listener_pids(&stack).await;
    assert_eq!(killed.len(), 1, "one listening session");
    let terminated = stack
        .text_rows(&format!(
            "SELECT CAST(pg_terminate_backend({}) AS TEXT)",
            killed[0]
        ))
        .await;
    assert_eq!(
        terminated[0][0].as_deref(),
        Some("true"),
        "the listener's session was terminated"
    );
    stack
        .execute("INSERT INTO users (id, email) VALUES ('usr_during', 'during@example.com')")
        .await;
    until_mailed(&stack, &daemon, &["during@example.com".to_owned()]).await;

    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = listener_pids(&stack).await;
        if now.len() == 1 && now != killed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new listening session within {PATIENCE:?}: {now:?}\nstderr:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack
        .execute("INSERT INTO users (id, email) VALUES ('usr_after', 'after@example.com')")
        .await;
    until_mailed(&stack, &daemon, &["after@example.com".to_owned()]).await;

    assert!(
        daemon.stderr().contains("listening again"),
        "the lost connection was noticed as such\n{}",
        daemon.stderr()
    );
    let mails = stack.smtp.messages();
    assert_eq!(mails.len(), 53, "one invite per user, none twice");
    daemon.stop().await;
}
