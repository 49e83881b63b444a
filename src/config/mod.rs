//! Typed configuration: config.toml, then `INQUIRY_MAILER__SECTION__KEY` environment overrides,
//! then secrets from environment variables or `$CREDENTIALS_DIRECTORY`. Validated once, here.
//!
//! Each `[section]` is one struct below, read by serde with `deny_unknown_fields`. To add a key,
//! add a field with the `deserialize_with` reader for its kind of value, give it a line in
//! [`DEFAULTS`] (or, when it has no default, in [`REQUIRED`]), and describe it in config.toml. Every problem in
//! the file is reported at once, as `[section] key why (line N)`.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::DeTable;
use url::Url;

use crate::domain::{ApiKey, EnvironmentId, LinkKind, SecretText, TemplateId};
pub use crate::mail::TransportKind;
use crate::store::Location;

mod document;
mod read;
mod reminders;
mod secrets;

use document::{Document, keys_of, line_of};
use read::{
    api_version, boolean, cron, database_location, full_every, mailbox, optional, optional_email,
    optional_mailbox, parsed, path, public_url, smtp_url, text, whole,
};
pub use read::{parse_cron, parse_duration};
pub use reminders::RemindersConfig;
use secrets::Secrets;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "INQUIRY_MAILER_CONFIG";
/// Prefix of per-key overrides: `INQUIRY_MAILER__PERSONA__TIMEOUT=20s`.
pub const OVERRIDE_PREFIX: &str = "INQUIRY_MAILER__";

/// A secret's two sources: an environment variable, or a file of that name in
/// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
#[derive(Debug, Clone, Copy)]
pub struct SecretSource {
    pub env: &'static str,
    pub credential: &'static str,
}

pub const PERSONA_API_KEY: SecretSource = SecretSource {
    env: "PERSONA_API_KEY",
    credential: "persona-api-key",
};
pub const SMTP_PASSWORD: SecretSource = SecretSource {
    env: "SMTP_PASSWORD",
    credential: "smtp-password",
};
pub const DATABASE_PASSWORD: SecretSource = SecretSource {
    env: "DATABASE_PASSWORD",
    credential: "database-password",
};
pub const WEBHOOK_SECRET: SecretSource = SecretSource {
    env: "PERSONA_WEBHOOK_SECRET",
    credential: "persona-webhook-secret",
};

/// Every key's default, written as in config.toml.
const DEFAULTS: &str = r#"
log_format = "text"

[database]
url = "sqlite://inquiry-mailer.db"
busy_timeout = "5s"
read_connections = 4

[persona]
api_base = "https://api.withpersona.com/api/v1"
api_version = "2025-12-08"
requests_per_minute = 240
timeout = "10s"
max_retries = 5
retry_base_delay = "1s"

[links]
kind = "session"
hosted_flow_url = "https://inquiry.withpersona.com/verify"
one_time_link_expires_after = "7d"
redirect_requests_per_minute = 60
redirect_persona_calls_per_hour = 60

[inquiries]
expires_after = "7d"
refresh_before_expiry = "24h"
max_age = "30d"
recreate_on_new_template_version = true
max_resumes = 5
min_resend_interval = "24h"

[reminders]
after = []

[sync]
overlap = "2m"
full_every = "24h"

[provision]
batch_size = 100
concurrency = 16

[mail]
transport = "smtp"
smtp_url = "smtp://127.0.0.1:25"
file_dir = "outbox"
messages_per_minute = 600
timeout = "30s"
max_attempts = 10
app_name = "Example App"

[schedule]
provision = "0 * * * * *"
refresh = "0 */15 * * * *"

[server]
listen = "127.0.0.1:8080"
webhook_tolerance = "5m"
max_body_bytes = 262144
shutdown_timeout = "30s"

[templates]
dir = "templates"
"#;

/// The keys without a default. A missing one is reported, and the example stands in for it
/// only so that the rest of its section is still checked.
const REQUIRED: &str = r#"
[persona]
inquiry_template_id = "itmpl_XXXXXXXXXXXXX"
environment_id = "env_XXXXXXXXXXXXX"

[mail]
from = "Verification <verify@example.com>"
"#;

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are relative to its folder.
    pub source: PathBuf,
    pub log_format: LogFormat,
    pub database: DatabaseConfig,
    pub persona: PersonaConfig,
    pub links: LinksConfig,
    pub inquiries: InquiriesConfig,
    pub reminders: RemindersConfig,
    pub sync: SyncConfig,
    pub provision: ProvisionConfig,
    pub mail: MailConfig,
    pub schedule: ScheduleConfig,
    pub server: ServerConfig,
    pub templates: TemplatesConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The keys outside any section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    #[serde(deserialize_with = "parsed")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `url = "sqlite://…"`, kept as the file it names, or `postgres://USER@HOST:PORT/DB`
    /// (no password in it: that is the `DATABASE_PASSWORD` secret).
    #[serde(rename = "url", deserialize_with = "database_location")]
    pub location: Location,
    /// SQLite only: how long a statement waits for another process's write lock.
    #[serde(deserialize_with = "parsed")]
    pub busy_timeout: Duration,
    /// SQLite: the read pool's size. PostgreSQL: the pool's size, reads and writes.
    #[serde(deserialize_with = "whole::<1, 64, _, _>")]
    pub read_connections: u32,
    /// PostgreSQL's password, from `DATABASE_PASSWORD` or the `database-password` credential.
    #[serde(skip)]
    pub password: Option<SecretText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaConfig {
    #[serde(deserialize_with = "parsed")]
    pub api_base: Url,
    #[serde(deserialize_with = "api_version")]
    pub api_version: String,
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
    #[serde(deserialize_with = "parsed")]
    pub inquiry_template_id: TemplateId,
    #[serde(deserialize_with = "parsed")]
    pub environment_id: EnvironmentId,
    #[serde(deserialize_with = "whole::<1, 100_000, _, _>")]
    pub requests_per_minute: NonZeroU32,
    #[serde(deserialize_with = "parsed")]
    pub timeout: Duration,
    #[serde(deserialize_with = "whole::<0, 20, _, _>")]
    pub max_retries: u32,
    #[serde(deserialize_with = "parsed")]
    pub retry_base_delay: Duration,
}

impl PersonaConfig {
    /// The API key, or the error that tells the operator where to put it.
    pub fn require_api_key(&self) -> Result<&ApiKey, ConfigError> {
        self.api_key.as_ref().ok_or_else(|| {
            ConfigError::single(
                "persona",
                "api key",
                format!(
                    "is missing: set {} or put it in $CREDENTIALS_DIRECTORY/{}",
                    PERSONA_API_KEY.env, PERSONA_API_KEY.credential
                ),
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    #[serde(deserialize_with = "parsed")]
    pub kind: LinkKind,
    #[serde(deserialize_with = "parsed")]
    pub hosted_flow_url: Url,
    #[serde(default, deserialize_with = "optional")]
    pub redirect_uri: Option<Url>,
    #[serde(deserialize_with = "parsed")]
    pub one_time_link_expires_after: Duration,
    /// Where users reach the listener (kind = "redirect", which requires it).
    #[serde(default, deserialize_with = "public_url")]
    pub public_url: Option<Url>,
    /// Requests to the redirect endpoint per client address and minute.
    #[serde(deserialize_with = "whole::<1, 1_000_000, _, _>")]
    pub redirect_requests_per_minute: NonZeroU32,
    /// Persona calls that one user's clicks may cause per hour.
    #[serde(deserialize_with = "whole::<1, 100_000, _, _>")]
    pub redirect_persona_calls_per_hour: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InquiriesConfig {
    #[serde(deserialize_with = "parsed")]
    pub expires_after: Duration,
    #[serde(deserialize_with = "parsed")]
    pub refresh_before_expiry: Duration,
    #[serde(deserialize_with = "parsed")]
    pub max_age: Duration,
    #[serde(deserialize_with = "boolean")]
    pub recreate_on_new_template_version: bool,
    #[serde(deserialize_with = "whole::<0, 24, _, _>")]
    pub max_resumes: u32,
    #[serde(deserialize_with = "parsed")]
    pub min_resend_interval: Duration,
}

/// `[sync]`: how refresh learns what changed at Persona (SPEC "Status sync settings").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Each incremental sync searches from the last one's start minus this: it covers
    /// Persona's search lag (about a minute) and clock skew. Longer than zero.
    #[serde(deserialize_with = "parsed")]
    pub overlap: Duration,
    /// A complete reconciliation by listing, at most this often; at least [`MIN_FULL_EVERY`].
    #[serde(deserialize_with = "full_every")]
    pub full_every: Duration,
}

/// A full reconciliation lists every live inquiry (100 a call): more often than this would be
/// nearly every run, the cost `[sync]` exists to avoid.
pub const MIN_FULL_EVERY: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionConfig {
    #[serde(deserialize_with = "whole::<1, 10_000, _, _>")]
    pub batch_size: u32,
    #[serde(deserialize_with = "whole::<1, 256, _, _>")]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    #[serde(deserialize_with = "parsed")]
    pub transport: TransportKind,
    #[serde(deserialize_with = "smtp_url")]
    pub smtp_url: String,
    #[serde(skip)]
    pub smtp_password: Option<SecretText>,
    #[serde(deserialize_with = "mailbox")]
    pub from: String,
    #[serde(default, deserialize_with = "optional_mailbox")]
    pub reply_to: Option<String>,
    #[serde(deserialize_with = "path")]
    pub file_dir: PathBuf,
    #[serde(deserialize_with = "whole::<1, 1_000_000, _, _>")]
    pub messages_per_minute: NonZeroU32,
    #[serde(deserialize_with = "parsed")]
    pub timeout: Duration,
    #[serde(deserialize_with = "whole::<1, 1000, _, _>")]
    pub max_attempts: u32,
    #[serde(deserialize_with = "text")]
    pub app_name: String,
    #[serde(default, deserialize_with = "optional_email")]
    pub support_email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(deserialize_with = "cron")]
    pub provision: String,
    #[serde(deserialize_with = "cron")]
    pub refresh: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(deserialize_with = "parsed")]
    pub listen: SocketAddr,
    #[serde(skip)]
    pub webhook_secret: Option<SecretText>,
    #[serde(deserialize_with = "parsed")]
    pub webhook_tolerance: Duration,
    #[serde(deserialize_with = "whole::<1024, { 16 * 1024 * 1024 }, _, _>")]
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "parsed")]
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    #[serde(deserialize_with = "path")]
    pub dir: PathBuf,
}

/// Where a problem's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// This line of the config file.
    Line(usize),
    /// This `INQUIRY_MAILER__…` environment variable.
    Env(String),
}

/// One thing wrong with the configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub section: String,
    pub key: String,
    pub why: String,
    pub origin: Option<Origin>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.section.is_empty() {
            write!(f, "{} {}", self.key, self.why)?;
        } else {
            write!(f, "[{}] {} {}", self.section, self.key, self.why)?;
        }
        match &self.origin {
            Some(Origin::Line(line)) => write!(f, " (line {line})"),
            Some(Origin::Env(name)) => write!(f, " (from {name})"),
            None => Ok(()),
        }
    }
}

/// Everything wrong with a configuration, reported at once (exit code 78).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(section: &str, key: &str, why: String) -> Self {
        Self {
            file: None,
            problems: vec![Problem {
                section: section.into(),
                key: key.into(),
                why,
                origin: None,
            }],
        }
    }

    fn file(file: &Path, why: String) -> Self {
        Self {
            file: Some(file.to_owned()),
            problems: vec![Problem {
                section: String::new(),
                key: String::new(),
                why,
                origin: None,
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into());
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let text = p.to_string();
            write!(f, "{file}: {}", text.trim_start())?;
        }
        Ok(())
    }
}

/// Where the config file is: `--config`, else `$INQUIRY_MAILER_CONFIG`, else `./config.toml`.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_owned();
    }
    match std::env::var_os(CONFIG_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("config.toml"),
    }
}

/// The process environment, as the loader sees it; tests pass their own.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Config {
    /// Loads from the file, the process environment and `$CREDENTIALS_DIRECTORY`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, &ProcessEnv)
    }

    pub fn load_with(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::file(path, format!("cannot be read: {e}")))?;
        Self::parse_with(&text, path, env)
    }

    /// Parses config text as if read from `path` (relative paths resolve against its folder).
    pub fn parse_with(
        text: &str,
        path: &Path,
        env: &dyn Environment,
    ) -> Result<Config, ConfigError> {
        let root = DeTable::parse(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            ConfigError::file(path, format!("is not valid TOML{at}: {}", e.message()))
        })?;
        let mut overrides: Vec<(String, String)> = env
            .vars()
            .into_iter()
            .filter(|(name, _)| name.starts_with(OVERRIDE_PREFIX))
            .collect();
        overrides.sort();
        let mut doc = Document::new(text, root.into_inner(), &overrides);

        let top: Option<TopLevel> = doc.section("");
        let database: Option<DatabaseConfig> = doc.section("database");
        let persona: Option<PersonaConfig> = doc.section("persona");
        let links: Option<LinksConfig> = doc.section("links");
        let inquiries: Option<InquiriesConfig> = doc.section("inquiries");
        let reminders: Option<RemindersConfig> = doc.section("reminders");
        let sync: Option<SyncConfig> = doc.section("sync");
        let provision: Option<ProvisionConfig> = doc.section("provision");
        let mail: Option<MailConfig> = doc.section("mail");
        let schedule: Option<ScheduleConfig> = doc.section("schedule");
        let server: Option<ServerConfig> = doc.section("server");
        let templates: Option<TemplatesConfig> = doc.section("templates");
        doc.report_unknown_sections();
        if let Some(inquiries) = &inquiries {
            doc.check_refresh_window(inquiries);
        }
        if let Some(links) = &links {
            doc.check_redirect_has_public_url(links);
        }

        let credentials = env.var("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let secrets = Secrets { env, credentials };
        let api_key = secrets.read(PERSONA_API_KEY, &mut doc.problems);
        let smtp_password = secrets.read(SMTP_PASSWORD, &mut doc.problems);
        let webhook_secret = secrets.read(WEBHOOK_SECRET, &mut doc.problems);
        let database_password = secrets.read(DATABASE_PASSWORD, &mut doc.problems);

        let mut problems = doc.problems;
        // File order first; values from the environment after.
        problems.sort_by_key(|p| match p.origin {
            Some(Origin::Line(line)) => line,
            _ => usize::MAX,
        });
        let complete = (
            top, database, persona, links, inquiries, reminders, sync, provision, mail, schedule,
            server, templates,
        );
        let (
            Some(top),
            Some(mut database),
            Some(mut persona),
            Some(links),
            Some(inquiries),
            Some(reminders),
            Some(sync),
            Some(provision),
            Some(mut mail),
            Some(schedule),
            Some(mut server),
            Some(mut templates),
        ) = complete
        else {
            return Err(ConfigError {
                file: Some(path.to_owned()),
                problems,
            });
        };
        if !problems.is_empty() {
            return Err(ConfigError {
                file: Some(path.to_owned()),
                problems,
            });
        }
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        if let Location::Sqlite(file) = &mut database.location {
            *file = base.join(&*file);
        }
        database.password = database_password.map(SecretText::new);
        mail.file_dir = base.join(&mail.file_dir);
        templates.dir = base.join(&templates.dir);
        persona.api_key = api_key.map(ApiKey::new);
        mail.smtp_password = smtp_password.map(SecretText::new);
        server.webhook_secret = webhook_secret.map(SecretText::new);
        Ok(Config {
            source: path.to_owned(),
            log_format: top.log_format,
            database,
            persona,
            links,
            inquiries,
            reminders,
            sync,
            provision,
            mail,
            schedule,
            server,
            templates,
        })
    }

    /// The effective configuration with secrets shown only as set/unset, for `check`.
    pub fn redacted_summary(&self) -> Vec<(String, String)> {
        let set = |b: bool| if b { "set" } else { "not set" }.to_owned();
        vec![
            ("database".into(), self.database.location.to_string()),
            (
                "database.password".into(),
                set(self.database.password.is_some()),
            ),
            ("persona.api_base".into(), self.persona.api_base.to_string()),
            (
                "persona.api_version".into(),
                self.persona.api_version.clone(),
            ),
            (
                "persona.api key".into(),
                set(self.persona.api_key.is_some()),
            ),
            (
                "persona.inquiry_template_id".into(),
                self.persona.inquiry_template_id.to_string(),
            ),
            ("links.kind".into(), self.links.kind.to_string()),
            (
                "links.public_url".into(),
                self.links
                    .public_url
                    .as_ref()
                    .map_or_else(|| "not set".into(), Url::to_string),
            ),
            ("reminders.after".into(), self.reminders.describe()),
            (
                "sync".into(),
                format!(
                    "overlap {}, full every {}",
                    humantime::format_duration(self.sync.overlap),
                    humantime::format_duration(self.sync.full_every)
                ),
            ),
            (
                "mail.transport".into(),
                match self.mail.transport {
                    TransportKind::Smtp => format!("smtp {}", redact_url(&self.mail.smtp_url)),
                    TransportKind::File => format!("file {}", self.mail.file_dir.display()),
                },
            ),
            (
                "mail.smtp password".into(),
                set(self.mail.smtp_password.is_some()),
            ),
            ("server.listen".into(), self.server.listen.to_string()),
            (
                "server.webhook secret".into(),
                set(self.server.webhook_secret.is_some()),
            ),
            (
                "templates.dir".into(),
                self.templates.dir.display().to_string(),
            ),
        ]
    }
}

/// An SMTP URL without any password that may have been written into it.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => raw.to_owned(),
    }
}

/// The keys of one section (`""` for the top level), for callers that list them (docs, tests).
pub fn known_keys(section: &str) -> std::collections::BTreeSet<&'static str> {
    let keys = match section {
        "" => keys_of::<TopLevel>(),
        "database" => keys_of::<DatabaseConfig>(),
        "persona" => keys_of::<PersonaConfig>(),
        "links" => keys_of::<LinksConfig>(),
        "inquiries" => keys_of::<InquiriesConfig>(),
        "reminders" => keys_of::<RemindersConfig>(),
        "sync" => keys_of::<SyncConfig>(),
        "provision" => keys_of::<ProvisionConfig>(),
        "mail" => keys_of::<MailConfig>(),
        "schedule" => keys_of::<ScheduleConfig>(),
        "server" => keys_of::<ServerConfig>(),
        "templates" => keys_of::<TemplatesConfig>(),
        _ => &[],
    };
    keys.iter().copied().collect()
}

/// The sections `Config::parse_with` reads, for suggestions.
const SECTION_NAMES: [&str; 11] = [
    "database",
    "persona",
    "links",
    "inquiries",
    "reminders",
    "sync",
    "provision",
    "mail",
    "schedule",
    "server",
    "templates",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<String, String>);

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn vars(&self) -> Vec<(String, String)> {
            self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
    }

    fn shipped() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap()
    }

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = FakeEnv(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Config::parse_with(text, Path::new("/etc/im/config.toml"), &env)
    }

    #[test]
    fn the_shipped_config_is_valid_and_names_every_key() {
        let c = parse(&shipped(), &[]).unwrap();
        assert_eq!(c.links.kind, LinkKind::Session);
        assert_eq!(
            c.database.location,
            Location::Sqlite("/etc/im/inquiry-mailer.db".into())
        );
        let text = shipped();
        for section in std::iter::once("").chain(SECTION_NAMES) {
            for key in known_keys(section) {
                assert!(
                    text.lines().any(|l| l
                        .trim_start()
                        .trim_start_matches('#')
                        .trim_start()
                        .starts_with(&format!("{key} "))),
                    "config.toml does not mention [{section}] {key}"
                );
            }
        }
    }

    #[test]
    fn redirect_links_need_a_plain_public_url() {
        let redirect = shipped().replace("kind = \"session\"", "kind = \"redirect\"");
        let e = parse(&redirect, &[]).unwrap_err().to_string();
        assert!(
            e.contains("[links] public_url is required with kind = \"redirect\""),
            "{e}"
        );
        let with_query = redirect.replace(
            "# public_url = \"https://verify.example.com\"",
            "public_url = \"https://verify.example.com/?x=1\"",
        );
        let e = parse(&with_query, &[]).unwrap_err().to_string();
        assert!(
            e.contains("must be a plain base URL, without ? or #"),
            "{e}"
        );
        let good = redirect.replace(
            "# public_url = \"https://verify.example.com\"",
            "public_url = \"https://verify.example.com\"",
        );
        let c = parse(&good, &[]).unwrap();
        assert_eq!(c.links.kind, LinkKind::Redirect);
        assert_eq!(c.links.redirect_persona_calls_per_hour.get(), 60);
        assert_eq!(c.links.redirect_requests_per_minute.get(), 60);
    }

    #[test]
    fn sync_settings_default_and_are_validated_with_their_place() {
        let c = parse(&shipped(), &[]).unwrap();
        assert_eq!(c.sync.overlap, Duration::from_secs(120));
        assert_eq!(c.sync.full_every, Duration::from_secs(24 * 3600));
        let without = shipped()
            .replace("overlap = \"2m\"", "")
            .replace("full_every = \"24h\"", "");
        assert_eq!(parse(&without, &[]).unwrap().sync, c.sync);

        let text = shipped()
            .replace("overlap = \"2m\"", "overlap = \"0s\"")
            .replace("full_every = \"24h\"", "full_every = \"5m\"");
        let e = parse(&text, &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("[sync] overlap = \"0s\" must be longer than zero (line"),
            "{s}"
        );
        assert!(
            s.contains("[sync] full_every = \"5m\" must be at least 10m: a full reconciliation lists every live inquiry"),
            "{s}"
        );
        assert_eq!(e.problems.len(), 2, "{s}");

        let typo = shipped().replace("full_every", "full_evry");
        let e = parse(&typo, &[]).unwrap_err().to_string();
        assert!(e.contains("[sync] full_evry is not a known key"), "{e}");
        let env = parse(&shipped(), &[("INQUIRY_MAILER__SYNC__FULL_EVERY", "1h")]).unwrap();
        assert_eq!(env.sync.full_every, Duration::from_secs(3600));
    }

    #[test]
    fn misspelt_key_suggests_the_closest() {
        let text = shipped().replace("max_resumes", "max_resume");
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            e.contains("[inquiries] max_resume is not a known key (did you mean \"max_resumes\"?)"),
            "{e}"
        );
    }

    #[test]
    fn a_postgres_url_takes_its_password_from_the_secret_and_refuses_one_of_its_own() {
        let text = shipped().replace(
            "url = \"sqlite://inquiry-mailer.db\"",
            "url = \"postgres://app@db.internal:5432/app\"",
        );
        let c = parse(&text, &[("DATABASE_PASSWORD", "pg-secret")]).unwrap();
        assert_eq!(
            c.database.location.to_string(),
            "postgres://app@db.internal:5432/app"
        );
        assert_eq!(c.database.password.as_ref().unwrap().expose(), "pg-secret");
        let summary = format!("{:?}", c.redacted_summary());
        assert!(
            summary.contains("(\"database.password\", \"set\")"),
            "{summary}"
        );
        assert!(!summary.contains("pg-secret"), "{summary}");
        assert!(!format!("{c:?}").contains("pg-secret"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("database-password"), "from-file\n").unwrap();
        let c = parse(
            &text,
            &[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.database.password.as_ref().unwrap().expose(), "from-file");

        let leaky = shipped().replace(
            "url = \"sqlite://inquiry-mailer.db\"",
            "url = \"postgres://app:hunter2@db.internal:5432/app\"",
        );
        let e = parse(&leaky, &[]).unwrap_err().to_string();
        assert!(e.contains("[database] url"), "{e}");
        assert!(e.contains("must not hold a password"), "{e}");
        assert!(e.contains("DATABASE_PASSWORD"), "{e}");
        assert!(
            !e.contains("hunter2"),
            "the refusal must not print the password: {e}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = shipped()
            .replace("kind = \"session\"", "kind = \"sesion\"")
            .replace("timeout = \"10s\"", "timeout = \"ten seconds\"");
        let e = parse(&text, &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("[links] kind = \"sesion\" is not one of session, one-time, static"),
            "{s}"
        );
        assert!(
            s.contains("[persona] timeout = \"ten seconds\" is not a duration"),
            "{s}"
        );
        assert_eq!(e.problems.len(), 2);
    }

    #[test]
    fn env_overrides_and_secrets_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("persona-webhook-secret"), "wbhsec_file\n").unwrap();
        let c = parse(
            &shipped(),
            &[
                ("INQUIRY_MAILER__LINKS__KIND", "static"),
                ("INQUIRY_MAILER__PERSONA__REQUESTS_PER_MINUTE", "60"),
                ("PERSONA_API_KEY", "key-from-env"),
                ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(c.links.kind, LinkKind::Static);
        assert_eq!(c.persona.requests_per_minute.get(), 60);
        assert_eq!(c.persona.api_key.unwrap().expose(), "key-from-env");
        assert_eq!(c.server.webhook_secret.unwrap().expose(), "wbhsec_file");
    }

    #[test]
    fn bad_cron_is_refused() {
        let text = shipped().replace("refresh = \"0 */15 * * * *\"", "refresh = \"*/15 * * * *\"");
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("[schedule] refresh"), "{e}");
    }

    const REQUIRED_ONLY: &str = "[persona]\ninquiry_template_id = \"itmpl_abc\"\nenvironment_id = \"env_abc\"\n[mail]\nfrom = \"V <v@example.com>\"\n";

    #[test]
    fn every_default_is_valid_and_only_the_required_keys_have_none() {
        let c = parse(REQUIRED_ONLY, &[]).unwrap();
        assert_eq!(c.persona.requests_per_minute.get(), 240);
        assert_eq!(c.inquiries.expires_after, Duration::from_secs(7 * 86_400));
        assert_eq!(c.server.max_body_bytes, 262_144);
        assert_eq!(c.templates.dir, Path::new("/etc/im/templates"));
        let e = parse("", &[]).unwrap_err();
        let shown: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            [
                "[persona] environment_id is required but missing",
                "[persona] inquiry_template_id is required but missing",
                "[mail] from is required but missing",
            ]
        );
    }

    #[test]
    fn problems_in_one_section_are_all_found_with_their_lines() {
        let text = format!(
            "{REQUIRED_ONLY}[inquiries]\nmax_resumes = \"five\"\nexpires_after = \"soon\"\nmax_agee = \"30d\"\n"
        );
        let e = parse(&text, &[]).unwrap_err();
        let shown: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert_eq!(
            shown[0],
            "[inquiries] max_resumes = \"five\" must be a whole number (line 7)"
        );
        assert!(
            shown[1].starts_with("[inquiries] expires_after = \"soon\" is not a duration"),
            "{shown:?}"
        );
        assert!(shown[1].ends_with("(line 8)"), "{shown:?}");
        assert_eq!(
            shown[2],
            "[inquiries] max_agee is not a known key (did you mean \"max_age\"?) (line 9)"
        );
    }

    #[test]
    fn a_bad_override_names_its_variable_and_unknown_sections_are_named() {
        let text = format!("{REQUIRED_ONLY}[provison]\nbatch_size = 5\n");
        let e = parse(&text, &[("INQUIRY_MAILER__PROVISION__BATCH_SIZE", "0")]).unwrap_err();
        let shown: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            [
                "[provison] is not a known section (did you mean \"provision\"?) (line 6)",
                "[provision] batch_size = 0 must be between 1 and 10000 (from INQUIRY_MAILER__PROVISION__BATCH_SIZE)",
            ]
        );
    }

    #[test]
    fn a_refresh_window_as_long_as_the_lifetime_is_refused() {
        let text = format!(
            "{REQUIRED_ONLY}[inquiries]\nexpires_after = \"1d\"\nrefresh_before_expiry = \"2d\"\n"
        );
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("[inquiries] refresh_before_expiry = \"2days\" must be shorter than expires_after (\"1day\")"), "{e}");
    }
}
