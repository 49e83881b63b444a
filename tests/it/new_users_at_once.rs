//! While `run` is up, a row the application inserts gets its invite within seconds, not at the
//! next cron tick: the provision cron is set to once a year here, so only the new-user watch
//! can explain a mail. Rows added during a run lead to one more run, never an overlapping one;
//! a bulk import is one run, taken in batches.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use inquiry_mailer::clock::{format_ts, parse_ts};
use persona_sim::Faults;
use rand::Rng as _;
use sqlx::Connection as _;

use crate::support::daemon::{Daemon, PATIENCE, free_port, listen_on};
use crate::support::stack::Stack;

/// The bound each invite must meet: generous, so a loaded machine does not fail the test;
/// the bench measures the real figure (README, "Performance").
const QUICKLY: Duration = Duration::from_secs(10);

/// A provision cron that never fires during a test.
const ONCE_A_YEAR: (&str, &str) = ("provision = \"0 * * * * *\"", "provision = \"0 0 0 1 1 *\"");

/// A stack whose daemon is up, its start-up provision run over.
async fn daemon_up(edits: &[(&str, &str)]) -> (Stack, Daemon) {
    let port = free_port();
    let listen = listen_on(port);
    let mut all = vec![(listen.0, listen.1.as_str()), ONCE_A_YEAR];
    all.extend_from_slice(edits);
    let stack = Stack::start("session", &all).await;
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;
    let mut db = open_db(&stack).await;
    wait_for_rows(
        &daemon,
        &mut db,
        "finished start-up provision run",
        "SELECT COUNT(*) FROM job_runs WHERE job = 'provision' AND finished_at IS NOT NULL",
    )
    .await;
    db.close().await.expect("close");
    (stack, daemon)
}

/// The stack's SQLite file opened the way the application opens it.
async fn open_db(stack: &Stack) -> sqlx::SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(stack.app.db_path())
        .busy_timeout(Duration::from_secs(10));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the database")
}

/// Polls the count `sql` answers every 50 ms until it is above zero, for up to [`PATIENCE`].
async fn wait_for_rows(
    daemon: &Daemon,
    db: &mut sqlx::SqliteConnection,
    what: &str,
    sql: &'static str,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut *db).await.unwrap();
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {PATIENCE:?}\nstderr:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The envelope recipient of every mail in the Maildir so far, read straight from the files
/// (cheap enough to poll; aiosmtpd writes each file whole, then renames it into `new/`).
fn recipients(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("X-RcptTo: ").map(str::to_owned))
        })
        .collect()
}

/// Every pair of provision runs whose time spans overlap (RFC 3339 text: text order is time).
async fn overlapping_runs(db: &mut sqlx::SqliteConnection) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT a.id, b.id FROM job_runs a JOIN job_runs b ON a.job = b.job AND a.id < b.id \
         WHERE a.job = 'provision' AND b.started_at < COALESCE(a.finished_at, '9999') \
           AND a.started_at < COALESCE(b.finished_at, '9999')",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_at_random_moments_are_mailed_within_seconds() {
    const USERS: usize = 8;
    let (stack, mut daemon) = daemon_up(&[]).await;
    let maildir = stack.smtp.maildir();

    let mut inserted: HashMap<String, Instant> = HashMap::new();
    let mut arrived: HashMap<String, Instant> = HashMap::new();
    let note_arrivals = |arrived: &mut HashMap<String, Instant>| {
        for rcpt in recipients(&maildir) {
            arrived.entry(rcpt).or_insert_with(Instant::now);
        }
    };
    for i in 0..USERS {
        // A random moment: up to 1.5 s after the last row, so some land while a run is going.
        let pause = Duration::from_millis(rand::rng().random_range(0..1500));
        let until = Instant::now() + pause;
        while Instant::now() < until {
            note_arrivals(&mut arrived);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let email = format!("signup{i}@example.com");
        if i % 2 == 0 {
            // The application's own connection …
            let mut db = open_db(&stack).await;
            sqlx::query("INSERT INTO users (id, email, name_first) VALUES (?, ?, 'Sam')")
                .bind(format!("usr_signup{i}"))
                .bind(&email)
                .execute(&mut db)
                .await
                .expect("insert user");
            db.close().await.expect("close");
        } else {
            // … or another process entirely.
            let id = format!("usr_signup{i}");
            stack
                .run(&["users", "add", "--id", &id, "--email", &email])
                .assert_code(0);
        }
        inserted.insert(email, Instant::now());
    }
    let deadline = Instant::now() + QUICKLY;
    while arrived.len() < USERS && Instant::now() < deadline {
        note_arrivals(&mut arrived);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut waits: Vec<(String, Option<Duration>)> = inserted
        .iter()
        .map(|(email, at)| (email.clone(), arrived.get(email).map(|a| *a - *at)))
        .collect();
    waits.sort();
    eprintln!("insert → mail in the Maildir: {waits:?}");
    for (email, wait) in &waits {
        assert!(
            wait.is_some_and(|w| w <= QUICKLY),
            "{email}: no invite within {QUICKLY:?} of its insert (the cron is yearly): {waits:?}\nstderr:\n{}",
            daemon.stderr()
        );
    }
    let mails = stack.smtp.messages();
    assert_eq!(mails.len(), USERS, "one invite per user, nobody twice");
    assert!(
        mails
            .iter()
            .all(|m| m.subject == "Example App: please verify your identity"),
        "{mails:?}"
    );

    let mut db = open_db(&stack).await;
    assert_eq!(
        overlapping_runs(&mut db).await,
        [],
        "no run overlapped another"
    );
    db.close().await.expect("close");
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_added_during_a_run_gets_one_more_run_right_after_it() {
    let (stack, mut daemon) = daemon_up(&[]).await;
    let mut db = open_db(&stack).await;
    // Each create call takes 1.5 s: the run for the first row is long enough to add a second
    // row while it goes, after its discovery has read the table.
    stack.sim.set_faults(Faults {
        extra_latency_ms: 1500,
        ..Faults::default()
    });
    sqlx::query("INSERT INTO users (id, email) VALUES ('usr_b_first', 'first@example.com')")
        .execute(&mut db)
        .await
        .unwrap();
    wait_for_rows(
        &daemon,
        &mut db,
        "run discovering the first row",
        "SELECT COUNT(*) FROM user_states WHERE user_id = 'usr_b_first'",
    )
    .await;
    // Sorting before the first row: a run paging through ids after it would not see this one.
    sqlx::query("INSERT INTO users (id, email) VALUES ('usr_a_second', 'second@example.com')")
        .execute(&mut db)
        .await
        .unwrap();
    let added = Instant::now();
    let in_flight: (i64, Option<String>) = sqlx::query_as(
        "SELECT id, finished_at FROM job_runs WHERE job = 'provision' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        in_flight.1, None,
        "the second row is added while the first row's run is going"
    );

    let deadline = added + QUICKLY;
    while recipients(&stack.smtp.maildir()).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = recipients(&stack.smtp.maildir());
    got.sort();
    assert_eq!(
        got,
        ["first@example.com", "second@example.com"],
        "both mailed within {QUICKLY:?} of the second insert (the cron is yearly)\nstderr:\n{}",
        daemon.stderr()
    );

    // The second row was not the first run's: it was discovered after that run ended.
    let (first_run_end,): (String,) =
        sqlx::query_as("SELECT finished_at FROM job_runs WHERE id = ?")
            .bind(in_flight.0)
            .fetch_one(&mut db)
            .await
            .unwrap();
    let discovered_at: String = sqlx::query_scalar(
        "SELECT at FROM events WHERE user_id = 'usr_a_second' AND kind = 'user.discovered'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(
        discovered_at >= first_run_end,
        "the second row was discovered ({discovered_at}) by a run after the first ended ({first_run_end})"
    );
    assert_eq!(
        overlapping_runs(&mut db).await,
        [],
        "no run overlapped another"
    );
    db.close().await.expect("close");
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_of_50_000_rows_is_one_run_taken_in_batches() {
    const ROWS: i64 = 50_000;
    const CHUNK: i64 = 1_000;
    const BATCH: i64 = 100;
    let (stack, mut daemon) = daemon_up(&[("concurrency = 16", "concurrency = 8")]).await;
    let mut db = open_db(&stack).await;
    let before_import = format_ts(chrono::Utc::now());

    // An import tool's way: one transaction per thousand rows, a breath between them, so the
    // commits span about a second (longer than the settling wait).
    let mut first_commit = None;
    let mut first_commit_wall = None;
    for start in (0..ROWS).step_by(CHUNK as usize) {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2) \
             INSERT INTO users (id, email, name_first) \
             SELECT printf('usr_bulk%06d', i), printf('bulk%d@example.com', i), 'Sam' FROM n",
        )
        .bind(start)
        .bind(start + CHUNK)
        .execute(&mut db)
        .await
        .expect("insert a chunk");
        first_commit.get_or_insert_with(Instant::now);
        first_commit_wall.get_or_insert_with(chrono::Utc::now);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let imported = Instant::now();
    let (first_commit_at, first_commit_wall) = (first_commit.unwrap(), first_commit_wall.unwrap());
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, ROWS);
    eprintln!(
        "imported {ROWS} rows in {:.2?}",
        imported.duration_since(first_commit_at)
    );

    // Both clocks are the system's: the run's recorded start against the first commit.
    let first_run: Option<String> = {
        let deadline = first_commit_at + QUICKLY;
        loop {
            let started: Option<String> = sqlx::query_scalar(
                "SELECT MIN(started_at) FROM job_runs WHERE job = 'provision' AND started_at > ?",
            )
            .bind(&before_import)
            .fetch_one(&mut db)
            .await
            .unwrap();
            if started.is_some() || Instant::now() > deadline {
                break started;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let waited = first_run
        .as_deref()
        .and_then(parse_ts)
        .map(|started| (started - first_commit_wall).to_std().unwrap_or_default());
    eprintln!("first commit → provision run started: {waited:.2?}");
    assert!(
        waited.is_some_and(|w| w <= QUICKLY),
        "provisioning started within {QUICKLY:?} of the import's first commit (the cron is yearly): {waited:?}\nstderr:\n{}",
        daemon.stderr()
    );

    // A few hundred mails in, well before the end: the run takes the rows a batch at a time
    // (it claims the next while the last users of one are in flight), never all at once.
    let deadline = Instant::now() + PATIENCE;
    let mut most_leased = 0;
    while recipients(&stack.smtp.maildir()).len() < 300 {
        assert!(
            Instant::now() < deadline,
            "fewer than 300 mails within {PATIENCE:?}\nstderr:\n{}",
            daemon.stderr()
        );
        let leased: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM user_states WHERE lease_until > ?")
                .bind(format_ts(chrono::Utc::now()))
                .fetch_one(&mut db)
                .await
                .unwrap();
        most_leased = most_leased.max(leased);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (seen, invited): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(state = 'invited'), 0) FROM user_states")
            .fetch_one(&mut db)
            .await
            .unwrap();
    eprintln!("{invited} invited, {seen} discovered, at most {most_leased} leased at once");
    assert!(
        most_leased > 0 && most_leased <= 2 * BATCH,
        "users are claimed a batch (and the next) at a time: at most {most_leased} leased at once"
    );
    let runs: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, started_at, finished_at FROM job_runs WHERE job = 'provision' AND started_at > ? ORDER BY id",
    )
    .bind(&before_import)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        runs.len(),
        1,
        "fifty commits, one provision run so far (the next waits for it): {runs:?}"
    );
    assert_eq!(runs[0].2, None, "and it is still going: {runs:?}");
    assert_eq!(
        overlapping_runs(&mut db).await,
        [],
        "no run overlapped another"
    );
    db.close().await.expect("close");

    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
    let mut db = open_db(&stack).await;
    let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE finished_at IS NULL")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(open, 0, "the run was wound down and recorded at the stop");
    db.close().await.expect("close");
}
