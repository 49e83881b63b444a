//! The store's one face: table-family modules of plain functions over an opaque [`Store`] (reads)
//! or [`WriteTx`] (writes in one transaction). No database type leaks out, so a second backend
//! can sit beside SQLite (`sqlite/`) by adding an arm to [`Backend`] and to the macros below.
//! Nothing here knows about jobs, Persona or mail delivery.

/// [`FromRow`] by column name for a struct whose fields are named like its columns: what
/// `#[derive(sqlx::FromRow)]` does, without sqlx's proc-macro crate, which would build a second
/// copy of SQLite for the host and add 20 s to every cold build. `field as Via` decodes the
/// column as `Via` and converts it ([`Stored`]); a value that does not decode is a
/// [`StoreError::BadValue`] naming the table, the row (by `key`) and the column. One body
/// serves both backends: `Place` is generic over the row type.
macro_rules! from_row {
    ($ty:ident in $table:literal by $key:ident { $($field:ident $(as $via:ty)?),+ $(,)? }) => {
        impl $crate::store::FromRow for $ty {
            fn from_sqlite(row: &sqlx::sqlite::SqliteRow) -> $crate::store::Result<Self> {
                let at = $crate::store::row::Place { row, table: $table, key: stringify!($key) };
                Ok(Self {
                    $($field: from_row!(@get at $field $($via)?)),+
                })
            }
            fn from_postgres(row: &sqlx::postgres::PgRow) -> $crate::store::Result<Self> {
                let at = $crate::store::row::Place { row, table: $table, key: stringify!($key) };
                Ok(Self {
                    $($field: from_row!(@get at $field $($via)?)),+
                })
            }
        }
    };
    (@get $at:ident $field:ident) => { $at.get(stringify!($field))? };
    (@get $at:ident $field:ident $via:ty) => {
        $crate::store::Stored::value($at.get::<$via>(stringify!($field))?)
    };
}

/// The dispatch point for reads: runs `$body` with `$c` bound to the backend's read pool. The
/// body is written once and compiled per backend, so what it returns must not be a driver
/// type (decode rows inside it). The second form gives each dialect its own body, for the few
/// statements whose SQL differs (marked where they are).
macro_rules! on_read {
    ($store:expr, |$c:ident| $body:expr) => {
        on_read!($store, sqlite | $c | $body, postgres | $c | $body)
    };
    ($store:expr, sqlite |$c:ident| $sqlite:expr, postgres |$p:ident| $postgres:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite(db) => {
                let $c = db.reader();
                $sqlite
            }
            $crate::store::Backend::Postgres(db) => {
                let $p = db.pool();
                $postgres
            }
        }
    };
}

/// The dispatch point for a single write that needs no transaction of the caller's. On a
/// [fenced](Store::fenced) store the statement runs in a transaction of its own that checks
/// the fence first, like every other write of the run.
macro_rules! on_write {
    ($store:expr, |$c:ident| $body:expr) => {
        if $store.fence.is_some() {
            let mut tx = $store.begin_write().await?;
            let out = on_tx!(tx, |$c| $body);
            tx.commit().await?;
            out
        } else {
            match &$store.backend {
                $crate::store::Backend::Sqlite(db) => {
                    let $c = db.writer();
                    $body
                }
                $crate::store::Backend::Postgres(db) => {
                    let $c = db.pool();
                    $body
                }
            }
        }
    };
}

/// The dispatch point for a statement inside a [`WriteTx`]: `$c` is its connection.
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        on_tx!($tx, sqlite | $c | $body, postgres | $c | $body)
    };
    ($tx:expr, sqlite |$c:ident| $sqlite:expr, postgres |$p:ident| $postgres:expr) => {
        match &mut $tx.inner {
            $crate::store::TxInner::Sqlite(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut *t;
                $sqlite
            }
            $crate::store::TxInner::Postgres(t) => {
                let $p: &mut sqlx::PgConnection = &mut *t;
                $postgres
            }
        }
    };
}

pub mod coordination;
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

mod location;
mod migrations;
mod postgres;
mod row;
mod sqlite;
mod types;

pub use location::{Location, PostgresUrl};
/// What the new-user watch reads: SQLite's change probe, PostgreSQL's LISTEN feed.
pub mod changes {
    pub use super::postgres::feed::{APPLICATION_NAME as FEED_APPLICATION_NAME, Hint, UsersFeed};
    pub use super::sqlite::changes::{ChangeProbe, HighWater};
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::SecretText;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {place}: cannot be opened: {source}")]
    Open { place: Location, source: DbError },
    #[error("database {place}: migrations failed: {source}")]
    Migrate { place: Location, source: DbError },
    #[error("database: {0}")]
    Sql(DbError),
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
    /// An insert refused because the row exists already (e.g. `users add` of a known id).
    #[error("{table} {key} already exists")]
    Exists { table: &'static str, key: String },
    /// A write of a run that no longer holds its job (see [`coordination::Fence`]): another
    /// run took the job, or this one could not renew its hold in time. Nothing was written.
    #[error(
        "job {job}: this run lost its hold on the job (taken by another run, or not renewed in time); it stops"
    )]
    Fenced { job: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What the database driver said, kept opaque so that no driver type is part of the store's
/// face; it displays as the driver's own message, except for a PostgreSQL server's error:
/// sqlx ends that with the line of the server's C source that raised it ("… at line 428"),
/// which reads as a line of the operator's SQL or config. It shows the SQLSTATE instead, with
/// the server's detail and hint when it gave them.
#[derive(Debug)]
pub struct DbError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server = match self.0.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(e)) => {
                e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            }
            _ => None,
        };
        let Some(server) = server else {
            return self.0.fmt(f);
        };
        write!(
            f,
            "error returned from database: {} (SQLSTATE {})",
            server.message(),
            server.code()
        )?;
        if let Some(detail) = server.detail() {
            write!(f, ": {detail}")?;
        }
        if let Some(hint) = server.hint() {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> DbError {
        DbError(Box::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(e: sqlx::migrate::MigrateError) -> DbError {
        DbError(Box::new(e))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Sql(e.into())
    }
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub location: Location,
    /// SQLite: how long a statement waits for another process's write lock.
    pub busy_timeout: Duration,
    /// SQLite: the read pool's size. PostgreSQL: the one pool's size (reads and writes).
    pub read_connections: u32,
    /// PostgreSQL: the password, which never sits in the URL (it would be logged with it).
    pub password: Option<SecretText>,
}

impl StoreOptions {
    /// A SQLite file with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::at(Location::Sqlite(path.into()))
    }

    pub fn at(location: Location) -> Self {
        Self {
            location,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            password: None,
        }
    }
}

/// The database the daemon keeps its state in. Cheap to clone; clones share the pools.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Set on a run's own clone: every write checks the run still holds its job.
    fence: Option<std::sync::Arc<coordination::Fence>>,
}

/// The backends the store runs on; the `on_*` macros are where each gets its arm.
#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// A write transaction: commit it with [`WriteTx::commit`]; dropped uncommitted (its caller
/// gave up or failed), it rolls back before the connection is used again.
pub struct WriteTx {
    inner: TxInner,
}

enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    /// READ COMMITTED: a step that reads a row to decide a write locks it (`FOR UPDATE`) or
    /// writes conditionally, where SQLite had `BEGIN IMMEDIATE`'s one write lock.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Store {
    /// Opens the database: a SQLite file (created if missing), or a PostgreSQL database.
    pub async fn open(opts: &StoreOptions) -> Result<Store> {
        let backend = match &opts.location {
            Location::Sqlite(path) => Backend::Sqlite(sqlite::Db::open(path, opts).await?),
            Location::Postgres(url) => Backend::Postgres(postgres::Db::open(url, opts).await?),
        };
        Ok(Store {
            backend,
            fence: None,
        })
    }

    /// This store for a run that holds its job by `fence`: every write through it (a
    /// transaction or a single statement) first checks, in the same transaction, that the run
    /// still holds the job, and is refused with [`StoreError::Fenced`] otherwise. Reads are as
    /// before. The pools are shared with `self`.
    pub fn fenced(&self, fence: std::sync::Arc<coordination::Fence>) -> Store {
        Store {
            backend: self.backend.clone(),
            fence: Some(fence),
        }
    }

    /// Where the database is (a PostgreSQL URL never holds a password).
    pub fn location(&self) -> &Location {
        match &self.backend {
            Backend::Sqlite(db) => db.location(),
            Backend::Postgres(db) => db.location(),
        }
    }

    /// The SQLite file, for what only works on a local file (the change probe).
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(db) => Some(db.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// PostgreSQL: a LISTEN for new `users` rows on a connection of its own, listening when
    /// this returns. SQLite has no such feed (`None`): its watch polls the file instead.
    pub async fn users_feed(&self) -> Result<Option<changes::UsersFeed>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(db) => Ok(Some(db.users_feed().await?)),
        }
    }

    /// Which SQL the database speaks, for the few statements written twice.
    fn dialect(&self) -> Dialect {
        match &self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Applies pending migrations; running it again is a no-op.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => db.migrate().await,
            Backend::Postgres(db) => db.migrate().await,
        }
    }

    /// The migrations this binary knows that the database has not had yet, as "version name".
    pub async fn pending_migrations(&self) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Sqlite(db) => db.pending_migrations().await,
            Backend::Postgres(db) => db.pending_migrations().await,
        }
    }

    /// The database engine and its version, as `check` prints it: "SQLite 3.46.0", and on
    /// PostgreSQL with what protects the connection ("PostgreSQL 15.4, over TLSv1.3" or
    /// "PostgreSQL 15.4, not encrypted").
    pub async fn server_version(&self) -> Result<String> {
        on_read!(
            self,
            sqlite | c | {
                let v: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(c)
                    .await?;
                Ok(format!("SQLite {v}"))
            },
            postgres | c | {
                // The server's view of this very connection: TLS and which version, or none.
                let (v, tls): (String, Option<String>) = sqlx::query_as(
                    "SELECT current_setting('server_version'), \
                            (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl)",
                )
                .fetch_one(c)
                .await?;
                Ok(match tls {
                    Some(tls) => format!("PostgreSQL {v}, over {tls}"),
                    None => format!("PostgreSQL {v}, not encrypted"),
                })
            }
        )
    }

    /// A write transaction. SQLite: it holds the write lock from its start (`BEGIN
    /// IMMEDIATE`), so it never fails half-way with "database is locked" when another process
    /// writes too. PostgreSQL: READ COMMITTED, its rows locked as its statements reach them.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        let inner = match &self.backend {
            Backend::Sqlite(db) => TxInner::Sqlite(db.begin_write().await?),
            Backend::Postgres(db) => TxInner::Postgres(db.begin_write().await?),
        };
        let mut tx = WriteTx { inner };
        if let Some(fence) = &self.fence {
            coordination::check_fence(&mut tx, fence).await?;
        }
        Ok(tx)
    }

    /// Whether the database answers a trivial query (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        on_read!(self, |c| {
            sqlx::query("SELECT 1").execute(c).await?;
        });
        Ok(())
    }

    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.close().await,
            Backend::Postgres(db) => db.close().await,
        }
    }
}

impl WriteTx {
    fn dialect(&self) -> Dialect {
        match &self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// Keeps a long-running statement list from binding too many parameters at once.
pub const MAX_BATCH: usize = 500;

/// A row type decoded by column name; implemented by `from_row!`.
trait FromRow: Sized {
    fn from_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<Self>;
    fn from_postgres(row: &sqlx::postgres::PgRow) -> Result<Self>;
}

/// A store-internal column type and the value a row carries for it (a time kept as text →
/// `DateTime<Utc>`).
trait Stored {
    type Value;
    fn value(self) -> Self::Value;
}

/// A time as the store binds and reads it: on SQLite, the text of [`crate::clock::format_ts`]
/// (RFC 3339, milliseconds, `Z`), which sorts as text in time order, as the queries rely on;
/// on PostgreSQL a timestamptz cut to milliseconds, so both keep the same instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ts(DateTime<Utc>);

impl Stored for Ts {
    type Value = DateTime<Utc>;
    fn value(self) -> DateTime<Utc> {
        self.0
    }
}

impl Stored for Option<Ts> {
    type Value = Option<DateTime<Utc>>;
    fn value(self) -> Option<DateTime<Utc>> {
        self.map(|t| t.0)
    }
}

/// A time column read as the text [`crate::clock::format_ts`] writes, on either backend (the
/// `status --user` summaries print it as stored).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TsText(String);

impl Stored for TsText {
    type Value = String;
    fn value(self) -> String {
        self.0
    }
}

impl Stored for Option<TsText> {
    type Value = Option<String>;
    fn value(self) -> Option<String> {
        self.map(|t| t.0)
    }
}

fn ts(t: DateTime<Utc>) -> Ts {
    Ts(t)
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Option<Ts> {
    t.map(Ts)
}

/// A time in JSON as it is stored: [`crate::clock::format_ts`].
fn serde_ts<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::format_ts(*t))
}
