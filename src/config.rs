//! Typed configuration: config.toml, then `INQUIRY_MAILER__SECTION__KEY` environment overrides,
//! then secrets from environment variables or `$CREDENTIALS_DIRECTORY`. Validated once, here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::domain::{ApiKey, EnvironmentId, LinkKind, SecretText, TemplateId};

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
pub const WEBHOOK_SECRET: SecretSource = SecretSource {
    env: "PERSONA_WEBHOOK_SECRET",
    credential: "persona-webhook-secret",
};

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are relative to its folder.
    pub source: PathBuf,
    pub log_format: LogFormat,
    pub database: DatabaseConfig,
    pub persona: PersonaConfig,
    pub links: LinksConfig,
    pub inquiries: InquiriesConfig,
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

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub read_connections: u32,
}

#[derive(Debug, Clone)]
pub struct PersonaConfig {
    pub api_base: Url,
    pub api_version: String,
    pub api_key: Option<ApiKey>,
    pub inquiry_template_id: TemplateId,
    pub environment_id: EnvironmentId,
    pub requests_per_minute: NonZeroU32,
    pub timeout: Duration,
    pub max_retries: u32,
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

#[derive(Debug, Clone)]
pub struct LinksConfig {
    pub kind: LinkKind,
    pub hosted_flow_url: Url,
    pub redirect_uri: Option<Url>,
    pub one_time_link_expires_after: Duration,
    /// `public_url`: where users reach the listener (kind = "redirect").
    pub public_url: Option<Url>,
    /// `redirect_requests_per_minute`: requests to the redirect endpoint per client address.
    pub redirect_requests_per_minute: NonZeroU32,
    /// `redirect_persona_calls_per_hour`: Persona calls that one user's clicks may cause.
    pub redirect_persona_calls_per_hour: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct InquiriesConfig {
    pub expires_after: Duration,
    pub refresh_before_expiry: Duration,
    pub max_age: Duration,
    pub recreate_on_new_template_version: bool,
    pub max_resumes: u32,
    pub min_resend_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    pub batch_size: u32,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Smtp,
    File,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: TransportKind,
    pub smtp_url: String,
    pub smtp_password: Option<SecretText>,
    pub from: String,
    pub reply_to: Option<String>,
    pub file_dir: PathBuf,
    pub messages_per_minute: NonZeroU32,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub app_name: String,
    pub support_email: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub provision: String,
    pub refresh: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub webhook_secret: Option<SecretText>,
    pub webhook_tolerance: Duration,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TemplatesConfig {
    pub dir: PathBuf,
}

/// One thing wrong with the configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub section: String,
    pub key: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.section.is_empty() {
            write!(f, "{} {}", self.key, self.why)
        } else {
            write!(f, "[{}] {} {}", self.section, self.key, self.why)
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
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            ConfigError::file(path, format!("is not valid TOML{at}: {}", e.message()))
        })?;
        let mut problems = Vec::new();
        apply_env_overrides(&mut table, env, &mut problems);
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let credentials = env.var("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let secrets = Secrets { env, credentials };
        let config = build(&table, &base, path, &secrets, &mut problems);
        if problems.is_empty() {
            Ok(config.expect("built without problems"))
        } else {
            Err(ConfigError {
                file: Some(path.to_owned()),
                problems,
            })
        }
    }

    /// The effective configuration with secrets shown only as set/unset, for `check`.
    pub fn redacted_summary(&self) -> Vec<(String, String)> {
        let set = |b: bool| if b { "set" } else { "not set" }.to_owned();
        vec![
            ("database".into(), self.database.path.display().to_string()),
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

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Every section and key the file may hold; the single source for unknown-key suggestions.
const SCHEMA: &[(&str, &[&str])] = &[
    ("", &["log_format"]),
    ("database", &["url", "busy_timeout", "read_connections"]),
    (
        "persona",
        &[
            "api_base",
            "api_version",
            "inquiry_template_id",
            "environment_id",
            "requests_per_minute",
            "timeout",
            "max_retries",
            "retry_base_delay",
        ],
    ),
    (
        "links",
        &[
            "kind",
            "hosted_flow_url",
            "redirect_uri",
            "one_time_link_expires_after",
            "public_url",
            "redirect_requests_per_minute",
            "redirect_persona_calls_per_hour",
        ],
    ),
    (
        "inquiries",
        &[
            "expires_after",
            "refresh_before_expiry",
            "max_age",
            "recreate_on_new_template_version",
            "max_resumes",
            "min_resend_interval",
        ],
    ),
    ("provision", &["batch_size", "concurrency"]),
    (
        "mail",
        &[
            "transport",
            "smtp_url",
            "from",
            "reply_to",
            "file_dir",
            "messages_per_minute",
            "timeout",
            "max_attempts",
            "app_name",
            "support_email",
        ],
    ),
    ("schedule", &["provision", "refresh"]),
    (
        "server",
        &[
            "listen",
            "webhook_tolerance",
            "max_body_bytes",
            "shutdown_timeout",
        ],
    ),
    ("templates", &["dir"]),
];

fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match closest(word, candidates.iter().copied()) {
        Some(c) => format!(" (did you mean {c:?}?)"),
        None => String::new(),
    }
}

fn check_unknown_keys(table: &toml::Table, problems: &mut Vec<Problem>) {
    let sections: Vec<&str> = SCHEMA
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| !s.is_empty())
        .collect();
    let top_keys = SCHEMA[0].1;
    for (name, value) in table {
        match (value, SCHEMA.iter().find(|(s, _)| s == name)) {
            (toml::Value::Table(t), Some((section, keys))) => {
                for key in t.keys() {
                    if !keys.contains(&key.as_str()) {
                        problems.push(Problem {
                            section: (*section).into(),
                            key: key.clone(),
                            why: format!("is not a known key{}", did_you_mean(key, keys)),
                        });
                    }
                }
            }
            (toml::Value::Table(_), None) => problems.push(Problem {
                section: String::new(),
                key: format!("[{name}]"),
                why: format!("is not a known section{}", did_you_mean(name, &sections)),
            }),
            (_, Some(_)) => problems.push(Problem {
                section: String::new(),
                key: name.clone(),
                why: "must be a [section] table".into(),
            }),
            (_, None) if top_keys.contains(&name.as_str()) => {}
            (_, None) => {
                let mut all: Vec<&str> = top_keys.to_vec();
                all.extend(&sections);
                problems.push(Problem {
                    section: String::new(),
                    key: name.clone(),
                    why: format!("is not a known key{}", did_you_mean(name, &all)),
                });
            }
        }
    }
}

fn apply_env_overrides(
    table: &mut toml::Table,
    env: &dyn Environment,
    problems: &mut Vec<Problem>,
) {
    let mut vars = env.vars();
    vars.sort();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(OVERRIDE_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = parse_env_value(&raw);
        match parts.as_slice() {
            [key] => {
                table.insert(key.clone(), value);
            }
            [section, key] => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => {
                        t.insert(key.clone(), value);
                    }
                    _ => problems.push(Problem {
                        section: String::new(),
                        key: name.clone(),
                        why: format!("overrides [{section}], which is not a section"),
                    }),
                }
            }
            _ => problems.push(Problem {
                section: String::new(),
                key: name.clone(),
                why: format!("is not of the form {OVERRIDE_PREFIX}SECTION__KEY"),
            }),
        }
    }
}

/// An override is read as a TOML value when it is one (`30`, `true`, `"x"`), else as a string,
/// so `INQUIRY_MAILER__LINKS__KIND=static` needs no quotes.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

struct Secrets<'a> {
    env: &'a dyn Environment,
    credentials: Option<PathBuf>,
}

impl Secrets<'_> {
    fn read(&self, source: SecretSource, problems: &mut Vec<Problem>) -> Option<String> {
        if let Some(v) = self.env.var(source.env).filter(|v| !v.is_empty()) {
            return Some(v);
        }
        let dir = self.credentials.as_ref()?;
        let file = dir.join(source.credential);
        match std::fs::read_to_string(&file) {
            Ok(v) => {
                let v = v.trim_end_matches(['\n', '\r']).to_owned();
                (!v.is_empty()).then_some(v)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                problems.push(Problem {
                    section: "credentials".into(),
                    key: source.credential.into(),
                    why: format!("cannot be read from {}: {e}", file.display()),
                });
                None
            }
        }
    }
}

/// Reads typed values out of one section, recording every problem with its place.
struct Section<'a> {
    name: &'static str,
    table: Option<&'a toml::Table>,
}

impl<'a> Section<'a> {
    fn new(root: &'a toml::Table, name: &'static str) -> Self {
        let table = if name.is_empty() {
            Some(root)
        } else {
            root.get(name).and_then(toml::Value::as_table)
        };
        Self { name, table }
    }

    fn problem(&self, key: &str, why: String, problems: &mut Vec<Problem>) {
        problems.push(Problem {
            section: self.name.into(),
            key: key.into(),
            why,
        });
    }

    fn raw(&self, key: &str) -> Option<&'a toml::Value> {
        self.table.and_then(|t| t.get(key))
    }

    fn string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        match self.raw(key)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    key,
                    format!("= {other} must be a string (in quotes)"),
                    problems,
                );
                None
            }
        }
    }

    fn string_or(&self, key: &str, default: &str, problems: &mut Vec<Problem>) -> String {
        self.string(key, problems)
            .unwrap_or_else(|| default.to_owned())
    }

    fn required_string(&self, key: &str, problems: &mut Vec<Problem>) -> Option<String> {
        if self.raw(key).is_none() {
            self.problem(key, "is required but missing".into(), problems);
            return None;
        }
        self.string(key, problems)
    }

    fn parsed<T>(
        &self,
        key: &str,
        default: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let raw = match default {
            Some(d) => self.string_or(key, d, problems),
            None => self.required_string(key, problems)?,
        };
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(why) => {
                self.problem(key, format!("= {raw:?} {why}"), problems);
                None
            }
        }
    }

    fn duration(&self, key: &str, default: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
        self.parsed(key, Some(default), parse_duration, problems)
    }

    fn integer(
        &self,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
        problems: &mut Vec<Problem>,
    ) -> Option<i64> {
        let v = match self.raw(key) {
            None => default,
            Some(toml::Value::Integer(i)) => *i,
            Some(other) => {
                self.problem(key, format!("= {other} must be a whole number"), problems);
                return None;
            }
        };
        if v < min || v > max {
            self.problem(
                key,
                format!("= {v} must be between {min} and {max}"),
                problems,
            );
            return None;
        }
        Some(v)
    }

    fn boolean(&self, key: &str, default: bool, problems: &mut Vec<Problem>) -> Option<bool> {
        match self.raw(key) {
            None => Some(default),
            Some(toml::Value::Boolean(b)) => Some(*b),
            Some(other) => {
                self.problem(key, format!("= {other} must be true or false"), problems);
                None
            }
        }
    }
}

/// `90s`, `15m`, `36h`, `7d`, `1h 30m`: humantime's forms. Zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("is not a duration like \"90s\", \"15m\", \"36h\" or \"7d\" ({e})"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// Validates a six-field cron expression (with seconds), as tokio-cron-scheduler reads it.
pub fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(s)
        .map_err(|e| {
            format!("is not a cron expression with a seconds field, like \"0 */15 * * * *\" ({e})")
        })
}

fn parse_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(u)
}

/// `[links] public_url`: an http(s) base with no query or fragment (links append a path to it).
fn parse_public_url(s: &str) -> Result<Url, String> {
    let u = parse_url(s)?;
    if u.query().is_some() || u.fragment().is_some() || u.cannot_be_a_base() {
        return Err("must be a plain base URL, without ? or #".into());
    }
    Ok(u)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn parse_database_url(s: &str) -> Result<PathBuf, String> {
    let rest = s
        .strip_prefix("sqlite://")
        .or_else(|| s.strip_prefix("sqlite:"))
        .ok_or("must start with sqlite:// (e.g. \"sqlite://inquiry-mailer.db\")")?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err("must name a database file".into());
    }
    Ok(PathBuf::from(path))
}

fn parse_mailbox_text(s: &str) -> Result<String, String> {
    s.parse::<lettre::message::Mailbox>()
        .map(|_| s.to_owned())
        .map_err(|e| format!("is not an address like \"Verification <verify@example.com>\" ({e})"))
}

fn build(
    root: &toml::Table,
    base: &Path,
    _path: &Path,
    secrets: &Secrets<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    check_unknown_keys(root, problems);

    let top = Section::new(root, "");
    let log_format = top.parsed(
        "log_format",
        Some("text"),
        |s| match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("is not one of text, json".into()),
        },
        problems,
    );

    let db = Section::new(root, "database");
    let db_path = db
        .parsed(
            "url",
            Some("sqlite://inquiry-mailer.db"),
            parse_database_url,
            problems,
        )
        .map(|p| resolve(base, &p.to_string_lossy()));
    let busy_timeout = db.duration("busy_timeout", "5s", problems);
    let read_connections = db.integer("read_connections", 4, 1, 64, problems);

    let p = Section::new(root, "persona");
    let api_base = p.parsed(
        "api_base",
        Some("https://api.withpersona.com/api/v1"),
        parse_url,
        problems,
    );
    let api_version = p.parsed(
        "api_version",
        Some("2025-12-08"),
        |s| {
            let ok = s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
            if ok {
                Ok(s.to_owned())
            } else {
                Err("is not a Persona API version like \"2025-12-08\"".into())
            }
        },
        problems,
    );
    let template_id = p.parsed(
        "inquiry_template_id",
        None,
        |s| TemplateId::parse(s).map_err(|e| e.0.replace(&format!("{s:?} "), "")),
        problems,
    );
    let environment_id = p.parsed(
        "environment_id",
        None,
        |s| EnvironmentId::parse(s).map_err(|e| e.0.replace(&format!("{s:?} "), "")),
        problems,
    );
    let rpm = p.integer("requests_per_minute", 240, 1, 100_000, problems);
    let timeout = p.duration("timeout", "10s", problems);
    let max_retries = p.integer("max_retries", 5, 0, 20, problems);
    let retry_base_delay = p.duration("retry_base_delay", "1s", problems);
    let api_key = secrets.read(PERSONA_API_KEY, problems).map(ApiKey::new);

    let l = Section::new(root, "links");
    let kind = l.parsed(
        "kind",
        Some("session"),
        |s| {
            LinkKind::parse(s)
                .map_err(|_| "is not one of session, one-time, static, redirect".into())
        },
        problems,
    );
    let hosted_flow_url = l.parsed(
        "hosted_flow_url",
        Some("https://inquiry.withpersona.com/verify"),
        parse_url,
        problems,
    );
    let redirect_uri = match l.raw("redirect_uri") {
        None => Some(None),
        Some(_) => l
            .parsed("redirect_uri", None, parse_url, problems)
            .map(Some),
    };
    let otl_expiry = l.duration("one_time_link_expires_after", "7d", problems);
    let public_url = match l.raw("public_url") {
        None => Some(None),
        Some(_) => l
            .parsed("public_url", None, parse_public_url, problems)
            .map(Some),
    };
    if kind == Some(LinkKind::Redirect) && public_url == Some(None) {
        l.problem(
            "public_url",
            "is required with kind = \"redirect\": the address users reach this daemon's listener at (e.g. \"https://verify.example.com\")".into(),
            problems,
        );
    }
    let redirect_rpm = l.integer("redirect_requests_per_minute", 60, 1, 1_000_000, problems);
    let redirect_calls = l.integer("redirect_persona_calls_per_hour", 60, 1, 100_000, problems);

    let i = Section::new(root, "inquiries");
    let expires_after = i.duration("expires_after", "7d", problems);
    let refresh_before_expiry = i.duration("refresh_before_expiry", "24h", problems);
    let max_age = i.duration("max_age", "30d", problems);
    let recreate = i.boolean("recreate_on_new_template_version", true, problems);
    let max_resumes = i.integer("max_resumes", 5, 0, 24, problems);
    let min_resend = i.duration("min_resend_interval", "24h", problems);
    if let (Some(e), Some(r)) = (expires_after, refresh_before_expiry)
        && r >= e
    {
        i.problem(
            "refresh_before_expiry",
            format!(
                "= {:?} must be shorter than expires_after ({:?}), or every inquiry is due at once",
                humantime::format_duration(r).to_string(),
                humantime::format_duration(e).to_string()
            ),
            problems,
        );
    }

    let pr = Section::new(root, "provision");
    let batch_size = pr.integer("batch_size", 100, 1, 10_000, problems);
    let concurrency = pr.integer("concurrency", 16, 1, 256, problems);

    let m = Section::new(root, "mail");
    let transport = m.parsed(
        "transport",
        Some("smtp"),
        |s| match s {
            "smtp" => Ok(TransportKind::Smtp),
            "file" => Ok(TransportKind::File),
            _ => Err("is not one of smtp, file".into()),
        },
        problems,
    );
    let smtp_url = m.parsed(
        "smtp_url",
        Some("smtp://127.0.0.1:25"),
        |s| {
            let u = Url::parse(s).map_err(|e| format!("is not a URL ({e})"))?;
            if !matches!(u.scheme(), "smtp" | "smtps") {
                return Err("must start with smtp:// or smtps://".into());
            }
            if u.password().is_some() {
                return Err(format!(
                    "must not contain a password: set {} or credential {}",
                    SMTP_PASSWORD.env, SMTP_PASSWORD.credential
                ));
            }
            Ok(s.to_owned())
        },
        problems,
    );
    let from = m.parsed("from", None, parse_mailbox_text, problems);
    let reply_to = match m.raw("reply_to") {
        None => Some(None),
        Some(_) => m
            .parsed("reply_to", None, parse_mailbox_text, problems)
            .map(Some),
    };
    let file_dir = m.string_or("file_dir", "outbox", problems);
    let mpm = m.integer("messages_per_minute", 600, 1, 1_000_000, problems);
    let mail_timeout = m.duration("timeout", "30s", problems);
    let max_attempts = m.integer("max_attempts", 10, 1, 1000, problems);
    let app_name = m.string_or("app_name", "Example App", problems);
    let support_email = match m.raw("support_email") {
        None => Some(None),
        Some(_) => m
            .parsed(
                "support_email",
                None,
                |s| {
                    crate::domain::Email::parse(s)
                        .map(|e| e.to_string())
                        .map_err(|e| e.0)
                },
                problems,
            )
            .map(Some),
    };
    let smtp_password = secrets.read(SMTP_PASSWORD, problems).map(SecretText::new);

    let s = Section::new(root, "schedule");
    let provision_cron = s.parsed(
        "provision",
        Some("0 * * * * *"),
        |v| parse_cron(v).map(|_| v.to_owned()),
        problems,
    );
    let refresh_cron = s.parsed(
        "refresh",
        Some("0 */15 * * * *"),
        |v| parse_cron(v).map(|_| v.to_owned()),
        problems,
    );

    let sv = Section::new(root, "server");
    let listen = sv.parsed(
        "listen",
        Some("127.0.0.1:8080"),
        |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "is not an address like \"127.0.0.1:8080\"".into())
        },
        problems,
    );
    let tolerance = sv.duration("webhook_tolerance", "5m", problems);
    let max_body = sv.integer(
        "max_body_bytes",
        256 * 1024,
        1024,
        16 * 1024 * 1024,
        problems,
    );
    let shutdown_timeout = sv.duration("shutdown_timeout", "30s", problems);
    let webhook_secret = secrets.read(WEBHOOK_SECRET, problems).map(SecretText::new);

    let t = Section::new(root, "templates");
    let templates_dir = t.string_or("dir", "templates", problems);

    if !problems.is_empty() {
        return None;
    }
    Some(Config {
        source: _path.to_owned(),
        log_format: log_format?,
        database: DatabaseConfig {
            path: db_path?,
            busy_timeout: busy_timeout?,
            read_connections: read_connections? as u32,
        },
        persona: PersonaConfig {
            api_base: api_base?,
            api_version: api_version?,
            api_key,
            inquiry_template_id: template_id?,
            environment_id: environment_id?,
            requests_per_minute: NonZeroU32::new(rpm? as u32)?,
            timeout: timeout?,
            max_retries: max_retries? as u32,
            retry_base_delay: retry_base_delay?,
        },
        links: LinksConfig {
            kind: kind?,
            hosted_flow_url: hosted_flow_url?,
            redirect_uri: redirect_uri?,
            one_time_link_expires_after: otl_expiry?,
            public_url: public_url?,
            redirect_requests_per_minute: NonZeroU32::new(redirect_rpm? as u32)?,
            redirect_persona_calls_per_hour: NonZeroU32::new(redirect_calls? as u32)?,
        },
        inquiries: InquiriesConfig {
            expires_after: expires_after?,
            refresh_before_expiry: refresh_before_expiry?,
            max_age: max_age?,
            recreate_on_new_template_version: recreate?,
            max_resumes: max_resumes? as u32,
            min_resend_interval: min_resend?,
        },
        provision: ProvisionConfig {
            batch_size: batch_size? as u32,
            concurrency: concurrency? as usize,
        },
        mail: MailConfig {
            transport: transport?,
            smtp_url: smtp_url?,
            smtp_password,
            from: from?,
            reply_to: reply_to?,
            file_dir: resolve(base, &file_dir),
            messages_per_minute: NonZeroU32::new(mpm? as u32)?,
            timeout: mail_timeout?,
            max_attempts: max_attempts? as u32,
            app_name,
            support_email: support_email?,
        },
        schedule: ScheduleConfig {
            provision: provision_cron?,
            refresh: refresh_cron?,
        },
        server: ServerConfig {
            listen: listen?,
            webhook_secret,
            webhook_tolerance: tolerance?,
            max_body_bytes: max_body? as usize,
            shutdown_timeout: shutdown_timeout?,
        },
        templates: TemplatesConfig {
            dir: resolve(base, &templates_dir),
        },
    })
}

/// The keys of one section, for callers that list them (docs, tests).
pub fn known_keys(section: &str) -> BTreeSet<&'static str> {
    SCHEMA
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, keys)| keys.iter().copied().collect())
        .unwrap_or_default()
}

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
        assert_eq!(c.database.path, Path::new("/etc/im/inquiry-mailer.db"));
        let text = shipped();
        for (section, keys) in SCHEMA {
            for key in *keys {
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
    fn misspelt_key_suggests_the_closest() {
        let text = shipped().replace("max_resumes", "max_resume");
        let e = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            e.contains("[inquiries] max_resume is not a known key (did you mean \"max_resumes\"?)"),
            "{e}"
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
}
