//! The process-wide Prometheus recorder behind `GET /metrics`, and the names (with their help
//! texts) of every metric the daemon records, so no call site spells one differently.

use std::sync::Mutex;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Persona API calls; labels `endpoint` (create, resume, retrieve, …), `outcome` (ok, client_error, …).
pub const PERSONA_REQUESTS_TOTAL: &str = "persona_requests_total";
/// Persona answered 429.
pub const PERSONA_RATE_LIMITED_TOTAL: &str = "persona_rate_limited_total";
/// Mails; labels `kind` (invite, reminder, renewed), `outcome` (sent, retry, failed).
pub const MAILS_TOTAL: &str = "mails_total";
/// Scheduled job runs; labels `job` (provision, refresh), `outcome` (ok, failed, skipped_overlap).
pub const JOB_RUNS_TOTAL: &str = "job_runs_total";
/// How long a job run took; label `job`.
pub const JOB_DURATION_SECONDS: &str = "job_duration_seconds";
/// Webhook deliveries; label `outcome` (accepted, ignored, duplicate, rejected, malformed, failed).
pub const WEBHOOK_EVENTS_TOTAL: &str = "webhook_events_total";
/// Users by state; label `state` (pending, invited, started, finished, skipped).
pub const USERS: &str = "users";
/// Refresh status syncs; labels `mode` (incremental, full, static), `reason` (why full, else empty).
pub const REFRESH_SYNCS_TOTAL: &str = "refresh_syncs_total";
/// 1 when the last refresh run's status sync was a full reconciliation, else 0.
pub const REFRESH_SYNC_FULL: &str = "refresh_sync_full";
/// Persona calls of the last refresh run's status sync (search, list and lookup pages).
pub const REFRESH_SYNC_PERSONA_CALLS: &str = "refresh_sync_persona_calls";

/// Job runs last from under a second (nothing to do) to many minutes (a large first batch).
const JOB_DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

/// How often histograms are folded in when nobody scrapes, so memory stays flat.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The installed recorder. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct MetricsError(String);

// A process has one global recorder; the lock makes "install or reuse" atomic.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

impl Metrics {
    /// Installs the Prometheus recorder as the process's global recorder and describes the
    /// daemon's metrics. Later calls return the same recorder. Fails when some other recorder
    /// was installed first.
    pub fn install() -> Result<Metrics, MetricsError> {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = installed.as_ref() {
            return Ok(Metrics {
                handle: handle.clone(),
            });
        }
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(JOB_DURATION_SECONDS.into()),
                JOB_DURATION_BUCKETS,
            )
            .and_then(PrometheusBuilder::install_recorder)
            .map_err(|e| MetricsError(e.to_string()))?;
        describe();
        *installed = Some(handle.clone());
        Ok(Metrics { handle })
    }

    /// The Prometheus text exposition of every metric recorded so far.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Runs the recorder's periodic maintenance until `cancel` is cancelled.
    pub async fn run_upkeep(self, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(UPKEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => self.handle.run_upkeep(),
            }
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        PERSONA_REQUESTS_TOTAL,
        "Requests sent to the Persona API, by endpoint and outcome"
    );
    metrics::describe_counter!(
        PERSONA_RATE_LIMITED_TOTAL,
        "Persona API answers of 429 Too Many Requests"
    );
    metrics::describe_counter!(MAILS_TOTAL, "Mails attempted, by kind and outcome");
    metrics::describe_counter!(JOB_RUNS_TOTAL, "Scheduled job runs, by job and outcome");
    metrics::describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "How long job runs took, by job"
    );
    metrics::describe_counter!(
        WEBHOOK_EVENTS_TOTAL,
        "Persona webhook deliveries received, by outcome"
    );
    metrics::describe_gauge!(USERS, "Users by state, as `status` counts them");
    metrics::describe_counter!(
        REFRESH_SYNCS_TOTAL,
        "Refresh status syncs, by mode and (for full ones) reason"
    );
    metrics::describe_gauge!(
        REFRESH_SYNC_FULL,
        "Whether the last refresh run's status sync was a full reconciliation (1) or not (0)"
    );
    metrics::describe_gauge!(
        REFRESH_SYNC_PERSONA_CALLS,
        "Persona calls of the last refresh run's status sync"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_metrics_show_up_with_their_help_text() {
        let metrics = Metrics::install().expect("install");
        metrics::counter!(JOB_RUNS_TOTAL, "job" => "provision", "outcome" => "ok").increment(3);
        metrics::gauge!(USERS, "state" => "invited").set(12.0);
        metrics::histogram!(JOB_DURATION_SECONDS, "job" => "refresh").record(2.0);
        let text = metrics.render();
        assert!(
            text.contains(r#"job_runs_total{job="provision",outcome="ok"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"users{state="invited"} 12"#), "{text}");
        assert!(
            text.contains("# HELP job_runs_total Scheduled job runs, by job and outcome"),
            "{text}"
        );
        // Buckets were configured, so this is a real histogram rather than a summary.
        assert!(
            text.contains(r#"job_duration_seconds_bucket{job="refresh",le="5"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn installing_twice_shares_one_recorder() {
        let first = Metrics::install().expect("install");
        let second = Metrics::install().expect("install again");
        metrics::counter!(PERSONA_RATE_LIMITED_TOTAL).increment(1);
        assert!(first.render().contains("persona_rate_limited_total"));
        assert!(second.render().contains("persona_rate_limited_total"));
    }
}
