//! The daemon's notion of "now". Real time plus an offset, so the simulator and the jobs can
//! share one clock in tests and in the demo and move days forward together.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};

/// Cheap to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The wall clock, with an offset of zero that only `advance` changes.
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone) forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn offset(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.offset_ms.load(Ordering::Relaxed).max(0) as u64)
    }
}

/// The simulator reads this same clock, so advancing one moves the other (demo and tests).
#[cfg(feature = "demo")]
impl persona_sim::SimClock for Clock {
    fn now(&self) -> DateTime<Utc> {
        Clock::now(self)
    }

    fn advance(&self, by: std::time::Duration) {
        Clock::advance(self, by);
    }
}

/// The one text form of a timestamp at rest and on the wire: RFC 3339, UTC, milliseconds, `Z`.
/// It sorts as text in the same order as in time, which the store's queries rely on.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 timestamp (Persona sends `…Z` or `…+00:00`).
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let a = Clock::system();
        let b = a.clone();
        let before = b.now();
        a.advance(std::time::Duration::from_secs(86_400));
        assert!(b.now() - before >= chrono::Duration::hours(24));
    }

    #[test]
    fn timestamps_round_trip_and_sort_as_text() {
        let t = Utc::now();
        let s = format_ts(t);
        assert!(s.ends_with('Z'));
        let back = parse_ts(&s).unwrap();
        assert!((back - t).num_milliseconds().abs() <= 1);
        let later = format_ts(t + chrono::Duration::seconds(1));
        assert!(later > s);
    }
}
