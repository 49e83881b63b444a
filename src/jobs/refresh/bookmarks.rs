//! The status sync's bookmarks in `job_runs`: the cursor (the last good sync), the last full
//! reconciliation, and what the last sync was, for `status`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::plan::{Cursor, FullBecause, SyncMode};
use crate::clock::format_ts;
use crate::store::{Result, Store, job_runs};

/// The last sync that succeeded, of either kind: the next incremental one searches from its start.
const CURSOR: &str = "refresh.sync";
/// The last full reconciliation: the next periodic one is due `full_every` after its start.
const FULL: &str = "refresh.full-sync";
/// What the last sync was; its `detail` is the [`LastSync`] line.
const LAST: &str = "refresh.sync-report";

pub(super) async fn cursor(store: &Store) -> Result<Cursor> {
    let last_sync = job_runs::latest(store, CURSOR)
        .await?
        .and_then(|run| Some((run.started_at, run.finished_at?)));
    let last_full = job_runs::last_ok_start(store, FULL).await?;
    Ok(Cursor {
        last_sync,
        last_full,
    })
}

/// Moves the cursor to a sync that succeeded.
pub(super) async fn record(
    store: &Store,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    last: &LastSync,
) -> Result<()> {
    let line = last.to_string();
    job_runs::set_bookmark(store, CURSOR, started, finished, &line).await?;
    if matches!(last.mode, SyncMode::Full(_)) {
        job_runs::set_bookmark(store, FULL, started, finished, &line).await?;
    }
    job_runs::set_bookmark(store, LAST, started, finished, &line).await
}

/// The last status sync, as `status` shows it.
pub async fn last_sync(store: &Store) -> Result<Option<LastSyncRun>> {
    Ok(job_runs::latest(store, LAST).await?.and_then(|run| {
        let last = LastSync::parse(run.detail.as_deref()?)?;
        Some(LastSyncRun {
            started_at: format_ts(run.started_at),
            finished_at: run.finished_at.map(format_ts),
            mode: last.mode.kind(),
            full_because: last.mode.full_because().map(FullBecause::as_str),
            persona_calls: last.persona_calls,
        })
    }))
}

/// The mode of a sync and the Persona calls it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSync {
    pub mode: SyncMode,
    pub persona_calls: usize,
}

/// [`LastSync`] with when it ran, for `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastSyncRun {
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `incremental`, `full` or `static`.
    pub mode: &'static str,
    /// Why it was full (`first run`, `due`, `missed run`, `search refused`, `search failed`).
    pub full_because: Option<&'static str>,
    pub persona_calls: usize,
}

const CALLS: &str = " Persona calls";

impl std::fmt::Display for LastSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {}{CALLS}", self.mode, self.persona_calls)
    }
}

impl LastSync {
    /// Reads back what `Display` wrote.
    pub fn parse(line: &str) -> Option<LastSync> {
        let (mode, calls) = line.strip_suffix(CALLS)?.rsplit_once(", ")?;
        let mode = match mode {
            "incremental" => SyncMode::Incremental,
            "static" => SyncMode::Static,
            full => {
                let why = full.strip_prefix("full (")?.strip_suffix(')')?;
                SyncMode::Full(*FullBecause::ALL.iter().find(|w| w.as_str() == why)?)
            }
        };
        Some(LastSync {
            mode,
            persona_calls: calls.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_back() {
        for mode in [
            SyncMode::Incremental,
            SyncMode::Static,
            SyncMode::Full(FullBecause::MissedRun),
            SyncMode::Full(FullBecause::SearchRefused),
        ] {
            let last = LastSync {
                mode,
                persona_calls: 103,
            };
            assert_eq!(LastSync::parse(&last.to_string()), Some(last));
        }
        assert_eq!(LastSync::parse("ok"), None);
    }
}
