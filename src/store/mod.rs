//! The SQLite store: one write connection and a read-only pool over one WAL-mode file.
//! One file per table family, and `steps` for the provisioning writes that span tables;
//! nothing here knows about jobs, Persona or mail.

/// `sqlx::FromRow` by column name for a struct whose fields are named like its columns: what
/// `#[derive(sqlx::FromRow)]` does, without sqlx's proc-macro crate, which would build a second
/// copy of SQLite for the host and add 20 s to every cold build.
macro_rules! from_row {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for $ty {
            fn from_row(row: &'r sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok(Self {
                    $($field: row.try_get(stringify!($field))?),+
                })
            }
        }
    };
}

pub mod changes;
pub mod events;
pub mod inquiries;
pub mod job_runs;
pub mod mails;
pub mod redirect_tokens;
pub mod status;
pub mod steps;
pub mod user_states;
pub mod users;
pub mod webhook_events;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlStr, Sqlite, SqlitePool, Transaction};

/// The migrations of `migrations/`, embedded in the binary: (version, description, SQL).
/// A new file there must be listed here too (a unit test compares the two).
const MIGRATIONS: [(i64, &str, &str); 9] = [
    (1, "users", include_str!("../../migrations/0001_users.sql")),
    (
        2,
        "daemon state",
        include_str!("../../migrations/0002_daemon_state.sql"),
    ),
    (
        3,
        "lease owner",
        include_str!("../../migrations/0003_lease_owner.sql"),
    ),
    (
        4,
        "pending order",
        include_str!("../../migrations/0004_pending_order.sql"),
    ),
    (
        5,
        "drop redundant indexes",
        include_str!("../../migrations/0005_drop_redundant_indexes.sql"),
    ),
    (
        6,
        "verifications",
        include_str!("../../migrations/0006_verifications.sql"),
    ),
    (
        7,
        "user locale",
        include_str!("../../migrations/0007_user_locale.sql"),
    ),
    (
        8,
        "reminder mails",
        include_str!("../../migrations/0008_reminder_mails.sql"),
    ),
    (
        9,
        "redirect tokens",
        include_str!("../../migrations/0009_redirect_tokens.sql"),
    ),
];

/// The migrator over [`MIGRATIONS`]; checksums are those `sqlx::migrate!` would compute, so
/// databases migrated by earlier builds stay valid.
pub static MIGRATOR: std::sync::LazyLock<Migrator> = std::sync::LazyLock::new(|| {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
});

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: cannot be opened: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("database {path}: migrations failed: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A stored value the daemon cannot read back (a hand edit, or a bug that wrote it).
    #[error("database: {table} row {row}, column {column}: {why}")]
    BadValue {
        table: &'static str,
        row: String,
        column: &'static str,
        why: String,
    },
    /// A row a step relies on is not there (removed by hand, or never written).
    #[error("database: {table} has no row {key}")]
    Missing { table: &'static str, key: String },
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub read_connections: u32,
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if missing) the database file. Pragmas are set in the connect options so
    /// every connection of both pools has them, not just the first.
    pub async fn open(opts: &StoreOptions) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: opts.path.clone(),
            source,
        };
        if let Some(parent) = opts.path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            return Err(open_err(sqlx::Error::Configuration(
                format!("folder {} does not exist", parent.display()).into(),
            )));
        }
        let base = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(&opts.path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true);
        // A local file does not go stale like a network connection, so no ping before each
        // acquire: with sqlx's worker thread per connection that ping doubled the cost of
        // every statement run straight on a pool.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(opts.busy_timeout + Duration::from_secs(25))
            .connect_with(base.clone().create_if_missing(true))
            .await
            .map_err(open_err)?;
        let read = SqlitePoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(base.read_only(true))
            .await
            .map_err(open_err)?;
        Ok(Store {
            write,
            read,
            path: opts.path.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies pending migrations; running it again is a no-op.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.write)
            .await
            .map_err(|source| StoreError::Migrate {
                path: self.path.clone(),
                source,
            })
    }

    /// Whether every migration this binary knows has been applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&self.read)
                .await
            {
                Ok(v) => v,
                Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`), so it never
    /// fails half-way with "database is locked" when another process writes too. Dropped
    /// uncommitted (its caller gave up or failed), it rolls back before the connection is
    /// used again, so no `BEGIN` is ever left without its `COMMIT`.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// The write pool, for single statements that need no transaction.
    pub fn writer(&self) -> &SqlitePool {
        &self.write
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Keeps a long-running statement list from binding too many parameters at once.
pub const MAX_BATCH: usize = 500;

#[cfg(test)]
mod migration_list {
    use super::MIGRATIONS;

    #[test]
    fn every_file_in_migrations_is_embedded_with_its_version_and_description() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
                let (version, name) = stem.split_once('_').unwrap();
                (
                    version.parse().unwrap(),
                    name.replace('_', " "),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String, String)> = MIGRATIONS
            .iter()
            .map(|&(v, d, sql)| (v, d.to_owned(), sql.to_owned()))
            .collect();
        assert_eq!(embedded, files);
    }
}
