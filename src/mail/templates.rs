//! The mail templates: loaded from `[templates] dir` and its locale folders (`de/`, `pt-BR/`),
//! checked once at load, rendered per mail in the user's language. HTML parts are autoescaped
//! (`*.html.tera`); text parts and subjects are not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::MailKind;
use crate::domain::Locale;
use crate::links::MailLink;

/// The parts every mail kind has, in file-name order: `<kind>.<part>.tera`.
const PARTS: [&str; 3] = ["subject", "txt", "html"];

/// A template file that cannot be used, named so the operator can open it.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{}: missing", .0.display())]
    Missing(PathBuf),
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Errors that belong to the set rather than one file's syntax (a missing parent layout,
    /// an unknown variable found by the sample render).
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// What a template can use. Field names are the template variable names.
#[derive(Clone)]
pub struct MailContext {
    pub name_first: Option<String>,
    pub name_last: Option<String>,
    pub link: MailLink,
    pub link_expires_at: Option<DateTime<Utc>>,
    pub app_name: String,
    pub support_email: Option<String>,
    /// The user's language: picks the template folder and the date format.
    pub locale: Option<Locale>,
    /// The user has begun the flow (their inquiry is `pending`).
    pub started: bool,
}

impl fmt::Debug for MailContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // MailLink's Debug is already safe; the rest is spelled out so nothing new leaks by accident.
        f.debug_struct("MailContext")
            .field("link", &self.link)
            .field("link_expires_at", &self.link_expires_at)
            .field("app_name", &self.app_name)
            .field("locale", &self.locale)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// The variables the templates see, built from a [`MailContext`].
#[derive(Serialize)]
struct TemplateVars<'a> {
    app_name: &'a str,
    name_first: Option<&'a str>,
    name_last: Option<&'a str>,
    /// `name_first name_last`, either alone, or null.
    full_name: Option<String>,
    link: &'a str,
    /// "static" | "session" | "one-time".
    link_kind: &'static str,
    /// When the link stops working, written for the mail's language (default templates:
    /// "Sunday 29 November 2026 at 14:00 UTC"); null when it does not expire.
    link_expires_at: Option<String>,
    /// RFC 3339 form of the same instant, for templates that format it themselves.
    link_expires_at_rfc3339: Option<String>,
    support_email: Option<&'a str>,
    /// The user's BCP 47 locale (`de-AT`), or null.
    locale: Option<&'a str>,
    /// The user has begun the flow: a session link then lasts as long as the browser session.
    started: bool,
}

impl<'a> TemplateVars<'a> {
    fn from_context(ctx: &'a MailContext, dates: Option<&Locale>) -> Self {
        let name_first = non_blank(&ctx.name_first);
        let name_last = non_blank(&ctx.name_last);
        let full_name = match (name_first, name_last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(n), None) | (None, Some(n)) => Some(n.to_owned()),
            (None, None) => None,
        };
        Self {
            app_name: &ctx.app_name,
            name_first,
            name_last,
            full_name,
            link: ctx.link.expose(),
            link_kind: ctx.link.kind().as_str(),
            link_expires_at: ctx.link_expires_at.map(|t| local_time(t, dates)),
            link_expires_at_rfc3339: ctx.link_expires_at.map(crate::clock::format_ts),
            support_email: non_blank(&ctx.support_email),
            locale: ctx.locale.as_ref().map(Locale::as_str),
            started: ctx.started,
        }
    }
}

fn non_blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// "Sunday 29 November 2026 at 14:00 UTC".
pub fn human_time(t: DateTime<Utc>) -> String {
    t.format("%A %-d %B %Y at %H:%M UTC").to_string()
}

/// The instant for a mail in `locale`'s language: the weekday and the date as the locale
/// writes them (glibc's locale data through chrono: `de-AT` → "Sonntag, 29.11.2026, 14:00 UTC"),
/// or [`human_time`] for the default templates and locales chrono does not know.
pub fn local_time(t: DateTime<Utc>, locale: Option<&Locale>) -> String {
    match locale.and_then(chrono_locale) {
        Some(l) => t.format_localized("%A, %x, %H:%M UTC", l).to_string(),
        None => human_time(t),
    }
}

/// chrono's locale for a BCP 47 one: `de-AT` → `de_AT`; a bare language takes its home region
/// (`de` → `de_DE`) when chrono has it.
fn chrono_locale(locale: &Locale) -> Option<chrono::Locale> {
    let language = locale.language();
    let mut candidates = Vec::new();
    if let Some(region) = locale.region() {
        candidates.push(format!("{language}_{region}"));
    }
    candidates.push(format!("{language}_{}", language.to_uppercase()));
    candidates
        .iter()
        .find_map(|name| chrono::Locale::try_from(name.as_str()).ok())
}

/// One mail, ready to be put in a message. The bodies hold the link, so Debug shows only
/// the subject and sizes.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl fmt::Debug for RenderedMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedMail")
            .field("subject", &self.subject)
            .field("text_bytes", &self.text.len())
            .field("html_bytes", &self.html.len())
            .finish()
    }
}

/// The templates of one folder: the default folder, or a locale folder layered over it (its
/// files replace the default ones of the same name, so it may translate only some mails).
struct TemplateSet {
    dir: PathBuf,
    tera: tera::Tera,
    /// The folder's locale; `None` for the default folder.
    locale: Option<Locale>,
    /// The mail kinds this folder has its own files for (all of them for the default folder).
    kinds: BTreeSet<MailKind>,
}

/// The loaded, checked template set. Cheap to share behind an `Arc`; reload by loading anew.
pub struct Templates {
    default: TemplateSet,
    /// Locale folders by their canonical tag (`de`, `de-AT`).
    locales: BTreeMap<String, TemplateSet>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.default.dir)
            .field("locales", &self.locales.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Loads every `*.tera` file of `dir` (the mail parts plus any layout or partial they use)
    /// and of each locale folder in it (`dir/de/`, `dir/pt-BR/`), then renders each mail kind
    /// of each folder with sample data so a mistake shows now, not at the first send.
    pub fn load(dir: &Path) -> Result<Templates, TemplateError> {
        for kind in MailKind::ALL {
            for part in PARTS {
                let path = dir.join(file_name(kind, part));
                if !path.is_file() {
                    return Err(TemplateError::Missing(path));
                }
            }
        }
        let (base_sources, folders) = read_folder(dir)?;
        let default = TemplateSet {
            dir: dir.to_owned(),
            tera: build_tera(dir, base_sources.clone())?,
            locale: None,
            kinds: MailKind::ALL.into_iter().collect(),
        };
        default.check_samples()?;
        let mut locales = BTreeMap::new();
        for folder in folders {
            let set = load_locale_folder(&folder, &base_sources)?;
            let tag = set
                .locale
                .as_ref()
                .expect("locale folder")
                .as_str()
                .to_owned();
            if let Some(other) = locales.insert(tag.clone(), set) {
                return Err(TemplateError::Invalid {
                    path: folder,
                    message: format!(
                        "is locale {tag}, like {}: keep one folder per locale",
                        other.dir.display()
                    ),
                });
            }
        }
        Ok(Templates { default, locales })
    }

    pub fn dir(&self) -> &Path {
        &self.default.dir
    }

    /// The locale folders loaded, by canonical tag, with the mail kinds each translates.
    pub fn locale_folders(&self) -> Vec<(String, Vec<MailKind>)> {
        self.locales
            .iter()
            .map(|(tag, set)| (tag.clone(), set.kinds.iter().copied().collect()))
            .collect()
    }

    /// The folder a `kind` mail for a user of `locale` is rendered from: `<locale>/`, else
    /// `<language>/`, else the default folder.
    pub fn folder_for(&self, kind: MailKind, locale: Option<&Locale>) -> &Path {
        &self.set_for(kind, locale).dir
    }

    fn set_for(&self, kind: MailKind, locale: Option<&Locale>) -> &TemplateSet {
        let Some(locale) = locale else {
            return &self.default;
        };
        [locale.as_str(), locale.language()]
            .into_iter()
            .filter_map(|tag| self.locales.get(tag))
            .find(|set| set.kinds.contains(&kind))
            .unwrap_or(&self.default)
    }

    pub fn render(&self, kind: MailKind, ctx: &MailContext) -> Result<RenderedMail, TemplateError> {
        let set = self.set_for(kind, ctx.locale.as_ref());
        // Dates follow the user's locale only in a folder of their language, so a mail is
        // written in one language throughout.
        let dates = match (&set.locale, &ctx.locale) {
            (Some(folder), Some(user)) if folder.language() == user.language() => Some(user),
            _ => None,
        };
        set.render(kind, &TemplateVars::from_context(ctx, dates))
    }
}

impl TemplateSet {
    fn render(
        &self,
        kind: MailKind,
        vars: &TemplateVars<'_>,
    ) -> Result<RenderedMail, TemplateError> {
        let vars = tera::Context::from_serialize(vars).map_err(|e| TemplateError::Invalid {
            path: self.dir.clone(),
            message: flatten(&e),
        })?;
        let render = |part: &str| {
            let name = file_name(kind, part);
            self.tera
                .render(&name, &vars)
                .map_err(|e| TemplateError::Invalid {
                    path: self.dir.join(&name),
                    message: flatten(&e),
                })
        };
        Ok(RenderedMail {
            subject: one_line(&render("subject")?),
            text: render("txt")?,
            html: render("html")?,
        })
    }

    /// Renders each kind this folder translates with every sample context.
    fn check_samples(&self) -> Result<(), TemplateError> {
        for ctx in MailContext::samples(self.locale.clone()) {
            for &kind in &self.kinds {
                self.render(
                    kind,
                    &TemplateVars::from_context(&ctx, self.locale.as_ref()),
                )?;
            }
        }
        Ok(())
    }
}

/// Template files as (file name, content).
type Sources = Vec<(String, String)>;

/// The `*.tera` files of a folder, each parsed on its own so a syntax error names its file
/// and line, and the folder's subfolders.
fn read_folder(dir: &Path) -> Result<(Sources, Vec<PathBuf>), TemplateError> {
    let read_error = |source| TemplateError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut sources = Vec::new();
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            folders.push(path);
            continue;
        }
        if !name.ends_with(".tera") {
            continue;
        }
        let name = name.to_owned();
        let content = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
            path: path.clone(),
            source,
        })?;
        tera::Template::new(&name, None, &content).map_err(|e| syntax_error(&path, &e))?;
        sources.push((name, content));
    }
    sources.sort();
    folders.sort();
    Ok((sources, folders))
}

fn build_tera(dir: &Path, sources: Sources) -> Result<tera::Tera, TemplateError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![".html.tera", ".html"]);
    tera.add_raw_templates(sources)
        .map_err(|e| TemplateError::Invalid {
            path: dir.to_owned(),
            message: flatten(&e),
        })?;
    Ok(tera)
}

/// A locale folder: named by its BCP 47 tag, each mail kind it has complete in all three
/// parts, layered over the default files and checked like them.
fn load_locale_folder(folder: &Path, base: &Sources) -> Result<TemplateSet, TemplateError> {
    let name = folder
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let locale = Locale::parse(name).map_err(|e| TemplateError::Invalid {
        path: folder.to_owned(),
        message: format!(
            "a folder in the templates folder is a locale folder and must be named by one: {e}"
        ),
    })?;
    let (own, subfolders) = read_folder(folder)?;
    if let Some(sub) = subfolders.first() {
        return Err(TemplateError::Invalid {
            path: sub.clone(),
            message: "locale folders hold template files only, no folders".into(),
        });
    }
    let mut kinds = BTreeSet::new();
    for kind in MailKind::ALL {
        let present: Vec<&str> = PARTS
            .into_iter()
            .filter(|part| folder.join(file_name(kind, part)).is_file())
            .collect();
        if present.is_empty() {
            continue;
        }
        if let Some(missing) = PARTS.into_iter().find(|p| !present.contains(p)) {
            return Err(TemplateError::Invalid {
                path: folder.join(file_name(kind, missing)),
                message: format!(
                    "missing: {} translates the {kind} mail, so it needs all three of its parts",
                    folder.display()
                ),
            });
        }
        kinds.insert(kind);
    }
    let mut sources: BTreeMap<String, String> = base.iter().cloned().collect();
    sources.extend(own);
    let set = TemplateSet {
        dir: folder.to_owned(),
        tera: build_tera(folder, sources.into_iter().collect())?,
        locale: Some(locale),
        kinds,
    };
    set.check_samples()?;
    Ok(set)
}

impl MailContext {
    /// Sample contexts covering both sides of every optional value the templates may test.
    fn samples(locale: Option<Locale>) -> [MailContext; 3] {
        use crate::domain::{InquiryId, SessionToken};
        use crate::links::{LinkSettings, LinkTarget, build_link};
        let settings = LinkSettings {
            hosted_flow_url: url::Url::parse("https://inquiry.withpersona.com/verify")
                .expect("static URL"),
            template_id: crate::domain::TemplateId::parse("itmpl_sample").expect("static id"),
            environment_id: crate::domain::EnvironmentId::parse("env_sample").expect("static id"),
            redirect_uri: None,
            public_url: None,
        };
        let inquiry_id = InquiryId::parse("inq_sample").expect("static id");
        let token = SessionToken::new("sample-token");
        let session = build_link(
            &settings,
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: Some(&token),
            },
            locale.as_ref(),
        )
        .expect("sample link");
        let reference_id = crate::domain::ReferenceId::parse("ref_sample").expect("static id");
        let fixed = build_link(
            &settings,
            LinkTarget::Static {
                reference_id: &reference_id,
            },
            locale.as_ref(),
        )
        .expect("sample link");
        let full = MailContext {
            name_first: Some("Alex".into()),
            name_last: Some("Sample".into()),
            link: session,
            link_expires_at: Some(DateTime::<Utc>::UNIX_EPOCH),
            app_name: "Sample App".into(),
            support_email: Some("support@example.com".into()),
            locale: locale.clone(),
            started: false,
        };
        [
            MailContext {
                started: true,
                ..full.clone()
            },
            full,
            MailContext {
                name_first: None,
                name_last: None,
                link: fixed,
                link_expires_at: None,
                app_name: "Sample App".into(),
                support_email: None,
                locale: None,
                started: false,
            },
        ]
    }
}

fn file_name(kind: MailKind, part: &str) -> String {
    format!("{}.{part}.tera", kind.as_str())
}

/// A subject is one header line: collapse every run of white space, newlines included.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Tera's error and its causes in one line.
fn flatten(e: &tera::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts
        .join(": ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tera's parse errors carry pest's `--> line:col` block; keep the line and the explanation.
fn syntax_error(path: &Path, e: &tera::Error) -> TemplateError {
    let full = {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push('\n');
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    };
    let line = full
        .lines()
        .find_map(|l| l.trim().strip_prefix("--> "))
        .and_then(|pos| pos.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1);
    let message = full
        .lines()
        .filter_map(|l| l.trim().strip_prefix("= "))
        .collect::<Vec<_>>()
        .join("; ");
    let message = if message.is_empty() {
        full.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        message
    };
    TemplateError::Syntax {
        path: path.to_owned(),
        line,
        message,
    }
}
