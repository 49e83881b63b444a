//! `demo`: the whole pipeline on this machine with no account and no mail server — the bundled
//! Persona simulator, a throwaway database, mail written as `.eml` files — played over five days.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::context;

mod redirect_user;
use crate::cli::LogFormatArg;
use crate::clock::Clock;
use crate::config::{Config, Environment};
use crate::domain::{InquiryId, RawUser, User, UserId};
use crate::jobs::{JobContext, provision, refresh};
use crate::links::{LinkTarget, build_link};
use crate::mail::{MailKind, MailSettings, Transport, TransportKind};
use crate::store::events::Event;
use crate::store::{events, inquiries, mails, status};
use persona_sim::{self as sim, Action, SimConfig, SimHandle};

/// Where the mails go, below the working directory; one folder per run, kept after exit.
pub const OUTBOX_ROOT: &str = "demo-outbox";

/// The key the simulator accepts; it never leaves this process.
const API_KEY: &str = "persona_sandbox_demo";

const HOUR: Duration = Duration::from_secs(3600);

/// The shipped templates, built in so the demo runs from any folder (`de/…` is the German
/// locale folder).
const TEMPLATES: [(&str, &str); 27] = [
    (
        "base.html.tera",
        include_str!("../../templates/base.html.tera"),
    ),
    (
        "footer.html.tera",
        include_str!("../../templates/footer.html.tera"),
    ),
    (
        "footer.txt.tera",
        include_str!("../../templates/footer.txt.tera"),
    ),
    (
        "invite.html.tera",
        include_str!("../../templates/invite.html.tera"),
    ),
    (
        "invite.subject.tera",
        include_str!("../../templates/invite.subject.tera"),
    ),
    (
        "invite.txt.tera",
        include_str!("../../templates/invite.txt.tera"),
    ),
    (
        "link_note.html.tera",
        include_str!("../../templates/link_note.html.tera"),
    ),
    (
        "link_note.txt.tera",
        include_str!("../../templates/link_note.txt.tera"),
    ),
    (
        "reminder.html.tera",
        include_str!("../../templates/reminder.html.tera"),
    ),
    (
        "reminder.subject.tera",
        include_str!("../../templates/reminder.subject.tera"),
    ),
    (
        "reminder.txt.tera",
        include_str!("../../templates/reminder.txt.tera"),
    ),
    (
        "renewed.html.tera",
        include_str!("../../templates/renewed.html.tera"),
    ),
    (
        "renewed.subject.tera",
        include_str!("../../templates/renewed.subject.tera"),
    ),
    (
        "renewed.txt.tera",
        include_str!("../../templates/renewed.txt.tera"),
    ),
    (
        "de/footer.html.tera",
        include_str!("../../templates/de/footer.html.tera"),
    ),
    (
        "de/footer.txt.tera",
        include_str!("../../templates/de/footer.txt.tera"),
    ),
    (
        "de/invite.html.tera",
        include_str!("../../templates/de/invite.html.tera"),
    ),
    (
        "de/invite.subject.tera",
        include_str!("../../templates/de/invite.subject.tera"),
    ),
    (
        "de/invite.txt.tera",
        include_str!("../../templates/de/invite.txt.tera"),
    ),
    (
        "de/link_note.html.tera",
        include_str!("../../templates/de/link_note.html.tera"),
    ),
    (
        "de/link_note.txt.tera",
        include_str!("../../templates/de/link_note.txt.tera"),
    ),
    (
        "de/reminder.html.tera",
        include_str!("../../templates/de/reminder.html.tera"),
    ),
    (
        "de/reminder.subject.tera",
        include_str!("../../templates/de/reminder.subject.tera"),
    ),
    (
        "de/reminder.txt.tera",
        include_str!("../../templates/de/reminder.txt.tera"),
    ),
    (
        "de/renewed.html.tera",
        include_str!("../../templates/de/renewed.html.tera"),
    ),
    (
        "de/renewed.subject.tera",
        include_str!("../../templates/de/renewed.subject.tera"),
    ),
    (
        "de/renewed.txt.tera",
        include_str!("../../templates/de/renewed.txt.tera"),
    ),
];

/// The sample users: (id, e-mail, first name, last name, birthdate, phone).
const USERS: [(&str, &str, &str, &str, &str, &str); 6] = [
    (
        "usr_ABC123",
        "alexander.sample@example.com",
        "Alexander",
        "Sample",
        "1977-08-31",
        "+1 415 555 0134",
    ),
    (
        "usr_BEA456",
        "beatriz.oliveira@example.com",
        "Beatriz",
        "Oliveira",
        "1990-03-14",
        "+351 21 555 0187",
    ),
    (
        "usr_CHI789",
        "chidi.okafor@example.org",
        "Chidi",
        "Okafor",
        "1985-11-02",
        "",
    ),
    (
        "usr_DAN012",
        "dana.whitfield@example.net",
        "Dana",
        "Whitfield",
        "2001-06-21",
        "+1 212 555 0199",
    ),
    (
        "usr_EMI345",
        "emi.tanaka@example.com",
        "Emi",
        "Tanaka",
        "1995-01-09",
        "",
    ),
    (
        "usr_FEL678",
        "felix.brandt(at)example.com",
        "Felix",
        "Brandt",
        "1969-04-27",
        "",
    ),
];

const ALEXANDER: &str = "usr_ABC123";
const BEATRIZ: &str = "usr_BEA456";
const CHIDI: &str = "usr_CHI789";
const DANA: &str = "usr_DAN012";
const EMI: &str = "usr_EMI345";
const FELIX: &str = "usr_FEL678";

/// The one sample user with a locale: their mails come from `templates/de/` and their link
/// opens Persona's flow in German.
const GERMAN: (&str, &str) = (ALEXANDER, "de");

/// Runs the demo; needs no config file and leaves only the outbox folder behind.
pub async fn run(log_format: Option<LogFormatArg>) -> anyhow::Result<ExitCode> {
    let progress = Progress::new();
    init_logging(log_format, &progress);
    let outbox = new_outbox_dir(Path::new(OUTBOX_ROOT))?;
    let work = tempfile::Builder::new()
        .prefix("inquiry-mailer-demo-")
        .tempdir()
        .context("cannot make a temporary folder for the demo database")?;

    progress.step("starting the Persona simulator");
    let clock = Clock::system();
    let sim_config = SimConfig::new(API_KEY, clock.clone());
    let environment = sim_config.environment_id.to_string();
    let sim = sim::start(sim_config)
        .await
        .context("cannot start the Persona simulator on 127.0.0.1")?;
    let result = async {
        let ctx = build_context(
            &sim,
            &environment,
            work.path(),
            &outbox,
            clock.clone(),
            &SESSION_LINKS,
        )
        .await?;
        let grace =
            redirect_user::RedirectUser::start(&sim, &environment, work.path(), &outbox, clock)
                .await?;
        let played = play(&sim, &ctx, &grace, &outbox, &progress).await;
        grace.stop().await;
        ctx.store.close().await;
        played
    }
    .await;
    progress.step("shutting the simulator down");
    sim.shutdown().await;
    progress.finish();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's configuration: the shipped defaults, pointed at the simulator, with shorter
/// refresh margins so five simulated days show every kind of renewal.
async fn build_context(
    sim: &SimHandle,
    environment: &str,
    dir: &Path,
    outbox: &Path,
    clock: Clock,
    links: &Links<'_>,
) -> anyhow::Result<JobContext> {
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates)?;
    for (name, text) in TEMPLATES {
        let path = templates.join(name);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(path, text)?;
    }
    let (template, _) = sim.templates()[0].clone();
    let text = format!(
        r#"
[database]
url = "sqlite://{database}"

[persona]
api_base = "{api_base}"
inquiry_template_id = "{template}"
environment_id = "{environment}"
requests_per_minute = 6000

[links]
kind = "{kind}"
hosted_flow_url = "{hosted}"
{public_url}

[inquiries]
expires_after = "2d"
refresh_before_expiry = "6h"
min_resend_interval = "12h"

[mail]
transport = "file"
from = "Verification <verify@walkies.example>"
app_name = "Walkies"
support_email = "help@walkies.example"

[templates]
dir = "templates"
"#,
        api_base = sim.api_base().as_str().trim_end_matches('/'),
        hosted = sim.hosted_flow_url(),
        database = links.database,
        kind = links.kind,
        public_url = links
            .public_url
            .map(|u| format!("public_url = \"{u}\""))
            .unwrap_or_default(),
    );
    let config = Config::parse_with(&text, &dir.join("config.toml"), &DemoEnv)?;
    let mut settings: MailSettings = context::mail_settings(&config);
    settings.transport = TransportKind::File;
    settings.file_dir = outbox.to_owned();
    let transport = Transport::from_settings(&settings)?;
    context::build(&config, clock, CancellationToken::new(), Some(transport)).await
}

/// What differs between the demo's two pipelines: the session-link one most users are on, and
/// the redirect-link one of [`redirect_user`].
struct Links<'a> {
    kind: &'a str,
    database: &'a str,
    public_url: Option<&'a str>,
}

const SESSION_LINKS: Links<'static> = Links {
    kind: "session",
    database: "demo.db",
    public_url: None,
};

/// The process environment as the demo's config sees it: the simulator's key and nothing else,
/// so no `INQUIRY_MAILER__…` override or real secret of this shell leaks in.
struct DemoEnv;

impl Environment for DemoEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name == crate::config::PERSONA_API_KEY.env).then(|| API_KEY.to_owned())
    }
    fn vars(&self) -> Vec<(String, String)> {
        vec![(
            crate::config::PERSONA_API_KEY.env.to_owned(),
            API_KEY.to_owned(),
        )]
    }
}

/// Five days in the life of the daemon, told as they happen. Refresh runs once a simulated
/// day here (every 15 minutes in production), so an inquiry can expire between two runs.
async fn play(
    sim: &SimHandle,
    ctx: &JobContext,
    grace: &redirect_user::RedirectUser<'_>,
    outbox: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut story = Story::new(sim, ctx, outbox, progress);
    story.intro();
    let at = |hours: u32| {
        // Every step is placed on the shared clock relative to the start, so the days line up.
        let target = HOUR * hours;
        sim.advance_clock(target.saturating_sub(ctx.clock.offset()));
    };

    progress.step("day 0: users arrive, provisioning runs");
    let when = ctx.clock.now();
    add_users(ctx, &[ALEXANDER, BEATRIZ, FELIX]).await?;
    let provisioned = provision::run(ctx).await?;
    let grace_invited = grace.invite().await?;
    let grace_clicked = grace.click().await?;
    story
        .day(
            0,
            when,
            "Alexander, Beatriz and Felix sign up (rows in `users`). Provisioning runs. Grace, \
             on redirect links, signs up too and clicks her link at once.",
            &[
                format!("provision: {provisioned}"),
                format!("Grace: {grace_invited}"),
                format!("Grace: {grace_clicked}"),
            ],
        )
        .await?;
    story.show_invite(GERMAN.0).await?;

    progress.step("day 1: more users, one finishes");
    at(24);
    let when = ctx.clock.now();
    add_users(ctx, &[CHIDI, DANA, EMI]).await?;
    let provisioned = provision::run(ctx).await?;
    at(25);
    sim.act(&inquiry_of(ctx, ALEXANDER).await?, Action::Complete)?;
    at(26);
    let refreshed = refresh::run(ctx).await?;
    story
        .day(
            1,
            when,
            "Chidi, Dana and Emi sign up; provisioning runs. An hour later Alexander opens his \
             link and completes verification. Refresh runs.",
            &[
                format!("provision: {provisioned}"),
                format!("refresh: {refreshed}"),
            ],
        )
        .await?;

    progress.step("day 2: an expired inquiry");
    at(50);
    let when = ctx.clock.now();
    let refreshed = refresh::run(ctx).await?;
    let grace_clicked = grace.click().await?;
    story
        .day(
            2,
            when,
            "Beatriz never opened her invite: her inquiry expired this morning, 2 days after it \
             was made, between two refresh runs. Refresh runs. Grace's inquiry expired too, and \
             she clicks the same link from her invite again.",
            &[
                format!("refresh: {refreshed}"),
                format!("Grace: {grace_clicked}"),
            ],
        )
        .await?;

    progress.step("day 3: a new template version");
    at(71);
    let when = ctx.clock.now();
    let (template, _) = sim.templates()[0].clone();
    let version = sim.publish_template_version(&template)?;
    let refreshed = refresh::run(ctx).await?;
    story
        .day(
            3,
            when,
            &format!(
                "A new version of the inquiry template is published ({version}). Refresh runs: \
                 each inquiry nobody opened is expired and replaced by one on the new version; \
                 Beatriz's is running (resumed, so pending) and is never cut off: it is left \
                 alone until it expires."
            ),
            &[format!("refresh: {refreshed}")],
        )
        .await?;

    progress.step("day 4: one more finishes");
    at(95);
    let when = ctx.clock.now();
    sim.act(&inquiry_of(ctx, CHIDI).await?, Action::Complete)?;
    at(96);
    let refreshed = refresh::run(ctx).await?;
    story
        .day(
            4,
            when,
            "Chidi completes verification through his renewed link. Refresh runs.",
            &[format!("refresh: {refreshed}")],
        )
        .await?;

    story.summary().await
}

async fn add_users(ctx: &JobContext, ids: &[&str]) -> anyhow::Result<()> {
    for (id, email, first, last, birthdate, phone) in USERS {
        if !ids.contains(&id) {
            continue;
        }
        crate::store::users::add(
            &ctx.store,
            &RawUser {
                id: id.into(),
                email: email.into(),
                name_first: Some(first.into()),
                name_last: Some(last.into()),
                birthdate: Some(birthdate.into()),
                phone_number: (!phone.is_empty()).then(|| phone.into()),
                locale: (id == GERMAN.0).then(|| GERMAN.1.into()),
            },
        )
        .await?;
    }
    Ok(())
}

/// The Persona id of the user's current inquiry.
async fn inquiry_of(ctx: &JobContext, user_id: &str) -> anyhow::Result<InquiryId> {
    let row = inquiries::current(&ctx.store, &UserId::parse(user_id)?)
        .await?
        .with_context(|| format!("{user_id} has no inquiry"))?;
    row.inquiry_id
        .with_context(|| format!("{user_id}'s inquiry was not created"))
}

/// Prints what happened, day by day, from the events the jobs recorded.
struct Story<'a> {
    sim: &'a SimHandle,
    ctx: &'a JobContext,
    outbox: &'a Path,
    progress: &'a Progress,
    seen_event: i64,
}

impl<'a> Story<'a> {
    fn new(
        sim: &'a SimHandle,
        ctx: &'a JobContext,
        outbox: &'a Path,
        progress: &'a Progress,
    ) -> Self {
        Self {
            sim,
            ctx,
            outbox,
            progress,
            seen_event: 0,
        }
    }

    fn intro(&self) {
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
    async fn day(
        &mut self,
        n: u32,
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
        for (id, _, first, last, ..) in USERS {
            let lines: Vec<String> = events
                .iter()
                .filter(|e| e.user_id.as_deref() == Some(id))
                .filter_map(|e| self.describe(e))
                .collect();
            if lines.is_empty() {
                continue;
            }
            text.push_str(&format!("  {first} {last} ({id})\n"));
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
    async fn show_invite(&self, user_id: &str) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let raw = crate::store::users::get(&ctx.store, user_id)
            .await?
            .context("the demo user is in the users table")?;
        let now = ctx.clock.now();
        let user = User::parse(&raw, now.date_naive()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let row = inquiries::current(&ctx.store, &UserId::parse(user_id)?)
            .await?
            .context("the demo user has an inquiry")?;
        let inquiry_id = inquiry_of(ctx, user_id).await?;
        let link = build_link(
            &ctx.settings.links,
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
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

    async fn summary(&self) -> anyhow::Result<()> {
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

/// `demo-outbox/<UTC timestamp>/`, made anew (a suffix when two runs share a second).
fn new_outbox_dir(root: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    for n in 0..100 {
        let name = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!("{}: too many demo runs this second", root.display())
}

fn display_dir(dir: &Path) -> String {
    format!("./{}/", dir.display())
}

/// A spinner on a terminal; plain lines on stderr otherwise. The account goes to stdout.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Self {
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

    fn step(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_owned()),
            None => eprintln!("demo: {what}"),
        }
    }

    /// Prints a block of the account without tearing the spinner.
    fn print(&self, text: &str) {
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

    fn finish(&self) {
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
fn init_logging(format: Option<LogFormatArg>, progress: &Progress) {
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
