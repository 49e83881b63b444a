//! A click on a mailed redirect link (`[links] kind = "redirect"`): under the user's lease and on
//! a fresh read of their current inquiry, does just in time what refresh would do — resume,
//! recreate on the latest version, or create it — and hands back a link that opens now.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::fresh_link::{self, LinkProblem, MAX_SESSIONS};
use super::provision::{self, Created};
use super::replace::{self, Replaced, Replacing};
use super::status::{self, Applied};
use super::{JobContext, JobError, LEASE, is_fatal};
use crate::config::InquiriesConfig;
use crate::domain::{
    InquiryId, InquiryStatus, Locale, RedirectToken, SessionToken, TemplateVersionId, User, UserId,
};
use crate::links::{LinkTarget, MailLink, build_link};
use crate::mail::MailKind;
use crate::persona::{Inquiry, PersonaError};
use crate::store::inquiries::{self, InquiryRow, RowStatus};
use crate::store::user_states::{self, Claimed, UserState};
use crate::store::{StoreError, events, redirect_tokens, users};

/// What a click comes to.
#[derive(Debug)]
pub enum ClickOutcome {
    /// Send the browser here (`303`). The link is a secret: never logged.
    Continue(MailLink),
    /// The user finished: there is nothing to continue.
    Finished,
    /// No such token, or its user is gone or cannot be verified (skipped).
    Unknown,
    /// This user's clicks spent their Persona calls for the hour.
    TooManyClicks,
    /// Not now (Persona unreachable, the user busy elsewhere); the reason is for the log.
    Later(String),
}

/// What one daemon shares between clicks: a lock per user, so double clicks and two tabs are
/// taken one after the other (the lease keeps other processes out), and the per-user budget of
/// Persona calls.
pub struct ClickGuard {
    users: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    calls: DefaultKeyedRateLimiter<String>,
}

impl ClickGuard {
    /// `calls_per_hour`: `[links] redirect_persona_calls_per_hour`.
    pub fn new(calls_per_hour: NonZeroU32) -> ClickGuard {
        ClickGuard {
            users: Mutex::default(),
            calls: RateLimiter::keyed(Quota::per_hour(calls_per_hour)),
        }
    }

    fn lock_of(&self, user_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut users = self.users.lock().expect("click locks");
        // Locks nobody holds or waits for are dropped, so the map stays as small as the clicks
        // in flight.
        users.retain(|_, l| Arc::strong_count(l) > 1);
        users.entry(user_id.to_owned()).or_default().clone()
    }

    /// Takes `calls` Persona calls from the user's hourly budget; false when they are not there.
    fn spend(&self, user_id: &str, calls: u32) -> bool {
        let Some(n) = NonZeroU32::new(calls) else {
            return true;
        };
        matches!(self.calls.check_key_n(&user_id.to_owned(), n), Ok(Ok(())))
    }
}

/// How long a click waits for a user another worker holds (a refresh or provisioning step).
const LEASE_WAIT: Duration = Duration::from_secs(10);

pub async fn open(
    ctx: &JobContext,
    guard: &ClickGuard,
    token: &RedirectToken,
) -> Result<ClickOutcome, JobError> {
    let Some(user_id) = redirect_tokens::user_of(&ctx.store, token).await? else {
        return Ok(ClickOutcome::Unknown);
    };
    if let Some(known) = settled(ctx, &user_id).await? {
        return Ok(known);
    }
    let lock = guard.lock_of(user_id.as_str());
    let _one_click_at_a_time = lock.lock().await;
    let Some(claimed) = claim(ctx, &user_id).await? else {
        return Ok(ClickOutcome::Later("another worker holds the user".into()));
    };
    let outcome = {
        let _lease = super::lease_keeper::LeaseKeeper::start(ctx);
        continue_claimed(ctx, guard, &claimed).await
    };
    user_states::release(&ctx.store, &user_id, None).await?;
    redirect_tokens::mark_used(&ctx.store, token, ctx.clock.now()).await?;
    outcome
}

/// What a click on a link of `user_id` shows without any Persona call, if it is settled: the
/// GET page and the POST both use it.
pub async fn settled(ctx: &JobContext, user_id: &UserId) -> Result<Option<ClickOutcome>, JobError> {
    Ok(match user_states::get_state(&ctx.store, user_id).await? {
        None | Some(UserState::Skipped) => Some(ClickOutcome::Unknown),
        Some(UserState::Finished) => Some(ClickOutcome::Finished),
        Some(_) => None,
    })
}

/// The user of a token, for the GET page (which calls nothing and changes nothing).
pub async fn user_of(ctx: &JobContext, token: &RedirectToken) -> Result<Option<UserId>, JobError> {
    Ok(redirect_tokens::user_of(&ctx.store, token).await?)
}

async fn claim(ctx: &JobContext, user_id: &UserId) -> Result<Option<Claimed>, JobError> {
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    loop {
        if let Some(c) = user_states::claim_one(&ctx.store, user_id, ctx.clock.now(), LEASE).await?
        {
            return Ok(Some(c));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What to do with the user's current inquiry, as the lifecycle rules say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Open now (created or pending): a fresh one-time link.
    Link,
    /// Expired on the latest version: resume, then a fresh link.
    Resume,
    /// A new inquiry on the latest version; `expire_first` when the old one is still open
    /// (never started: a started one is never cut off).
    Recreate { expire_first: bool, why: String },
    /// Nothing can open it now (a started inquiry out of sessions).
    Stuck(String),
}

/// The policy, as a pure function of the fresh read, the row's counters and config.
pub fn plan(
    fresh: &Inquiry,
    latest: Option<&TemplateVersionId>,
    row: &InquiryRow,
    cfg: &InquiriesConfig,
    now: DateTime<Utc>,
) -> Plan {
    let outdated = cfg.recreate_on_new_template_version
        && latest.is_some()
        && fresh.template_version_id.as_ref() != latest;
    let max_age = chrono::Duration::from_std(cfg.max_age).unwrap_or(chrono::Duration::MAX);
    let too_old = fresh
        .created_at
        .or(Some(row.born_at()))
        .is_some_and(|b| now - b > max_age);
    let out_of_sessions = row.session_count >= MAX_SESSIONS;
    let recreate = |expire_first: bool, why: &str| Plan::Recreate {
        expire_first,
        why: why.to_owned(),
    };
    match fresh.status {
        InquiryStatus::Created if outdated => recreate(true, "never started, outdated version"),
        InquiryStatus::Created if too_old => recreate(true, "never started, older than max_age"),
        InquiryStatus::Created if out_of_sessions => {
            recreate(true, "never started, no sessions left")
        }
        InquiryStatus::Pending if out_of_sessions => {
            Plan::Stuck(format!("started, and all {MAX_SESSIONS} sessions are used"))
        }
        InquiryStatus::Expired if outdated => recreate(false, "expired on an outdated version"),
        InquiryStatus::Expired if too_old => recreate(false, "expired, older than max_age"),
        InquiryStatus::Expired
            if row.resume_count >= i64::from(cfg.max_resumes)
                || row.session_count + 2 > MAX_SESSIONS =>
        {
            recreate(false, "expired, out of resumes or sessions")
        }
        InquiryStatus::Expired => Plan::Resume,
        _ => Plan::Link,
    }
}

/// Persona calls each step costs, charged to the user's budget before it is taken.
const READ: u32 = 1;
const ONE_TIME_LINK: u32 = 1;
const RESUME_AND_LINK: u32 = 2;
const EXPIRE: u32 = 1;
/// A create asks for the one-time link in the same call.
const CREATE: u32 = 1;

async fn continue_claimed(
    ctx: &JobContext,
    guard: &ClickGuard,
    claimed: &Claimed,
) -> Result<ClickOutcome, JobError> {
    let user_id = &claimed.user_id;
    // Finishing wins every race: what happened before the lease was taken counts.
    if let Some(known) = settled(ctx, user_id).await? {
        return Ok(known);
    }
    let now = ctx.clock.now();
    let Some(raw) = users::get(&ctx.store, user_id.as_str()).await? else {
        return Ok(ClickOutcome::Unknown);
    };
    let user = match User::parse(&raw, now.date_naive()) {
        Ok(u) => u,
        Err(e) => {
            provision::skip_user(ctx, user_id, &e.0, now).await?;
            return Ok(ClickOutcome::Unknown);
        }
    };
    let row = match inquiries::current(&ctx.store, user_id).await? {
        None => {
            if !guard.spend(user_id.as_str(), CREATE) {
                return Ok(ClickOutcome::TooManyClicks);
            }
            let mut tx = ctx.store.begin_write().await?;
            let row =
                inquiries::begin_create(&mut tx, user_id, ctx.settings.template_id.as_str(), now)
                    .await?;
            events::record(
                &mut tx,
                now,
                Some(user_id),
                None,
                "redirect.create",
                "the user clicked their link: creating their first inquiry",
            )
            .await?;
            tx.commit().await?;
            return create(ctx, guard, claimed, &user, row).await;
        }
        Some(row) if row.status == RowStatus::Rejected => {
            return Ok(ClickOutcome::Later(
                "Persona refused this user's inquiry".into(),
            ));
        }
        Some(row) if row.status == RowStatus::Creating => {
            // A create a crash (or an earlier click's lost answer) left unanswered: finish it,
            // after expiring what it replaces if it is a replacement.
            if !guard.spend(user_id.as_str(), CREATE) {
                return Ok(ClickOutcome::TooManyClicks);
            }
            return replace_and_link(ctx, guard, claimed, &user, row, "finishing a create").await;
        }
        Some(row) => row,
    };
    let id = inquiry_id_of(&row)?;
    if !guard.spend(user_id.as_str(), READ) {
        return Ok(ClickOutcome::TooManyClicks);
    }
    let with_version = ctx.settings.inquiries.recreate_on_new_template_version;
    let read = match ctx.persona.retrieve_inquiry(&id, with_version).await {
        Ok(r) => r,
        Err(e) => return persona_trouble(e),
    };
    let fresh = read.inquiry;
    let seen = status::Observation {
        status: &fresh.status,
        expires_at: fresh.expires_at,
        observed_at: now,
        source: "redirect click",
    };
    let applied = status::apply(&ctx.store, &row, &seen, now).await?;
    if applied == Applied::Finished || fresh.status.is_finished() {
        return Ok(ClickOutcome::Finished);
    }
    let row = inquiries::by_row_id(&ctx.store, row.id)
        .await?
        .ok_or_else(|| StoreError::Missing {
            table: "inquiries",
            key: row.id.to_string(),
        })?;
    let plan = plan(
        &fresh,
        read.latest_published_version.as_ref(),
        &row,
        &ctx.settings.inquiries,
        now,
    );
    tracing::info!(user = %user_id, inquiry = %id, status = %fresh.status, ?plan, "redirect click");
    match plan {
        Plan::Link => {
            if !guard.spend(user_id.as_str(), ONE_TIME_LINK) {
                return Ok(ClickOutcome::TooManyClicks);
            }
            link_from(fresh_link::one_time(ctx, claimed, &row, &id, user.locale.as_ref()).await)
        }
        Plan::Resume => {
            if !guard.spend(user_id.as_str(), RESUME_AND_LINK) {
                return Ok(ClickOutcome::TooManyClicks);
            }
            resume_and_link(ctx, claimed, &row, &id, user.locale.as_ref()).await
        }
        Plan::Recreate { expire_first, why } => {
            if !guard.spend(
                user_id.as_str(),
                CREATE + if expire_first { EXPIRE } else { 0 },
            ) {
                return Ok(ClickOutcome::TooManyClicks);
            }
            replace_and_link(ctx, guard, claimed, &user, row, &why).await
        }
        Plan::Stuck(why) => Ok(ClickOutcome::Later(why)),
    }
}

/// Replaces the inquiry of `row` (jobs/replace.rs: the old one expired at Persona before the
/// new one is created on the latest version), or finishes a replacement a crash interrupted;
/// the create answers with the one-time link.
async fn replace_and_link(
    ctx: &JobContext,
    guard: &ClickGuard,
    claimed: &Claimed,
    user: &User,
    row: InquiryRow,
    why: &str,
) -> Result<ClickOutcome, JobError> {
    let how = Replacing {
        source: "redirect",
        mail: MailKind::Invite,
        drop_unsent: false,
    };
    match replace::replace(ctx, claimed, user, row, why, how).await? {
        Replaced::Tried { created, .. } => linked(ctx, guard, claimed, user, created).await,
        Replaced::Finished { .. } => Ok(ClickOutcome::Finished),
        Replaced::NotNow { why, .. } => Ok(ClickOutcome::Later(why.into())),
    }
}

/// Creates (or finishes creating) the inquiry of a `creating` row; the create answers with the
/// one-time link. `MailKind::Invite` queues no mail here: the user was mailed already (that is
/// how they clicked), and an invite is only queued for a user who never had a mail.
async fn create(
    ctx: &JobContext,
    guard: &ClickGuard,
    claimed: &Claimed,
    user: &User,
    row: InquiryRow,
) -> Result<ClickOutcome, JobError> {
    let created = provision::create(ctx, claimed, user, row, MailKind::Invite, false).await?;
    linked(ctx, guard, claimed, user, created).await
}

/// The link a create handed back, or a fresh one when it was adopted without one.
async fn linked(
    ctx: &JobContext,
    guard: &ClickGuard,
    claimed: &Claimed,
    user: &User,
    created: Created,
) -> Result<ClickOutcome, JobError> {
    match created {
        Created::Done {
            fresh: fresh_link::Fresh::OneTime(link),
            ..
        } => Ok(ClickOutcome::Continue(build_link(
            &ctx.settings.links,
            LinkTarget::OneTime { link: &link },
            user.locale.as_ref(),
        )?)),
        Created::Done { inquiry, .. } => {
            // Adopted from Persona after a lost answer: no link came with it.
            if !guard.spend(claimed.user_id.as_str(), ONE_TIME_LINK) {
                return Ok(ClickOutcome::TooManyClicks);
            }
            let id = inquiry_id_of(&inquiry)?;
            link_from(fresh_link::one_time(ctx, claimed, &inquiry, &id, user.locale.as_ref()).await)
        }
        Created::Rejected => Ok(ClickOutcome::Unknown),
        Created::Later => Ok(ClickOutcome::Later(
            "Persona did not create the inquiry yet".into(),
        )),
    }
}

/// Resumes the expired inquiry, then a one-time link; when Persona will not make one, the
/// session token the resume handed over opens it instead.
async fn resume_and_link(
    ctx: &JobContext,
    claimed: &Claimed,
    row: &InquiryRow,
    id: &InquiryId,
    language: Option<&Locale>,
) -> Result<ClickOutcome, JobError> {
    let token: SessionToken = match fresh_link::resume(ctx, claimed, row, id, true).await {
        Ok((_, token)) => token,
        Err(problem) => return link_from(Err(problem)),
    };
    let row = inquiries::by_row_id(&ctx.store, row.id)
        .await?
        .ok_or_else(|| StoreError::Missing {
            table: "inquiries",
            key: row.id.to_string(),
        })?;
    match fresh_link::one_time(ctx, claimed, &row, id, language).await {
        Err(LinkProblem::Persona(e)) if !e.is_transient() && !is_fatal(&e) => {
            tracing::warn!(user = %claimed.user_id, inquiry = %id, error = %e, "no one-time link; the browser gets the resumed session");
            let link = build_link(
                &ctx.settings.links,
                LinkTarget::Session {
                    inquiry_id: id,
                    token: Some(&token),
                },
                language,
            )?;
            Ok(ClickOutcome::Continue(link))
        }
        other => link_from(other),
    }
}

fn link_from(
    obtained: Result<fresh_link::ObtainedLink, LinkProblem>,
) -> Result<ClickOutcome, JobError> {
    match obtained {
        Ok(o) => Ok(ClickOutcome::Continue(o.link)),
        Err(LinkProblem::Store(e)) => Err(e.into()),
        Err(LinkProblem::Persona(e)) => persona_trouble(e),
        Err(LinkProblem::Finished(_)) => Ok(ClickOutcome::Finished),
        Err(other) => Ok(ClickOutcome::Later(other.to_string())),
    }
}

fn persona_trouble(e: PersonaError) -> Result<ClickOutcome, JobError> {
    if is_fatal(&e) {
        return Err(JobError::Persona(e));
    }
    Ok(ClickOutcome::Later(format!("Persona: {e}")))
}

fn inquiry_id_of(row: &InquiryRow) -> Result<InquiryId, JobError> {
    Ok(row.persona_id()?.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> InquiriesConfig {
        InquiriesConfig {
            expires_after: Duration::from_secs(7 * 86_400),
            refresh_before_expiry: Duration::from_secs(86_400),
            max_age: Duration::from_secs(30 * 86_400),
            recreate_on_new_template_version: true,
            max_resumes: 5,
            min_resend_interval: Duration::from_secs(86_400),
        }
    }

    fn inquiry(status: InquiryStatus, version: &str, created: DateTime<Utc>) -> Inquiry {
        Inquiry {
            id: InquiryId::parse("inq_1").unwrap(),
            status,
            reference_id: None,
            created_at: Some(created),
            updated_at: None,
            started_at: None,
            expires_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            redacted_at: None,
            template_id: None,
            template_version_id: Some(TemplateVersionId::parse(version).unwrap()),
            fields: Default::default(),
            session_count: None,
        }
    }

    fn row(created: DateTime<Utc>) -> InquiryRow {
        InquiryRow {
            id: 1,
            user_id: UserId::parse("usr_1").unwrap(),
            generation: 1,
            idempotency_key: "k".into(),
            key_created_at: created,
            inquiry_id: Some(InquiryId::parse("inq_1").unwrap()),
            status: RowStatus::Persona(InquiryStatus::Created),
            template_id: "itmpl_1".into(),
            template_version_id: None,
            persona_created_at: Some(created),
            expires_at: None,
            resume_count: 0,
            session_count: 0,
            superseded_at: None,
            superseded_reason: None,
            expired_remotely_at: None,
            created_at: created,
            status_observed_at: None,
        }
    }

    #[test]
    fn a_click_follows_the_lifecycle_rules() {
        let t0 = Utc::now();
        let day = chrono::Duration::days(1);
        let v1 = TemplateVersionId::parse("itmplv_1").unwrap();
        let v2 = TemplateVersionId::parse("itmplv_2").unwrap();
        let r = row(t0);
        let at = |status, version, latest| {
            plan(&inquiry(status, version, t0), latest, &r, &cfg(), t0 + day)
        };
        assert_eq!(
            at(InquiryStatus::Created, "itmplv_1", Some(&v1)),
            Plan::Link
        );
        assert_eq!(
            at(InquiryStatus::Pending, "itmplv_1", Some(&v1)),
            Plan::Link
        );
        assert_eq!(
            at(InquiryStatus::Expired, "itmplv_1", Some(&v1)),
            Plan::Resume
        );
        assert!(matches!(
            at(InquiryStatus::Created, "itmplv_1", Some(&v2)),
            Plan::Recreate {
                expire_first: true,
                ..
            }
        ));
        // A started user is never cut off, whatever the version.
        assert_eq!(
            at(InquiryStatus::Pending, "itmplv_1", Some(&v2)),
            Plan::Link
        );
        assert!(matches!(
            at(InquiryStatus::Expired, "itmplv_1", Some(&v2)),
            Plan::Recreate {
                expire_first: false,
                ..
            }
        ));
        // Version unknown: nothing to recreate for.
        assert_eq!(at(InquiryStatus::Created, "itmplv_1", None), Plan::Link);

        let mut spent = row(t0);
        spent.resume_count = 5;
        assert!(matches!(
            plan(
                &inquiry(InquiryStatus::Expired, "itmplv_1", t0),
                Some(&v1),
                &spent,
                &cfg(),
                t0 + day
            ),
            Plan::Recreate { .. }
        ));
        let old = plan(
            &inquiry(InquiryStatus::Expired, "itmplv_1", t0),
            Some(&v1),
            &r,
            &cfg(),
            t0 + day * 31,
        );
        assert!(matches!(old, Plan::Recreate { .. }), "{old:?}");
    }
}
