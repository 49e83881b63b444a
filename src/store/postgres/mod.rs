//! The PostgreSQL backend: one pool for reads and writes on the application's database, and
//! the migrations embedded from `migrations/postgres/`, and the LISTEN feed of new users
//! (`feed`) on a connection of its own. TLS is sqlx's rustls with ring (the provider the
//! daemon's HTTPS and SMTP use) and the system's roots, as `sslmode` in the URL asks.

pub(super) mod feed;
mod migrations;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

use super::{Location, PostgresUrl, Result, StoreError};

#[derive(Debug, Clone)]
pub(super) struct Db {
    pool: PgPool,
    location: Location,
}

/// How long a statement waits for a pooled connection before the caller gets an error.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

impl Db {
    /// Connects at once, so a wrong URL or password is reported by `check` and at start-up
    /// rather than at the first job.
    pub(super) async fn open(url: &PostgresUrl, opts: &super::StoreOptions) -> Result<Db> {
        let location = Location::Postgres(url.clone());
        let open_err = |source: sqlx::Error| StoreError::Open {
            place: location.clone(),
            source: source.into(),
        };
        let mut connect = PgConnectOptions::from_str(url.as_str())
            .map_err(open_err)?
            .application_name("inquiry-mailer");
        if let Some(password) = &opts.password {
            connect = connect.password(password.expose());
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await
            .map_err(open_err)?;
        Ok(Db { pool, location })
    }

    pub(super) fn location(&self) -> &Location {
        &self.location
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn users_feed(&self) -> Result<feed::UsersFeed> {
        // The pool's own options (password included), for a connection outside the pool.
        feed::UsersFeed::open(&self.pool.connect_options(), &self.location).await
    }

    /// On a connection of its own that asks the server for warnings and errors only: sqlx's
    /// migrator creates its bookkeeping table `IF NOT EXISTS`, and the server's NOTICE that it
    /// already exists would be logged at INFO on every start.
    pub(super) async fn migrate(&self) -> Result<()> {
        let migrate_err = |source: super::DbError| StoreError::Migrate {
            place: self.location.clone(),
            source,
        };
        let quiet = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .options([("client_min_messages", "warning")]);
        let mut connection = PgConnection::connect_with(&quiet)
            .await
            .map_err(|e| migrate_err(e.into()))?;
        let migrated = migrations::MIGRATOR
            .run(&mut connection)
            .await
            .map_err(|e| migrate_err(e.into()));
        connection.close().await.ok();
        migrated
    }

    pub(super) async fn pending_migrations(&self) -> Result<Vec<String>> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                // undefined_table: nothing was ever migrated here.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
                Err(e) => return Err(e.into()),
            };
        Ok(migrations::MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// READ COMMITTED (the server's default). Dropped uncommitted, sqlx rolls it back before
    /// the connection goes back to the pool.
    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}
