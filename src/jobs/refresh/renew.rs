//! Renewal: for each unfinished user's current inquiry that is due, under the user's lease and
//! on a fresh read, resume it or replace it (jobs/replace.rs), then mail the fresh link.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::RefreshReport;
use super::policy::{Decision, Situation, decide, waits_for_its_mail};
use crate::domain::{LinkKind, TemplateVersionId, User, UserId};
use crate::jobs::deliver::{Carry, Delivery, deliver};
use crate::jobs::fresh_link::{self, Fresh, LinkProblem};
use crate::jobs::provision::{self, Created};
use crate::jobs::replace::{self, Replaced, Replacing, read_and_apply};
use crate::jobs::status::Applied;
use crate::jobs::{JobContext, JobError, LEASE, RunFlags, is_fatal};
use crate::mail::MailKind;
use crate::store::inquiries::{self, InquiryRow, RowStatus};
use crate::store::user_states::{self, Claimed};
use crate::store::{StoreError, events, mails, users};

/// The template's latest published version: one call a run. Persona serves the template
/// endpoint to production keys only; under a sandbox key the version is read from one live
/// inquiry of the template instead (`?include=inquiry-template`), also once a run, so every
/// current inquiry is judged against it, the `created` ones not yet due included.
pub(super) async fn latest_version(
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
        Err(e) if e.is_transient() => Err(JobError::Persona(e)),
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

pub(super) async fn act_on_due(
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

/// Replaces the current inquiry (jobs/replace.rs) once a fresh read confirms the decision:
/// the old one is expired at Persona before the new one is created, and the new one's
/// `renewed` mail is queued with it.
async fn recreate(
    ctx: &JobContext,
    claimed: &Claimed,
    user: &User,
    row: InquiryRow,
    latest: Option<&TemplateVersionId>,
    why: &str,
) -> Result<Renewal, JobError> {
    let now = ctx.clock.now();
    let row = if row.status == RowStatus::Creating {
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
        fresh_row
    };
    let how = Replacing {
        source: "refresh",
        mail: MailKind::Renewed,
        drop_unsent: true,
    };
    match replace::replace(ctx, claimed, user, row, why, how).await? {
        Replaced::Tried {
            created: Created::Done { fresh, .. },
            row,
            old_expired,
        } => Ok(Renewal::Created {
            fresh,
            row,
            old_expired,
        }),
        Replaced::Tried { old_expired, .. } | Replaced::NotNow { old_expired, .. } => {
            Ok(Renewal::NotNow { old_expired })
        }
        Replaced::Finished { old_expired } => Ok(Renewal::Finished { old_expired }),
    }
}
