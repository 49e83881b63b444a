//! The SQLite store: one write connection and a read-only pool over one WAL-mode file.
//! One file per table family; nothing here knows about jobs, Persona or mail.

pub mod events;
pub mod inquiries;
pub mod job_runs;
pub mod mails;
pub mod status;
pub mod user_states;
pub mod users;
pub mod webhook_events;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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
    /// fails half-way with "database is locked" when another process writes too.
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
