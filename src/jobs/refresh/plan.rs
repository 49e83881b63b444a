//! Which status sync a refresh run does, as a pure function of the clock and the bookmarks:
//! incremental (search from the last sync's start minus `[sync] overlap`), or a full
//! reconciliation by listing when one is due or the incremental cursor cannot be trusted.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::config::{Config, parse_cron};

/// `[sync]` with what the plan needs besides: the refresh schedule (to notice missed runs) and
/// this install's offset for its full runs.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub overlap: Duration,
    pub full_every: Duration,
    /// `[schedule] refresh`: a tick that passed without a sync means one was missed.
    pub refresh_schedule: croner::Cron,
    /// Added to `full_every` before a periodic full run is due (see [`full_offset`]).
    pub full_offset: Duration,
}

impl SyncSettings {
    pub fn from_config(config: &Config) -> SyncSettings {
        let full_every = chrono_of(config.sync.full_every);
        SyncSettings {
            overlap: chrono_of(config.sync.overlap),
            full_every,
            refresh_schedule: parse_cron(&config.schedule.refresh)
                .expect("[schedule] refresh was validated when the config was read"),
            full_offset: full_offset(
                config.persona.environment_id.as_str(),
                config.persona.inquiry_template_id.as_str(),
                full_every,
            ),
        }
    }
}

fn chrono_of(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// Spreading the full runs out. Replicas of one install share its database, so they share its
/// bookmarks and run one refresh at a time: they never list together. What lines up is installs:
/// deployed together they make their first full run together, and one fixed period would keep
/// them in step for good. So each install waits `full_every` plus its own offset (up to an
/// eighth of it, from a hash of its environment and template, stable across restarts): their
/// periods differ, their full runs drift apart, and "at most once per full_every" still holds.
pub fn full_offset(environment: &str, template: &str, full_every: Duration) -> Duration {
    let digest = Sha256::digest(format!("{environment}/{template}").as_bytes());
    let word = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 8 bytes"));
    let share = word as f64 / u64::MAX as f64;
    let most = full_every.num_milliseconds() / 8;
    Duration::milliseconds((most as f64 * share) as i64)
}

/// What the bookmarks say of earlier syncs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The last sync that succeeded, of either kind: when it started and finished.
    pub last_sync: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// When the last full reconciliation started.
    pub last_full: Option<DateTime<Utc>>,
}

/// How a run's status sync went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// No sync ran (yet).
    #[default]
    None,
    /// Search for what changed, plus fresh reads of those and of the rows due.
    Incremental,
    /// The list of every live inquiry, plus lookups of the followed ones not in it.
    Full(FullBecause),
    /// Static links: a list of what was created since the last run.
    Static,
}

/// Why a run listed everything instead of searching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullBecause {
    /// No sync succeeded before: there is no cursor.
    FirstRun,
    /// `full_every` (plus this install's offset) passed since the last full run.
    Due,
    /// A refresh tick passed after the last good sync without one (daemon down, a run failed
    /// or was skipped): changes a missed run would have caught may be lost to the search.
    MissedRun,
    /// Persona refused the search for this key or query.
    SearchRefused,
    /// The search failed for now (after the client's retries).
    SearchFailed,
}

impl FullBecause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstRun => "first run",
            Self::Due => "due",
            Self::MissedRun => "missed run",
            Self::SearchRefused => "search refused",
            Self::SearchFailed => "search failed",
        }
    }

    pub const ALL: [FullBecause; 5] = [
        Self::FirstRun,
        Self::Due,
        Self::MissedRun,
        Self::SearchRefused,
        Self::SearchFailed,
    ];
}

impl SyncMode {
    /// `incremental`, `full`, `static` or `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Incremental => "incremental",
            Self::Full(_) => "full",
            Self::Static => "static",
        }
    }

    pub fn full_because(&self) -> Option<FullBecause> {
        match self {
            Self::Full(why) => Some(*why),
            _ => None,
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(why) => write!(f, "full ({})", why.as_str()),
            other => f.write_str(other.kind()),
        }
    }
}

/// What this run's sync should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Search for inquiries updated at or after `since`.
    Incremental {
        since: DateTime<Utc>,
    },
    Full(FullBecause),
}

pub fn plan(now: DateTime<Utc>, cursor: &Cursor, s: &SyncSettings) -> Plan {
    let Some((last_start, last_finish)) = cursor.last_sync else {
        return Plan::Full(FullBecause::FirstRun);
    };
    if missed_a_run(now, last_finish, s) {
        return Plan::Full(FullBecause::MissedRun);
    }
    let full_due = cursor
        .last_full
        .is_none_or(|t| now - t >= s.full_every + s.full_offset);
    if full_due {
        return Plan::Full(FullBecause::Due);
    }
    Plan::Incremental {
        since: last_start - s.overlap,
    }
}

/// Whether a refresh tick fell between the last good sync and this run, an overlap clear of
/// both (a run starts a little after its tick; this run's own tick is not a missed one).
fn missed_a_run(now: DateTime<Utc>, last_finish: DateTime<Utc>, s: &SyncSettings) -> bool {
    let from = last_finish + s.overlap;
    let until = now - s.overlap;
    if from >= until {
        return false;
    }
    match s.refresh_schedule.find_next_occurrence(&from, false) {
        Ok(tick) => tick < until,
        // No tick at all (a schedule that never fires again): nothing was missed.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn settings() -> SyncSettings {
        SyncSettings {
            overlap: Duration::minutes(2),
            full_every: Duration::hours(24),
            refresh_schedule: parse_cron("0 */15 * * * *").unwrap(),
            full_offset: Duration::minutes(30),
        }
    }

    fn cursor(start: &str, finish: &str, full: &str) -> Cursor {
        Cursor {
            last_sync: Some((at(start), at(finish))),
            last_full: Some(at(full)),
        }
    }

    #[test]
    fn the_first_run_lists_everything() {
        assert_eq!(
            plan(at("2026-03-01T10:00:00Z"), &Cursor::default(), &settings()),
            Plan::Full(FullBecause::FirstRun)
        );
    }

    #[test]
    fn the_next_tick_searches_from_the_last_start_minus_the_overlap() {
        let c = cursor(
            "2026-03-01T10:00:00.5Z",
            "2026-03-01T10:00:04Z",
            "2026-03-01T02:00:00Z",
        );
        assert_eq!(
            plan(at("2026-03-01T10:15:00.3Z"), &c, &settings()),
            Plan::Incremental {
                since: at("2026-03-01T09:58:00.5Z")
            }
        );
    }

    #[test]
    fn a_tick_passed_without_a_sync_means_a_full_run() {
        let c = cursor(
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:04Z",
            "2026-03-01T02:00:00Z",
        );
        // 10:15 went by without a sync (down, failed or skipped); 10:30 must not trust the cursor.
        assert_eq!(
            plan(at("2026-03-01T10:30:00Z"), &c, &settings()),
            Plan::Full(FullBecause::MissedRun)
        );
        // A `once` in between ticks missed none.
        assert!(matches!(
            plan(at("2026-03-01T10:13:00Z"), &c, &settings()),
            Plan::Incremental { .. }
        ));
    }

    #[test]
    fn a_full_run_is_due_after_full_every_plus_the_offset() {
        let c = cursor(
            "2026-03-02T02:15:00Z",
            "2026-03-02T02:15:03Z",
            "2026-03-01T02:00:00Z",
        );
        assert!(matches!(
            plan(at("2026-03-02T02:15:00Z"), &c, &settings()),
            Plan::Incremental { .. }
        ));
        let c = cursor(
            "2026-03-02T02:15:00Z",
            "2026-03-02T02:15:03Z",
            "2026-03-01T02:00:00Z",
        );
        assert_eq!(
            plan(at("2026-03-02T02:30:00Z"), &c, &settings()),
            Plan::Full(FullBecause::Due)
        );
    }

    #[test]
    fn installs_get_different_offsets_within_an_eighth_of_the_period() {
        let day = Duration::hours(24);
        let a = full_offset("env_A", "itmpl_A", day);
        let b = full_offset("env_B", "itmpl_A", day);
        assert_ne!(a, b);
        for o in [a, b] {
            assert!(o >= Duration::zero() && o < Duration::hours(3), "{o}");
        }
        assert_eq!(a, full_offset("env_A", "itmpl_A", day), "stable");
    }

    #[test]
    fn modes_read_as_people_say_them() {
        assert_eq!(SyncMode::Incremental.to_string(), "incremental");
        assert_eq!(
            SyncMode::Full(FullBecause::SearchRefused).to_string(),
            "full (search refused)"
        );
    }
}
