//! One function per command of SPEC.md's command line; `main` maps their errors to exit codes.

pub mod check;
#[cfg(feature = "demo")]
pub mod demo;
pub mod once;
pub mod preview;
pub mod status;
pub mod users;

use std::process::ExitCode;

use crate::cli::{Cli, Command, LogFormatArg};
use crate::config::{self, Config, LogFormat};

// `demo` (being reworked elsewhere) still names the wiring by its old place.
#[cfg(feature = "demo")]
pub(crate) use crate::app as context;

/// Exit codes of SPEC.md.
pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONFIG: u8 = 78;

/// A command line that parsed but asks for something impossible (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The work was done as far as it could be, and what failed has been reported already (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

/// Loads config, sets up logging, runs one command. `demo` brings its own config.
pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Demo = cli.command {
        return run_demo(cli.log_format).await;
    }
    let path = config::resolve_path(cli.config.as_deref());
    let config = Config::load(&path)?;
    let format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log_format,
    };
    crate::logging::init(format);
    match cli.command {
        Command::Migrate => migrate(&config).await,
        Command::Users(cmd) => users::run(&config, cmd).await,
        Command::Status { json, user } => status::run(&config, json, user.as_deref()).await,
        Command::Check => check::run(&config).await,
        Command::Once { job } => once::run(&config, job).await,
        Command::Preview { user } => preview::run(&config, &user).await,
        Command::Run => {
            let notifier = crate::daemon::notify::Notifier::from_env();
            crate::daemon::server::run(
                config,
                notifier,
                tokio_util::sync::CancellationToken::new(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => unreachable!("demo is dispatched before the config is loaded"),
    }
}

#[cfg(feature = "demo")]
async fn run_demo(log_format: Option<LogFormatArg>) -> anyhow::Result<ExitCode> {
    demo::run(log_format).await
}

/// The demo plays against the Persona simulator, which a build without `demo` leaves out.
#[cfg(not(feature = "demo"))]
async fn run_demo(_log_format: Option<LogFormatArg>) -> anyhow::Result<ExitCode> {
    Err(UsageError(
        "demo: this inquiry-mailer was built without the Persona simulator \
         (cargo feature `demo`); rebuild with `cargo build --features demo`"
            .into(),
    )
    .into())
}

async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let store = crate::app::open_store_unmigrated(config).await?;
    let pending = store.pending_migrations().await?;
    store.migrate().await?;
    if pending.is_empty() {
        println!("{}: up to date", store.location());
    } else {
        println!("{}: applied {}", store.location(), pending.join(", "));
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The exit code for an error that reached the top.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<config::ConfigError>().is_some() {
        EXIT_CONFIG
    } else if err.downcast_ref::<UsageError>().is_some() {
        EXIT_USAGE
    } else {
        EXIT_RUNTIME
    }
}

#[cfg(all(test, not(feature = "demo")))]
mod without_demo {
    use super::*;

    // Run by .ci/run with `--no-default-features`: the build without the simulator still knows
    // the command and says why it cannot play it.
    #[tokio::test]
    async fn demo_says_the_build_left_the_simulator_out() {
        let err = run_demo(None)
            .await
            .expect_err("no simulator to play against");
        assert_eq!(exit_code_for(&err), EXIT_USAGE);
        let message = err.to_string();
        assert!(
            message.contains("built without the Persona simulator"),
            "{message}"
        );
        assert!(message.contains("--features demo"), "{message}");
    }
}
