//! Simulated time: the simulator reads "now" through [`SimClock`], so a test or the demo can hand
//! it the same clock its daemon uses and move both forward at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};

/// A source of "now" that `POST /_sim/clock/advance` can move forward.
pub trait SimClock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    fn advance(&self, by: std::time::Duration);
}

/// Wall time plus an offset, for a simulator that shares its clock with nobody. Clones share
/// the offset.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock {
    offset_ms: Arc<AtomicI64>,
}

impl SimClock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
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

/// `len` random letters and digits, the body of Persona's ids and tokens.
pub fn random_alnum(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let a = OffsetClock::default();
        let b = a.clone();
        let before = b.now();
        a.advance(std::time::Duration::from_secs(86_400));
        assert!(b.now() - before >= chrono::Duration::hours(24));
    }
}
