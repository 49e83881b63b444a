//! The demo's account: turns what the jobs recorded (events, mails) and what Persona holds into
//! the lines the user reads on stdout, with a spinner and log lines on stderr around them.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::LogFormatArg;
use crate::domain::{InquiryId, User, UserId};
use crate::jobs::JobContext;
use crate::links::{LinkTarget, build_link};
use crate::mail::MailKind;
use crate::store::events::Event;
use crate::store::{events, inquiries, mails, status};
use persona_sim::SimHandle;

/// Prints what happened, day by day, from the events the jobs recorded.
pub struct Story<'a> {
    sim: &'a SimHandle,
    ctx: &'a JobContext,
    outbox: &'a Path,
    progress: &'a Progress,
    /// The users the account follows, in its order: (user id, full name).
    people: Vec<(&'a str, String)>,
    seen_event: i64,
}

impl<'a> Story<'a> {
    pub fn new(
        sim: &'a SimHandle,
        ctx: &'a JobContext,
        outbox: &'a Path,
        progress: &'a Progress,
        people: Vec<(&'a str, String)>,
    ) -> Self {
        Self {
            sim,
            ctx,
            outbox,
            progress,
            people,
            seen_event: 0,
        }
    }

    pub fn intro(&self) {
        self.progress.print(&format!(
            "inquiry-mailer demo: a Persona simulator at {}, a throwaway SQLite database, \
             mail written to {}\n\
             Time is simulated: each day below is a jump of the shared clock.\n",
            self.sim.api_base(),
            display_dir(self.outbox),
        ));
    }

    /// Prints day `n`: what the world did, then per user what the jobs did (from the events
    /// recorded since the last day), then the jobs' own counts and what Persona now holds.
    pub async fn day(
        &mut self,
        n: usize,
        when: DateTime<Utc>,
        what: &str,
        reports: &[String],
    ) -> anyhow::Result<()> {
        let events = events::since(&self.ctx.store, self.seen_event).await?;
        self.seen_event = events.last().map_or(self.seen_event, |e| e.id);
        let mut text = format!(
            "Day {n} · {}\n  {what}\n",
            when.format("%a %-d %b %Y, %H:%M UTC")
        );
        for (id, name) in &self.people {
            let lines: Vec<String> = events
                .iter()
                .filter(|e| e.user_id.as_deref() == Some(*id))
                .filter_map(|e| self.describe(e))
                .collect();
            if lines.is_empty() {
                continue;
            }
            text.push_str(&format!("  {name} ({id})\n"));
            for line in lines {
                text.push_str(&format!("      {line}\n"));
            }
        }
        for report in reports {
            text.push_str(&format!("  · {report}\n"));
        }
        text.push_str(&format!("  · at Persona: {}\n", self.persona_holds()));
        self.progress.print(&text);
        Ok(())
    }

    /// The invite a user with a locale got, rendered again as it was sent (the link of a
    /// `created` inquiry holds no secret).
    pub async fn show_invite(&self, user_id: &str, inquiry_id: &InquiryId) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let raw = crate::store::users::get(&ctx.store, user_id)
            .await?
            .context("the demo user is in the users table")?;
        let now = ctx.clock.now();
        let user = User::parse(&raw, now.date_naive()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let row = inquiries::current(&ctx.store, &UserId::parse(user_id)?)
            .await?
            .context("the demo user has an inquiry")?;
        let link = build_link(
            &ctx.settings.links,
            LinkTarget::Session {
                inquiry_id,
                token: None,
            },
            user.locale.as_ref(),
        )?;
        let mail = ctx.mailer.compose(
            MailKind::Invite,
            &user,
            link,
            row.expires_at,
            false,
            "<demo>",
            now,
        )?;
        let locale = user.locale.as_ref().map_or("-", |l| l.as_str());
        let templates = ctx.mailer.templates();
        let folder = templates.folder_for(MailKind::Invite, user.locale.as_ref());
        let folder = match folder.strip_prefix(templates.dir()) {
            Ok(sub) if !sub.as_os_str().is_empty() => format!("templates/{}", sub.display()),
            _ => "templates".to_owned(),
        };
        let mut text = format!(
            "  {} has locale = \"{locale}\": the invite came from {}/ and its link opens \
             Persona in that language (language={locale}):\n      Subject: {}\n",
            user.name_first.as_ref().map_or(user_id, |n| n.as_str()),
            folder,
            mail.rendered.subject
        );
        for line in mail.rendered.text.lines() {
            text.push_str(&format!("      | {line}\n"));
        }
        self.progress.print(&text);
        Ok(())
    }

    /// The simulator's inquiries by status: "2 created, 1 completed, 4 expired".
    fn persona_holds(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for inquiry in self.sim.inquiries() {
            let status = inquiry.status.as_str().to_owned();
            match counts.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => counts.push((status, 1)),
            }
        }
        counts.sort();
        let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        format!(
            "{} inquiries ({})",
            self.sim.inquiries().len(),
            parts.join(", ")
        )
    }

    /// One event in a few words, or None for bookkeeping nobody needs to read here.
    fn describe(&self, e: &Event) -> Option<String> {
        let inquiry = e.inquiry_id.as_deref().unwrap_or("-");
        Some(match e.kind.as_str() {
            "inquiry.created" => format!("inquiry {inquiry} created"),
            "mail.sent" => {
                let kind = e.detail.split_whitespace().next().unwrap_or("a");
                match self.mail_file(&e.detail) {
                    Some(file) => format!("{kind} mail sent → {file}"),
                    None => format!("{kind} mail sent"),
                }
            }
            "user.skipped" => format!("skipped: {}", e.detail),
            "user.finished" => format!("finished: {}", e.detail),
            "inquiry.status" => format!("inquiry {inquiry}: {}", e.detail),
            "inquiry.resumed" => format!("inquiry {inquiry} {}", e.detail),
            "refresh.resume" => format!("refresh decides to resume: {}", e.detail),
            "refresh.recreate" => format!("refresh decides to recreate: {}", e.detail),
            "refresh.hold" => format!("refresh holds back: {}", e.detail),
            "mail.retry" | "mail.failed" => format!("{}: {}", e.kind, e.detail),
            _ => return None,
        })
    }

    /// The `.eml` file a `mail.sent` event's message id was written to, if it is there.
    fn mail_file(&self, detail: &str) -> Option<String> {
        let start = detail.find('<')?;
        let end = detail[start..].find('>')? + start;
        let name = format!("{}.eml", &detail[start + 1..end]);
        self.outbox
            .join(&name)
            .is_file()
            .then(|| display_dir(self.outbox) + &name)
    }

    pub async fn summary(&self) -> anyhow::Result<()> {
        let states = status::state_counts(&self.ctx.store).await?;
        let files = std::fs::read_dir(self.outbox)?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count();
        let by_kind = mails::sent_by_kind(&self.ctx.store).await?;
        let kinds = by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.progress.print(&format!(
            "After five days: {} finished, {} started, {} invited, {} skipped.\n\
             Mail: {files} .eml files ({kinds}) in {} — open one in any mail client.\n\
             The simulator is stopped and the database is gone; the mail folder stays.",
            states.finished,
            states.started,
            states.invited,
            states.skipped,
            display_dir(self.outbox),
        ));
        Ok(())
    }
}

fn display_dir(dir: &Path) -> String {
    format!("./{}/", dir.display())
}

/// A spinner on a terminal; plain lines on stderr otherwise. The account goes to stdout.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Self {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .expect("static template")
                    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
            );
            bar.enable_steady_tick(Duration::from_millis(80));
            bar
        });
        Self { bar }
    }

    pub fn step(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_owned()),
            None => eprintln!("demo: {what}"),
        }
    }

    /// Prints a block of the account without tearing the spinner.
    pub fn print(&self, text: &str) {
        let out = || {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            let _ = stdout.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(out),
            None => out(),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn log_writer(&self) -> LogWriter {
        LogWriter(self.bar.clone())
    }
}

/// Log lines go to stderr, around the spinner rather than through it.
#[derive(Clone)]
struct LogWriter(Option<ProgressBar>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine {
            bar: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

/// One formatted log event, written out whole when dropped.
struct LogLine {
    bar: Option<ProgressBar>,
    buf: Vec<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let out = || {
            let _ = std::io::stderr().write_all(&self.buf);
        };
        match &self.bar {
            Some(bar) => bar.suspend(out),
            None => out(),
        }
    }
}

/// Warnings and errors only unless `RUST_LOG` says otherwise, so the account reads well.
pub fn init_logging(format: Option<LogFormatArg>, progress: &Progress) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress.log_writer())
        .with_target(false);
    let _ = match format {
        Some(LogFormatArg::Json) => builder.json().flatten_event(true).try_init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
