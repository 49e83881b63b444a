//! The command line (clap definitions only).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "inquiry-mailer",
    version,
    about = "Gets your users through Persona identity verification by e-mail"
)]
pub struct Cli {
    /// Config file [default: $INQUIRY_MAILER_CONFIG, else ./config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log line format (overrides log_format in the config file)
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: migrations, scheduler, webhook/health/metrics listener, systemd notify
    Run,
    /// Run the named jobs once to completion and exit
    Once {
        #[arg(long, value_enum, default_value_t = JobArg::All)]
        job: JobArg,
    },
    /// Validate config and templates, open the database, check Persona and SMTP
    Check,
    /// Apply database migrations and exit
    Migrate,
    /// Add users to the `users` table
    #[command(subcommand)]
    Users(UsersCommand),
    /// Counts of users by state, or one user's inquiries, mails and events
    Status {
        /// Print JSON for machines
        #[arg(long)]
        json: bool,
        /// Show this user's history
        #[arg(long, value_name = "ID")]
        user: Option<String>,
    },
    /// Render a user's next e-mail to stdout without sending anything
    Preview {
        #[arg(long, value_name = "ID")]
        user: String,
    },
    /// Run the whole pipeline on this machine with no accounts and show what happened
    Demo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobArg {
    Provision,
    Refresh,
    All,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Insert one pending user
    Add(AddUser),
    /// Insert or update many users from a CSV file whose header names `users` columns
    Import {
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AddUser {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub name_first: Option<String>,
    #[arg(long)]
    pub name_last: Option<String>,
    /// YYYY-MM-DD
    #[arg(long)]
    pub birthdate: Option<String>,
    #[arg(long)]
    pub phone_number: Option<String>,
    /// BCP 47 language tag, e.g. de or pt-BR: the language of the user's mails and Persona flow
    #[arg(long)]
    pub locale: Option<String>,
}
