//! Noticing new `users` rows while `run` is up: the signal the scheduler provisions on, and the
//! notifier that raises it, one per backend: SQLite polls the file's change counter, PostgreSQL
//! LISTENs for the NOTIFY a trigger on `users` sends. The scheduler debounces the raises.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::changes::{ChangeProbe, HighWater, Hint, UsersFeed};
use crate::store::{Store, StoreError};

/// "The application may have added users". Raises the scheduler has not taken yet collapse into
/// one, so rows added while a run is going lead to exactly one more run.
#[derive(Debug, Clone, Default)]
pub struct NewUserSignal(Arc<Notify>);

impl NewUserSignal {
    pub fn raise(&self) {
        self.0.notify_one();
    }

    /// Waits for the next raise (returns at once if one came since the last was taken).
    pub async fn raised(&self) {
        self.0.notified().await;
    }
}

/// How often the SQLite notifier asks whether anything was committed: one pragma that reads no
/// table, so a tenth of a second costs next to nothing and keeps the wait well under a second.
const POLL: Duration = Duration::from_millis(100);

/// After the probe or the feed failed, how long before it reconnects and tries again.
const RETRY: Duration = Duration::from_secs(5);

/// Starts `store`'s notifier. It is looking before this returns (SQLite: its starting mark is
/// taken; PostgreSQL: it LISTENs), so rows already there are left to the start-up run and
/// every later one is noticed.
pub async fn watch(
    store: &Store,
    signal: NewUserSignal,
    stop: CancellationToken,
) -> Result<(), StoreError> {
    let Some(path) = store.sqlite_path() else {
        // Not a file: PostgreSQL, which tells of new rows itself.
        if let Some(feed) = store.users_feed().await? {
            tokio::spawn(listen(feed, signal, stop));
        }
        return Ok(());
    };
    let mut watch = SqliteWatch {
        path: path.to_owned(),
        probe: None,
        version: None,
        seen: HighWater::Rowid(None),
    };
    // Rows there now are the start-up run's: this look only takes the mark.
    watch.users_grew().await?;
    if watch.seen == HighWater::NoRowid {
        tracing::warn!(
            "the users table is WITHOUT ROWID, so the daemon cannot cheaply see new rows: they wait for the [schedule] provision cron"
        );
        return Ok(());
    }
    tokio::spawn(watch.run(signal, stop));
    Ok(())
}

/// Raises the signal on each NOTIFY, and once after each reconnect: NOTIFYs sent while the
/// connection was down are lost, and the run that follows finds what they announced. No
/// polling: between notifications this only waits on the socket.
async fn listen(mut feed: UsersFeed, signal: NewUserSignal, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let hint = tokio::select! {
            _ = stop.cancelled() => break,
            hint = feed.recv() => hint,
        };
        match hint {
            Ok(hint) => {
                if failing {
                    tracing::info!("new-user watch works again");
                    failing = false;
                }
                if hint == Hint::Reconnected {
                    tracing::info!(
                        "new-user watch lost its connection and is listening again; provisioning what came meanwhile"
                    );
                }
                tracing::debug!(?hint, "new users rows may be committed; provisioning");
                signal.raise();
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        error = %e,
                        "new-user watch cannot listen on the database; trying again every {RETRY:?}, new rows wait for the cron meanwhile"
                    );
                    failing = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// Polls `PRAGMA data_version`; only when some connection committed does it read the `users`
/// high-water mark, and it raises the signal when that rose. The daemon's own commits move
/// `data_version` too (its write connection is another connection), which is why the mark is
/// needed: without it every run's writes would start the next run.
struct SqliteWatch {
    path: PathBuf,
    probe: Option<ChangeProbe>,
    /// `data_version` as this probe's connection last read it; values of two connections are
    /// not comparable, so it is forgotten with the connection.
    version: Option<i64>,
    seen: HighWater,
}

impl SqliteWatch {
    async fn run(mut self, signal: NewUserSignal, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match self.users_grew().await {
                Ok(grew) => {
                    if failing {
                        tracing::info!("new-user watch works again");
                        failing = false;
                    }
                    if grew {
                        tracing::debug!("new users rows committed; provisioning");
                        signal.raise();
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            error = %e,
                            "new-user watch cannot read the database; trying again every {RETRY:?}, new rows wait for the cron meanwhile"
                        );
                        failing = true;
                    }
                    if let Some(probe) = self.probe.take() {
                        probe.close().await;
                    }
                    self.version = None;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
        if let Some(probe) = self.probe.take() {
            probe.close().await;
        }
    }

    /// Whether `users` gained rows since the last look (at start-up: since it was empty).
    async fn users_grew(&mut self) -> Result<bool, StoreError> {
        let probe = match &mut self.probe {
            Some(probe) => probe,
            None => self.probe.insert(ChangeProbe::open(&self.path).await?),
        };
        let version = probe.data_version().await?;
        if self.version == Some(version) {
            return Ok(false);
        }
        let mark = probe.users_high_water().await?;
        let grew = match (self.seen, mark) {
            (HighWater::Rowid(before), HighWater::Rowid(now)) => now > before,
            _ => false,
        };
        // Only once the mark is read: a failure in between leaves the next look to read it.
        self.version = Some(version);
        self.seen = mark;
        Ok(grew)
    }
}

#[cfg(test)]
mod sqlite_watch {
    use std::time::Duration;

    use tokio::time::timeout;
    use tokio_util::sync::CancellationToken;

    use super::{NewUserSignal, watch};
    use crate::domain::RawUser;
    use crate::store::{Store, StoreOptions, job_runs, users};

    async fn insert_user(store: &Store, id: &str) {
        let user = RawUser {
            id: id.to_owned(),
            email: "someone@example.com".to_owned(),
            name_first: None,
            name_last: None,
            birthdate: None,
            phone_number: None,
            locale: None,
        };
        users::add(store, &user).await.unwrap();
    }

    #[tokio::test]
    async fn only_rows_added_to_users_after_the_start_raise_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::new(dir.path().join("watch.db")))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        insert_user(&store, "usr_before").await;
        let signal = NewUserSignal::default();
        let stop = CancellationToken::new();
        watch(&store, signal.clone(), stop.clone()).await.unwrap();

        // Commits that add no user — the daemon's own bookkeeping — move data_version only.
        for _ in 0..5 {
            job_runs::record_start(&store, "provision", chrono::Utc::now())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            timeout(Duration::from_millis(500), signal.raised())
                .await
                .is_err(),
            "neither the row there at the start nor other tables' commits raise it"
        );

        insert_user(&store, "usr_after").await;
        timeout(Duration::from_secs(5), signal.raised())
            .await
            .expect("a new users row raises the signal within a few polls");
        stop.cancel();
        store.close().await;
    }
}
