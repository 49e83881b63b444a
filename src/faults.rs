//! Test-only crash points: `INQUIRY_MAILER_CRASH_AT=<name>:<n>` aborts the process the n-th time
//! the named point is reached, so crash-safety tests can kill a run at an exact instant.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms one crash point.
pub const CRASH_AT_VAR: &str = "INQUIRY_MAILER_CRASH_AT";

/// The armed point and the hit that kills, read once; `None` (the normal case) disarms them all.
static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process (no unwinding, no destructors, like a power cut) on the n-th hit of the
/// armed point; does nothing otherwise.
pub fn crash_point(name: &'static str) {
    let Some((armed, n)) = ARMED.get_or_init(read_armed) else {
        return;
    };
    if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        std::process::abort();
    }
}

fn read_armed() -> Option<(String, u64)> {
    let value = std::env::var(CRASH_AT_VAR).ok()?;
    let (name, n) = value.rsplit_once(':')?;
    Some((name.to_owned(), n.parse().ok()?))
}
