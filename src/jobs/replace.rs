//! Replacing a user's current inquiry, the step refresh's renewal and a redirect click share:
//! the intent first (old row replaced, a `creating` row), then the old inquiry expired at
//! Persona, then the new one created on the template's latest version.

use crate::domain::{InquiryStatus, User, UserId};
use crate::jobs::provision::{self, Created};
use crate::jobs::status::{self, Applied};
use crate::jobs::{JobContext, JobError, is_fatal};
use crate::mail::MailKind;
use crate::persona::IdempotencyKey;
use crate::store::inquiries::{self, InquiryRow, RowStatus};
use crate::store::user_states::{self, Claimed, UserState};
use crate::store::{events, mails};

/// What differs between the callers of [`replace`].
#[derive(Debug, Clone, Copy)]
pub struct Replacing {
    /// The prefix of the events it records: `refresh` or `redirect`.
    pub source: &'static str,
    /// The mail the new inquiry's create queues: `Renewed` for refresh; a click's `Invite`
    /// queues none (the user was mailed already, that is how they clicked).
    pub mail: MailKind,
    /// Whether mails still waiting are dropped with the old inquiry (refresh: the renewed mail
    /// takes their place).
    pub drop_unsent: bool,
}

/// How a replacement ended; `old_expired`: replaced inquiries it expired at Persona.
pub enum Replaced {
    /// The create was tried on the replacement's row (`row`): what it came to.
    Tried {
        created: Created,
        row: i64,
        old_expired: usize,
    },
    /// An inquiry of the user turned out finished: the user is finished, nothing was created.
    Finished { old_expired: usize },
    /// Not now: the user started the inquiry being replaced (it stays), or a replaced one is
    /// still live at Persona; the `creating` row waits for the next attempt.
    NotNow {
        old_expired: usize,
        why: &'static str,
    },
}

/// Replaces the current inquiry `row` (read fresh and judged outdated by the caller). The old
/// one is expired at Persona *before* the new one is created, so the user never holds two live
/// inquiries, crash or not: the intent (old row replaced, a `creating` row) commits first, and
/// an attempt that finds a `creating` row expires what it replaces before creating.
pub async fn replace(
    ctx: &JobContext,
    claimed: &Claimed,
    user: &User,
    row: InquiryRow,
    why: &str,
    how: Replacing,
) -> Result<Replaced, JobError> {
    let now = ctx.clock.now();
    let new_row = if row.status == RowStatus::Creating {
        // A replacement (or first create) interrupted before Persona answered: finish it.
        row
    } else {
        let mut tx = ctx.store.begin_write().await?;
        inquiries::supersede(&mut tx, row.id, why, now).await?;
        if how.drop_unsent {
            mails::cancel_unsent(&mut tx, &claimed.user_id, now).await?;
        }
        events::record(
            &mut tx,
            now,
            Some(&claimed.user_id),
            row.inquiry_id.as_ref(),
            &format!("{}.recreate", how.source),
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
            &format!("{}.keep", how.source),
            &format!("{why}; it stays, no replacement"),
        )
        .await?;
        tx.commit().await?;
        return Ok(Replaced::NotNow {
            old_expired: 0,
            why,
        });
    }
    let expired = expire_replaced_of(ctx, &claimed.user_id).await?;
    if expired.finished || !user_states::is_unfinished(&ctx.store, &claimed.user_id).await? {
        // Finishing wins: no replacement is made or mailed.
        let why = "the user finished first";
        inquiries::mark_abandoned(&ctx.store, new_row.id, why, ctx.clock.now()).await?;
        return Ok(Replaced::Finished {
            old_expired: expired.expired,
        });
    }
    if expired.pending > 0 {
        return Ok(Replaced::NotNow {
            old_expired: expired.expired,
            why: "the inquiry it replaces is not expired at Persona yet",
        });
    }
    let new_id = new_row.id;
    let created = provision::create(ctx, claimed, user, new_row, how.mail, false).await?;
    Ok(Replaced::Tried {
        created,
        row: new_id,
        old_expired: expired.expired,
    })
}

/// Retrieves the row's inquiry and applies what Persona says now; `None` when Persona could
/// not be asked.
pub async fn read_and_apply(
    ctx: &JobContext,
    row: &InquiryRow,
) -> Result<Option<Applied>, JobError> {
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

pub enum ExpireOutcome {
    Expired,
    /// Persona answered 409 and the inquiry is finished: its user is finished with its outcome.
    Finished,
    /// Still live at Persona; a later run retries.
    NotYet,
}

pub async fn expire_one(ctx: &JobContext, row: &InquiryRow) -> Result<ExpireOutcome, JobError> {
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
