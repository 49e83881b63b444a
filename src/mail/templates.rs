//! The mail templates: loaded from `[templates] dir`, checked once at load, rendered per mail.
//! HTML parts are autoescaped (`*.html.tera`); text parts and subjects are not.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::MailKind;
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
}

impl fmt::Debug for MailContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // MailLink's Debug is already safe; the rest is spelled out so nothing new leaks by accident.
        f.debug_struct("MailContext")
            .field("link", &self.link)
            .field("link_expires_at", &self.link_expires_at)
            .field("app_name", &self.app_name)
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
    /// Human form, e.g. "Sunday 29 November 2026 at 14:00 UTC"; null when the link does not expire.
    link_expires_at: Option<String>,
    /// RFC 3339 form of the same instant, for templates that format it themselves.
    link_expires_at_rfc3339: Option<String>,
    support_email: Option<&'a str>,
}

impl<'a> TemplateVars<'a> {
    fn from_context(ctx: &'a MailContext) -> Self {
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
            link_expires_at: ctx.link_expires_at.map(human_time),
            link_expires_at_rfc3339: ctx.link_expires_at.map(crate::clock::format_ts),
            support_email: non_blank(&ctx.support_email),
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

/// The loaded, checked template set. Cheap to share behind an `Arc`; reload by loading anew.
pub struct Templates {
    dir: PathBuf,
    tera: tera::Tera,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Loads every `*.tera` file of `dir` (the mail parts plus any layout or partial they use),
    /// then renders each mail kind with sample data so a mistake shows now, not at the first send.
    pub fn load(dir: &Path) -> Result<Templates, TemplateError> {
        for kind in MailKind::ALL {
            for part in PARTS {
                let path = dir.join(file_name(kind, part));
                if !path.is_file() {
                    return Err(TemplateError::Missing(path));
                }
            }
        }

        let mut sources = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Read {
            path: dir.to_owned(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| TemplateError::Read {
                    path: dir.to_owned(),
                    source,
                })?
                .path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".tera") || name.starts_with('.') {
                continue;
            }
            let name = name.to_owned();
            let content = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                path: path.clone(),
                source,
            })?;
            // Parse each file on its own first, so a syntax error names its file and line.
            tera::Template::new(&name, None, &content).map_err(|e| syntax_error(&path, &e))?;
            sources.push((name, content));
        }
        sources.sort();

        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![".html.tera", ".html"]);
        tera.add_raw_templates(sources)
            .map_err(|e| TemplateError::Invalid {
                path: dir.to_owned(),
                message: flatten(&e),
            })?;

        let templates = Templates {
            dir: dir.to_owned(),
            tera,
        };
        for ctx in MailContext::samples() {
            for kind in MailKind::ALL {
                templates.render(kind, &ctx)?;
            }
        }
        Ok(templates)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn render(&self, kind: MailKind, ctx: &MailContext) -> Result<RenderedMail, TemplateError> {
        let vars = tera::Context::from_serialize(TemplateVars::from_context(ctx)).map_err(|e| {
            TemplateError::Invalid {
                path: self.dir.clone(),
                message: flatten(&e),
            }
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
}

impl MailContext {
    /// Sample contexts covering both sides of every optional value the templates may test.
    fn samples() -> [MailContext; 2] {
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
        )
        .expect("sample link");
        let reference_id = crate::domain::ReferenceId::parse("ref_sample").expect("static id");
        let fixed = build_link(
            &settings,
            LinkTarget::Static {
                reference_id: &reference_id,
            },
        )
        .expect("sample link");
        [
            MailContext {
                name_first: Some("Alex".into()),
                name_last: Some("Sample".into()),
                link: session,
                link_expires_at: Some(DateTime::<Utc>::UNIX_EPOCH),
                app_name: "Sample App".into(),
                support_email: Some("support@example.com".into()),
            },
            MailContext {
                name_first: None,
                name_last: None,
                link: fixed,
                link_expires_at: None,
                app_name: "Sample App".into(),
                support_email: None,
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
