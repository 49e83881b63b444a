//! The new-user feed on PostgreSQL: LISTEN on its own connection for the NOTIFY that
//! migration 0002's trigger on `users` sends when a transaction that added rows commits.

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::super::{Location, Result, StoreError};

/// The channel migration 0002 notifies on.
const CHANNEL: &str = "inquiry_mailer_new_users";

/// The listener's `application_name`, so an operator (or a test) can tell its session apart
/// from the daemon's pooled ones in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "inquiry-mailer new-users";

/// What [`UsersFeed::recv`] says: either way, rows may have been added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// A transaction that added `users` rows committed.
    Added,
    /// The listening connection was lost and is back: NOTIFYs sent in between are gone for
    /// good, so whatever was added meanwhile must be looked for.
    Reconnected,
}

/// A LISTEN on a connection of its own: a one-connection pool beside the store's, which
/// `PgListener` uses only to connect again after losing it (a pooled connection would go
/// back to other statements, and a transaction-mode pooler would drop the LISTEN).
pub struct UsersFeed {
    pool: PgPool,
    listener: Option<PgListener>,
    location: Location,
}

impl UsersFeed {
    /// Connects and LISTENs before returning, so every commit after this is heard.
    pub(in crate::store) async fn open(
        connect: &PgConnectOptions,
        location: &Location,
    ) -> Result<UsersFeed> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(connect.clone().application_name(APPLICATION_NAME));
        let listener = listen(&pool).await.map_err(|source| StoreError::Open {
            place: location.clone(),
            source: source.into(),
        })?;
        Ok(UsersFeed {
            pool,
            listener: Some(listener),
            location: location.clone(),
        })
    }

    /// Waits for the next hint. After an error the next call connects again and, once it
    /// listens, answers [`Hint::Reconnected`]; the caller waits a little between the two.
    pub async fn recv(&mut self) -> Result<Hint> {
        let Some(listener) = &mut self.listener else {
            let listener = listen(&self.pool)
                .await
                .map_err(|source| StoreError::Open {
                    place: self.location.clone(),
                    source: source.into(),
                })?;
            self.listener = Some(listener);
            return Ok(Hint::Reconnected);
        };
        match listener.try_recv().await {
            Ok(Some(_)) => Ok(Hint::Added),
            // The connection dropped; with `eager_reconnect` (on by default) `try_recv` has
            // connected and LISTENed again before saying so, so a catch-up look now misses
            // nothing committed after it.
            Ok(None) => Ok(Hint::Reconnected),
            Err(e) => {
                // Whether it reconnected is unknown: start over with a fresh listener, which
                // answers `Reconnected` once it listens.
                self.listener = None;
                Err(e.into())
            }
        }
    }
}

async fn listen(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
