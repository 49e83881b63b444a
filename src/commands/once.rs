//! `once --job provision|refresh|all`: the jobs run to completion, then the process exits.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::JobArg;
use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::{JobContext, provision};

pub async fn run(config: &Config, job: JobArg) -> anyhow::Result<ExitCode> {
    let stop = CancellationToken::new();
    let parts = crate::app::build(config, None).await?;
    let ctx = JobContext::new(
        config,
        parts.store,
        parts.persona,
        parts.mailer,
        Clock::system(),
        stop.clone(),
    );
    // Ctrl-C: finish the users in hand, take no more.
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted: finishing the users in hand");
            stop.cancel();
        }
    });
    if matches!(job, JobArg::Provision | JobArg::All) {
        let report = provision::run(&ctx).await?;
        println!("provision: {report}");
    }
    if matches!(job, JobArg::Refresh | JobArg::All) {
        let report = crate::jobs::refresh::run(&ctx).await?;
        println!("refresh: {report}");
    }
    ctx.store.close().await;
    Ok(ExitCode::SUCCESS)
}
