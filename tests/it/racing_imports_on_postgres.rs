//! Writers racing on the same new ids on PostgreSQL, where (READ COMMITTED) both can find an id
//! missing and both insert it: the loser ends as if the id had been there when it looked.
//! `users add` of a known id is refused as existing; `users import` of rows another import
//! added meanwhile counts them as unchanged; imports sharing existing rows in opposite orders
//! do not deadlock. The users table holds each id once.

use std::collections::BTreeSet;
use std::sync::Arc;

use inquiry_mailer::domain::RawUser;
use inquiry_mailer::store::StoreError;
use inquiry_mailer::store::users::{self, Written};

use crate::support::stack::{Backend, Stack};

/// Writers started at once on one id: more than the pool's connections would only queue.
const WRITERS: usize = 8;
/// Rounds of them, each on a fresh id, so the race is run often enough to be lost many times.
const ROUNDS: usize = 25;

/// A pool as large as the writers, so they all reach the server at once.
const POOL: (&str, &str) = ("read_connections = 4", "read_connections = 8");

fn user(id: &str) -> RawUser {
    RawUser {
        id: id.to_owned(),
        email: format!("{id}@example.com"),
        name_first: Some("Ada".to_owned()),
        name_last: None,
        birthdate: None,
        phone_number: None,
        locale: None,
    }
}

/// How many rows `users` holds, and how many distinct ids among them.
async fn rows_and_ids(stack: &Stack) -> (usize, usize) {
    let r = stack
        .text_rows("SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT id) AS TEXT) FROM users")
        .await;
    let n = |i: usize| r[0][i].as_deref().unwrap().parse().unwrap();
    (n(0), n(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_of_one_new_id_at_once_add_it_once_and_refuse_the_rest_as_existing() {
    let Some(stack) = Stack::start_on(Backend::Postgres, "session", &[POOL]).await else {
        return;
    };
    let store = stack.store().await;
    for round in 0..ROUNDS {
        let id = format!("usr_race_{round}");
        let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (store, start, user) = (store.clone(), start.clone(), user(&id));
                tokio::spawn(async move {
                    start.wait().await;
                    users::add(&store, &user).await
                })
            })
            .collect();
        let mut added = 0;
        for writer in writers {
            match writer.await.expect("writer") {
                Ok(()) => added += 1,
                Err(StoreError::Exists { table, key }) => {
                    assert_eq!((table, key.as_str()), ("user", id.as_str()));
                }
                Err(other) => panic!("round {round}: {id}: not refused as existing: {other}"),
            }
        }
        assert_eq!(added, 1, "round {round}: {id} added by exactly one writer");
    }
    store.close().await;
    assert_eq!(rows_and_ids(&stack).await, (ROUNDS, ROUNDS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_of_the_same_new_rows_at_once_add_each_once_and_find_it_unchanged_after() {
    let Some(stack) = Stack::start_on(Backend::Postgres, "session", &[POOL]).await else {
        return;
    };
    let store = stack.store().await;
    for round in 0..ROUNDS {
        let rows: Vec<RawUser> = (0..4)
            .map(|i| user(&format!("usr_upsert_{round}_{i}")))
            .collect();
        let start = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (store, start, rows) = (store.clone(), start.clone(), rows.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    users::upsert_many(&store, &rows).await
                })
            })
            .collect();
        let mut added = 0;
        for writer in writers {
            let written = writer
                .await
                .expect("writer")
                .unwrap_or_else(|e| panic!("round {round}: an upsert failed: {e}"));
            assert_eq!(written.len(), rows.len());
            for w in written {
                match w {
                    Written::Added => added += 1,
                    Written::Unchanged => {}
                    Written::Updated => panic!("round {round}: identical rows updated"),
                }
            }
        }
        assert_eq!(added, rows.len(), "round {round}: each row added once");
    }
    store.close().await;
    assert_eq!(rows_and_ids(&stack).await, (4 * ROUNDS, 4 * ROUNDS));
}

/// `users import` twice at once, of files that share most of their rows (identical in both):
/// both succeed, the shared rows are added by one and unchanged for the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_imports_of_overlapping_files_at_once_both_succeed_and_add_each_id_once() {
    let Some(stack) = Stack::start_on(Backend::Postgres, "session", &[]).await else {
        return;
    };
    // More than one chunk each (1000 rows a transaction), in the same id order, so both are
    // writing the shared rows at the same time.
    let csv = |ids: std::ops::Range<usize>| {
        let mut text = String::from("id,email,name_first\n");
        for i in ids {
            text.push_str(&format!("usr_{i:05},user{i}@example.com,First{i}\n"));
        }
        text
    };
    let (first, second) = (0..2500, 500..3000);
    let files = [
        stack.app.write("first.csv", &csv(first.clone())),
        stack.app.write("second.csv", &csv(second.clone())),
    ];
    let imports: Vec<_> = files
        .iter()
        .map(|f| {
            stack
                .command(&["users", "import", f.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn users import")
        })
        .collect();
    let mut added = 0;
    for (import, rows) in imports.into_iter().zip([first.len(), second.len()]) {
        let out = import.wait_with_output().expect("users import");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        eprintln!("{}", stdout.trim());
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        // "FILE: 2500 added, 0 updated, 0 unchanged, 0 rejected"
        let counts: Vec<usize> = stdout
            .rsplit_once(": ")
            .expect("a report line")
            .1
            .split(", ")
            .map(|part| part.split_once(' ').unwrap().0.parse().unwrap())
            .collect();
        let [a, updated, unchanged, rejected] = counts[..] else {
            panic!("report: {stdout}");
        };
        assert_eq!((a + unchanged, updated, rejected), (rows, 0, 0), "{stdout}");
        added += a;
    }
    let ids: BTreeSet<usize> = first.chain(second).collect();
    assert_eq!(added, ids.len(), "each id added by one import");
    assert_eq!(rows_and_ids(&stack).await, (ids.len(), ids.len()));
}

/// Two upserts at once of the same existing rows in opposite orders, each changing them: both
/// succeed (one waits for the other's commit), where locking the rows in the order given would
/// have each waiting on the other until the server failed one as a deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_of_shared_rows_in_opposite_orders_at_once_both_succeed() {
    const ROWS: usize = 200;
    let Some(stack) = Stack::start_on(Backend::Postgres, "session", &[POOL]).await else {
        return;
    };
    let store = stack.store().await;
    let ids: Vec<String> = (0..ROWS).map(|i| format!("usr_shared_{i:03}")).collect();
    let rows: Vec<RawUser> = ids.iter().map(|id| user(id)).collect();
    users::upsert_many(&store, &rows)
        .await
        .expect("the rows added");
    for round in 0..4 {
        let renamed = |to: &str| -> Vec<RawUser> {
            rows.iter()
                .map(|r| RawUser {
                    name_first: Some(format!("{to}{round}")),
                    ..r.clone()
                })
                .collect()
        };
        let forward = renamed("Forward");
        let backward: Vec<RawUser> = renamed("Backward").into_iter().rev().collect();
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let writers: Vec<_> = [forward, backward]
            .into_iter()
            .map(|rows| {
                let (store, start) = (store.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    users::upsert_many(&store, &rows).await
                })
            })
            .collect();
        for writer in writers {
            let written = writer
                .await
                .expect("writer")
                .unwrap_or_else(|e| panic!("round {round}: an upsert failed: {e}"));
            assert_eq!(written, vec![Written::Updated; ROWS], "round {round}");
        }
        // Whichever committed last holds every row: no row is left from the other.
        let firsts: BTreeSet<String> = stack
            .text_rows("SELECT DISTINCT name_first FROM users WHERE id LIKE 'usr_shared_%'")
            .await
            .into_iter()
            .map(|r| r[0].clone().expect("name_first"))
            .collect();
        assert_eq!(firsts.len(), 1, "round {round}: {firsts:?}");
    }
    store.close().await;
    assert_eq!(rows_and_ids(&stack).await, (ROWS, ROWS));
}
