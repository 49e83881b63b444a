//! Simulated time: the simulator reads "now" through [`SimClock`], so a test or the demo can hand
//! it the same clock its daemon uses and move both forward at once.

use chrono::{DateTime, SecondsFormat, Utc};

/// A source of "now" that `POST /_sim/clock/advance` can move forward.
pub trait SimClock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    fn advance(&self, by: std::time::Duration);
}

/// Persona's timestamp form: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Any RFC 3339 timestamp a client may send (`…Z` or `…+00:00`).
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
