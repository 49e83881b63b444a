//! The cheap "has the application added users?" probe behind the daemon's new-user watch: a
//! read-only connection of its own, so `PRAGMA data_version` moves for every commit but its own.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{Result, StoreError};

/// One connection that only ever asks two questions; it never writes, so every commit it sees
/// come and go is somebody else's (the application's, or the daemon's own write connection's).
pub struct ChangeProbe {
    conn: SqliteConnection,
}

/// Where `users` stands: what [`ChangeProbe::users_high_water`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighWater {
    /// The largest rowid in `users` (`None` while the table is empty). SQLite gives a new row
    /// the largest rowid plus one, so an insert raises it; nothing else does.
    Rowid(Option<i64>),
    /// `users` was made `WITHOUT ROWID` by the application: no cheap mark exists.
    NoRowid,
}

impl ChangeProbe {
    /// Opens the probe's own connection to the store's file ([`Store::path`](crate::store::Store::path)), read-only.
    pub async fn open(path: &Path) -> Result<ChangeProbe> {
        let conn = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .connect()
            .await
            .map_err(|source| StoreError::Open {
                place: super::super::Location::Sqlite(path.to_owned()),
                source: source.into(),
            })?;
        Ok(ChangeProbe { conn })
    }

    /// SQLite's per-connection change counter: a different value than last time means some
    /// other connection committed in between. It reads no table.
    pub async fn data_version(&mut self) -> Result<i64> {
        Ok(sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// The `users` table's high-water mark: one step down the rowid b-tree, whatever its size.
    pub async fn users_high_water(&mut self) -> Result<HighWater> {
        match sqlx::query_scalar("SELECT MAX(rowid) FROM users")
            .fetch_one(&mut self.conn)
            .await
        {
            Ok(max) => Ok(HighWater::Rowid(max)),
            Err(sqlx::Error::Database(e)) if e.message().contains("no such column") => {
                Ok(HighWater::NoRowid)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
