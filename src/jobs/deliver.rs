//! Sending one queued mail: obtain a working link, count the attempt, render, send, and record
//! the outcome. Transient failures go back to the queue; permanent ones are recorded on the user.

use chrono::{DateTime, Utc};

use super::fresh_link::{self, Fresh, LinkProblem};
use super::{JobContext, JobError, RunFlags, state_for_status};
use crate::domain::{InquiryStatus, User};
use crate::mail::SendError;
use crate::store::events;
use crate::store::inquiries::{self, InquiryRow};
use crate::store::mails::{self, MailRow};
use crate::store::steps::{self, Sent};
use crate::store::user_states::{self, Claimed, UserState};

/// How one mail went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Will be tried again by a later run (a server was down, or a limit holds it back).
    Deferred(String),
    /// Given up; the reason is on the user.
    Failed(String),
    /// Not sent and not to be: the user finished (or was skipped) meanwhile.
    Dropped,
}

/// Sends tried within one run before the mail goes back to the queue.
const SEND_TRIES: usize = 3;

/// When a mail that failed `attempts` times is due again: at once for the first few (runs are
/// spaced by the schedule anyway), then doubling from a minute, at most an hour apart.
pub fn retry_at(now: DateTime<Utc>, attempts: i64) -> DateTime<Utc> {
    if attempts <= 2 {
        return now;
    }
    let minutes = 1i64 << (attempts - 3).min(6);
    now + chrono::Duration::minutes(minutes.min(60))
}

/// What the caller brings to a delivery besides the mail.
#[derive(Debug, Default)]
pub struct Carry<'a> {
    /// The inquiry row the caller holds (just recorded): saves a read when it is the mail's.
    pub inquiry: Option<&'a InquiryRow>,
    /// A secret Persona just handed over for the link.
    pub fresh: Fresh,
    /// Whether a sent mail ends the user's lease in the same transaction (the caller has
    /// nothing left to do for the user then).
    pub end_lease: bool,
    /// The mail was stored as `sending` with this attempt already counted (queued by the
    /// caller for sending at once): no write before the send, and a send not tried puts the
    /// attempt back.
    pub counted: bool,
}

pub async fn deliver(
    ctx: &JobContext,
    run: &RunFlags,
    claimed: &Claimed,
    user: &User,
    mail: &MailRow,
    carry: Carry<'_>,
) -> Result<Delivery, JobError> {
    if run.smtp_down() {
        // Not tried, so nothing on the mail says why it waits: say it on the user.
        let why = format!("{} mail waits: the mail server was unreachable", mail.kind);
        put_back_uncounted(ctx, mail, carry.counted).await?;
        user_states::set_reason(&ctx.store, &claimed.user_id, Some(&why)).await?;
        return Ok(Delivery::Deferred(why));
    }
    if !user_states::is_unfinished(&ctx.store, &claimed.user_id).await? {
        // A webhook takes no lease: the user may have finished since the caller looked.
        let mut tx = ctx.store.begin_write().await?;
        mails::cancel_unsent(&mut tx, &claimed.user_id, ctx.clock.now()).await?;
        tx.commit().await?;
        return Ok(Delivery::Dropped);
    }
    let kind = mail.kind;
    let row = match (mail.inquiry_row, carry.inquiry) {
        (Some(id), Some(row)) if row.id == id => Some(row.clone()),
        (Some(id), _) => inquiries::by_row_id(&ctx.store, id).await?,
        (None, _) => None,
    };
    if fresh_link::asks_persona(
        ctx.settings.link_kind,
        row.as_ref(),
        &carry.fresh,
        ctx.clock.now(),
    ) && !run.smtp_ready(&ctx.mailer).await
    {
        let why = format!(
            "{kind} mail waits: the mail server does not answer, so no link was asked of Persona"
        );
        put_back_uncounted(ctx, mail, carry.counted).await?;
        user_states::set_reason(&ctx.store, &claimed.user_id, Some(&why)).await?;
        return Ok(Delivery::Deferred(why));
    }
    let obtained = match fresh_link::obtain(
        ctx,
        claimed,
        row.as_ref(),
        carry.fresh,
        user.locale.as_ref(),
    )
    .await
    {
        Ok(o) => o,
        Err(LinkProblem::Store(e)) => return Err(e.into()),
        Err(LinkProblem::Persona(e)) if super::is_fatal(&e) => return Err(JobError::Persona(e)),
        Err(LinkProblem::Persona(e)) if e.is_transient() => {
            run.set_persona_down();
            put_back_uncounted(ctx, mail, carry.counted).await?;
            return Ok(Delivery::Deferred(format!("no link yet: {e}")));
        }
        Err(problem) => {
            // The link cannot be had from this inquiry; the mail waits for refresh to recreate it
            // (or is moot when the inquiry finished).
            put_back_uncounted(ctx, mail, carry.counted).await?;
            let why = format!("no link for the {kind} mail: {problem}");
            user_states::set_reason(&ctx.store, &claimed.user_id, Some(&why)).await?;
            return Ok(Delivery::Deferred(why));
        }
    };
    let now = ctx.clock.now();
    if !carry.counted {
        mails::mark_sending(&ctx.store, mail.id, obtained.expires_at, now).await?;
    }
    crate::faults::crash_point("deliver.before-send");
    let outgoing = match ctx.mailer.compose(
        kind,
        user,
        obtained.link,
        obtained.expires_at,
        row.as_ref()
            .is_some_and(|r| r.status == InquiryStatus::Pending),
        &mail.message_id,
        now,
    ) {
        Ok(m) => m,
        Err(e) => {
            mails::unclaim(&ctx.store, mail.id).await?;
            return Err(e.into());
        }
    };
    let result = ctx
        .mailer
        .transport()
        .send_with_retry(&outgoing, SEND_TRIES)
        .await;
    let now = ctx.clock.now();
    let attempts = if carry.counted {
        mail.attempts
    } else {
        mail.attempts + 1
    };
    match result {
        Ok(()) => {
            crate::faults::crash_point("deliver.after-send");
            let detail = format!(
                "{kind} mail {} sent ({})",
                mail.message_id,
                outgoing_summary(attempts)
            );
            let sent = Sent {
                mail_id: mail.id,
                user_id: &claimed.user_id,
                state: row
                    .as_ref()
                    .map(|r| state_for_status(&r.status))
                    .unwrap_or(UserState::Invited),
                inquiry_id: row.as_ref().and_then(|r| r.inquiry_id.as_ref()),
                detail: &detail,
                link_expires_at: obtained.expires_at,
                end_lease: carry.end_lease,
            };
            steps::mail_sent(&ctx.store, &sent, now).await?;
            metrics::counter!("mails_total", "kind" => kind.as_str(), "outcome" => "sent")
                .increment(1);
            tracing::info!(user = %claimed.user_id, kind = %kind, "mail sent");
            Ok(Delivery::Sent)
        }
        Err(SendError::Transient(why)) if attempts < i64::from(ctx.settings.mail_max_attempts) => {
            run.set_smtp_down();
            let next = retry_at(now, attempts);
            mails::mark_retry(&ctx.store, mail.id, next, &why, now).await?;
            let mut tx = ctx.store.begin_write().await?;
            events::record(
                &mut tx,
                now,
                Some(&claimed.user_id),
                None,
                "mail.retry",
                &format!("{kind} mail not sent (attempt {attempts}), will retry: {why}"),
            )
            .await?;
            tx.commit().await?;
            metrics::counter!("mails_total", "kind" => kind.as_str(), "outcome" => "retry")
                .increment(1);
            tracing::warn!(user = %claimed.user_id, kind = %kind, error = %why, "mail not sent; will retry");
            Ok(Delivery::Deferred(why))
        }
        Err(e) => {
            let why = match &e {
                SendError::Transient(w) => format!("gave up after {attempts} attempts: {w}"),
                SendError::Permanent(w) => format!("the mail server refused the mail: {w}"),
            };
            let mut tx = ctx.store.begin_write().await?;
            mails::mark_failed(&mut tx, mail.id, &why, now).await?;
            user_states::skip(&mut tx, &claimed.user_id, &why, "mail.failed", None, now).await?;
            tx.commit().await?;
            metrics::counter!("mails_total", "kind" => kind.as_str(), "outcome" => "failed")
                .increment(1);
            tracing::error!(user = %claimed.user_id, kind = %kind, error = %why, "mail failed; user skipped");
            Ok(Delivery::Failed(why))
        }
    }
}

/// A mail stored as `sending` whose send was not tried goes back to the queue, its attempt
/// uncounted.
async fn put_back_uncounted(
    ctx: &JobContext,
    mail: &MailRow,
    counted: bool,
) -> Result<(), JobError> {
    if counted {
        mails::unclaim(&ctx.store, mail.id).await?;
    }
    Ok(())
}

fn outgoing_summary(attempts: i64) -> String {
    if attempts == 1 {
        "first attempt".into()
    } else {
        format!("attempt {attempts}")
    }
}
