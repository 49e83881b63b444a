//! Refresh: after each run every unfinished user's latest mail carries a link that works now,
//! unless a documented limit holds it back (and then `status --user` says which).
//!
//! A run: (1) syncs statuses in bulk — one list of the template's live inquiries, 100 a page,
//! plus id lookups for the few that left that list (static links: a list of what was created
//! since the last run, to find users who opened their link); (2) learns the template's latest published
//! version once; (3) decides per current inquiry: nothing, resume, or recreate; (4) retries
//! renewed mails that did not go out; (5) expires at Persona the inquiries it replaced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::deliver::{Carry, Delivery, deliver};
use super::fresh_link::{self, Fresh, LinkProblem, MAX_SESSIONS};
use super::provision::{self, Created};
use super::status::{self, Applied};
use super::{JobContext, JobError, LEASE, RunFlags, is_fatal};
use crate::clock::format_ts;
use crate::domain::{
    InquiryId, InquiryStatus, LinkKind, ReferenceId, TemplateVersionId, User, UserId,
};
use crate::mail::MailKind;
use crate::persona::{IdempotencyKey, Inquiry, ListFilter, PersonaError};
use crate::store::inquiries::{self, InquiryRow, RowStatus};
use crate::store::user_states::{self, Claimed, UserState};
use crate::store::{StoreError, events, job_runs, mails, users};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    pub live_inquiries: usize,
    pub statuses_changed: usize,
    pub users_finished: usize,
    pub resumed: usize,
    pub recreated: usize,
    pub held_back: usize,
    pub mails_sent: usize,
    pub mails_deferred: usize,
    /// Mails given up on (the server refused them for good); not waiting for anything.
    pub mails_failed: usize,
    pub old_inquiries_expired: usize,
    pub reminders: super::reminders::ReminderReport,
    /// How the template's latest version was learned: "template", "inquiry", or "unknown".
    pub template_version_source: &'static str,
}

impl std::fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} live inquiries, {} status changes ({} users finished), {} resumed, {} recreated, {} held back by limits, {} mails sent, {} waiting for a retry, {} failed, {} replaced inquiries expired, {} reminders sent",
            self.live_inquiries,
            self.statuses_changed,
            self.users_finished,
            self.resumed,
            self.recreated,
            self.held_back,
            self.mails_sent,
            self.mails_deferred,
            self.mails_failed,
            self.old_inquiries_expired,
            self.reminders.sent
        )
    }
}

/// What to do with one user's current inquiry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Resume it: a started inquiry near expiry (which the resume does not end), or an expired one.
    Resume(String),
    /// Replace it: expire it at Persona first, then create the new one.
    Recreate(String),
    /// Due, but a limit says not now; the reason goes on the user.
    Hold(String),
}

/// The facts a decision is made from.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub row: &'a InquiryRow,
    pub now: DateTime<Utc>,
    pub latest_version: Option<&'a TemplateVersionId>,
    pub last_mailed_at: Option<DateTime<Utc>>,
}

/// The refresh policy (SPEC "The lifecycle rules"), as a pure function of the situation and
/// the config. A started inquiry (`pending`, not yet expired) is never replaced: near expiry it
/// is resumed when on the latest version and left alone otherwise; once expired it is renewed
/// (recreated when outdated or too old, else resumed). A `created` one may be replaced early.
pub fn decide(s: &Situation<'_>, cfg: &crate::config::InquiriesConfig, kind: LinkKind) -> Decision {
    let row = s.row;
    if row.status == RowStatus::Creating {
        // A recreate that a crash interrupted: the old inquiry is already replaced, so the user
        // holds no working link until this one exists. Finish it whatever the resend spacing.
        return Decision::Recreate("finishing an interrupted create".into());
    }
    let dur =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let due_at = row.expires_at.map(|t| t - dur(cfg.refresh_before_expiry));
    let expired =
        row.status == InquiryStatus::Expired || row.expires_at.is_some_and(|t| t <= s.now);
    let near_expiry = expired || due_at.is_some_and(|t| t <= s.now);
    let started = row.status == InquiryStatus::Pending && !expired;
    let outdated = cfg.recreate_on_new_template_version
        && s.latest_version.is_some()
        && row.template_version_id.as_deref() != s.latest_version.map(TemplateVersionId::as_str);
    let too_old = s.now - row.born_at() > dur(cfg.max_age);

    let action = if started && (outdated || (too_old && kind != LinkKind::Static)) {
        // Replacing it would cut the user off mid-flow; it is renewed once it has expired.
        return Decision::Nothing;
    } else if outdated {
        Decision::Recreate(format!(
            "pinned to template version {}, latest is {}",
            row.template_version_id.as_deref().unwrap_or("unknown"),
            s.latest_version
                .map(TemplateVersionId::as_str)
                .unwrap_or("unknown")
        ))
    } else if too_old && kind != LinkKind::Static {
        Decision::Recreate(format!(
            "older than max_age ({})",
            humantime::format_duration(cfg.max_age)
        ))
    } else if !near_expiry {
        return Decision::Nothing;
    } else if row.status == InquiryStatus::Created && !expired {
        Decision::Recreate("created and close to expiry (Persona has no way to extend it)".into())
    } else if started
        && (row.resume_count >= i64::from(cfg.max_resumes) || row.session_count + 1 >= MAX_SESSIONS)
    {
        // Out of resumes or sessions, but still running: renewed once it has expired.
        return Decision::Nothing;
    } else if row.resume_count >= i64::from(cfg.max_resumes) {
        Decision::Recreate(format!(
            "near expiry and out of resumes ({} of {})",
            row.resume_count, cfg.max_resumes
        ))
    } else if row.session_count + 1 >= MAX_SESSIONS {
        Decision::Recreate(format!(
            "near expiry and out of sessions ({} of {MAX_SESSIONS})",
            row.session_count
        ))
    } else if expired {
        Decision::Resume(format!(
            "expired; resume {} of {}",
            row.resume_count + 1,
            cfg.max_resumes
        ))
    } else {
        Decision::Resume(format!(
            "expires {}; resume {} of {}",
            row.expires_at.map_or_else(|| "-".to_owned(), format_ts),
            row.resume_count + 1,
            cfg.max_resumes
        ))
    };
    let min_gap = dur(cfg.min_resend_interval);
    if let Some(last) = s.last_mailed_at
        && s.now - last < min_gap
    {
        let why = match &action {
            Decision::Resume(w) | Decision::Recreate(w) => w.clone(),
            _ => String::new(),
        };
        return Decision::Hold(format!(
            "{why}; waiting for min_resend_interval until {}",
            format_ts(last + min_gap)
        ));
    }
    action
}

pub async fn run(ctx: &JobContext) -> Result<RefreshReport, JobError> {
    let mut report = RefreshReport::default();
    user_states::release_orphaned(&ctx.store, ctx.clock.now()).await?;
    if ctx.settings.link_kind == LinkKind::Static {
        // Static links never expire; what is left is learning who finished.
        sync_static(ctx, &mut report).await?;
        retry_unsent(ctx, &mut report, &Arc::new(RunFlags::default())).await?;
        report.reminders = super::reminders::run(ctx).await?;
        return Ok(report);
    }
    sync_statuses(ctx, &mut report).await?;
    let flags = Arc::new(RunFlags::default());
    // Redirect links heal on the click (jobs/click.rs): nothing to resume or renew by mail.
    if ctx.settings.link_kind != LinkKind::Redirect {
        let latest = latest_version(ctx, &mut report).await?;
        act_on_due(ctx, &mut report, latest, &flags).await?;
    }
    retry_unsent(ctx, &mut report, &flags).await?;
    expire_replaced(ctx, &mut report).await?;
    report.reminders = super::reminders::run(ctx).await?;
    Ok(report)
}

/// One list of the template's live inquiries (100 a page), then lookups by id, 100 a call, for
/// the followed rows that were not in it: ones that expired or finished, and finished ones
/// still awaiting a decision (`completed` → `approved`). Replaced inquiries not yet expired
/// are followed too: a user who finishes one of those is finished.
async fn sync_statuses(ctx: &JobContext, report: &mut RefreshReport) -> Result<(), JobError> {
    let now = ctx.clock.now();
    let mine: Vec<InquiryRow> = inquiries::followed(&ctx.store, now).await?;
    let mut by_id = by_inquiry_id(&mine);
    let filter = ListFilter {
        statuses: vec![InquiryStatus::Created, InquiryStatus::Pending],
        template_id: Some(ctx.settings.template_id.clone()),
        ..ListFilter::default()
    };
    let mut pages = ctx.persona.inquiry_pages(&filter);
    while let Some(page) = pages.next_page().await.map_err(persona_error)? {
        for inquiry in page {
            report.live_inquiries += 1;
            if let Some(row) = by_id.remove(&inquiry.id) {
                apply(ctx, report, row, &inquiry, "status sync", now).await?;
            }
        }
    }
    look_up_missing(ctx, report, &by_id, now).await
}

/// Marks the static-link sync in `job_runs`: its `started_at` is where the next one lists from.
const STATIC_SYNC: &str = "refresh.static-sync";

/// How far before the last sync the next one lists again: covers clock skew with Persona and
/// inquiries created while a listing was under way.
const STATIC_SYNC_OVERLAP: chrono::Duration = chrono::Duration::hours(1);

/// Static links: an inquiry exists only once a user opens their link, and it may finish before
/// any run sees it live. So every inquiry of the template created since the last sync is listed,
/// whatever its status (newest first, stopping at that point), and the ones carrying our
/// reference ids are followed from then on; those already followed are looked up by id.
async fn sync_static(ctx: &JobContext, report: &mut RefreshReport) -> Result<(), JobError> {
    let now = ctx.clock.now();
    let Some(since) = static_sync_since(ctx).await? else {
        // No link was sent yet, so nobody can have opened one.
        return Ok(());
    };
    let mine: Vec<InquiryRow> = inquiries::followed(&ctx.store, now).await?;
    let mut by_id = by_inquiry_id(&mine);
    let filter = ListFilter {
        template_id: Some(ctx.settings.template_id.clone()),
        ..ListFilter::default()
    };
    let mut pages = ctx.persona.inquiry_pages(&filter);
    let mut unknown = Vec::new();
    'pages: while let Some(page) = pages.next_page().await.map_err(persona_error)? {
        for inquiry in page {
            if inquiry.created_at.is_some_and(|t| t < since) {
                break 'pages;
            }
            report.live_inquiries += usize::from(inquiry.status.is_open());
            match by_id.remove(&inquiry.id) {
                Some(row) => apply(ctx, report, row, &inquiry, "status sync", now).await?,
                None => unknown.push(inquiry),
            }
        }
    }
    // Oldest first, so a user who opened their link twice ends with the newest as current.
    for inquiry in unknown.iter().rev() {
        adopt_static(ctx, report, inquiry, now).await?;
    }
    look_up_missing(ctx, report, &by_id, now).await?;
    let detail = format!("listed the inquiries created since {}", format_ts(since));
    job_runs::set_bookmark(&ctx.store, STATIC_SYNC, now, ctx.clock.now(), &detail).await?;
    Ok(())
}

/// Where the static sync lists from: the last sync, else the first link sent; `None` when no
/// link was sent yet.
async fn static_sync_since(ctx: &JobContext) -> Result<Option<DateTime<Utc>>, JobError> {
    let since = match job_runs::last_ok_start(&ctx.store, STATIC_SYNC).await? {
        Some(t) => Some(t),
        None => mails::first_sent_at(&ctx.store).await?,
    };
    Ok(since.map(|t| t - STATIC_SYNC_OVERLAP))
}

fn by_inquiry_id(rows: &[InquiryRow]) -> HashMap<InquiryId, &InquiryRow> {
    rows.iter()
        .filter_map(|r| r.inquiry_id.clone().map(|id| (id, r)))
        .collect()
}

/// Lookups by id, 100 a call, for followed inquiries a listing did not show (they expired or
/// finished, or are older than a static sync lists).
async fn look_up_missing(
    ctx: &JobContext,
    report: &mut RefreshReport,
    by_id: &HashMap<InquiryId, &InquiryRow>,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let missing: Vec<InquiryId> = by_id.keys().cloned().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let filter = ListFilter {
        inquiry_ids: missing,
        ..ListFilter::default()
    };
    let found = ctx
        .persona
        .list_inquiries(&filter)
        .await
        .map_err(persona_error)?;
    for inquiry in found {
        if let Some(row) = by_id.get(&inquiry.id) {
            apply(ctx, report, row, &inquiry, "status sync", now).await?;
        }
    }
    Ok(())
}

async fn apply(
    ctx: &JobContext,
    report: &mut RefreshReport,
    row: &InquiryRow,
    inquiry: &Inquiry,
    source: &str,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let seen = status::Observation {
        status: &inquiry.status,
        expires_at: inquiry.expires_at,
        observed_at: now,
        source,
    };
    match status::apply(&ctx.store, row, &seen, now).await? {
        Applied::Unchanged => {}
        Applied::Updated => report.statuses_changed += 1,
        Applied::Finished => {
            report.statuses_changed += 1;
            report.users_finished += 1;
        }
    }
    Ok(())
}

/// A static-link user opened their link: Persona made an inquiry with their reference id. Keep
/// it as the user's current inquiry so its status is followed from now on.
async fn adopt_static(
    ctx: &JobContext,
    report: &mut RefreshReport,
    inquiry: &Inquiry,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let Some(reference) = inquiry
        .reference_id
        .as_deref()
        .and_then(|r| ReferenceId::parse(r).ok())
    else {
        return Ok(());
    };
    let Some(user_id) = user_states::by_reference(&ctx.store, &reference).await? else {
        return Ok(());
    };
    if inquiries::by_inquiry_id(&ctx.store, &inquiry.id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut tx = ctx.store.begin_write().await?;
    let row =
        inquiries::begin_create(&mut tx, &user_id, ctx.settings.template_id.as_str(), now).await?;
    inquiries::record_facts(&mut tx, row.id, &fresh_link::facts_of(inquiry), now).await?;
    events::record(
        &mut tx,
        now,
        Some(&user_id),
        Some(&inquiry.id),
        "inquiry.seen",
        "the user opened their static link; following this inquiry",
    )
    .await?;
    tx.commit().await?;
    let row = inquiries::by_row_id(&ctx.store, row.id)
        .await?
        .expect("just written");
    // Its state moves like any other inquiry's (created → invited, pending → started).
    let placeholder = InquiryRow {
        status: RowStatus::Persona(InquiryStatus::Created),
        ..row.clone()
    };
    apply(ctx, report, &placeholder, inquiry, "status sync", now).await
}

/// The template's latest published version: one call a run. Persona serves the template
/// endpoint to production keys only; under a sandbox key the version is read from one live
/// inquiry of the template instead (`?include=inquiry-template`), also once a run, so every
/// current inquiry is judged against it, the `created` ones not yet due included.
async fn latest_version(
    ctx: &JobContext,
    report: &mut RefreshReport,
) -> Result<Option<TemplateVersionId>, JobError> {
    if !ctx.settings.inquiries.recreate_on_new_template_version {
        report.template_version_source = "unknown";
        return Ok(None);
    }
    match ctx
        .persona
        .retrieve_template(&ctx.settings.template_id)
        .await
    {
        Ok(t) => {
            report.template_version_source = "template";
            Ok(t.latest_published_version)
        }
        Err(e) if is_fatal(&e) && e.status() == Some(401) => Err(JobError::Persona(e)),
        Err(e) if e.is_transient() => Err(persona_error(e)),
        Err(e) => {
            tracing::info!(error = %e, "the inquiry template endpoint is not available to this key; reading the version from an inquiry");
            report.template_version_source = "unknown";
            let rows = inquiries::current_of_unfinished_users(&ctx.store).await?;
            let Some(id) = rows.iter().find_map(|r| r.inquiry_id.clone()) else {
                return Ok(None);
            };
            match ctx.persona.retrieve_inquiry(&id, true).await {
                Ok(r) => {
                    report.template_version_source = "inquiry";
                    Ok(r.latest_published_version)
                }
                Err(e) if is_fatal(&e) => Err(JobError::Persona(e)),
                Err(e) => {
                    tracing::warn!(inquiry = %id, error = %e, "template version unknown this run");
                    Ok(None)
                }
            }
        }
    }
}

fn persona_error(e: PersonaError) -> JobError {
    JobError::Persona(e)
}

async fn act_on_due(
    ctx: &JobContext,
    report: &mut RefreshReport,
    latest: Option<TemplateVersionId>,
    flags: &Arc<RunFlags>,
) -> Result<(), JobError> {
    let now = ctx.clock.now();
    let rows = current_rows(ctx).await?;
    // A mail waiting for a retry is the user's renewal already: it goes out in
    // `retry_unsent`, and deciding again would resume (or replace) once per run of an outage.
    let waiting = mails::users_with_unsent(&ctx.store).await?;
    let mut work = Vec::new();
    for (row, last_mailed_at) in rows {
        let decision = decide(
            &Situation {
                row: &row,
                now,
                latest_version: latest.as_ref(),
                last_mailed_at,
            },
            &ctx.settings.inquiries,
            ctx.settings.link_kind,
        );
        if waits_for_its_mail(&decision, waiting.contains(&row.user_id)) {
            continue;
        }
        match decision {
            Decision::Nothing => {}
            Decision::Hold(why) => {
                report.held_back += 1;
                hold(ctx, &row, &why, now).await?;
            }
            _ => work.push(row.user_id),
        }
    }
    let latest = Arc::new(latest);
    let permits = Arc::new(Semaphore::new(ctx.settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for user_id in work {
        let (ctx, flags, permits, latest) =
            (ctx.clone(), flags.clone(), permits.clone(), latest.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            if ctx.stop.is_cancelled() || flags.persona_down() {
                return Ok(None);
            }
            let Some(claimed) =
                user_states::claim_one(&ctx.store, &user_id, ctx.clock.now(), LEASE).await?
            else {
                return Ok(None);
            };
            let result = act(&ctx, &flags, &claimed, latest.as_ref().as_ref()).await;
            user_states::release(&ctx.store, &claimed.user_id, None).await?;
            result.map(Some)
        });
    }
    let mut fatal = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("refresh task panicked") {
            Ok(Some(done)) => {
                match done.action {
                    Some(ActionTaken::Resumed) => report.resumed += 1,
                    Some(ActionTaken::Recreated) => report.recreated += 1,
                    None => {}
                }
                report.old_inquiries_expired += done.old_expired;
                report.users_finished += usize::from(done.finished);
                report.count(done.delivery.as_ref());
            }
            Ok(None) => {}
            Err(e) => fatal = fatal.or(Some(e)),
        }
    }
    fatal.map_or(Ok(()), Err)
}

/// A user whose mail waits for a retry is left to `retry_unsent` unless the decision is to
/// replace the inquiry (which drops that mail): resuming again would spend a resume per run
/// of an outage.
fn waits_for_its_mail(decision: &Decision, mail_waiting: bool) -> bool {
    mail_waiting && !matches!(decision, Decision::Recreate(_))
}

impl RefreshReport {
    fn count(&mut self, delivery: Option<&Delivery>) {
        match delivery {
            Some(Delivery::Sent) => self.mails_sent += 1,
            Some(Delivery::Deferred(_)) => self.mails_deferred += 1,
            Some(Delivery::Failed(_)) => self.mails_failed += 1,
            Some(Delivery::Dropped) | None => {}
        }
    }
}

/// Each unfinished user's current inquiry with when they were last mailed; users whose latest
/// create was interrupted come too (their row is `creating`).
async fn current_rows(
    ctx: &JobContext,
) -> Result<Vec<(InquiryRow, Option<DateTime<Utc>>)>, JobError> {
    let rows = inquiries::current_of_unfinished_users(&ctx.store).await?;
    let mailed: HashMap<UserId, Option<DateTime<Utc>>> =
        user_states::last_mailed_of_unfinished(&ctx.store)
            .await?
            .into_iter()
            .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let last = mailed.get(&r.user_id).copied().flatten();
            (r, last)
        })
        .collect())
}

async fn hold(
    ctx: &JobContext,
    row: &InquiryRow,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let current = user_states::reason_of(&ctx.store, &row.user_id).await?;
    // The same hold is recorded once, not every run.
    let first_line = why.split("; waiting").next().unwrap_or(why);
    if current
        .as_deref()
        .is_some_and(|c| c.starts_with(first_line))
    {
        return Ok(());
    }
    let mut tx = ctx.store.begin_write().await?;
    user_states::set_reason_in(&mut tx, &row.user_id, Some(why)).await?;
    events::record(
        &mut tx,
        now,
        Some(&row.user_id),
        row.inquiry_id.as_ref(),
        "refresh.hold",
        why,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

enum ActionTaken {
    Resumed,
    Recreated,
}

#[derive(Default)]
struct Done {
    action: Option<ActionTaken>,
    delivery: Option<Delivery>,
    /// Replaced inquiries this user's renewal expired at Persona.
    old_expired: usize,
    /// The user turned out finished (e.g. the old inquiry's expire answered 409).
    finished: bool,
}

/// One claimed user's renewal. Everything is read again under the lease, because the list this
/// run decided from may be stale: a webhook (which takes no lease) may have finished the user,
/// or another process (`once` beside `run`) may have renewed them already.
async fn act(
    ctx: &JobContext,
    flags: &RunFlags,
    claimed: &Claimed,
    latest: Option<&TemplateVersionId>,
) -> Result<Done, JobError> {
    let now = ctx.clock.now();
    if !user_states::is_unfinished(&ctx.store, &claimed.user_id).await? {
        return Ok(Done::default());
    }
    let Some(row) = inquiries::current(&ctx.store, &claimed.user_id).await? else {
        return Ok(Done::default());
    };
    let decision = decide(
        &Situation {
            row: &row,
            now,
            latest_version: latest,
            last_mailed_at: claimed.last_mailed_at,
        },
        &ctx.settings.inquiries,
        ctx.settings.link_kind,
    );
    let mail_waiting = mails::unsent_for_user(&ctx.store, &claimed.user_id)
        .await?
        .is_some();
    if waits_for_its_mail(&decision, mail_waiting) {
        return Ok(Done::default());
    }
    if row.status != RowStatus::Creating
        && matches!(decision, Decision::Resume(_) | Decision::Recreate(_))
        && !flags.smtp_ready(&ctx.mailer).await
    {
        // A resume or a new inquiry (with its session or one-time link) spent on a mail that
        // cannot go out would be spent again next run.
        let why = "due for a fresh link; waits: the mail server does not answer";
        user_states::set_reason(&ctx.store, &claimed.user_id, Some(why)).await?;
        return Ok(Done::default());
    }
    let Some(raw) = users::get(&ctx.store, claimed.user_id.as_str()).await? else {
        return Ok(Done::default());
    };
    let user = match User::parse(&raw, now.date_naive()) {
        Ok(u) => u,
        Err(e) => {
            provision::skip_user(ctx, &claimed.user_id, &e.0, now).await?;
            return Ok(Done::default());
        }
    };
    let mut done = Done::default();
    let (fresh, inquiry_row) = match decision {
        Decision::Resume(why) => {
            match resume(ctx, claimed, &row, &why).await {
                Ok(fresh) => {
                    done.action = Some(ActionTaken::Resumed);
                    (fresh, row.id)
                }
                Err(LinkProblem::Store(e)) => return Err(e.into()),
                Err(LinkProblem::Persona(e)) if is_fatal(&e) => return Err(JobError::Persona(e)),
                Err(LinkProblem::Persona(e)) if e.is_transient() => {
                    flags.set_persona_down();
                    return Ok(done);
                }
                Err(LinkProblem::Persona(e)) if e.status() == Some(409) => {
                    // Finished meanwhile, most likely: read it and apply what it says.
                    done.finished = read_and_apply(ctx, &row).await? == Some(Applied::Finished);
                    return Ok(done);
                }
                Err(problem) => {
                    // A spent budget: the next run's decision takes it from there.
                    let why = format!("resume failed: {problem}");
                    user_states::set_reason(&ctx.store, &claimed.user_id, Some(&why)).await?;
                    return Ok(done);
                }
            }
        }
        Decision::Recreate(why) => match recreate(ctx, claimed, &user, row, latest, &why).await? {
            Renewal::Created {
                fresh,
                row,
                old_expired,
            } => {
                done.action = Some(ActionTaken::Recreated);
                done.old_expired = old_expired;
                (fresh, row)
            }
            Renewal::Finished { old_expired } => {
                done.old_expired = old_expired;
                done.finished = true;
                return Ok(done);
            }
            Renewal::NotNow { old_expired } => {
                done.old_expired = old_expired;
                return Ok(done);
            }
        },
        Decision::Nothing | Decision::Hold(_) => return Ok(done),
    };
    if matches!(done.action, Some(ActionTaken::Resumed)) {
        let mut tx = ctx.store.begin_write().await?;
        mails::cancel_unsent(&mut tx, &claimed.user_id, now).await?;
        provision::enqueue(ctx, &mut tx, claimed, Some(inquiry_row), MailKind::Renewed).await?;
        tx.commit().await?;
    }
    let mail = mails::unsent_for_user(&ctx.store, &claimed.user_id).await?;
    if let Some(mail) = mail {
        let carry = Carry {
            fresh,
            ..Carry::default()
        };
        done.delivery = Some(deliver(ctx, flags, claimed, &user, &mail, carry).await?);
    }
    Ok(done)
}

/// Resumes the inquiry, which does not end it: a started one keeps running (its user is never
/// cut off), an expired one becomes `pending` with a fresh interval (`expires_after`, set at
/// creation).
async fn resume(
    ctx: &JobContext,
    claimed: &Claimed,
    row: &InquiryRow,
    why: &str,
) -> Result<Fresh, LinkProblem> {
    let id = row.inquiry_id.clone().ok_or(LinkProblem::NoInquiry)?;
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin_write().await?;
    events::record(
        &mut tx,
        now,
        Some(&claimed.user_id),
        Some(&id),
        "refresh.resume",
        why,
    )
    .await?;
    tx.commit().await?;
    let (_inquiry, token) = fresh_link::resume(ctx, claimed, row, &id, true).await?;
    Ok(match ctx.settings.link_kind {
        LinkKind::Session => Fresh::Token(token),
        // The one-time link is generated at send time from the now-pending inquiry.
        _ => Fresh::Nothing,
    })
}

/// How a recreate ended.
enum Renewal {
    /// The replacement exists (row id) and its mail is queued.
    Created {
        fresh: Fresh,
        row: i64,
        old_expired: usize,
    },
    /// An inquiry of the user turned out finished: the user is finished, nothing was created.
    Finished { old_expired: usize },
    /// Not now (Persona unreachable, the old inquiry not expired yet, or the fresh read changed
    /// the decision); the next run takes it from there.
    NotNow { old_expired: usize },
}

/// Replaces the current inquiry. The old one is read fresh and expired at Persona *before* the
/// new one is created, so the user never holds two live inquiries, crash or not: the intent
/// (old row replaced, a `creating` row) commits first, and a run that finds a `creating` row
/// expires what it replaces before creating.
async fn recreate(
    ctx: &JobContext,
    claimed: &Claimed,
    user: &User,
    row: InquiryRow,
    latest: Option<&TemplateVersionId>,
    why: &str,
) -> Result<Renewal, JobError> {
    let now = ctx.clock.now();
    let new_row = if row.status == RowStatus::Creating {
        // A recreate (or first create) interrupted before Persona answered: finish it.
        row
    } else {
        // Decisions on fresh reads: the user may have started or finished since the sync.
        match read_and_apply(ctx, &row).await? {
            Some(Applied::Finished) => return Ok(Renewal::Finished { old_expired: 0 }),
            None => return Ok(Renewal::NotNow { old_expired: 0 }),
            Some(_) => {}
        }
        let fresh_row = inquiries::by_row_id(&ctx.store, row.id)
            .await?
            .ok_or_else(|| StoreError::Missing {
                table: "inquiries",
                key: row.id.to_string(),
            })?;
        let again = decide(
            &Situation {
                row: &fresh_row,
                now,
                latest_version: latest,
                last_mailed_at: None,
            },
            &ctx.settings.inquiries,
            ctx.settings.link_kind,
        );
        if !matches!(again, Decision::Recreate(_)) {
            return Ok(Renewal::NotNow { old_expired: 0 });
        }
        let mut tx = ctx.store.begin_write().await?;
        inquiries::supersede(&mut tx, fresh_row.id, why, now).await?;
        mails::cancel_unsent(&mut tx, &claimed.user_id, now).await?;
        events::record(
            &mut tx,
            now,
            Some(&claimed.user_id),
            fresh_row.inquiry_id.as_ref(),
            "refresh.recreate",
            why,
        )
        .await?;
        let new_row = inquiries::begin_create(
            &mut tx,
            &claimed.user_id,
            ctx.settings.template_id.as_str(),
            now,
        )
        .await?;
        tx.commit().await?;
        new_row
    };
    crate::faults::crash_point("refresh.before-expire-old");
    if let Some(started) = inquiries::superseded_unexpired_of(&ctx.store, &claimed.user_id)
        .await?
        .into_iter()
        .find(|r| {
            r.status == InquiryStatus::Pending && r.expires_at.is_none_or(|t| t > ctx.clock.now())
        })
    {
        // The user started the inquiry being replaced (a crash left it unexpired): it stays.
        let why = "the user started the inquiry it was to replace";
        let now = ctx.clock.now();
        inquiries::mark_abandoned(&ctx.store, new_row.id, why, now).await?;
        inquiries::restore(&ctx.store, started.id, now).await?;
        let mut tx = ctx.store.begin_write().await?;
        if user_states::state_in(&mut tx, &claimed.user_id).await? == Some(UserState::Invited) {
            user_states::set_state(
                &mut tx,
                &claimed.user_id,
                UserState::Started,
                None,
                None,
                now,
            )
            .await?;
        }
        events::record(
            &mut tx,
            now,
            Some(&claimed.user_id),
            started.inquiry_id.as_ref(),
            "refresh.keep",
            &format!("{why}; it stays, no replacement"),
        )
        .await?;
        tx.commit().await?;
        return Ok(Renewal::NotNow { old_expired: 0 });
    }
    let expired = expire_replaced_of(ctx, &claimed.user_id).await?;
    if expired.finished || !user_states::is_unfinished(&ctx.store, &claimed.user_id).await? {
        // Finishing wins: no replacement is made or mailed.
        let why = "the user finished first";
        inquiries::mark_abandoned(&ctx.store, new_row.id, why, ctx.clock.now()).await?;
        return Ok(Renewal::Finished {
            old_expired: expired.expired,
        });
    }
    if expired.pending > 0 {
        return Ok(Renewal::NotNow {
            old_expired: expired.expired,
        });
    }
    let new_id = new_row.id;
    match provision::create(ctx, claimed, user, new_row, MailKind::Renewed, false).await? {
        Created::Done { fresh, .. } => Ok(Renewal::Created {
            fresh,
            row: new_id,
            old_expired: expired.expired,
        }),
        Created::Rejected | Created::Later => Ok(Renewal::NotNow {
            old_expired: expired.expired,
        }),
    }
}

/// Retrieves the row's inquiry and applies what Persona says now; `None` when Persona could
/// not be asked.
async fn read_and_apply(ctx: &JobContext, row: &InquiryRow) -> Result<Option<Applied>, JobError> {
    let Some(id) = row.inquiry_id.clone() else {
        return Ok(None);
    };
    match ctx.persona.retrieve_inquiry(&id, false).await {
        Ok(r) => {
            let now = ctx.clock.now();
            let seen = status::Observation {
                status: &r.inquiry.status,
                expires_at: r.inquiry.expires_at,
                observed_at: now,
                source: "a fresh read",
            };
            Ok(Some(status::apply(&ctx.store, row, &seen, now).await?))
        }
        Err(e) if is_fatal(&e) => Err(JobError::Persona(e)),
        Err(e) => {
            tracing::warn!(inquiry = %id, error = %e, "inquiry not readable now; next run");
            Ok(None)
        }
    }
}

/// What expiring a user's replaced inquiries did.
#[derive(Debug, Default)]
struct Expired {
    expired: usize,
    /// Still live at Persona (the call failed for now).
    pending: usize,
    /// One of them had finished: the user is finished.
    finished: bool,
}

async fn expire_replaced_of(ctx: &JobContext, user_id: &UserId) -> Result<Expired, JobError> {
    let rows = inquiries::superseded_unexpired_of(&ctx.store, user_id).await?;
    let mut out = Expired::default();
    for r in rows {
        match expire_one(ctx, &r).await? {
            ExpireOutcome::Expired => out.expired += 1,
            ExpireOutcome::Finished => out.finished = true,
            ExpireOutcome::NotYet => out.pending += 1,
        }
    }
    Ok(out)
}

/// Expires replaced inquiries still live at Persona (a crash may have left some).
async fn expire_replaced(ctx: &JobContext, report: &mut RefreshReport) -> Result<(), JobError> {
    for r in inquiries::superseded_unexpired(&ctx.store, 1000).await? {
        if ctx.stop.is_cancelled() {
            break;
        }
        if r.status == InquiryStatus::Pending {
            // Started by its user: its user's next renewal restores it (see `recreate`).
            continue;
        }
        match expire_one(ctx, &r).await? {
            ExpireOutcome::Expired => report.old_inquiries_expired += 1,
            ExpireOutcome::Finished => report.users_finished += 1,
            ExpireOutcome::NotYet => {}
        }
    }
    Ok(())
}

enum ExpireOutcome {
    Expired,
    /// Persona answered 409 and the inquiry is finished: its user is finished with its outcome.
    Finished,
    /// Still live at Persona; a later run retries.
    NotYet,
}

async fn expire_one(ctx: &JobContext, row: &InquiryRow) -> Result<ExpireOutcome, JobError> {
    let Some(id) = row.inquiry_id.clone() else {
        return Ok(ExpireOutcome::NotYet);
    };
    match ctx
        .persona
        .expire_inquiry(&id, &IdempotencyKey::generate())
        .await
    {
        Ok(inquiry) if inquiry.status == InquiryStatus::Expired => {
            inquiries::mark_expired_remotely(&ctx.store, row.id, ctx.clock.now()).await?;
            Ok(ExpireOutcome::Expired)
        }
        Ok(inquiry) => {
            tracing::warn!(inquiry = %id, status = %inquiry.status, "expire answered with a live status; next run retries");
            Ok(ExpireOutcome::NotYet)
        }
        Err(e) if is_fatal(&e) => Err(JobError::Persona(e)),
        Err(e) if e.status() == Some(409) => {
            // Not expirable: finished meanwhile, most likely. Read it and apply what it says;
            // never record it as expired on the word of a refusal.
            if read_and_apply(ctx, row).await?.is_none() {
                return Ok(ExpireOutcome::NotYet);
            }
            let status = inquiries::by_row_id(&ctx.store, row.id)
                .await?
                .map(|r| InquiryStatus::parse(r.status.as_str()));
            match status {
                Some(InquiryStatus::Expired) => {
                    inquiries::mark_expired_remotely(&ctx.store, row.id, ctx.clock.now()).await?;
                    Ok(ExpireOutcome::Expired)
                }
                Some(s) if s.is_finished() => Ok(ExpireOutcome::Finished),
                _ => Ok(ExpireOutcome::NotYet),
            }
        }
        Err(e) => {
            tracing::warn!(inquiry = %id, error = %e, "replaced inquiry not expired yet; next run retries");
            Ok(ExpireOutcome::NotYet)
        }
    }
}

/// Renewed mails that did not go out (a crash, an SMTP outage) go out now.
async fn retry_unsent(
    ctx: &JobContext,
    report: &mut RefreshReport,
    flags: &Arc<RunFlags>,
) -> Result<(), JobError> {
    let users_due = mails::due_users_not_pending(&ctx.store, ctx.clock.now(), 10_000).await?;
    let mut done = HashSet::new();
    for user_id in users_due {
        if ctx.stop.is_cancelled() || flags.smtp_down() || !done.insert(user_id.clone()) {
            continue;
        }
        let Some(claimed) =
            user_states::claim_one(&ctx.store, &user_id, ctx.clock.now(), LEASE).await?
        else {
            continue;
        };
        let outcome = retry_one(ctx, flags, &claimed).await;
        user_states::release(&ctx.store, &user_id, None).await?;
        report.count(outcome?.as_ref());
    }
    Ok(())
}

async fn retry_one(
    ctx: &JobContext,
    flags: &RunFlags,
    claimed: &Claimed,
) -> Result<Option<Delivery>, JobError> {
    let Some(mail) = mails::unsent_for_user(&ctx.store, &claimed.user_id).await? else {
        return Ok(None);
    };
    let Some(raw) = users::get(&ctx.store, claimed.user_id.as_str()).await? else {
        return Ok(None);
    };
    let Ok(user) = User::parse(&raw, ctx.clock.now().date_naive()) else {
        return Ok(None);
    };
    Ok(Some(
        deliver(ctx, flags, claimed, &user, &mail, Carry::default()).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InquiriesConfig;
    use std::time::Duration;

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

    fn row(
        status: &str,
        created: DateTime<Utc>,
        expires: Option<DateTime<Utc>>,
        version: &str,
    ) -> InquiryRow {
        InquiryRow {
            id: 1,
            user_id: UserId::parse("usr_1").unwrap(),
            generation: 1,
            idempotency_key: "k".into(),
            key_created_at: created,
            inquiry_id: Some(InquiryId::parse("inq_1").unwrap()),
            status: RowStatus::parse(status),
            template_id: "itmpl_1".into(),
            template_version_id: Some(version.into()),
            persona_created_at: Some(created),
            expires_at: expires,
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
    fn decisions_follow_the_policy() {
        let t0 = Utc::now();
        let v1 = TemplateVersionId::parse("itmplv_1").unwrap();
        let v2 = TemplateVersionId::parse("itmplv_2").unwrap();
        let day = chrono::Duration::days(1);
        let at = |r: &InquiryRow, now, latest, mailed| {
            decide(
                &Situation {
                    row: r,
                    now,
                    latest_version: latest,
                    last_mailed_at: mailed,
                },
                &cfg(),
                LinkKind::Session,
            )
        };
        let fresh = row("created", t0, Some(t0 + day * 7), "itmplv_1");
        assert_eq!(at(&fresh, t0 + day, Some(&v1), Some(t0)), Decision::Nothing);
        assert!(matches!(
            at(&fresh, t0 + day, Some(&v2), Some(t0 - day * 2)),
            Decision::Recreate(_)
        ));
        assert!(matches!(
            at(
                &fresh,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v1),
                Some(t0)
            ),
            Decision::Recreate(_)
        ));
        let pending = row("pending", t0, Some(t0 + day * 7), "itmplv_1");
        assert!(matches!(
            at(
                &pending,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v1),
                Some(t0)
            ),
            Decision::Resume(_)
        ));
        // Within min_resend_interval of the last mail: held, with the reason.
        match at(
            &pending,
            t0 + day * 6 + chrono::Duration::hours(1),
            Some(&v1),
            Some(t0 + day * 6),
        ) {
            Decision::Hold(why) => assert!(why.contains("min_resend_interval"), "{why}"),
            d => panic!("{d:?}"),
        }
        let mut spent = row("expired", t0, None, "itmplv_1");
        spent.resume_count = 5;
        match at(&spent, t0 + day * 8, Some(&v1), Some(t0)) {
            Decision::Recreate(why) => assert!(why.contains("out of resumes"), "{why}"),
            d => panic!("{d:?}"),
        }
        // Past max_age: a `created` one is replaced; a started one (SPEC release 2: never cut
        // off) is left alone until it expires, then replaced.
        let old_created = row("created", t0, Some(t0 + day * 40), "itmplv_1");
        match at(&old_created, t0 + day * 31, Some(&v1), Some(t0)) {
            Decision::Recreate(why) => assert!(why.contains("max_age"), "{why}"),
            d => panic!("{d:?}"),
        }
        let old = row("pending", t0, Some(t0 + day * 40), "itmplv_1");
        assert_eq!(
            at(&old, t0 + day * 31, Some(&v1), Some(t0)),
            Decision::Nothing
        );
        match at(&old, t0 + day * 41, Some(&v1), Some(t0)) {
            Decision::Recreate(why) => assert!(why.contains("max_age"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_started_inquiry_is_never_replaced_before_it_expires() {
        let t0 = Utc::now();
        let v1 = TemplateVersionId::parse("itmplv_1").unwrap();
        let v2 = TemplateVersionId::parse("itmplv_2").unwrap();
        let day = chrono::Duration::days(1);
        let at = |r: &InquiryRow, now, latest| {
            decide(
                &Situation {
                    row: r,
                    now,
                    latest_version: latest,
                    last_mailed_at: Some(t0),
                },
                &cfg(),
                LinkKind::Session,
            )
        };
        let started = row("pending", t0, Some(t0 + day * 7), "itmplv_1");
        // A new version: left alone, also near expiry (a resume would keep it on the old one).
        assert_eq!(at(&started, t0 + day * 2, Some(&v2)), Decision::Nothing);
        assert_eq!(
            at(
                &started,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v2)
            ),
            Decision::Nothing
        );
        // On the latest version near expiry: resumed, which does not end it.
        assert!(matches!(
            at(
                &started,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v1)
            ),
            Decision::Resume(_)
        ));
        // Out of resumes but still running: left alone, renewed once it expired.
        let mut spent = started.clone();
        spent.resume_count = 5;
        assert_eq!(
            at(&spent, t0 + day * 6 + chrono::Duration::hours(1), Some(&v1)),
            Decision::Nothing
        );
        // Expired: renewed once, onto the latest version when outdated, else resumed.
        let expired = row("expired", t0, None, "itmplv_1");
        assert!(matches!(
            at(&expired, t0 + day * 8, Some(&v2)),
            Decision::Recreate(_)
        ));
        assert!(matches!(
            at(&expired, t0 + day * 8, Some(&v1)),
            Decision::Resume(_)
        ));
    }
}
