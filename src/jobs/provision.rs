//! Provisioning: every pending user gets one prefilled inquiry (none for static links) and one
//! e-mail with a working link, exactly once in effect, whatever crashes or outages happen.
//!
//! Per user: the intent (a `creating` row with its idempotency key, written for a whole batch
//! in one transaction) commits before the create call; the answer and the queued mail commit
//! together after it; the mail is marked `sending` before the send and `sent` after it. A crash
//! anywhere leaves a row that says what to redo.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::deliver::{Carry, Delivery, deliver};
use super::fresh_link::{Fresh, facts_of};
use super::{JobContext, JobError, LEASE, RunFlags, is_fatal};
use crate::domain::{InquiryStatus, LinkKind, ParseError, User, UserId};
use crate::mail::MailKind;
use crate::persona::{CreateInquiry, IdempotencyKey, InquiryFields, ListFilter, PersonaError};
use crate::store::inquiries::{self, InquiryRow, RowStatus};
use crate::store::mails::{MailHistory, MailRow, MailStatus};
use crate::store::steps::{self, Answer, Recorded, WantedMail};
use crate::store::user_states::{self, Claimed};
use crate::store::{StoreError, WriteTx, events, mails, users};

/// What a run did, for logs, `once` and the demo.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProvisionReport {
    pub discovered: usize,
    pub skipped: usize,
    pub inquiries_created: usize,
    pub inquiries_adopted: usize,
    pub mails_sent: usize,
    pub mails_deferred: usize,
    pub mails_failed: usize,
    pub users_deferred: usize,
}

impl ProvisionReport {
    fn add(&mut self, o: &UserOutcome) {
        self.inquiries_created += usize::from(o.created);
        self.inquiries_adopted += usize::from(o.adopted);
        self.skipped += usize::from(o.skipped);
        match &o.delivery {
            Some(Delivery::Sent) => self.mails_sent += 1,
            Some(Delivery::Deferred(_)) => self.mails_deferred += 1,
            Some(Delivery::Failed(_)) => self.mails_failed += 1,
            Some(Delivery::Dropped) | None => {}
        }
        self.users_deferred += usize::from(o.deferred);
    }
}

impl std::fmt::Display for ProvisionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} new users ({} skipped), {} inquiries created, {} adopted, {} mails sent, {} waiting for a retry, {} failed",
            self.discovered,
            self.skipped,
            self.inquiries_created,
            self.inquiries_adopted,
            self.mails_sent,
            self.mails_deferred,
            self.mails_failed
        )
    }
}

#[derive(Debug, Default)]
struct UserOutcome {
    created: bool,
    adopted: bool,
    skipped: bool,
    deferred: bool,
    delivery: Option<Delivery>,
}

/// Keys older than this may have been pruned by Persona (it keeps them at least 24 h): look
/// before creating again.
const KEY_TRUST: chrono::Duration = chrono::Duration::hours(23);

/// Rows discovered per step, so a million new rows never sit in memory at once.
const DISCOVER_BATCH: u32 = 1000;

pub async fn run(ctx: &JobContext) -> Result<ProvisionReport, JobError> {
    let mut report = ProvisionReport::default();
    let _leases = super::lease_keeper::LeaseKeeper::start(ctx);
    user_states::release_orphaned(&ctx.store, ctx.clock.now()).await?;
    user_states::revalidate_edited(&ctx.store, ctx.clock.now()).await?;

    let run_started = ctx.clock.now();
    let flags = Arc::new(RunFlags::default());
    let concurrency = ctx.settings.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    // New rows are discovered a page at a time between claims, so the first mails of a large
    // backlog go out at once instead of after the whole table was read. The next batch is
    // claimed while the last users of the previous one are still in flight, so Persona calls
    // and sends never wait for the slowest user of a batch.
    let mut discovery = Discovery::default();
    let mut tasks = JoinSet::new();
    let mut exhausted = false;
    let mut fatal = None;
    loop {
        let stopping = ctx.stop.is_cancelled() || flags.persona_down() || fatal.is_some();
        if !exhausted && !stopping && tasks.len() < concurrency {
            match next_batch(ctx, &mut discovery, &mut report, run_started).await {
                Ok(batch) => {
                    exhausted = batch.is_empty() && discovery.done;
                    for (claimed, known) in batch {
                        tasks.spawn(provision_claimed(
                            ctx.clone(),
                            flags.clone(),
                            permits.clone(),
                            claimed,
                            known,
                        ));
                    }
                }
                // In-flight users finish (and give their leases back) before the error is told.
                Err(e) => fatal = Some(e),
            }
            continue;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined.expect("provision task panicked") {
            Ok(outcome) => report.add(&outcome),
            Err(e) => fatal = fatal.or(Some(e)),
        }
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    metrics::counter!("provision_users_total", "outcome" => "mailed")
        .increment(report.mails_sent as u64);
    Ok(report)
}

/// Where discovery of new `users` rows stands within one run.
#[derive(Debug, Default)]
struct Discovery {
    /// The last id seen; the next page starts after it.
    after: Option<String>,
    done: bool,
}

/// What is read for each claimed user together with the whole batch (two statements per batch),
/// so no user costs reads of their own. The lease keeps other workers from changing it.
#[derive(Debug, Default)]
struct Known {
    /// The application's row, validated once for the batch; `None` when it was deleted since.
    user: Option<Result<User, ParseError>>,
    /// The user's newest unreplaced inquiry.
    current: Option<InquiryRow>,
}

/// Discovers the next page of new rows (while any are left), then claims a batch of pending
/// users and reads what is known of them. An empty batch with discovery not done yet means:
/// call again.
async fn next_batch(
    ctx: &JobContext,
    discovery: &mut Discovery,
    report: &mut ProvisionReport,
    run_started: DateTime<Utc>,
) -> Result<Vec<(Claimed, Known)>, JobError> {
    if !discovery.done {
        let page = user_states::discover(
            &ctx.store,
            ctx.clock.now(),
            discovery.after.as_deref(),
            DISCOVER_BATCH,
        )
        .await?;
        report.discovered += page.pending + page.skipped;
        report.skipped += page.skipped;
        discovery.done = page.last_id.is_none();
        discovery.after = page.last_id;
    }
    let claimed = user_states::claim_pending(
        &ctx.store,
        ctx.clock.now(),
        run_started,
        LEASE,
        ctx.settings.batch_size,
    )
    .await?;
    match know_claimed(ctx, &claimed).await {
        Ok(known) => Ok(claimed.into_iter().zip(known).collect()),
        Err(e) => {
            // Leases back at once, not when they lapse: the next run may take these users.
            for c in &claimed {
                if let Err(release) = user_states::release(&ctx.store, &c.user_id, None).await {
                    tracing::warn!(user = %c.user_id, error = %release, "lease kept until it lapses");
                }
            }
            Err(e)
        }
    }
}

/// Reads the claimed users' rows and current inquiries, and writes the intents of those that
/// need an inquiry: what each user's task starts from, in the order of `claimed`.
async fn know_claimed(ctx: &JobContext, claimed: &[Claimed]) -> Result<Vec<Known>, JobError> {
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = claimed.iter().map(|c| c.user_id.as_str()).collect();
    let today = ctx.clock.now().date_naive();
    let mut users: HashMap<String, Result<User, ParseError>> = users::get_many(&ctx.store, &ids)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), User::parse(&u, today)))
        .collect();
    let user_ids: Vec<&UserId> = claimed.iter().map(|c| &c.user_id).collect();
    let mut current: HashMap<String, InquiryRow> =
        inquiries::current_of_users(&ctx.store, &user_ids)
            .await?
            .into_iter()
            .map(|r| (r.user_id.to_string(), r))
            .collect();
    if ctx.settings.link_kind.precreates() {
        // The intents of the batch's users that need an inquiry, in one transaction before
        // any create call. Rows that do not validate get none: they are skipped below.
        let needing: Vec<&UserId> = user_ids
            .iter()
            .copied()
            .filter(|id| !current.contains_key(id.as_str()))
            .filter(|id| users.get(id.as_str()).is_some_and(Result::is_ok))
            .collect();
        let intents = inquiries::begin_create_many(
            &ctx.store,
            &needing,
            ctx.settings.template_id.as_str(),
            ctx.clock.now(),
        )
        .await?;
        current.extend(intents.into_iter().map(|r| (r.user_id.to_string(), r)));
    }
    Ok(claimed
        .iter()
        .map(|c| Known {
            user: users.remove(c.user_id.as_str()),
            current: current.remove(c.user_id.as_str()),
        })
        .collect())
}

/// One claimed user's task: waits for a permit, provisions, and always gives the lease back
/// (deferred when the user could not be finished now).
async fn provision_claimed(
    ctx: JobContext,
    flags: Arc<RunFlags>,
    permits: Arc<Semaphore>,
    claimed: Claimed,
    known: Known,
) -> Result<UserOutcome, JobError> {
    let _permit = permits.acquire_owned().await.expect("semaphore open");
    let user_id = claimed.user_id.clone();
    if ctx.stop.is_cancelled() || flags.persona_down() {
        user_states::release(&ctx.store, &user_id, None).await?;
        return Ok(UserOutcome::default());
    }
    let result = provision_user(&ctx, &flags, &claimed, known).await;
    let defer = match &result {
        // The transaction that recorded the sent mail ended the lease.
        Ok(o) if o.delivery == Some(Delivery::Sent) => return result,
        Ok(o) if !o.deferred => None,
        _ => Some(ctx.clock.now()),
    };
    user_states::release(&ctx.store, &user_id, defer).await?;
    result
}

/// Takes one claimed user as far as possible: inquiry, queued mail, sent mail.
async fn provision_user(
    ctx: &JobContext,
    flags: &RunFlags,
    claimed: &Claimed,
    known: Known,
) -> Result<UserOutcome, JobError> {
    let mut outcome = UserOutcome::default();
    let Some(verdict) = known.user else {
        return Ok(outcome);
    };
    let now = ctx.clock.now();
    let user = match verdict {
        Ok(u) => u,
        Err(e) => {
            skip_user(ctx, &claimed.user_id, &e.0, now).await?;
            outcome.skipped = true;
            return Ok(outcome);
        }
    };

    let mut fresh = Fresh::Nothing;
    let mut queued = None;
    let inquiry = if !ctx.settings.link_kind.precreates() {
        // Static links: a row the user's own visit made (refresh follows those), if any.
        known.current
    } else {
        let row = match known.current {
            Some(row) if row.status == RowStatus::Rejected => return Ok(outcome),
            Some(row) => row,
            // `know_claimed` wrote an intent for every valid user without one; none came back
            // only if the user has no state row.
            None => {
                return Err(StoreError::Missing {
                    table: "user_states",
                    key: claimed.user_id.to_string(),
                }
                .into());
            }
        };
        if row.status != RowStatus::Creating {
            Some(row)
        } else {
            // Sent straight after, unless the mail server is known to be down this run.
            let send_now = !flags.smtp_down();
            match create(ctx, claimed, &user, row, MailKind::Invite, send_now).await? {
                Created::Done {
                    fresh: f,
                    adopted,
                    mail,
                    inquiry: recorded,
                } => {
                    fresh = f;
                    queued = mail.map(|m| *m);
                    outcome.created = !adopted;
                    outcome.adopted = adopted;
                    Some(*recorded)
                }
                Created::Rejected => {
                    outcome.skipped = true;
                    return Ok(outcome);
                }
                Created::Later => {
                    flags.set_persona_down();
                    outcome.deferred = true;
                    return Ok(outcome);
                }
            }
        }
    };

    // Queued by the create just now as `sending`: its attempt is counted already.
    let counted = queued
        .as_ref()
        .is_some_and(|m| m.status == MailStatus::Sending);
    let unsent = match queued {
        // Just queued with the inquiry, in the transaction that committed: no need to read it.
        Some(m) => Some(m),
        None => mails::unsent_for_user(&ctx.store, &claimed.user_id).await?,
    };
    let mail = match unsent {
        Some(m) => m,
        None if mails::last_for_user(&ctx.store, &claimed.user_id)
            .await?
            .is_none() =>
        {
            // Static links: no inquiry, so the invite is queued here. (For the other kinds it
            // was queued with the inquiry; this also covers a row adopted without one.)
            let mut tx = ctx.store.begin_write().await?;
            let mail =
                enqueue_invite(ctx, &mut tx, claimed, inquiry.as_ref().map(|r| r.id)).await?;
            tx.commit().await?;
            mail
        }
        None => return Ok(outcome),
    };
    if mail.next_attempt_at > ctx.clock.now() {
        return Ok(outcome);
    }
    let carry = Carry {
        inquiry: inquiry.as_ref(),
        fresh,
        end_lease: true,
        counted,
    };
    let delivery = deliver(ctx, flags, claimed, &user, &mail, carry).await?;
    outcome.deferred = matches!(delivery, Delivery::Deferred(_));
    outcome.delivery = Some(delivery);
    Ok(outcome)
}

/// A row that stopped being usable (the application edited it): skipped, with the reason.
pub async fn skip_user(
    ctx: &JobContext,
    user_id: &UserId,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let mut tx = ctx.store.begin_write().await?;
    user_states::skip(&mut tx, user_id, why, "user.skipped", None, now).await?;
    tx.commit().await?;
    tracing::warn!(user = %user_id, reason = %why, "user skipped");
    Ok(())
}

async fn enqueue_invite(
    ctx: &JobContext,
    tx: &mut WriteTx,
    claimed: &Claimed,
    inquiry_row: Option<i64>,
) -> Result<MailRow, JobError> {
    enqueue(ctx, tx, claimed, inquiry_row, MailKind::Invite).await
}

/// Queues a mail of `kind` linking to `inquiry_row`, inside the caller's transaction.
pub(crate) async fn enqueue(
    ctx: &JobContext,
    tx: &mut WriteTx,
    claimed: &Claimed,
    inquiry_row: Option<i64>,
    kind: MailKind,
) -> Result<MailRow, JobError> {
    let now = ctx.clock.now();
    let message_id = ctx.mailer.new_message_id();
    let mail = mails::enqueue(tx, &claimed.user_id, inquiry_row, kind, &message_id, now).await?;
    let detail = format!("{kind} queued");
    events::record(
        tx,
        now,
        Some(&claimed.user_id),
        None,
        "mail.queued",
        &detail,
    )
    .await?;
    Ok(mail)
}

pub enum Created {
    /// `mail`: the mail queued with the inquiry, when one was; `inquiry`: the row as recorded.
    Done {
        fresh: Fresh,
        adopted: bool,
        mail: Option<Box<MailRow>>,
        inquiry: Box<InquiryRow>,
    },
    Rejected,
    Later,
}

/// The request for a user's inquiry, built from their validated row.
pub fn create_request(ctx: &JobContext, claimed: &Claimed, user: &User) -> CreateInquiry {
    let s = &ctx.settings;
    CreateInquiry {
        template_id: s.template_id.clone(),
        reference_id: claimed.reference_id.clone(),
        fields: InquiryFields {
            name_first: user.name_first.clone(),
            name_last: user.name_last.clone(),
            birthdate: user.birthdate,
            phone_number: user.phone_number.clone(),
            email_address: Some(user.email.clone()),
        },
        redirect_uri: s.links.redirect_uri.clone(),
        // A `created` inquiry opens with its id alone, so session links need no token at
        // first; asking for one would spend one of the inquiry's 25 sessions for nothing.
        auto_create_session: false,
        // A redirect click creates the inquiry and sends the browser on at once: one call.
        auto_create_one_time_link: matches!(s.link_kind, LinkKind::OneTime | LinkKind::Redirect),
        one_time_link_expires_in: matches!(s.link_kind, LinkKind::OneTime | LinkKind::Redirect)
            .then_some(s.one_time_link_expires_after),
        expires_after: Some(s.inquiries.expires_after),
        note: Some(adoption_note(&claimed.reference_id)),
    }
}

/// The note every inquiry of a user carries: what finds it again after a lost answer
/// (`filter[note]`), since Persona does not promise to copy the account's reference id onto
/// the inquiry. Opaque like the reference id it is made from.
pub fn adoption_note(reference_id: &crate::domain::ReferenceId) -> String {
    format!("inquiry-mailer {reference_id}")
}

/// Runs (or re-runs) the create call of a `creating` row, records the answer and queues a mail
/// of `mail_kind` with it — as being sent (its attempt counted) when `send_now`, for a caller
/// that sends it straight after.
pub async fn create(
    ctx: &JobContext,
    claimed: &Claimed,
    user: &User,
    mut row: InquiryRow,
    mail_kind: MailKind,
    send_now: bool,
) -> Result<Created, JobError> {
    // A second pass only after Persona refused to reuse the key (the row was edited since the
    // first try): the inquiry that try made, if any, is looked up and kept.
    for pass in 0..2 {
        let now = ctx.clock.now();
        if now - row.key_created_at > KEY_TRUST {
            // Persona may have forgotten this key: a create with it could make a second
            // inquiry. Look for one made under it first.
            let recorded = inquiries::recorded_ids(&ctx.store, &claimed.user_id).await?;
            match find_unrecorded(ctx, claimed, &recorded).await {
                Ok(Some(inquiry)) => {
                    let recorded =
                        record_created(ctx, claimed, &row, &inquiry, true, mail_kind, send_now)
                            .await?;
                    return Ok(Created::Done {
                        fresh: Fresh::Nothing,
                        adopted: true,
                        mail: recorded.mail.map(Box::new),
                        inquiry: Box::new(recorded.inquiry),
                    });
                }
                Ok(None) => {
                    row = inquiries::renew_key(&ctx.store, &row, claimed.reference_id.as_str(), now)
                        .await?
                }
                Err(e) if is_fatal(&e) => return Err(JobError::Persona(e)),
                Err(e) => {
                    tracing::warn!(user = %claimed.user_id, error = %e, "cannot look up existing inquiries; later");
                    return Ok(Created::Later);
                }
            }
        }
        let key =
            IdempotencyKey::parse(&row.idempotency_key).map_err(|e| StoreError::BadValue {
                table: "inquiries",
                row: row.id.to_string(),
                column: "idempotency_key",
                why: e.0,
            })?;
        crate::faults::crash_point("provision.before-create");
        match ctx
            .persona
            .create_inquiry(&create_request(ctx, claimed, user), &key)
            .await
        {
            Ok(created) => {
                crate::faults::crash_point("provision.after-create");
                let recorded = record_created(
                    ctx,
                    claimed,
                    &row,
                    &created.inquiry,
                    false,
                    mail_kind,
                    send_now,
                )
                .await?;
                let fresh = match (created.one_time_link, created.session_token) {
                    (Some(l), _) => Fresh::OneTime(l),
                    (None, Some(t)) => Fresh::Token(t),
                    (None, None) => Fresh::Nothing,
                };
                return Ok(Created::Done {
                    fresh,
                    adopted: false,
                    mail: recorded.mail.map(Box::new),
                    inquiry: Box::new(recorded.inquiry),
                });
            }
            Err(e) if is_fatal(&e) => return Err(JobError::Persona(e)),
            Err(e) if e.is_transient() => {
                if e.status().is_some_and(|s| s >= 500) {
                    // Persona stores a 5xx under the key and replays it for 24 h, so this key is
                    // spent. Whether the inquiry exists is unknown: the next attempt looks it up
                    // first, and only then creates with a new key.
                    inquiries::distrust_key(&ctx.store, row.id).await?;
                    tracing::warn!(user = %claimed.user_id, error = %e, "inquiry not created yet; next attempt looks it up, then uses a new key");
                } else {
                    tracing::warn!(user = %claimed.user_id, error = %e, "inquiry not created yet; will retry with the same key");
                }
                return Ok(Created::Later);
            }
            Err(e) if pass == 0 && e.is_key_reuse_refused() => {
                // The first try under this key may have made the inquiry: look, then keep it
                // or create under a new key.
                tracing::warn!(user = %claimed.user_id, error = %e, "Persona refused the key again with changed data; looking up what the first try made");
                inquiries::distrust_key(&ctx.store, row.id).await?;
                row = inquiries::by_row_id(&ctx.store, row.id)
                    .await?
                    .ok_or_else(|| StoreError::Missing {
                        table: "inquiries",
                        key: row.id.to_string(),
                    })?;
            }
            Err(e) => return reject(ctx, claimed, &row, &e).await,
        }
    }
    Err(JobError::KeyRefusedTwice {
        user: claimed.user_id.clone(),
    })
}

/// Persona refused the create for good: the row is kept as a record and the user skipped.
async fn reject(
    ctx: &JobContext,
    claimed: &Claimed,
    row: &InquiryRow,
    e: &PersonaError,
) -> Result<Created, JobError> {
    let why = format!("Persona refused to create the inquiry: {e}");
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin_write().await?;
    inquiries::mark_rejected(&mut tx, row.id, now).await?;
    user_states::skip(
        &mut tx,
        &claimed.user_id,
        &why,
        "inquiry.rejected",
        None,
        now,
    )
    .await?;
    tx.commit().await?;
    tracing::error!(user = %claimed.user_id, error = %e, "inquiry refused; user skipped");
    Ok(Created::Rejected)
}

/// The user's newest live inquiry at Persona that the store has not recorded: one made under a
/// key whose answer was lost. Found by the note the daemon puts on every inquiry it creates.
/// Recorded ones are skipped: after a crash mid-recreate the replaced inquiry may still be
/// live, and taking it would bring back what was being replaced.
async fn find_unrecorded(
    ctx: &JobContext,
    claimed: &Claimed,
    recorded: &HashSet<String>,
) -> Result<Option<crate::persona::Inquiry>, PersonaError> {
    let filter = ListFilter {
        statuses: vec![
            InquiryStatus::Created,
            InquiryStatus::Pending,
            InquiryStatus::Expired,
        ],
        template_id: Some(ctx.settings.template_id.clone()),
        note: Some(adoption_note(&claimed.reference_id)),
        ..ListFilter::default()
    };
    let mut pages = ctx.persona.inquiry_pages(&filter);
    // Newest first: the first one not recorded is the one to keep.
    while let Some(page) = pages.next_page().await? {
        if let Some(found) = page.into_iter().find(|i| !recorded.contains(i.id.as_str())) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The mail to queue with a recorded answer, given the user's mails so far: none while one is
/// still unsent (an answer recorded again never queues a second); a user's first mail is always
/// the invite, whatever was asked; after that only a renewal goes out, never a second invite.
pub fn mail_to_queue(asked: MailKind, history: MailHistory) -> Option<MailKind> {
    if history.unsent {
        None
    } else if !history.any {
        Some(MailKind::Invite)
    } else if asked == MailKind::Renewed {
        Some(MailKind::Renewed)
    } else {
        None
    }
}

/// Records Persona's answer and queues the mail with it, in one transaction.
async fn record_created(
    ctx: &JobContext,
    claimed: &Claimed,
    row: &InquiryRow,
    inquiry: &crate::persona::Inquiry,
    adopted: bool,
    mail_kind: MailKind,
    send_now: bool,
) -> Result<Recorded, JobError> {
    let detail = if adopted {
        format!(
            "found {} at Persona (made before a restart) and kept it",
            inquiry.id
        )
    } else {
        format!(
            "created {} ({}), expires {}",
            inquiry.id,
            inquiry.status,
            inquiry
                .expires_at
                .map(crate::clock::format_ts)
                .unwrap_or_else(|| "-".into())
        )
    };
    let answer = Answer {
        row_id: row.id,
        user_id: &claimed.user_id,
        facts: &facts_of(inquiry),
        event_kind: if adopted {
            "inquiry.adopted"
        } else {
            "inquiry.created"
        },
        detail: &detail,
    };
    let message_id = ctx.mailer.new_message_id();
    let mail = WantedMail {
        choose: &|history| mail_to_queue(mail_kind, history),
        message_id: &message_id,
        sending: send_now,
    };
    let recorded = steps::record_answer(&ctx.store, &answer, &mail, ctx.clock.now()).await?;
    tracing::info!(user = %claimed.user_id, inquiry = %inquiry.id, adopted, "inquiry ready");
    Ok(recorded)
}

#[cfg(test)]
mod mail_policy {
    use super::{MailHistory, MailKind, mail_to_queue};

    const NEVER_MAILED: MailHistory = MailHistory {
        any: false,
        unsent: false,
    };
    const MAILED: MailHistory = MailHistory {
        any: true,
        unsent: false,
    };
    const WAITING: MailHistory = MailHistory {
        any: true,
        unsent: true,
    };

    #[test]
    fn a_first_mail_is_the_invite_whatever_was_asked() {
        for asked in MailKind::ALL {
            assert_eq!(mail_to_queue(asked, NEVER_MAILED), Some(MailKind::Invite));
        }
    }

    #[test]
    fn after_a_mail_only_a_renewal_is_queued() {
        assert_eq!(
            mail_to_queue(MailKind::Renewed, MAILED),
            Some(MailKind::Renewed)
        );
        assert_eq!(mail_to_queue(MailKind::Invite, MAILED), None);
        assert_eq!(mail_to_queue(MailKind::Reminder, MAILED), None);
    }

    #[test]
    fn nothing_is_queued_while_a_mail_waits() {
        for asked in MailKind::ALL {
            assert_eq!(mail_to_queue(asked, WAITING), None);
        }
    }
}
