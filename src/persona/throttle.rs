//! Keeps every clone of the client under Persona's request budget: a fixed GCRA quota from
//! config, tightened by what Persona's `RateLimit-*` headers and 429 answers say. With several
//! replicas, a [`SharedBudget`] (the database's) runs the same GCRA across all of them.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use tokio::time::Instant;

/// Below this share of `RateLimit-Limit` left, the remaining calls are spread over the window
/// (Persona's own advice: throttle under 15 %).
const PACE_BELOW_PERCENT: u64 = 15;

/// The quota for `rpm` requests per minute.
///
/// GCRA with emission period `p` and burst `b` admits, inside any window of length `W`, fewer
/// than `b + W/p` requests (after the burst is spent, one more per `p`). A quota of
/// `with_period(60s/rpm).allow_burst(b)` would therefore allow `rpm + b - 1` in one minute:
/// a full burst at the start of Persona's window plus the steady rate. Choosing
/// `p = 60s / (rpm - b + 1)`, rounded up, gives fewer than `rpm + 1`, i.e. at most `rpm`, in
/// every sliding 60-s window, hence in each of Persona's fixed windows too. The burst stays
/// small (rpm/30, at most 10) so concurrent callers can start together while the steady rate
/// loses at most 3 %. One slot in a hundred more is held back for the network: Persona counts
/// requests when they arrive and we can only space them when they leave, so two sent a period
/// apart may land closer together (measured: one 429 in 1,500 calls at 600/min with 300 ms
/// latency before this margin, none after).
pub(crate) fn quota_for(rpm: NonZeroU32) -> Quota {
    let rpm = rpm.get();
    let burst = (rpm / 30).clamp(1, 10);
    let slots = u128::from(rpm - burst + 1 - jitter_margin(rpm));
    let window_ns = Duration::from_secs(60).as_nanos();
    let period_ns = window_ns.div_ceil(slots);
    let period = Duration::from_nanos(u64::try_from(period_ns).unwrap_or(u64::MAX));
    Quota::with_period(period)
        .expect("a minute divided by at most u32::MAX slots is longer than zero")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"))
}

/// The quota of the budget shared by replicas: [`quota_for`] a hundredth lower, because the
/// shared slot is taken at the database and the request then takes one more hop (the answer
/// from the database) before it leaves for Persona, so arrivals jitter more (measured: 120 in
/// the busiest minute at 120/min with the single-process margin alone).
pub(crate) fn shared_quota_for(rpm: NonZeroU32) -> Quota {
    let held_back = rpm.get() - rpm.get() / 100;
    quota_for(NonZeroU32::new(held_back).unwrap_or(rpm))
}

/// Slots per minute kept unused against arrival jitter (see [`quota_for`]).
fn jitter_margin(rpm: u32) -> u32 {
    rpm / 100
}

/// A request budget shared with other processes (replicas on one database): the same GCRA as
/// [`quota_for`], its state kept where every replica sees it. Given from outside (the daemon's
/// wiring), so this module knows nothing of where that is.
pub trait SharedBudget: Send + Sync {
    /// Takes one slot of a GCRA with emission period `period` and burst `burst`: `Ok` when
    /// taken, `Err(wait)` when the next slot is `wait` away (ask again then).
    fn take(&self, period: Duration, burst: u32) -> BudgetFuture<'_>;
}

/// What [`SharedBudget::take`] returns; an `Err` of the outer result is the budget's own
/// failure (its database unreachable).
pub type BudgetFuture<'a> = Pin<
    Box<
        dyn Future<Output = Result<Result<(), Duration>, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'a,
    >,
>;

/// How long a caller waits before asking a shared budget that failed again.
const SHARED_RETRY: Duration = Duration::from_secs(1);

/// What Persona's headers said about its own window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimitHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// The shared rate gate. One per client; clones share it through the client's `Arc`.
pub(crate) struct Throttle {
    quota: DefaultDirectRateLimiter,
    /// The quota's GCRA parameters, for the shared budget.
    period: Duration,
    burst: u32,
    shared: OnceLock<Arc<dyn SharedBudget>>,
    adaptive: Mutex<Adaptive>,
}

impl Throttle {
    pub fn new(rpm: NonZeroU32) -> Self {
        let shared = shared_quota_for(rpm);
        Self {
            quota: RateLimiter::direct(quota_for(rpm)),
            period: shared.replenish_interval(),
            burst: shared.burst_size().get(),
            shared: OnceLock::new(),
            adaptive: Mutex::new(Adaptive::default()),
        }
    }

    /// From now on every request also takes a slot of `budget`; `false` when one was set.
    pub fn share(&self, budget: Arc<dyn SharedBudget>) -> bool {
        self.shared.set(budget).is_ok()
    }

    /// Waits until this caller may send one request.
    pub async fn acquire(&self) {
        loop {
            let admission = self.adaptive().admit(Instant::now());
            match admission {
                Admission::Go => break,
                Admission::Blocked(until) => tokio::time::sleep_until(until).await,
                Admission::Slot(at) => {
                    tokio::time::sleep_until(at).await;
                    // A 429 elsewhere while we slept outranks our slot.
                    if self.blocked_until(Instant::now()).is_none() {
                        break;
                    }
                }
            }
        }
        let clock = self.quota.clock();
        while let Err(not_until) = self.quota.check() {
            tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
        }
        if let Some(shared) = self.shared.get() {
            self.take_shared(shared.as_ref()).await;
        }
    }

    /// Waits for a slot of the shared budget. While it cannot be asked (database trouble) the
    /// caller waits and asks again: going ahead could spend other replicas' share, and the
    /// jobs stop on the database's failure anyway.
    async fn take_shared(&self, shared: &dyn SharedBudget) {
        loop {
            match shared.take(self.period, self.burst).await {
                Ok(Ok(())) => return,
                Ok(Err(wait)) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take from the shared Persona budget; asking again");
                    tokio::time::sleep(SHARED_RETRY).await;
                }
            }
        }
    }

    /// Records the `RateLimit-*` headers of an answer.
    pub fn observe(&self, headers: RateLimitHeaders) {
        self.adaptive().observe(Instant::now(), headers);
    }

    /// Holds every caller back until `until` (after a 429).
    pub fn block_until(&self, until: Instant) {
        self.adaptive().block_until(until);
    }

    pub fn blocked_until(&self, now: Instant) -> Option<Instant> {
        self.adaptive().blocked_until.filter(|b| *b > now)
    }

    fn adaptive(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.adaptive.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Go,
    /// Nobody may send before this instant; ask again afterwards.
    Blocked(Instant),
    /// This caller owns the paced slot at this instant.
    Slot(Instant),
}

/// Pacing and blocking derived from Persona's answers.
#[derive(Debug, Default)]
pub(crate) struct Adaptive {
    blocked_until: Option<Instant>,
    pacing: Option<Pacing>,
}

#[derive(Debug, Clone, Copy)]
struct Pacing {
    interval: Duration,
    next_slot: Instant,
    until: Instant,
}

impl Adaptive {
    pub fn observe(&mut self, now: Instant, h: RateLimitHeaders) {
        if h.limit == 0 || h.remaining * 100 >= h.limit * PACE_BELOW_PERCENT {
            self.pacing = None;
            return;
        }
        let window_end = now + h.reset;
        if h.remaining == 0 {
            self.pacing = None;
            self.block_until(window_end);
            return;
        }
        // Spread what is left evenly over what is left of the window.
        let interval = h.reset / u32::try_from(h.remaining).unwrap_or(u32::MAX);
        let next_slot = self.pacing.map_or(now, |p| p.next_slot.max(now));
        self.pacing = Some(Pacing {
            interval,
            next_slot,
            until: window_end,
        });
    }

    pub fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.blocked_until {
            Some(b) if b > now => return Admission::Blocked(b),
            Some(_) => self.blocked_until = None,
            None => {}
        }
        match &mut self.pacing {
            Some(p) if p.until > now => {
                let slot = p.next_slot.max(now);
                if slot >= p.until {
                    // Past the end of Persona's window the budget is fresh: no need to queue
                    // behind this window's slots; the quota spaces out whoever goes then.
                    return Admission::Slot(p.until);
                }
                p.next_slot = slot + p.interval;
                if slot > now {
                    Admission::Slot(slot)
                } else {
                    Admission::Go
                }
            }
            Some(_) => {
                self.pacing = None;
                Admission::Go
            }
            None => Admission::Go,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::{FakeRelativeClock, Reference};

    /// Asks greedily for permits on a fake clock and returns the instants (ns) they were given.
    fn grants(rpm: u32, over: Duration) -> Vec<u64> {
        let clock = FakeRelativeClock::default();
        let limiter =
            RateLimiter::direct_with_clock(quota_for(NonZeroU32::new(rpm).unwrap()), clock.clone());
        let mut granted = Vec::new();
        let start = clock.now();
        loop {
            let elapsed: Duration = clock.now().duration_since(start).into();
            if elapsed >= over {
                return granted;
            }
            match limiter.check() {
                Ok(()) => granted.push(elapsed.as_nanos() as u64),
                Err(not_until) => clock.advance(not_until.wait_time_from(clock.now())),
            }
        }
    }

    fn max_in_any_minute(granted: &[u64]) -> usize {
        let minute = Duration::from_secs(60).as_nanos() as u64;
        (0..granted.len())
            .map(|i| {
                granted[i..]
                    .iter()
                    .take_while(|t| **t < granted[i] + minute)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_quota_never_admits_more_than_rpm_in_any_sixty_seconds() {
        for rpm in [1, 2, 7, 30, 60, 299, 300, 1000] {
            let granted = grants(rpm, Duration::from_secs(5 * 60));
            let worst = max_in_any_minute(&granted);
            assert!(worst <= rpm as usize, "rpm {rpm}: {worst} in one minute");
            // And it is not needlessly strict: the steady rate loses at most the burst and
            // the 1 % jitter margin.
            let burst = (rpm / 30).clamp(1, 10);
            assert!(
                granted.len() >= 5 * (rpm - burst + 1 - jitter_margin(rpm)) as usize,
                "rpm {rpm}: only {} in five minutes",
                granted.len()
            );
        }
    }

    #[test]
    fn a_burst_lets_concurrent_callers_start_together() {
        let granted = grants(300, Duration::from_millis(1));
        assert_eq!(granted.len(), 10);
    }

    fn headers(limit: u64, remaining: u64, reset_s: u64) -> RateLimitHeaders {
        RateLimitHeaders {
            limit,
            remaining,
            reset: Duration::from_secs(reset_s),
        }
    }

    #[test]
    fn plenty_left_means_no_pacing() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        a.observe(now, headers(300, 45, 30));
        for _ in 0..100 {
            assert_eq!(a.admit(now), Admission::Go);
        }
    }

    #[test]
    fn little_left_spreads_the_remaining_calls_over_the_reset() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        a.observe(now, headers(300, 10, 20));
        let mut slots = vec![];
        for _ in 0..10 {
            match a.admit(now) {
                Admission::Go => slots.push(now),
                Admission::Slot(at) => slots.push(at),
                Admission::Blocked(_) => panic!("not blocked"),
            }
        }
        // Ten calls, two seconds apart, the last one still inside the window.
        assert_eq!(slots[0], now);
        assert_eq!(slots[9], now + Duration::from_secs(18));
        // Callers beyond the remaining budget wait for the window's end, not for slots past it.
        let window_end = now + Duration::from_secs(20);
        assert_eq!(a.admit(now), Admission::Slot(window_end));
        assert_eq!(a.admit(now), Admission::Slot(window_end));
        // After the window, pacing ends.
        assert_eq!(a.admit(now + Duration::from_secs(21)), Admission::Go);
    }

    #[test]
    fn nothing_left_or_a_429_blocks_everyone_until_the_reset() {
        let now = Instant::now();
        let mut a = Adaptive::default();
        a.observe(now, headers(300, 0, 5));
        let reset = now + Duration::from_secs(5);
        assert_eq!(a.admit(now), Admission::Blocked(reset));
        assert_eq!(
            a.admit(now + Duration::from_secs(4)),
            Admission::Blocked(reset)
        );
        assert_eq!(a.admit(reset), Admission::Go);

        // A shorter block never shortens a longer one.
        a.block_until(now + Duration::from_secs(9));
        a.block_until(now + Duration::from_secs(3));
        assert_eq!(
            a.admit(now + Duration::from_secs(5)),
            Admission::Blocked(now + Duration::from_secs(9))
        );
    }
}
