//! Clean-up after the renewals: renewed mails that did not go out are retried, and replaced
//! inquiries a crash left live at Persona are expired.

use std::collections::HashSet;
use std::sync::Arc;

use super::RefreshReport;
use crate::domain::{InquiryStatus, User};
use crate::jobs::deliver::{Carry, Delivery, deliver};
use crate::jobs::replace::{ExpireOutcome, expire_one};
use crate::jobs::{JobContext, JobError, LEASE, RunFlags};
use crate::store::inquiries;
use crate::store::user_states::{self, Claimed};
use crate::store::{mails, users};

/// Expires replaced inquiries still live at Persona (a crash may have left some).
pub(super) async fn expire_replaced(
    ctx: &JobContext,
    report: &mut RefreshReport,
) -> Result<(), JobError> {
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

/// Renewed mails that did not go out (a crash, an SMTP outage) go out now.
pub(super) async fn retry_unsent(
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
