//! A real PostgreSQL server for the tests: one per test process, started on first use under
//! `target/pg-test/` (see `pg_server.rs` for how it is stopped whatever way the process ends),
//! and a fresh empty database per test on it. On a normal exit an `atexit` hook stops it, so
//! the server is gone before `cargo test` returns.

use std::sync::OnceLock;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::app::repo_root;
use super::daemon::PATIENCE;
pub use super::pg_server::Server;
pub use super::pg_server::TestDatabase;
use super::pg_server::{DEBIAN_PG_ROOT, Tls};

impl TestDatabase {
    /// This database's URL logging in as `role` instead of the superuser.
    pub fn url_as(&self, role: &str) -> String {
        let url = self
            .url
            .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
        assert_ne!(url, self.url, "the URL names the superuser");
        url
    }

    /// A login role `<database>_<suffix>`, a member of `group` (made if missing: pg_hba.conf
    /// may name it, see `pg_server.rs`), with `password` if given, that owns this database, so
    /// it may create the daemon's tables in `public` as an application's role would. Its name.
    pub async fn owning_role(
        &self,
        admin: &PgPool,
        suffix: &str,
        group: &str,
        password: Option<&str>,
    ) -> String {
        let role = format!("{}_{suffix}", self.name);
        let password = password.map_or(String::new(), |p| format!(" PASSWORD '{p}'"));
        for statement in [
            format!(
                "DO $$ BEGIN CREATE ROLE {group} NOLOGIN; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ),
            format!("CREATE ROLE {role} LOGIN{password} IN ROLE {group}"),
            format!("ALTER DATABASE {} OWNER TO {role}", self.name),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                .execute(admin)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        role
    }

    /// A small pool on this database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(PATIENCE)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }
}

/// A new database on the (lazily started) server, or `None` with a skip message when
/// PostgreSQL is not installed; with `CI=true` a missing PostgreSQL fails the test instead.
pub async fn fresh_database() -> Option<TestDatabase> {
    let server = tokio::task::spawn_blocking(|| SERVER.get_or_init(start_server).as_ref())
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    Some(installed_or_skip(server)?.create_database().await)
}

/// A server of the test's own with TLS on, stopped when dropped; `None` when PostgreSQL is not
/// installed, as [`fresh_database`].
pub async fn own_server_with_tls(cert: String, key: String, client_ca: String) -> Option<Server> {
    let server = tokio::task::spawn_blocking(move || {
        let tls = Tls {
            cert: &cert,
            key: &key,
            client_ca: &client_ca,
        };
        Server::start(&pg_test_folder(), Some(&tls))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    installed_or_skip(server)
}

/// `found`, or `None` with a skip message; with `CI=true` a panic instead.
fn installed_or_skip<T>(found: Option<T>) -> Option<T> {
    if found.is_none() {
        let why = format!("no PostgreSQL server binaries under {DEBIAN_PG_ROOT}/<major>/bin");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {why}: .ci/run installs Debian's postgresql package"
        );
        eprintln!("SKIPPED: {why} (apt-get install postgresql); CI=true makes this a failure");
    }
    found
}

/// The test process's server: `None` when PostgreSQL is not installed.
static SERVER: OnceLock<Option<Server>> = OnceLock::new();

/// Where the test servers' folders go: `target/pg-test/`.
pub fn pg_test_folder() -> std::path::PathBuf {
    repo_root().join("target/pg-test")
}

fn start_server() -> Option<Server> {
    let server = Server::start(&pg_test_folder(), None)?;
    // SAFETY: registers a plain function with no arguments; it runs at exit.
    let registered = unsafe { libc::atexit(stop_at_exit) };
    assert_eq!(registered, 0, "atexit");
    Some(server)
}

extern "C" fn stop_at_exit() {
    if let Some(Some(server)) = SERVER.get() {
        server.stop();
    }
}

/// Who owns the daemon's tables (`user_states`, `mails`), each name once.
pub async fn daemon_table_owners(admin: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT tableowner::text FROM pg_tables WHERE tablename IN ('user_states', 'mails')",
    )
    .fetch_all(admin)
    .await
    .expect("pg_tables")
}
