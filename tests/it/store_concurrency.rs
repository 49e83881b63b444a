//! The application writes `users` from its own process while the daemon writes its tables:
//! neither side may ever see "database is locked".

use inquiry_mailer::store::{Store, StoreOptions, events};

const APP_WRITER: &str = r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=5)
errors = 0
for i in range(1000):
    try:
        with con:
            con.execute("INSERT INTO users (id, email) VALUES (?, ?)", (f"usr_app_{i}", f"u{i}@example.com"))
    except sqlite3.OperationalError as e:
        errors += 1
        print("error:", e, file=sys.stderr)
print(errors)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_inserting_users_sees_no_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = Store::open(&StoreOptions::new(&path)).await.unwrap();
    store.migrate().await.unwrap();

    let mut app = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(APP_WRITER)
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");

    // The daemon side: write transactions in a loop for as long as the application writes.
    let mut daemon_writes = 0u32;
    let mut daemon_errors = Vec::new();
    let finished = loop {
        match store.begin_write().await {
            Ok(mut tx) => {
                let r = events::record(
                    &mut tx,
                    chrono::Utc::now(),
                    None,
                    None,
                    "test.write",
                    "loop",
                )
                .await;
                match r {
                    Ok(()) => match tx.commit().await {
                        Ok(()) => daemon_writes += 1,
                        Err(e) => daemon_errors.push(e.to_string()),
                    },
                    Err(e) => daemon_errors.push(e.to_string()),
                }
            }
            Err(e) => daemon_errors.push(e.to_string()),
        }
        if let Some(status) = app.try_wait().unwrap() {
            break status;
        }
    };
    let out = app.wait_with_output().await.unwrap();
    assert!(
        finished.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        daemon_errors.is_empty(),
        "daemon side errors: {daemon_errors:?}"
    );
    assert!(daemon_writes > 0);
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&crate::support::stack::pool(&path).await)
        .await
        .unwrap();
    assert_eq!(users, 1000);
}
