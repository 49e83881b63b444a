//! The writes of one user's way through provisioning that span tables, each one `BEGIN
//! IMMEDIATE` transaction: what a step decides and the event that says so commit together, or,
//! when a statement fails or the caller is dropped, none of it does.

use chrono::{DateTime, Utc};

use super::inquiries::{self, InquiryFacts, InquiryRow};
use super::mails::{self, MailHistory, MailRow};
use super::user_states::UserState;
use super::{Result, Store, events, user_states};
use crate::domain::MailKind;
use crate::domain::{InquiryId, UserId};

/// Persona's answer for a `creating` row, and the event that records it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub row_id: i64,
    pub user_id: &'a UserId,
    pub facts: &'a InquiryFacts,
    /// `inquiry.created` or `inquiry.adopted`.
    pub event_kind: &'a str,
    pub detail: &'a str,
}

/// The mail to queue with an answer, if the user needs one.
#[derive(Clone, Copy)]
pub struct WantedMail<'a> {
    /// The kind to queue given what the user has had so far (read in the same transaction),
    /// or `None` for no mail: the caller's policy.
    pub choose: &'a (dyn Fn(MailHistory) -> Option<MailKind> + Sync),
    pub message_id: &'a str,
    /// The caller sends it right after the commit: it is stored as `sending` with its first
    /// attempt counted (what `mails::mark_sending` would write next), so a crash before the
    /// send leaves it to be sent again, and the send needs no write of its own before it.
    pub sending: bool,
}

/// What [`record_answer`] stored.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub inquiry: InquiryRow,
    /// The mail queued with it, when one was.
    pub mail: Option<MailRow>,
}

/// Records Persona's answer on its row with an event and, when the caller's policy asks for
/// one, queues a mail linking to it with its own event: one transaction.
pub async fn record_answer(
    store: &Store,
    answer: &Answer<'_>,
    mail: &WantedMail<'_>,
    now: DateTime<Utc>,
) -> Result<Recorded> {
    let mut tx = store.begin_write().await?;
    inquiries::record_facts(&mut tx, answer.row_id, answer.facts, now).await?;
    let inquiry = inquiries::by_row_id_in(&mut tx, answer.row_id).await?;
    let inquiry_id = Some(&answer.facts.inquiry_id);
    events::record(
        &mut tx,
        now,
        Some(answer.user_id),
        inquiry_id,
        answer.event_kind,
        answer.detail,
    )
    .await?;
    let history = mails::history_in(&mut tx, answer.user_id).await?;
    let queued = match (mail.choose)(history) {
        Some(kind) => {
            let row = mails::enqueue_as(
                &mut tx,
                answer.user_id,
                Some(answer.row_id),
                kind,
                mail.message_id,
                mail.sending,
                now,
            )
            .await?;
            let detail = format!("{kind} queued");
            events::record(
                &mut tx,
                now,
                Some(answer.user_id),
                None,
                "mail.queued",
                &detail,
            )
            .await?;
            Some(row)
        }
        None => None,
    };
    tx.commit().await?;
    Ok(Recorded {
        inquiry,
        mail: queued,
    })
}

/// A mail that went out, and the user it went to.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    pub mail_id: i64,
    pub user_id: &'a UserId,
    /// The state the user moves to, unless they finished or were skipped meanwhile.
    pub state: UserState,
    pub inquiry_id: Option<&'a InquiryId>,
    pub detail: &'a str,
    /// Until when the link in it works, when known.
    pub link_expires_at: Option<DateTime<Utc>>,
    /// Whether the user's lease ends with it (the caller is done with the user).
    pub end_lease: bool,
}

/// Marks the mail sent, stamps the user mailed (moving them on), records it, and ends the
/// lease when asked: one transaction.
pub async fn mail_sent(store: &Store, sent: &Sent<'_>, now: DateTime<Utc>) -> Result<()> {
    let mut tx = store.begin_write().await?;
    mails::mark_sent(&mut tx, sent.mail_id, sent.link_expires_at, now).await?;
    user_states::mark_mailed(&mut tx, sent.user_id, sent.state, now).await?;
    events::record(
        &mut tx,
        now,
        Some(sent.user_id),
        sent.inquiry_id,
        "mail.sent",
        sent.detail,
    )
    .await?;
    if sent.end_lease {
        user_states::end_lease(&mut tx, sent.user_id).await?;
    }
    tx.commit().await?;
    Ok(())
}
