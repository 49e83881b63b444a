//! Set-up for the provisioning-safety tests: raw SQL on a stack's database (as the application
//! or the passage of time would change it), runs of the binary that may be killed, and mails
//! counted per recipient.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::smtp::{ReceivedMail, SmtpServer};
use super::stack::Stack;

/// Config edits that lift the client-side pacing (240 Persona calls and 600 mails a minute), so
/// hundreds of users take seconds, not minutes. Nothing in these tests is about pacing.
pub const UNPACED: [(&str, &str); 2] = [
    ("requests_per_minute = 240", "requests_per_minute = 100000"),
    ("messages_per_minute = 600", "messages_per_minute = 100000"),
];

/// A connection of our own to the stack's SQLite file, with a busy timeout like the README asks
/// of the application.
pub async fn connect(db: &Path) -> SqliteConnection {
    SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(db)
        .busy_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("open the stack's database")
}

/// Runs one statement on the stack's database (either backend); returns the rows it changed.
pub async fn execute(stack: &Stack, statement: &'static str) -> u64 {
    stack.execute(statement).await
}

/// Inserts a `users` row straight into SQLite, as the application would (no validation).
pub async fn insert_user(stack: &Stack, id: &str, email: &str, birthdate: Option<&str>) {
    let mut conn = connect(&stack.app.db_path()).await;
    sqlx::query("INSERT INTO users (id, email, name_first, birthdate) VALUES (?, ?, 'Raw', ?)")
        .bind(id)
        .bind(email)
        .bind(birthdate)
        .execute(&mut conn)
        .await
        .expect("insert a users row");
    conn.close().await.unwrap();
}

/// `user7@example.com` (with or without angle brackets) → `usr_7`, the id `add_users` gave it.
pub fn user_of(recipient: &str) -> String {
    recipient
        .trim_matches(['<', '>', ' '])
        .split('@')
        .next()
        .unwrap()
        .replace("user", "usr_")
}

/// How many mails each user received.
pub fn mails_per_user(mails: &[ReceivedMail]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in mails {
        *counts.entry(user_of(&m.rcpt_to)).or_insert(0) += 1;
    }
    counts
}

/// How a run of the binary ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exited by itself with this code.
    Exited(i32),
    /// Aborted itself at its armed crash point (SIGABRT).
    Aborted,
    /// Killed by the test (SIGKILL).
    Killed,
}

/// Starts `once --job provision`, armed with `crash_at` (`point:n`) if given, and SIGKILLs it
/// after `kill_after` if it still runs then. Bounded: a run alive after 60 s fails the test.
pub fn provision_run(
    stack: &Stack,
    log_name: &str,
    crash_at: Option<&str>,
    kill_after: Option<Duration>,
) -> Ending {
    let log = std::fs::File::create(stack.app.path().join(log_name)).expect("log file");
    let mut cmd = stack.command(&["once", "--job", "provision"]);
    // An abort may leave a core file in the working directory: keep it in the temp folder.
    cmd.current_dir(stack.app.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(point) = crash_at {
        cmd.env(inquiry_mailer::faults::CRASH_AT_VAR, point);
    }
    let mut child = cmd.spawn().expect("start the binary");
    let started = Instant::now();
    if let Some(delay) = kill_after {
        if let Some(status) = wait_until(&mut child, started + delay) {
            return ending(status);
        }
        child.kill().expect("SIGKILL the run");
        child.wait().expect("reap the run");
        return Ending::Killed;
    }
    match wait_until(&mut child, started + Duration::from_secs(60)) {
        Some(status) => ending(status),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("once did not finish within 60 s; see {log_name}");
        }
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("poll the run") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ending(status: ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Exited(code),
        (None, Some(libc::SIGABRT)) => Ending::Aborted,
        (None, Some(libc::SIGKILL)) => Ending::Killed,
        (_, signal) => panic!("the run ended by signal {signal:?}"),
    }
}

/// Mails a run marked `sending` and never settled, as (user, attempt): a kill caught them between
/// counting the attempt and recording its outcome, so the next run sends again.
pub async fn sends_in_flight(stack: &Stack) -> Vec<(String, i64)> {
    stack
        .text_rows("SELECT user_id, CAST(attempts AS TEXT) FROM mails WHERE status = 'sending'")
        .await
        .into_iter()
        .map(|r| {
            let attempts = r[1]
                .as_deref()
                .expect("attempts")
                .parse()
                .expect("a number");
            (r[0].clone().expect("user_id"), attempts)
        })
        .collect()
}

/// How many mails the SMTP server has stored so far (cheaper than parsing them).
pub fn received_count(smtp: &SmtpServer) -> usize {
    std::fs::read_dir(smtp.maildir().join("new")).map_or(0, |d| d.count())
}
