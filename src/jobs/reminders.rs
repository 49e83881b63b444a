//! Reminders: at each `[reminders] after` time since the invite, a user still `invited` or
//! `started` gets one `reminder` mail with a link that works now, unless another mail went out
//! within `min_resend_interval` of that time (it stands for the reminder). Run by refresh.
//!
//! Once means once: the reminder is recorded (a unique row per user and entry) before it is
//! sent, and one that a crash caught mid-send is closed, never sent again — a lost nudge is
//! better than a doubled one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::deliver::{Carry, Delivery, deliver};
use super::{JobContext, JobError, LEASE, RunFlags};
use crate::domain::{User, UserId};
use crate::store::mails::{self, ReminderFacts};
use crate::store::user_states::{self, Claimed, UserState};
use crate::store::{StoreError, events, inquiries, users};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReminderReport {
    pub sent: usize,
    /// Queued but not sent this run (a server was down): a later run sends them.
    pub deferred: usize,
    /// Reminders a crash caught mid-send, closed without a second send.
    pub interrupted: usize,
}

/// Where one user stands on the cadence at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The entry to send now: the latest one due that no other mail stands for (earlier ones
    /// left over, e.g. after downtime, are then stood for by it).
    pub due_now: Option<Duration>,
    /// The next entry that will fall due after now, and when, unless a mail stands for it.
    pub next: Option<(Duration, DateTime<Utc>)>,
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The cadence for one user, as a pure function of what the store knows.
pub fn plan(
    after: &[Duration],
    facts: &ReminderFacts,
    min_resend: Duration,
    now: DateTime<Utc>,
) -> Plan {
    let mut due_now = None;
    let mut next = None;
    for &entry in after {
        if facts.recorded.contains(&secs(entry)) {
            continue;
        }
        let due_at = facts.invited_at + chrono_of(entry);
        let stood_for = facts
            .last_mailed_at
            .is_some_and(|last| last > due_at - chrono_of(min_resend));
        if stood_for {
            continue;
        }
        if due_at <= now {
            due_now = Some(entry);
        } else if next.is_none() {
            next = Some((entry, due_at));
        }
    }
    Plan { due_now, next }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The hook refresh calls at the end of its run (after its own mails, which then stand for
/// reminders that fall due with them).
pub async fn run(ctx: &JobContext) -> Result<ReminderReport, JobError> {
    let mut report = ReminderReport::default();
    close_interrupted(ctx, &mut report).await?;
    let settings = &ctx.settings;
    let Some(&first) = settings.reminders.after.first() else {
        return Ok(report);
    };
    let now = ctx.clock.now();
    let due: Vec<(UserId, Duration)> =
        mails::reminder_facts(&ctx.store, None, now - chrono_of(first))
            .await?
            .into_iter()
            .filter(|f| !f.unsent)
            .filter_map(|f| {
                let p = plan(
                    &settings.reminders.after,
                    &f,
                    settings.inquiries.min_resend_interval,
                    now,
                );
                p.due_now.map(|entry| (f.user_id, entry))
            })
            .collect();
    let flags = Arc::new(RunFlags::default());
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (user_id, entry) in due {
        let (ctx, flags, permits) = (ctx.clone(), flags.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            if ctx.stop.is_cancelled() || flags.smtp_down() || flags.persona_down() {
                return Ok(None);
            }
            remind(&ctx, &flags, &user_id, entry).await
        });
    }
    let mut fatal = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("reminder task panicked") {
            Ok(Some(Delivery::Sent)) => report.sent += 1,
            Ok(Some(_)) => report.deferred += 1,
            Ok(None) => {}
            Err(e) => fatal = fatal.or(Some(e)),
        }
    }
    fatal.map_or(Ok(report), Err)
}

async fn remind(
    ctx: &JobContext,
    flags: &RunFlags,
    user_id: &UserId,
    entry: Duration,
) -> Result<Option<Delivery>, JobError> {
    let Some(claimed) = user_states::claim_one(&ctx.store, user_id, ctx.clock.now(), LEASE).await?
    else {
        return Ok(None);
    };
    let result = remind_claimed(ctx, flags, &claimed, entry).await;
    user_states::release(&ctx.store, user_id, None).await?;
    result
}

async fn remind_claimed(
    ctx: &JobContext,
    flags: &RunFlags,
    claimed: &Claimed,
    entry: Duration,
) -> Result<Option<Delivery>, JobError> {
    let now = ctx.clock.now();
    let settings = &ctx.settings;
    // Read again under the lease: the user may have finished, or been mailed, since the list.
    let Some(facts) = mails::reminder_facts(&ctx.store, Some(&claimed.user_id), now)
        .await?
        .pop()
    else {
        return Ok(None);
    };
    let still_due = plan(
        &settings.reminders.after,
        &facts,
        settings.inquiries.min_resend_interval,
        now,
    )
    .due_now
        == Some(entry);
    if !matches!(facts.state, UserState::Invited | UserState::Started) || facts.unsent || !still_due
    {
        return Ok(None);
    }
    let Some(raw) = users::get(&ctx.store, claimed.user_id.as_str()).await? else {
        return Ok(None);
    };
    // A row edited into an unusable one is refresh's and provisioning's business, not ours.
    let Ok(user) = User::parse(&raw, now.date_naive()) else {
        return Ok(None);
    };
    let row = inquiries::current(&ctx.store, &claimed.user_id).await?;
    if settings.link_kind.precreates() && row.as_ref().is_none_or(|r| r.inquiry_id.is_none()) {
        // Being recreated: the renewed mail that follows stands for the reminder.
        return Ok(None);
    }
    let ordinal = settings
        .reminders
        .after
        .iter()
        .position(|&d| d == entry)
        .map_or(0, |i| i + 1);
    let mut tx = ctx.store.begin_write().await?;
    let Some(mail) = mails::enqueue_reminder(
        &mut tx,
        &claimed.user_id,
        row.as_ref().map(|r| r.id),
        &ctx.mailer.new_message_id(),
        secs(entry),
        now,
    )
    .await?
    else {
        return Ok(None);
    };
    events::record(
        &mut tx,
        now,
        Some(&claimed.user_id),
        row.as_ref().and_then(|r| r.inquiry_id.as_ref()),
        "reminder.queued",
        &format!(
            "reminder {ordinal} of {} ({} after the invite) queued",
            settings.reminders.after.len(),
            humantime::format_duration(entry)
        ),
    )
    .await?;
    tx.commit().await?;
    let delivery = deliver(
        ctx,
        flags,
        claimed,
        &user,
        &mail,
        Carry {
            inquiry: row.as_ref(),
            ..Carry::default()
        },
    )
    .await?;
    Ok(Some(delivery))
}

/// One user's reminders for `status --user`: those recorded and the next one due.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Standing {
    /// `[reminders] after`, e.g. `["2d", "4d"]`.
    pub cadence: Vec<String>,
    pub recorded: Vec<RecordedReminder>,
    /// The next reminder: its entry and when it falls due (`null` when none will).
    pub next: Option<NextReminder>,
    /// Why no reminder is due, when none is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub none_because: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordedReminder {
    pub after: String,
    pub status: String,
    pub sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NextReminder {
    pub after: String,
    pub due_at: String,
}

fn shown(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub async fn standing(
    store: &crate::store::Store,
    settings: &super::JobSettings,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<Standing, StoreError> {
    let after = &settings.reminders.after;
    // A row whose id does not parse was skipped: it never had a mail.
    let Ok(user_id) = UserId::parse_stored(user_id) else {
        return Ok(Standing {
            cadence: after.iter().map(|d| shown(*d)).collect(),
            recorded: Vec::new(),
            next: None,
            none_because: Some(if after.is_empty() {
                "[reminders] after is empty".to_owned()
            } else {
                "no invite sent yet: reminders count from it".to_owned()
            }),
        });
    };
    let user_id = &user_id;
    let recorded = mails::reminders_of(store, user_id)
        .await?
        .into_iter()
        .map(|m| RecordedReminder {
            after: shown(Duration::from_secs(
                u64::try_from(m.reminder_after.unwrap_or(0)).unwrap_or(0),
            )),
            status: m.status.as_str().to_owned(),
            sent_at: m.sent_at.map(crate::clock::format_ts),
            note: m.last_error,
        })
        .collect();
    // Far in the future: the user's facts whenever they were invited.
    let facts = mails::reminder_facts(store, Some(user_id), now + chrono::Duration::days(36_500))
        .await?
        .pop();
    let (next, none_because) = match &facts {
        _ if after.is_empty() => (None, Some("[reminders] after is empty".to_owned())),
        None => (
            None,
            Some("no invite sent yet: reminders count from it".to_owned()),
        ),
        Some(f) if !matches!(f.state, UserState::Invited | UserState::Started) => {
            (None, Some(format!("the user is {}", f.state)))
        }
        Some(f) => {
            let p = plan(after, f, settings.inquiries.min_resend_interval, now);
            let next = p
                .due_now
                .map(|d| (d, f.invited_at + chrono_of(d)))
                .or(p.next)
                .map(|(d, at)| NextReminder {
                    after: shown(d),
                    due_at: crate::clock::format_ts(at),
                });
            let why = next
                .is_none()
                .then(|| "every reminder was sent or stood for by another mail".to_owned());
            (next, why)
        }
    };
    Ok(Standing {
        cadence: after.iter().map(|d| shown(*d)).collect(),
        recorded,
        next,
        none_because,
    })
}

/// What an interrupted reminder's row and the user's history say about it.
pub const INTERRUPTED: &str = "the daemon stopped while sending this reminder, so whether it \
     arrived is unknown; a reminder is never sent twice";

/// Reminders a crash caught between `sending` and their outcome: closed, and counted as mailed
/// for `min_resend_interval` (they may have arrived).
async fn close_interrupted(ctx: &JobContext, report: &mut ReminderReport) -> Result<(), JobError> {
    for mail in mails::interrupted_reminders(&ctx.store).await? {
        let now = ctx.clock.now();
        // A live worker holding the user may be sending it right now: leave it to them.
        let Some(claimed) = user_states::claim_one(&ctx.store, &mail.user_id, now, LEASE).await?
        else {
            continue;
        };
        let mut tx = ctx.store.begin_write().await?;
        let closed = mails::close_interrupted_reminder(&mut tx, mail.id, INTERRUPTED, now).await?;
        if closed {
            user_states::note_possibly_mailed(&mut tx, &mail.user_id, mail.updated_at).await?;
            events::record(
                &mut tx,
                now,
                Some(&mail.user_id),
                None,
                "reminder.interrupted",
                &format!("reminder {}: {INTERRUPTED}", mail.message_id),
            )
            .await?;
        }
        tx.commit().await?;
        user_states::release(&ctx.store, &claimed.user_id, None).await?;
        if closed {
            tracing::warn!(user = %mail.user_id, "{INTERRUPTED}");
            report.interrupted += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn facts(
        invited_at: DateTime<Utc>,
        last: Option<DateTime<Utc>>,
        recorded: &[Duration],
    ) -> ReminderFacts {
        ReminderFacts {
            user_id: UserId::parse("usr_1").unwrap(),
            state: UserState::Invited,
            invited_at,
            last_mailed_at: last,
            recorded: recorded.iter().map(|d| secs(*d)).collect(),
            unsent: false,
        }
    }

    #[test]
    fn each_entry_falls_due_once_and_another_mail_close_to_it_stands_for_it() {
        let t0 = Utc::now();
        let day = chrono::Duration::days(1);
        let after = [2 * DAY, 4 * DAY];
        let at = |f: &ReminderFacts, now| plan(&after, f, DAY, now);

        // Not yet: the first entry is next.
        let p = at(&facts(t0, Some(t0), &[]), t0 + day);
        assert_eq!(
            p,
            Plan {
                due_now: None,
                next: Some((2 * DAY, t0 + day * 2))
            }
        );
        // Due at its time; once recorded, the second is next.
        assert_eq!(
            at(&facts(t0, Some(t0), &[]), t0 + day * 2).due_now,
            Some(2 * DAY)
        );
        let p = at(&facts(t0, Some(t0 + day * 2), &[2 * DAY]), t0 + day * 3);
        assert_eq!(
            p,
            Plan {
                due_now: None,
                next: Some((4 * DAY, t0 + day * 4))
            }
        );
        // A renewal 12 hours before the second entry stands for it, now and later.
        for now in [t0 + day * 4, t0 + day * 9] {
            let p = at(&facts(t0, Some(t0 + day * 3 + day / 2), &[2 * DAY]), now);
            assert_eq!(
                p,
                Plan {
                    due_now: None,
                    next: None
                }
            );
        }
        // After downtime past both entries: one reminder, the later one.
        assert_eq!(
            at(&facts(t0, Some(t0), &[]), t0 + day * 5).due_now,
            Some(4 * DAY)
        );
        // Everything recorded: nothing more, ever.
        let p = at(&facts(t0, Some(t0), &after), t0 + day * 30);
        assert_eq!(
            p,
            Plan {
                due_now: None,
                next: None
            }
        );
    }
}
