//! The SQLite backend: one write connection and a read-only pool over one WAL-mode file, the
//! migrations embedded from `migrations/sqlite/`, and the `data_version` change probe.

pub mod changes;
mod migrations;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::{Location, Result, StoreError};

#[derive(Debug, Clone)]
pub(super) struct Db {
    write: SqlitePool,
    read: SqlitePool,
    location: Location,
    path: PathBuf,
}

impl Db {
    /// Pragmas are set in the connect options so every connection of both pools has them, not
    /// just the first.
    pub(super) async fn open(path: &Path, opts: &super::StoreOptions) -> Result<Db> {
        let location = Location::Sqlite(path.to_owned());
        let open_err = |source: sqlx::Error| StoreError::Open {
            place: location.clone(),
            source: source.into(),
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            return Err(open_err(sqlx::Error::Configuration(
                format!("folder {} does not exist", parent.display()).into(),
            )));
        }
        let base = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(path)
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
        Ok(Db {
            write,
            read,
            path: path.to_owned(),
            location,
        })
    }

    pub(super) fn location(&self) -> &Location {
        &self.location
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn reader(&self) -> &SqlitePool {
        &self.read
    }

    pub(super) fn writer(&self) -> &SqlitePool {
        &self.write
    }

    pub(super) async fn migrate(&self) -> Result<()> {
        migrations::MIGRATOR
            .run(&self.write)
            .await
            .map_err(|source| StoreError::Migrate {
                place: self.location.clone(),
                source: source.into(),
            })
    }

    pub(super) async fn pending_migrations(&self) -> Result<Vec<String>> {
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
        Ok(migrations::MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// `BEGIN IMMEDIATE` takes the write lock at once. Dropped uncommitted, sqlx rolls the
    /// transaction back before the connection is used again, so no `BEGIN` is ever left
    /// without its `COMMIT`.
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub(super) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}
