//! `inquiry-mailer run` the way systemd sees it: READY=1 once it serves, health and metrics on
//! its port, SIGHUP reloads templates (and refuses a broken config without stopping), and
//! SIGTERM in the middle of a run stops cleanly, leaving no user half done.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use persona_sim::Faults;

use crate::support::daemon::{Daemon, free_port, listen_on, sample, wait_for_status};
use crate::support::stack::Stack;

const EVERY_SECOND: (&str, &str) = (
    "provision = \"0 * * * * *\"",
    "provision = \"*/1 * * * * *\"",
);

/// The stack's SQLite file opened the way the application opens it (no config involved).
async fn open_db(stack: &Stack) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(stack.app.db_path())
        .busy_timeout(Duration::from_secs(5));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the database")
}

/// Inserts a `users` row straight into SQLite, as the application does.
async fn insert_user(stack: &Stack, id: &str, email: &str) {
    use sqlx::Connection as _;
    let mut db = open_db(stack).await;
    sqlx::query("INSERT INTO users (id, email) VALUES (?, ?)")
        .bind(id)
        .bind(email)
        .execute(&mut db)
        .await
        .expect("insert user");
    db.close().await.expect("close");
}

/// Waits until a provision run that started after `since` has finished: from then on every
/// run uses what the daemon had loaded at `since` (a run keeps the context it started with).
async fn wait_for_provision_run_after(stack: &Stack, since: chrono::DateTime<chrono::Utc>) {
    use sqlx::Connection as _;
    let since = inquiry_mailer::clock::format_ts(since);
    let deadline = std::time::Instant::now() + crate::support::daemon::PATIENCE;
    let mut db = open_db(stack).await;
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_runs WHERE job = 'provision' AND started_at > ? \
             AND finished_at IS NOT NULL",
        )
        .bind(&since)
        .fetch_one(&mut db)
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no provision run after {since}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.close().await.expect("close");
}

fn invited(status: &serde_json::Value) -> i64 {
    status["users"]["invited"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_systemd_serves_health_and_metrics_and_reloads_on_sighup() {
    let port = free_port();
    let listen = listen_on(port);
    let stack = Stack::start("session", &[(listen.0, &listen.1), EVERY_SECOND]).await;
    stack.add_users(1);

    let mut daemon = Daemon::start(&stack, port, &[]);
    let ready_after = daemon.wait_ready().await;
    eprintln!("READY=1 {} ms after spawn", ready_after.as_millis());
    let notes = daemon.notifications();
    let ready = notes.iter().position(|n| n.has("READY=1")).unwrap();
    assert!(
        notes[..ready].iter().any(|n| n.text.starts_with("STATUS=")),
        "a STATUS= line says what start-up is doing: {notes:?}"
    );

    // Ready means serving: no retry needed for the first request.
    let health = daemon.get("/healthz").await;
    assert_eq!(health.status, 200, "{health:?}");
    assert!(
        health.content_type.starts_with("application/json"),
        "{health:?}"
    );
    let h = health.json();
    assert_eq!(h["healthy"], true, "{h}");
    assert_eq!(h["database"], "ok", "{h}");
    let jobs: HashSet<&str> = h["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, HashSet::from(["provision", "refresh"]), "{h}");

    // The user present at start-up is mailed with the shipped subject.
    let mails = stack.smtp.wait_for_messages(1).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject, "Example App: please verify your identity");
    let metrics = daemon
        .wait_for_metrics("a finished provision run and one invited user", |m| {
            sample(m, r#"job_runs_total{job="provision",outcome="ok"}"#).is_some()
                && sample(m, r#"users{state="invited"}"#) == Some(1.0)
        })
        .await;
    for state in ["pending", "invited", "started", "finished", "skipped"] {
        let series = format!("users{{state=\"{state}\"}}");
        assert!(
            sample(&metrics, &series).is_some(),
            "{series} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("# TYPE job_runs_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("job_duration_seconds_bucket{job=\"provision\""),
        "{metrics}"
    );
    assert!(
        daemon
            .notifications()
            .iter()
            .any(|n| n.text.starts_with("STATUS=idle; last provision ok")),
        "a STATUS= line reports the last run: {:?}",
        daemon.notifications()
    );

    // SIGHUP: the changed template is read again and used for the next user.
    stack.app.write(
        "templates/invite.subject.tera",
        "{{ app_name }}: reloaded subject",
    );
    let before = daemon.notifications().len();
    daemon.signal(libc::SIGHUP);
    let reloading = daemon.wait_for_note(before, "RELOADING=1").await;
    assert!(
        daemon.notifications()[reloading]
            .text
            .contains("MONOTONIC_USEC="),
        "RELOADING=1 carries MONOTONIC_USEC as Type=notify-reload expects"
    );
    daemon.wait_for_note(reloading + 1, "READY=1").await;
    wait_for_provision_run_after(&stack, chrono::Utc::now()).await;
    stack
        .run(&[
            "users",
            "add",
            "--id",
            "usr_late",
            "--email",
            "late@example.com",
        ])
        .assert_code(0);
    let mails = stack.smtp.wait_for_messages(2).await;
    assert_eq!(mails.len(), 2, "the user added after the reload is mailed");
    assert_eq!(mails[1].rcpt_to, "late@example.com");
    assert_eq!(mails[1].subject, "Example App: reloaded subject");
    assert!(daemon.stderr().contains("reloaded config and templates"));

    // A broken config is refused; the daemon goes on with the one it has.
    let good = std::fs::read_to_string(&stack.app.config).unwrap();
    std::fs::write(
        &stack.app.config,
        good.replacen("batch_size = 100", "batch_sise = 100", 1),
    )
    .unwrap();
    let before = daemon.notifications().len();
    daemon.signal(libc::SIGHUP);
    let reloading = daemon.wait_for_note(before, "RELOADING=1").await;
    daemon.wait_for_note(reloading + 1, "READY=1").await;
    let stderr = daemon.stderr();
    let refusal = stderr
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{stderr}"));
    assert!(
        refusal.contains("batch_sise") && refusal.contains("[provision]"),
        "the refusal names the key: {refusal}"
    );
    assert_eq!(
        daemon.try_exit(),
        None,
        "a refused reload does not stop the daemon"
    );
    assert_eq!(daemon.get("/healthz").await.status, 200);
    // The CLI would refuse the broken config too: insert the way the application does.
    insert_user(&stack, "usr_after", "after@example.com").await;
    let mails = stack.smtp.wait_for_messages(3).await;
    assert_eq!(
        mails.len(),
        3,
        "still provisioning after the refused reload"
    );
    assert_eq!(mails[2].subject, "Example App: reloaded subject");

    let before = daemon.notifications().len();
    let status = daemon.stop().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
    daemon.wait_for_note(before, "STOPPING=1").await;
}

/// A user the daemon left alone in the middle of a run: still `pending`, holding no lease (so
/// the next run takes them at once), with no mail caught in `sending` and no more than one
/// inquiry row, whose idempotency key lets the next run finish it without a second inquiry.
#[derive(Debug)]
struct Leftover {
    user_id: String,
    state: String,
    lease_until: Option<String>,
    inquiries: i64,
    mails_sent: i64,
    mails_sending: i64,
    mails: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_provision_run_stops_cleanly_and_leaves_no_user_half_done() {
    const USERS: usize = 40;
    let port = free_port();
    let listen = listen_on(port);
    let stack = Stack::start(
        "session",
        &[
            (listen.0, &listen.1),
            EVERY_SECOND,
            ("concurrency = 16", "concurrency = 4"),
        ],
    )
    .await;
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;

    // Slow Persona: 40 users, four at a time, take several seconds.
    stack.sim.set_faults(Faults {
        extra_latency_ms: 300,
        ..Faults::default()
    });
    stack.add_users(USERS);
    wait_for_status(&stack, &[], "a first invited user", |s| invited(s) >= 1).await;
    let db = stack.db().await;
    let running: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM job_runs WHERE job = 'provision' AND finished_at IS NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        running, 1,
        "a provision run is in flight when SIGTERM comes"
    );

    let before = daemon.notifications().len();
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_note(before, "STOPPING=1").await;
    let status = daemon.wait_exit().await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", daemon.stderr());
    let stderr = daemon.stderr();
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(
        !stderr.contains("did not finish within"),
        "in-flight work finished within shutdown_timeout:\n{stderr}"
    );

    let runs: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT finished_at, outcome FROM job_runs WHERE job = 'provision' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        runs.iter()
            .all(|(f, o)| f.is_some() && o.as_deref() == Some("ok")),
        "every run was recorded as finished: {runs:?}"
    );

    let now = inquiry_mailer::clock::format_ts(stack.clock.now());
    type Columns = (String, String, Option<String>, i64, i64, i64, i64);
    let users: Vec<Leftover> = sqlx::query_as::<_, Columns>(
        "SELECT u.id AS user_id, COALESCE(s.state, 'pending') AS state, s.lease_until, \
           (SELECT COUNT(*) FROM inquiries i WHERE i.user_id = u.id) AS inquiries, \
           (SELECT COUNT(*) FROM mails m WHERE m.user_id = u.id AND m.status = 'sent') AS mails_sent, \
           (SELECT COUNT(*) FROM mails m WHERE m.user_id = u.id AND m.status = 'sending') AS mails_sending, \
           (SELECT COUNT(*) FROM mails m WHERE m.user_id = u.id) AS mails \
         FROM users u LEFT JOIN user_states s ON s.user_id = u.id ORDER BY u.id",
    )
    .fetch_all(&db)
    .await
    .unwrap()
    .into_iter()
    .map(
        |(user_id, state, lease_until, inquiries, mails_sent, mails_sending, mails)| Leftover {
            user_id,
            state,
            lease_until,
            inquiries,
            mails_sent,
            mails_sending,
            mails,
        },
    )
    .collect();
    assert_eq!(users.len(), USERS);
    let delivered: HashMap<String, usize> =
        stack
            .smtp
            .messages()
            .into_iter()
            .fold(HashMap::new(), |mut m, mail| {
                *m.entry(mail.rcpt_to).or_default() += 1;
                m
            });
    let mut left = 0;
    for u in &users {
        let email = format!("user{}@example.com", u.user_id.trim_start_matches("usr_"));
        match u.state.as_str() {
            "invited" => {
                assert_eq!(
                    (u.inquiries, u.mails_sent, u.mails),
                    (1, 1, 1),
                    "an invited user has one inquiry and one sent mail: {u:?}"
                );
                assert_eq!(delivered.get(&email), Some(&1), "{u:?}");
            }
            "pending" => {
                left += 1;
                assert!(
                    u.lease_until.as_deref().is_none_or(|l| l <= now.as_str()),
                    "no lease left behind: {u:?}"
                );
                assert_eq!(u.mails_sending, 0, "no mail caught mid-send: {u:?}");
                assert_eq!(u.mails_sent, 0, "{u:?}");
                assert!(u.inquiries <= 1, "{u:?}");
                assert_eq!(delivered.get(&email), None, "{u:?}");
            }
            other => panic!("{} is {other} after the stop: {u:?}", u.user_id),
        }
    }
    assert!(
        left > 0,
        "SIGTERM cut the run short, so some users are left for the next run"
    );
    eprintln!(
        "after SIGTERM: {} invited, {left} left pending",
        USERS - left
    );
    db.close().await;

    // Resumable means: the next run finishes every one of them, once.
    stack.sim.set_faults(Faults::default());
    let run = stack.run(&["once", "--job", "provision"]);
    run.assert_code(0);
    let mails = stack.smtp.wait_for_messages(USERS).await;
    assert_eq!(
        mails.len(),
        USERS,
        "one mail per user in all: {}",
        run.stdout
    );
    let recipients: HashSet<_> = mails.iter().map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(recipients.len(), USERS, "nobody mailed twice");
    let inquiries = stack.sim.inquiries();
    assert_eq!(inquiries.len(), USERS, "one inquiry per user at Persona");
    let refs: HashSet<_> = inquiries.iter().map(|i| i.reference_id.clone()).collect();
    assert_eq!(refs.len(), USERS);
    let status = stack.run(&["status", "--json"]);
    status.assert_code(0);
    assert_eq!(invited(&status.json()), USERS as i64, "{}", status.stdout);
    let db = stack.db().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inquiries")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, USERS as i64);
    db.close().await;
}
