//! The readers `deserialize_with` names: one per kind of value, each saying what is wrong as
//! `= VALUE why`, which the loader puts after `[section] key`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use url::Url;

use super::{LogFormat, SMTP_PASSWORD, TransportKind};
use crate::domain::{Email, EnvironmentId, LinkKind, TemplateId};
use crate::store::{Location, PostgresUrl};

/// A value written as a string and parsed from it.
pub(super) trait FromConfigText: Sized {
    fn from_config_text(s: &str) -> Result<Self, String>;
}

impl FromConfigText for Duration {
    fn from_config_text(s: &str) -> Result<Self, String> {
        parse_duration(s)
    }
}

impl FromConfigText for Url {
    fn from_config_text(s: &str) -> Result<Self, String> {
        let u = Url::parse(s).map_err(|e| format!("is not a URL ({e})"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        Ok(u)
    }
}

impl FromConfigText for LogFormat {
    fn from_config_text(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("is not one of text, json".into()),
        }
    }
}

impl FromConfigText for LinkKind {
    fn from_config_text(s: &str) -> Result<Self, String> {
        LinkKind::parse(s).map_err(|_| "is not one of session, one-time, static, redirect".into())
    }
}

impl FromConfigText for TransportKind {
    fn from_config_text(s: &str) -> Result<Self, String> {
        TransportKind::parse(s).map_err(|_| "is not one of smtp, file".into())
    }
}

impl FromConfigText for TemplateId {
    fn from_config_text(s: &str) -> Result<Self, String> {
        TemplateId::parse(s).map_err(|e| e.0.replace(&format!("{s:?} "), ""))
    }
}

impl FromConfigText for EnvironmentId {
    fn from_config_text(s: &str) -> Result<Self, String> {
        EnvironmentId::parse(s).map_err(|e| e.0.replace(&format!("{s:?} "), ""))
    }
}

impl FromConfigText for SocketAddr {
    fn from_config_text(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|_| "is not an address like \"127.0.0.1:8080\"".into())
    }
}

/// A string value, checked by `check`.
pub(super) fn checked<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => {
            check(&s).map_err(|why| D::Error::custom(format!("= {s:?} {why}")))
        }
        other => Err(D::Error::custom(format!(
            "= {other} must be a string (in quotes)"
        ))),
    }
}

pub(super) fn parsed<'de, D: Deserializer<'de>, T: FromConfigText>(d: D) -> Result<T, D::Error> {
    checked(d, T::from_config_text)
}

pub(super) fn optional<'de, D: Deserializer<'de>, T: FromConfigText>(
    d: D,
) -> Result<Option<T>, D::Error> {
    parsed(d).map(Some)
}

/// `[links] public_url`: an http(s) base with no query or fragment (links append a path to it).
pub(super) fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    checked(d, |s| {
        let u = Url::from_config_text(s)?;
        if u.query().is_some() || u.fragment().is_some() || u.cannot_be_a_base() {
            return Err("must be a plain base URL, without ? or #".into());
        }
        Ok(Some(u))
    })
}

pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| Ok(s.to_owned()))
}

pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    checked(d, |s| Ok(PathBuf::from(s)))
}

/// `[database] url`: `sqlite://FILE` or `postgres://USER@HOST:PORT/DB` (also `postgresql://`).
/// A PostgreSQL URL is echoed in a problem with any password in it masked.
pub(super) fn database_location<'de, D: Deserializer<'de>>(d: D) -> Result<Location, D::Error> {
    let value = toml::Value::deserialize(d)?;
    if let toml::Value::String(s) = &value
        && (s.starts_with("postgres://") || s.starts_with("postgresql://"))
    {
        return PostgresUrl::parse(s)
            .map(Location::Postgres)
            .map_err(|why| {
                let shown = match Url::parse(s) {
                    Ok(mut u) if u.password().is_some() => {
                        let _ = u.set_password(Some("***"));
                        u.to_string()
                    }
                    Ok(u) => u.to_string(),
                    Err(_) => "(not a URL)".to_owned(),
                };
                D::Error::custom(format!("= {shown:?} {why}"))
            });
    }
    let toml::Value::String(s) = value else {
        return Err(D::Error::custom(format!(
            "= {value} must be a string (in quotes)"
        )));
    };
    let sqlite = |s: &str| -> Result<Location, String> {
        let rest = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .ok_or(
                "must start with sqlite:// or postgres:// (e.g. \"sqlite://inquiry-mailer.db\")",
            )?;
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err("must name a database file".into());
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    };
    sqlite(&s).map_err(|why| D::Error::custom(format!("= {s:?} {why}")))
}

pub(super) fn api_version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| {
        let ok = s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok();
        if ok {
            Ok(s.to_owned())
        } else {
            Err("is not a Persona API version like \"2025-12-08\"".into())
        }
    })
}

pub(super) fn smtp_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| {
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
    })
}

fn parse_mailbox_text(s: &str) -> Result<String, String> {
    s.parse::<lettre::message::Mailbox>()
        .map(|_| s.to_owned())
        .map_err(|e| format!("is not an address like \"Verification <verify@example.com>\" ({e})"))
}

pub(super) fn mailbox<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, parse_mailbox_text)
}

pub(super) fn optional_mailbox<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    mailbox(d).map(Some)
}

pub(super) fn optional_email<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(d, |s| {
        Email::parse(s).map(|e| e.to_string()).map_err(|e| e.0)
    })
    .map(Some)
}

pub(super) fn cron<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s| parse_cron(s).map(|_| s.to_owned()))
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Boolean(b) => Ok(b),
        other => Err(D::Error::custom(format!("= {other} must be true or false"))),
    }
}

/// The integer types keys have.
pub(super) trait Whole: Sized {
    fn from_whole(i: i64) -> Option<Self>;
}

impl Whole for u32 {
    fn from_whole(i: i64) -> Option<Self> {
        u32::try_from(i).ok()
    }
}

impl Whole for usize {
    fn from_whole(i: i64) -> Option<Self> {
        usize::try_from(i).ok()
    }
}

impl Whole for NonZeroU32 {
    fn from_whole(i: i64) -> Option<Self> {
        u32::try_from(i).ok().and_then(NonZeroU32::new)
    }
}

/// A whole number from `MIN` to `MAX`.
pub(super) fn whole<'de, const MIN: i64, const MAX: i64, T: Whole, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(i) => (MIN..=MAX)
            .contains(&i)
            .then(|| T::from_whole(i))
            .flatten()
            .ok_or_else(|| D::Error::custom(format!("= {i} must be between {MIN} and {MAX}"))),
        other => Err(D::Error::custom(format!(
            "= {other} must be a whole number"
        ))),
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

/// `[sync] full_every`: a duration of at least [`super::MIN_FULL_EVERY`].
pub(super) fn full_every<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked(d, |s| {
        let d = parse_duration(s)?;
        if d < super::MIN_FULL_EVERY {
            return Err(format!(
                "must be at least {}: a full reconciliation lists every live inquiry, and more often is nearly every run",
                humantime::format_duration(super::MIN_FULL_EVERY)
            ));
        }
        Ok(d)
    })
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
