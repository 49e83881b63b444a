//! The writes of one user's way through provisioning that span tables, each one transaction
//! sent to SQLite in one round trip ([`Store::run_script`]): what a step decides and the event
//! that says so commit together, as before, but without a hand-off per statement.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::FromRow as _;

use super::inquiries::{self, InquiryFacts, InquiryRow};
use super::mails::{self, MailRow};
use super::{Result, Store, transaction_script, user_states};
use crate::clock::format_ts;

/// Persona's answer for a `creating` row, and the event that records it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub row_id: i64,
    pub user_id: &'a str,
    pub facts: &'a InquiryFacts,
    /// `inquiry.created` or `inquiry.adopted`.
    pub event_kind: &'a str,
    pub detail: &'a str,
}

/// A mail to queue with an answer, if the user needs one.
#[derive(Debug, Clone, Copy)]
pub struct WantedMail<'a> {
    /// The kind asked for: `renewed` queues one even after earlier mails; `invite` only when
    /// the user never had a mail. The first mail a user gets is always an invite.
    pub kind: &'a str,
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

/// ?1 row, ?2 inquiry id, ?3 status, ?4 template version, ?5 Persona's created_at, ?6 expires_at,
/// ?7 now, ?8 user, ?9 event kind, ?10 event detail, ?11 wanted mail kind, ?12 message id,
/// ?13 whether the mail is stored as being sent.
/// Returns the updated inquiry row, then the queued mail if one was queued.
static RECORD_ANSWER: LazyLock<String> = LazyLock::new(|| {
    let inquiry_columns = inquiries::COLUMNS;
    let mail_columns = mails::COLUMNS;
    transaction_script(&format!(
        "UPDATE inquiries SET inquiry_id = ?2, status = ?3, \
           template_version_id = COALESCE(?4, template_version_id), \
           persona_created_at = COALESCE(?5, persona_created_at), expires_at = ?6, updated_at = ?7, \
           status_observed_at = ?7 \
         WHERE id = ?1 RETURNING {inquiry_columns}; \
         INSERT INTO events (user_id, inquiry_id, kind, detail, at) VALUES (?8, ?2, ?9, ?10, ?7); \
         INSERT INTO mails (user_id, inquiry_row, kind, status, attempts, message_id, \
           next_attempt_at, created_at, updated_at) \
         SELECT ?8, ?1, \
           CASE WHEN EXISTS (SELECT 1 FROM mails WHERE user_id = ?8) THEN ?11 ELSE 'invite' END, \
           CASE WHEN ?13 THEN 'sending' ELSE 'queued' END, CASE WHEN ?13 THEN 1 ELSE 0 END, \
           ?12, ?7, ?7, ?7 \
         WHERE NOT EXISTS (SELECT 1 FROM mails WHERE user_id = ?8 AND status IN ('queued', 'sending')) \
           AND (?11 = 'renewed' OR NOT EXISTS (SELECT 1 FROM mails WHERE user_id = ?8)) \
         RETURNING {mail_columns}; \
         INSERT INTO events (user_id, inquiry_id, kind, detail, at) \
         SELECT user_id, NULL, 'mail.queued', kind || ' queued', ?7 FROM mails \
         WHERE user_id = ?8 AND message_id = ?12;"
    ))
});

/// Records Persona's answer on its row with an event and, when the user needs one, queues a
/// mail linking to it (never a second unsent one): one transaction, one round trip.
pub async fn record_answer(
    store: &Store,
    answer: &Answer<'_>,
    mail: &WantedMail<'_>,
    now: DateTime<Utc>,
) -> Result<Recorded> {
    let facts = answer.facts;
    let script = sqlx::query(RECORD_ANSWER.as_str())
        .bind(answer.row_id)
        .bind(facts.inquiry_id.clone())
        .bind(facts.status.clone())
        .bind(facts.template_version_id.clone())
        .bind(facts.created_at.map(format_ts))
        .bind(facts.expires_at.map(format_ts))
        .bind(format_ts(now))
        .bind(answer.user_id.to_owned())
        .bind(answer.event_kind.to_owned())
        .bind(answer.detail.to_owned())
        .bind(mail.kind.to_owned())
        .bind(mail.message_id.to_owned())
        .bind(mail.sending);
    let rows = store.run_script(script).await?;
    let mut rows = rows.iter();
    let inquiry = InquiryRow::from_row(rows.next().ok_or(sqlx::Error::RowNotFound)?)?;
    let mail = rows.next().map(MailRow::from_row).transpose()?;
    Ok(Recorded { inquiry, mail })
}

/// A mail that went out, and the user it went to.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    pub mail_id: i64,
    pub user_id: &'a str,
    /// The state the user moves to, unless they finished or were skipped meanwhile.
    pub state: &'a str,
    pub inquiry_id: Option<&'a str>,
    pub detail: &'a str,
    /// Until when the link in it works, when known.
    pub link_expires_at: Option<DateTime<Utc>>,
    /// Whether the user's lease ends with it (the caller is done with the user).
    pub end_lease: bool,
}

/// ?1 state, ?2 now, ?3 user (as [`user_states::MARK_MAILED`] numbers them), ?4 mail, ?5 inquiry
/// id, ?6 event detail, ?7 whether the lease ends, ?8 the link's expiry.
static MAIL_SENT: LazyLock<String> = LazyLock::new(|| {
    let mark_mailed = user_states::MARK_MAILED;
    transaction_script(&format!(
        "UPDATE mails SET status = 'sent', sent_at = ?2, last_error = NULL, \
           link_expires_at = COALESCE(?8, link_expires_at), updated_at = ?2 \
         WHERE id = ?4; \
         {mark_mailed}; \
         INSERT INTO events (user_id, inquiry_id, kind, detail, at) \
         VALUES (?3, ?5, 'mail.sent', ?6, ?2); \
         UPDATE user_states SET lease_until = NULL WHERE user_id = ?3 AND ?7;"
    ))
});

/// Marks the mail sent, stamps the user mailed (moving them on), records it, and ends the
/// lease when asked: one transaction, one round trip.
pub async fn mail_sent(store: &Store, sent: &Sent<'_>, now: DateTime<Utc>) -> Result<()> {
    let script = sqlx::query(MAIL_SENT.as_str())
        .bind(sent.state.to_owned())
        .bind(format_ts(now))
        .bind(sent.user_id.to_owned())
        .bind(sent.mail_id)
        .bind(sent.inquiry_id.map(str::to_owned))
        .bind(sent.detail.to_owned())
        .bind(sent.end_lease)
        .bind(sent.link_expires_at.map(format_ts));
    store.run_script(script).await?;
    Ok(())
}
