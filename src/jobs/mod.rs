//! The work: `provision` mails new users their first link, `refresh` keeps every unfinished
//! user's link usable and, through `reminders`, nudges them on the configured cadence. Written
//! against store, persona, links and mail; nothing here schedules.

pub mod click;
pub mod deliver;
pub mod fresh_link;
pub mod lease_keeper;
pub mod provision;
pub mod refresh;
pub mod reminders;
pub mod replace;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, InquiriesConfig, RemindersConfig};
use crate::domain::InquiryStatus;
use crate::domain::{LinkKind, TemplateId};
use crate::links::LinkSettings;
use crate::mail::Mailer;
use crate::persona::{PersonaClient, PersonaError};
use crate::store::inquiries::RowStatus;
use crate::store::user_states::UserState;
use crate::store::{Store, StoreError};

/// What the jobs need to know from config, resolved once.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub link_kind: LinkKind,
    pub links: LinkSettings,
    pub template_id: TemplateId,
    pub inquiries: InquiriesConfig,
    pub reminders: RemindersConfig,
    pub batch_size: u32,
    pub concurrency: usize,
    pub mail_max_attempts: u32,
    pub one_time_link_expires_after: Duration,
    pub sync: refresh::SyncSettings,
}

impl JobSettings {
    pub fn from_config(config: &Config) -> JobSettings {
        JobSettings {
            link_kind: config.links.kind,
            links: LinkSettings {
                hosted_flow_url: config.links.hosted_flow_url.clone(),
                template_id: config.persona.inquiry_template_id.clone(),
                environment_id: config.persona.environment_id.clone(),
                redirect_uri: config.links.redirect_uri.clone(),
                public_url: config.links.public_url.clone(),
            },
            template_id: config.persona.inquiry_template_id.clone(),
            inquiries: config.inquiries.clone(),
            reminders: config.reminders.clone(),
            batch_size: config.provision.batch_size,
            concurrency: config.provision.concurrency,
            mail_max_attempts: config.mail.max_attempts,
            one_time_link_expires_after: config.links.one_time_link_expires_after,
            sync: refresh::SyncSettings::from_config(config),
        }
    }
}

/// Everything a job run uses. Cheap to clone; the daemon builds a new one on reload.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub persona: PersonaClient,
    pub mailer: Mailer,
    pub settings: Arc<JobSettings>,
    pub clock: Clock,
    /// Cancelled on shutdown: runs stop taking new users and finish the ones in hand.
    pub stop: CancellationToken,
}

impl JobContext {
    /// A run's context over the parts `app::build` wired, with the settings of `config`.
    pub fn new(
        config: &Config,
        store: Store,
        persona: PersonaClient,
        mailer: Mailer,
        clock: Clock,
        stop: CancellationToken,
    ) -> JobContext {
        JobContext {
            store,
            persona,
            mailer,
            settings: Arc::new(JobSettings::from_config(config)),
            clock,
            stop,
        }
    }
}

/// Why a whole run stopped (a single user's trouble is recorded on the user instead).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Persona refused this daemon's requests: {0}")]
    Persona(PersonaError),
    #[error("templates: {0}")]
    Template(#[from] crate::mail::TemplateError),
    /// Persona refused a user's create twice over its idempotency key, the second time after
    /// the daemon looked for what the first made.
    #[error("user {user}: Persona refused the create twice over its idempotency key")]
    KeyRefusedTwice { user: crate::domain::UserId },
    /// A link could not be built from what the store holds (the configured base URL and ids).
    #[error("link: {0}")]
    Link(#[from] crate::links::LinkError),
}

/// How long a worker keeps a user before another may take them (a crash simply lets it lapse):
/// short, so a killed replica's users are taken within half a minute, and renewed every
/// [`lease_keeper::RENEW_EVERY`] while the user is still in hand.
pub const LEASE: Duration = Duration::from_secs(30);

/// What one run learned about the outside world, shared by its concurrent workers: once a
/// server is found down, the rest of the run stops knocking on it.
#[derive(Debug, Default)]
pub struct RunFlags {
    smtp_down: AtomicBool,
    persona_down: AtomicBool,
    /// Whether the mail server answered a probe this run (asked once, before the first mail
    /// that would spend a Persona session).
    smtp_probe: tokio::sync::OnceCell<bool>,
}

impl RunFlags {
    /// Whether a mail can go out now: the mail server was not found down this run and, the
    /// first time this is asked, accepts a connection and EHLO (`Transport::check`). Each
    /// `once` is its own process and cannot remember an outage, so it looks before spending
    /// a resume or a one-time link on a mail that would not go out.
    pub async fn smtp_ready(&self, mailer: &Mailer) -> bool {
        if self.smtp_down() {
            return false;
        }
        let up = *self
            .smtp_probe
            .get_or_init(|| async {
                match mailer.transport().check().await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "the mail server does not answer; links that cost a Persona session wait");
                        false
                    }
                }
            })
            .await;
        if !up {
            self.set_smtp_down();
        }
        up
    }

    pub fn smtp_down(&self) -> bool {
        self.smtp_down.load(Ordering::Relaxed)
    }
    pub fn set_smtp_down(&self) {
        self.smtp_down.store(true, Ordering::Relaxed);
    }
    pub fn persona_down(&self) -> bool {
        self.persona_down.load(Ordering::Relaxed)
    }
    pub fn set_persona_down(&self) {
        self.persona_down.store(true, Ordering::Relaxed);
    }
}

/// Persona errors that mean the daemon itself is misconfigured (key, permissions): stop the run.
pub fn is_fatal(e: &PersonaError) -> bool {
    matches!(e.status(), Some(401 | 403))
}

/// The state a user with a live inquiry of this status is in.
pub fn state_for_status(status: &RowStatus) -> UserState {
    if *status == InquiryStatus::Pending {
        UserState::Started
    } else {
        UserState::Invited
    }
}
