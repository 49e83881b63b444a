//! `demo`: the whole pipeline on this machine with no account and no mail server — the bundled
//! Persona simulator, a throwaway database, mail written as `.eml` files — played over five days.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::context;

mod redirect_user;
mod script;
mod story;
use crate::cli::LogFormatArg;
use crate::clock::Clock;
use crate::config::{Config, Environment};
use crate::domain::{InquiryId, RawUser, UserId};
use crate::jobs::{JobContext, provision, refresh};
use crate::mail::{MailSettings, Transport, TransportKind};
use crate::store::inquiries;
use persona_sim::{self as sim, SimConfig, SimHandle};
use script::{GERMAN, Step, USERS};
use story::{Progress, Story};

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
        include_str!("../../../templates/base.html.tera"),
    ),
    (
        "footer.html.tera",
        include_str!("../../../templates/footer.html.tera"),
    ),
    (
        "footer.txt.tera",
        include_str!("../../../templates/footer.txt.tera"),
    ),
    (
        "invite.html.tera",
        include_str!("../../../templates/invite.html.tera"),
    ),
    (
        "invite.subject.tera",
        include_str!("../../../templates/invite.subject.tera"),
    ),
    (
        "invite.txt.tera",
        include_str!("../../../templates/invite.txt.tera"),
    ),
    (
        "link_note.html.tera",
        include_str!("../../../templates/link_note.html.tera"),
    ),
    (
        "link_note.txt.tera",
        include_str!("../../../templates/link_note.txt.tera"),
    ),
    (
        "reminder.html.tera",
        include_str!("../../../templates/reminder.html.tera"),
    ),
    (
        "reminder.subject.tera",
        include_str!("../../../templates/reminder.subject.tera"),
    ),
    (
        "reminder.txt.tera",
        include_str!("../../../templates/reminder.txt.tera"),
    ),
    (
        "renewed.html.tera",
        include_str!("../../../templates/renewed.html.tera"),
    ),
    (
        "renewed.subject.tera",
        include_str!("../../../templates/renewed.subject.tera"),
    ),
    (
        "renewed.txt.tera",
        include_str!("../../../templates/renewed.txt.tera"),
    ),
    (
        "de/footer.html.tera",
        include_str!("../../../templates/de/footer.html.tera"),
    ),
    (
        "de/footer.txt.tera",
        include_str!("../../../templates/de/footer.txt.tera"),
    ),
    (
        "de/invite.html.tera",
        include_str!("../../../templates/de/invite.html.tera"),
    ),
    (
        "de/invite.subject.tera",
        include_str!("../../../templates/de/invite.subject.tera"),
    ),
    (
        "de/invite.txt.tera",
        include_str!("../../../templates/de/invite.txt.tera"),
    ),
    (
        "de/link_note.html.tera",
        include_str!("../../../templates/de/link_note.html.tera"),
    ),
    (
        "de/link_note.txt.tera",
        include_str!("../../../templates/de/link_note.txt.tera"),
    ),
    (
        "de/reminder.html.tera",
        include_str!("../../../templates/de/reminder.html.tera"),
    ),
    (
        "de/reminder.subject.tera",
        include_str!("../../../templates/de/reminder.subject.tera"),
    ),
    (
        "de/reminder.txt.tera",
        include_str!("../../../templates/de/reminder.txt.tera"),
    ),
    (
        "de/renewed.html.tera",
        include_str!("../../../templates/de/renewed.html.tera"),
    ),
    (
        "de/renewed.subject.tera",
        include_str!("../../../templates/de/renewed.subject.tera"),
    ),
    (
        "de/renewed.txt.tera",
        include_str!("../../../templates/de/renewed.txt.tera"),
    ),
];

/// Runs the demo; needs no config file and leaves only the outbox folder behind.
pub async fn run(log_format: Option<LogFormatArg>) -> anyhow::Result<ExitCode> {
    let progress = Progress::new();
    story::init_logging(log_format, &progress);
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
    let parts = context::build(&config, Some(transport)).await?;
    Ok(JobContext::new(
        &config,
        parts.store,
        parts.persona,
        parts.mailer,
        clock,
        CancellationToken::new(),
    ))
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

/// Plays the script's days on the shared clock and tells each as it happens.
async fn play(
    sim: &SimHandle,
    ctx: &JobContext,
    grace: &redirect_user::RedirectUser<'_>,
    outbox: &Path,
    progress: &Progress,
) -> anyhow::Result<()> {
    let people = USERS
        .iter()
        .map(|(id, _, first, last, ..)| (*id, format!("{first} {last}")))
        .collect();
    let mut story = Story::new(sim, ctx, outbox, progress, people);
    story.intro();
    let at = |hours: u32| {
        // Every step is placed on the shared clock relative to the start, so the days line up.
        let target = HOUR * hours;
        sim.advance_clock(target.saturating_sub(ctx.clock.offset()));
    };

    for (n, day) in script::DAYS.iter().enumerate() {
        progress.step(day.progress);
        at(day.starts_at);
        let when = ctx.clock.now();
        let mut reports = Vec::new();
        let mut version = None;
        for step in day.steps {
            match step {
                Step::SignUp(ids) => add_users(ctx, ids).await?,
                Step::Provision => {
                    reports.push(format!("provision: {}", provision::run(ctx).await?))
                }
                Step::Refresh => reports.push(format!("refresh: {}", refresh::run(ctx).await?)),
                Step::At(hours) => at(*hours),
                Step::Act(user_id, action) => {
                    sim.act(&inquiry_of(ctx, user_id).await?, *action)?;
                }
                Step::PublishTemplateVersion => {
                    let (template, _) = sim.templates()[0].clone();
                    version = Some(sim.publish_template_version(&template)?);
                }
                Step::GraceSignsUp => reports.push(format!("Grace: {}", grace.invite().await?)),
                Step::GraceClicks => reports.push(format!("Grace: {}", grace.click().await?)),
            }
        }
        let what = match &version {
            Some(version) => day.told.replace("{version}", version),
            None => day.told.to_owned(),
        };
        story.day(n, when, &what, &reports).await?;
        if let Some(user_id) = day.show_invite {
            story
                .show_invite(user_id, &inquiry_of(ctx, user_id).await?)
                .await?;
        }
    }
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
