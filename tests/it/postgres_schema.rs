//! The PostgreSQL schema (migrations/postgres) on a real server: it applies once with sqlx's
//! migrator, means what SQLite's migrations 0001–0009 mean (same tables, columns, nullability,
//! indexes and constraints), takes the application's writes to `users`, and its `verifications`
//! view shows exactly what SQLite's shows.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use inquiry_mailer::clock::format_ts;
use inquiry_mailer::store::{Store, StoreOptions};

use crate::support::app::repo_root;
use crate::support::postgres::{TestDatabase, fresh_database};

async fn migrator() -> Migrator {
    Migrator::new(repo_root().join("migrations/postgres"))
        .await
        .expect("migrations/postgres reads")
}

/// A fresh database with the schema applied, or `None` when PostgreSQL is missing (skipped).
async fn migrated() -> Option<(TestDatabase, PgPool)> {
    let db = fresh_database().await?;
    let pool = db.pool().await;
    migrator()
        .await
        .run(&pool)
        .await
        .expect("the schema applies");
    Some((db, pool))
}

/// SQLite after the product's own migrations (run by the product's store), in a file kept
/// for the test process's life.
async fn sqlite() -> SqlitePool {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let path = dir.path().join("baseline.db");
    let store = Store::open(&StoreOptions::new(&path)).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap()
}

/// Every relation and column of the public schema, for "nothing changed" comparisons.
async fn pg_layout(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_applies_and_applying_it_again_is_a_no_op() {
    let Some((_db, pool)) = migrated().await else {
        return;
    };
    sqlx::query("INSERT INTO users (id, email) VALUES ('usr_1', 'a@example.com')")
        .execute(&pool)
        .await
        .unwrap();
    let before = pg_layout(&pool).await;

    migrator().await.run(&pool).await.expect("a second run");

    assert_eq!(pg_layout(&pool).await, before);
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied, [(1, true), (2, true), (3, true), (4, true)]);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1, "the second run kept the rows");
}

/// The PostgreSQL type each SQLite column becomes: TEXT stays text, except the daemon's own
/// time columns, which are timestamptz; INTEGER counters and row ids are bigint; BLOB is bytea.
fn pg_type_for(table: &str, column: &str, sqlite_type: &str) -> &'static str {
    let daemon_time =
        table != "users" && (column.ends_with("_at") || column == "at" || column == "lease_until");
    match sqlite_type {
        "TEXT" if daemon_time => "timestamp with time zone",
        "TEXT" => "text",
        "INTEGER" => "bigint",
        "BLOB" => "bytea",
        other => panic!("{table}.{column}: unexpected SQLite type {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sqlite_table_and_column_has_its_postgres_twin() {
    let Some((_db, pg)) = migrated().await else {
        return;
    };
    let lite = sqlite().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
         AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    let pg_tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' \
         AND table_name != '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    assert_eq!(pg_tables, tables);
    assert!(tables.len() >= 9, "{tables:?}");

    for table in tables.iter().filter(|t| *t != "verifications") {
        // An SQLite primary key column is NOT NULL in meaning (a rowid cannot be NULL, and the
        // daemon never writes a NULL id), whatever `notnull` says.
        let mut expected: Vec<(String, String, bool)> =
            sqlx::query_as::<_, (String, String, bool, i64)>(
                "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?)",
            )
            .bind(table)
            .fetch_all(&lite)
            .await
            .unwrap()
            .into_iter()
            .map(|(name, ty, not_null, pk)| {
                let pg_type = pg_type_for(table, &name, &ty).to_owned();
                (name, pg_type, not_null || pk > 0)
            })
            .collect();
        expected.sort();
        let actual: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable = 'NO' \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
             ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&pg)
        .await
        .unwrap();
        assert_eq!(actual, expected, "columns of {table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sqlite_index_and_unique_constraint_has_its_postgres_twin() {
    let Some((_db, pg)) = migrated().await else {
        return;
    };
    let lite = sqlite().await;
    // (table, index name if made by CREATE INDEX, columns, unique, partial)
    type Index = (String, Option<String>, Vec<String>, bool, bool);
    let mut sqlite_indexes: Vec<Index> = Vec::new();
    let listed: Vec<(String, String, bool, String, bool)> = sqlx::query_as(
        "SELECT t.name, l.name, l.\"unique\", l.origin, l.partial FROM sqlite_schema t, \
         pragma_index_list(t.name) l WHERE t.type = 'table' AND t.name != '_sqlx_migrations'",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    for (table, index, unique, origin, partial) in listed {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                .bind(&index)
                .fetch_all(&lite)
                .await
                .unwrap();
        let named = (origin == "c").then_some(index);
        sqlite_indexes.push((table, named, columns, unique, partial));
    }
    // SQLite's INTEGER PRIMARY KEY is the rowid, with no index of its own; PostgreSQL's
    // identity keys each have one.
    let pg_indexes: Vec<(String, String, Vec<String>, bool, bool)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text, \
           array_agg(a.attname::text ORDER BY k.ord), x.indisunique, x.indpred IS NOT NULL \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE n.nspname = 'public' AND t.relname != '_sqlx_migrations' \
         GROUP BY 1, 2, 4, 5",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    assert!(sqlite_indexes.len() >= 10, "{sqlite_indexes:?}");
    for (table, name, columns, unique, partial) in &sqlite_indexes {
        let twin = pg_indexes.iter().find(|(t, n, c, u, p)| {
            t == table
                && name.as_ref().is_none_or(|name| name == n)
                && c == columns
                && u == unique
                && p == partial
        });
        assert!(
            twin.is_some(),
            "no PostgreSQL index on {table} {columns:?} (name {name:?}, unique {unique}, \
             partial {partial}) among {pg_indexes:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_tables_refuse_what_sqlite_refuses() {
    let Some((_db, pg)) = migrated().await else {
        return;
    };
    let now = Utc::now();
    sqlx::query("INSERT INTO users (id, email) VALUES ('usr_1', 'a@example.com')")
        .execute(&pg)
        .await
        .unwrap();
    let state = |user: &'static str, state: &'static str| {
        sqlx::query(
            "INSERT INTO user_states (user_id, reference_id, state, row_fingerprint, created_at, \
             updated_at) VALUES ($1, 'ref-' || $1, $2, 'fp', $3, $3)",
        )
        .bind(user)
        .bind(state)
        .bind(now)
    };
    assert!(
        state("usr_1", "bogus").execute(&pg).await.is_err(),
        "a state outside SPEC's five"
    );
    assert!(
        state("usr_2", "pending").execute(&pg).await.is_err(),
        "a user the application does not have"
    );
    state("usr_1", "invited").execute(&pg).await.unwrap();

    let mail = |kind: &'static str, reminder_after: Option<i64>, message_id: &'static str| {
        sqlx::query(
            "INSERT INTO mails (user_id, kind, status, message_id, next_attempt_at, created_at, \
             updated_at, reminder_after) VALUES ('usr_1', $1, 'queued', $2, $3, $3, $3, $4) RETURNING id",
        )
        .bind(kind)
        .bind(message_id)
        .bind(now)
        .bind(reminder_after)
    };
    let invite: (i64,) = sqlx::query_as(
        "INSERT INTO mails (user_id, kind, status, message_id, next_attempt_at, created_at, \
         updated_at) VALUES ('usr_1', 'invite', 'queued', 'm-0', $1, $1, $1) RETURNING id",
    )
    .bind(now)
    .fetch_one(&pg)
    .await
    .unwrap();
    assert!(invite.0 > 0, "the row id is generated");
    mail("reminder", Some(86_400), "m-1")
        .execute(&pg)
        .await
        .unwrap();
    assert!(
        mail("reminder", Some(86_400), "m-2")
            .execute(&pg)
            .await
            .is_err(),
        "a reminder twice"
    );
    assert!(
        mail("reminder", None, "m-3").execute(&pg).await.is_err(),
        "a reminder without its entry"
    );
    assert!(
        mail("invite", Some(60), "m-4").execute(&pg).await.is_err(),
        "an invite with an entry"
    );
    assert!(
        mail("invite", None, "m-0").execute(&pg).await.is_err(),
        "a message id twice"
    );
    assert!(
        mail("letter", None, "m-5").execute(&pg).await.is_err(),
        "a kind outside the three"
    );

    let inquiry = |generation: i64, key: &'static str| {
        sqlx::query(
            "INSERT INTO inquiries (user_id, generation, idempotency_key, key_created_at, status, \
             template_id, created_at, updated_at) VALUES ('usr_1', $1, $2, $3, 'creating', 'itmpl_1', $3, $3)",
        )
        .bind(generation)
        .bind(key)
        .bind(now)
    };
    inquiry(1, "k-1").execute(&pg).await.unwrap();
    assert!(
        inquiry(1, "k-2").execute(&pg).await.is_err(),
        "a generation twice"
    );
    assert!(
        inquiry(2, "k-1").execute(&pg).await.is_err(),
        "an idempotency key twice"
    );
    assert!(
        sqlx::query("INSERT INTO events (id, kind, detail, at) VALUES (7, 'k', 'd', now())")
            .execute(&pg)
            .await
            .is_err(),
        "row ids are the database's to give"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_writes_users_with_specs_columns() {
    let Some((_db, pg)) = migrated().await else {
        return;
    };
    let mut conn = pg.acquire().await.unwrap();
    // An application's session need not be in UTC, nor ISO.
    sqlx::query("SET TimeZone = 'America/New_York'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET DateStyle = 'German'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, name_first, name_last, birthdate, phone_number, locale) \
         VALUES ('usr_ABC123', 'ada@example.com', 'Ada', 'Lovelace', '1815-12-10', '+44 20 7946 0000', 'pt-BR')",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO users (id, email) VALUES ('usr_min', 'min@example.com')")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(
        sqlx::query("INSERT INTO users (id) VALUES ('usr_no_mail')")
            .execute(&mut *conn)
            .await
            .is_err(),
        "email is NOT NULL"
    );

    type Row = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, email, name_first, name_last, birthdate, phone_number, locale, created_at \
         FROM users ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let ada = &rows[0];
    assert_eq!(
        (
            ada.0.as_str(),
            ada.1.as_str(),
            ada.2.as_deref(),
            ada.3.as_deref(),
            ada.4.as_deref(),
            ada.5.as_deref(),
            ada.6.as_deref()
        ),
        (
            "usr_ABC123",
            "ada@example.com",
            Some("Ada"),
            Some("Lovelace"),
            Some("1815-12-10"),
            Some("+44 20 7946 0000"),
            Some("pt-BR")
        )
    );
    assert_eq!((rows[1].2.as_deref(), rows[1].6.as_deref()), (None, None));

    // created_at defaults to what SQLite's CURRENT_TIMESTAMP writes: UTC, 'YYYY-MM-DD HH:MM:SS'.
    let server_now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    for row in &rows {
        let at = NaiveDateTime::parse_from_str(&row.7, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("{:?}: {e}", row.7))
            .and_utc();
        assert!(
            (server_now - at).abs() < Duration::minutes(1),
            "{} is not UTC (the server says {server_now})",
            row.7
        );
    }
    let lite_default: String = sqlx::query_scalar("SELECT CURRENT_TIMESTAMP")
        .fetch_one(&sqlite().await)
        .await
        .unwrap();
    assert_eq!(
        lite_default.len(),
        rows[0].7.len(),
        "{lite_default} vs {}",
        rows[0].7
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_own_users_table_keeps_its_rows_and_gains_locale() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let pg = db.pool().await;
    // What an application made from SPEC's table before the daemon came.
    sqlx::raw_sql(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, name_first TEXT NULL, \
           name_last TEXT NULL, birthdate TEXT NULL, phone_number TEXT NULL, \
           created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         INSERT INTO users (id, email) VALUES ('usr_old', 'old@example.com');",
    )
    .execute(&pg)
    .await
    .unwrap();

    migrator()
        .await
        .run(&pg)
        .await
        .expect("the schema applies over it");

    let row: (String, Option<String>) =
        sqlx::query_as("SELECT email, locale FROM users WHERE id = 'usr_old'")
            .fetch_one(&pg)
            .await
            .unwrap();
    assert_eq!(row, ("old@example.com".to_owned(), None));
    sqlx::query("UPDATE users SET locale = 'de' WHERE id = 'usr_old'")
        .execute(&pg)
        .await
        .unwrap();
}

/// A `user_states` row as the daemon writes it: (user, state, outcome, reason, updated_at).
type StateRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    DateTime<Utc>,
);

/// The users and states both backends get, with times that carry microseconds.
fn states() -> Vec<StateRow> {
    let t = |s: u32| {
        Utc.with_ymd_and_hms(2026, 3, 15, 18, 30, s).unwrap() + Duration::microseconds(123_456)
    };
    vec![
        // The view shows an outcome only when finished and a reason only when skipped (a pending user's reason is a held-back note).
        ("usr_a", "pending", None, Some("daily limit reached"), t(1)),
        ("usr_b", "invited", None, None, t(2)),
        ("usr_c", "started", None, None, t(3)),
        (
            "usr_d",
            "finished",
            Some("approved"),
            Some("stale note"),
            t(4),
        ),
        (
            "usr_e",
            "skipped",
            Some("stale outcome"),
            Some("email: not an address"),
            t(5),
        ),
    ]
}

type View = Vec<(String, String, Option<String>, Option<String>, String)>;
const VIEW: &str =
    "SELECT user_id, state, outcome, reason, updated_at FROM verifications ORDER BY user_id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifications_view_has_specs_columns_and_shows_what_sqlites_shows() {
    let Some((_db, pg)) = migrated().await else {
        return;
    };
    let lite = sqlite().await;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'verifications' ORDER BY ordinal_position",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    assert_eq!(
        columns,
        ["user_id", "state", "outcome", "reason", "updated_at"]
    );

    // A user the daemon has not seen yet has no row in the view.
    for user in ["usr_a", "usr_b", "usr_c", "usr_d", "usr_e", "usr_unseen"] {
        sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'x@example.com')")
            .bind(user)
            .execute(&pg)
            .await
            .unwrap();
        sqlx::query("INSERT INTO users (id, email) VALUES (?, 'x@example.com')")
            .bind(user)
            .execute(&lite)
            .await
            .unwrap();
    }
    for (user, state, outcome, reason, at) in states() {
        sqlx::query(
            "INSERT INTO user_states (user_id, reference_id, state, outcome, reason, \
             row_fingerprint, created_at, updated_at) VALUES ($1, 'ref-' || $1, $2, $3, $4, 'fp', $5, $5)",
        )
        .bind(user)
        .bind(state)
        .bind(outcome)
        .bind(reason)
        .bind(at)
        .execute(&pg)
        .await
        .unwrap();
        // SQLite's time columns hold the store's RFC 3339 text.
        sqlx::query(
            "INSERT INTO user_states (user_id, reference_id, state, outcome, reason, \
             row_fingerprint, created_at, updated_at) VALUES (?1, 'ref-' || ?1, ?2, ?3, ?4, 'fp', ?5, ?5)",
        )
        .bind(user)
        .bind(state)
        .bind(outcome)
        .bind(reason)
        .bind(format_ts(at))
        .execute(&lite)
        .await
        .unwrap();
    }

    let lite_view: View = sqlx::query_as(VIEW).fetch_all(&lite).await.unwrap();
    let mut conn = pg.acquire().await.unwrap();
    let pg_view: View = sqlx::query_as(VIEW).fetch_all(&mut *conn).await.unwrap();
    assert_eq!(pg_view, lite_view);
    let s = |v: &str| v.to_owned();
    assert_eq!(
        pg_view,
        [
            (
                s("usr_a"),
                s("pending"),
                None,
                None,
                s("2026-03-15T18:30:01.123Z")
            ),
            (
                s("usr_b"),
                s("invited"),
                None,
                None,
                s("2026-03-15T18:30:02.123Z")
            ),
            (
                s("usr_c"),
                s("started"),
                None,
                None,
                s("2026-03-15T18:30:03.123Z")
            ),
            (
                s("usr_d"),
                s("finished"),
                Some(s("approved")),
                None,
                s("2026-03-15T18:30:04.123Z")
            ),
            (
                s("usr_e"),
                s("skipped"),
                None,
                Some(s("email: not an address")),
                s("2026-03-15T18:30:05.123Z")
            ),
        ]
    );

    // The rendering is UTC ISO 8601 whatever the reading session's zone and date style.
    sqlx::query("SET TimeZone = 'Asia/Tokyo'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET DateStyle = 'SQL, DMY'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let in_tokyo: View = sqlx::query_as(VIEW).fetch_all(&mut *conn).await.unwrap();
    assert_eq!(in_tokyo, lite_view);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifications_view_is_read_only_on_both_backends() {
    let Some((_db, pg)) = migrated().await else {
        return;
    };
    let lite = sqlite().await;
    let (user, state, outcome, reason, at) = states()[1];
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'x@example.com')")
        .bind(user)
        .execute(&pg)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO user_states (user_id, reference_id, state, outcome, reason, row_fingerprint, \
         created_at, updated_at) VALUES ($1, 'ref', $2, $3, $4, 'fp', $5, $5)",
    )
    .bind(user)
    .bind(state)
    .bind(outcome)
    .bind(reason)
    .bind(at)
    .execute(&pg)
    .await
    .unwrap();

    for write in [
        "UPDATE verifications SET state = 'finished'",
        "DELETE FROM verifications",
        "INSERT INTO verifications (user_id, state) VALUES ('usr_z', 'finished')",
    ] {
        let refused = sqlx::query(write).execute(&pg).await.unwrap_err();
        assert!(
            refused.to_string().contains("read-only"),
            "{write}: {refused}"
        );
        assert!(
            sqlx::query(write).execute(&lite).await.is_err(),
            "SQLite: {write}"
        );
    }
    let left: Vec<(String, String)> = sqlx::query_as("SELECT user_id, state FROM user_states")
        .fetch_all(&pg)
        .await
        .unwrap();
    assert_eq!(left, [(user.to_owned(), state.to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_test_databases_are_independent() {
    let (Some(one), Some(two)) = (fresh_database().await, fresh_database().await) else {
        return;
    };
    assert_ne!(one.name, two.name);
    assert_ne!(one.url, two.url);
    let (a, b) = (one.pool().await, two.pool().await);
    migrator().await.run(&a).await.unwrap();
    sqlx::query("INSERT INTO users (id, email) VALUES ('usr_1', 'a@example.com')")
        .execute(&a)
        .await
        .unwrap();

    let in_b: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&b)
    .await
    .unwrap();
    assert!(in_b.is_empty(), "the second database is empty: {in_b:?}");
    migrator().await.run(&b).await.unwrap();
    let users_b: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&b)
        .await
        .unwrap();
    assert_eq!(users_b, 0, "a's row is not in b");
    let users_a: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(users_a, 1);
}
