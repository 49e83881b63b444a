//! `run`: builds the jobs' context, starts the HTTP listener and the schedule, tells systemd it
//! is ready, and then waits: SIGHUP reloads config and templates, SIGTERM/SIGINT drain and stop.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::http::{self, HttpSettings, HttpState};
use super::metrics::Metrics;
use super::new_users::{self, NewUserSignal};
use super::notify::Notifier;
use super::redirect::{self, RedirectState};
use super::scheduler::{self, JobKind, Runner, Schedule, SharedContext};
use super::signals::Signals;
use crate::app;
use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::JobContext;

fn http_settings(config: &Config) -> HttpSettings {
    HttpSettings {
        webhook_secrets: config.server.webhook_secret.iter().cloned().collect(),
        tolerance: config.server.webhook_tolerance,
        schedules: vec![
            (JobKind::Provision, config.schedule.provision.clone()),
            (JobKind::Refresh, config.schedule.refresh.clone()),
        ],
    }
}

/// Runs the daemon until SIGTERM/SIGINT (or `stop` is cancelled by the caller).
pub async fn run(
    config: Config,
    notifier: Notifier,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let signals = Signals::install().context("cannot install signal handlers")?;
    notifier.status("starting: migrations, templates, Persona client");
    let clock = Clock::system();
    let parts = app::build(&config, None).await?;
    let ctx = JobContext::new(
        &config,
        parts.store,
        parts.persona,
        parts.mailer,
        clock.clone(),
        stop.clone(),
    );
    if config.server.webhook_secret.is_none() {
        tracing::warn!(
            "no webhook secret (PERSONA_WEBHOOK_SECRET or credential persona-webhook-secret): every webhook is refused, statuses arrive by polling only"
        );
    }
    let shared: SharedContext = Arc::new(RwLock::new(Arc::new(ctx)));
    let metrics = match Metrics::install() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "metrics disabled");
            None
        }
    };
    let runner = Runner::new(shared.clone(), notifier.clone());
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "{}: [server] listen = \"{}\" cannot be bound",
                config.source.display(),
                config.server.listen
            )
        })?;
    let settings = Arc::new(RwLock::new(http_settings(&config)));
    let state = HttpState::new(
        shared.clone(),
        settings.clone(),
        metrics.clone(),
        clock.now(),
    );
    let server_stop = CancellationToken::new();
    let redirects = RedirectState::new(
        shared.clone(),
        config.links.redirect_requests_per_minute,
        config.links.redirect_persona_calls_per_hour,
    );
    let app = http::router(state, config.server.max_body_bytes).merge(redirect::router(redirects));
    let server_done = server_stop.clone();
    let server = tokio::spawn(async move {
        // The peer address keys the redirect endpoint's per-client limit.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(server_done.cancelled_owned())
        .await
    });
    let mut schedule = Schedule::start(
        &runner,
        &config.schedule.provision,
        &config.schedule.refresh,
    )
    .await?;

    // Before the start-up run, so a row is either there for it or noticed as new.
    let new_users = NewUserSignal::default();
    new_users::watch(&shared.read().await.store, new_users.clone(), stop.clone()).await?;
    scheduler::provision_on_new_users(&runner, new_users, stop.clone());

    // Missed cron ticks are not caught up: a run of each job at start-up covers the downtime.
    let first = runner.clone();
    tokio::spawn(async move {
        first.run(JobKind::Provision).await;
        first.run(JobKind::Refresh).await;
    });

    let background = CancellationToken::new();
    tokio::spawn(notifier.clone().run_watchdog(background.clone()));
    if let Some(m) = metrics.clone() {
        tokio::spawn(m.run_upkeep(background.clone()));
    }
    let (reload_tx, mut reloads) = Signals::reload_channel();
    tokio::spawn(signals.dispatch(stop.clone(), reload_tx));
    tracing::info!(listen = %config.server.listen, "inquiry-mailer running");
    notifier.ready();
    notifier.status(&format!(
        "running; provision \"{}\", refresh \"{}\"",
        config.schedule.provision, config.schedule.refresh
    ));

    let mut current = config;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = reloads.changed() => {
                if changed.is_err() {
                    break;
                }
                notifier.reloading();
                match reload(&current.source, &current, &shared, &settings, &mut schedule, &runner, &clock, &stop).await {
                    Ok(new) => {
                        tracing::info!("reloaded config and templates");
                        current = new;
                    }
                    Err(e) => tracing::error!("reload refused, still running on the previous config: {e:#}"),
                }
                notifier.ready();
            }
        }
    }

    tracing::info!("stopping: no new work; waiting for in-flight calls, writes and sends");
    notifier.stopping();
    schedule.shutdown().await;
    if !runner.wait_idle(current.server.shutdown_timeout).await {
        tracing::warn!(
            "in-flight work did not finish within [server] shutdown_timeout; what was cut off resumes at the next start"
        );
    }
    server_stop.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    background.cancel();
    shared.read().await.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn reload(
    path: &Path,
    old: &Config,
    shared: &SharedContext,
    settings: &Arc<RwLock<HttpSettings>>,
    schedule: &mut Schedule,
    runner: &Runner,
    clock: &Clock,
    stop: &CancellationToken,
) -> anyhow::Result<Config> {
    let new = Config::load(path)?;
    let store = shared.read().await.store.clone();
    let parts = app::build_with_store(&new, None, Some(store)).await?;
    let ctx = JobContext::new(
        &new,
        parts.store,
        parts.persona,
        parts.mailer,
        clock.clone(),
        stop.clone(),
    );
    if new.server.listen != old.server.listen {
        tracing::warn!(
            "[server] listen changed to {}; it takes effect at the next restart",
            new.server.listen
        );
    }
    if new.links.redirect_requests_per_minute != old.links.redirect_requests_per_minute
        || new.links.redirect_persona_calls_per_hour != old.links.redirect_persona_calls_per_hour
    {
        tracing::warn!(
            "[links] redirect_requests_per_minute / redirect_persona_calls_per_hour changed; they take effect at the next restart"
        );
    }
    if new.server.max_body_bytes != old.server.max_body_bytes {
        tracing::warn!(
            "[server] max_body_bytes changed to {}; it takes effect at the next restart",
            new.server.max_body_bytes
        );
    }
    if new.schedule.provision != old.schedule.provision
        || new.schedule.refresh != old.schedule.refresh
    {
        schedule
            .set(runner, &new.schedule.provision, &new.schedule.refresh)
            .await?;
    }
    *shared.write().await = Arc::new(ctx);
    *settings.write().await = http_settings(&new);
    Ok(new)
}
