//! The outbox. A mail row holds what to send and how it went, never the link itself: links with
//! secrets in them are rebuilt at send time and never stored.

use chrono::{DateTime, Utc};

use std::sync::LazyLock;

use super::{Result, Store};
use crate::clock::{format_ts, parse_ts};

#[derive(Debug, Clone)]
pub struct MailRow {
    pub id: i64,
    pub user_id: String,
    pub inquiry_row: Option<i64>,
    pub kind: String,
    pub status: String,
    pub message_id: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub link_expires_at: Option<String>,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// For a reminder: the `[reminders] after` entry it stands for, in seconds since the invite.
    pub reminder_after: Option<i64>,
}

from_row!(MailRow {
    id,
    user_id,
    inquiry_row,
    kind,
    status,
    message_id,
    attempts,
    next_attempt_at,
    link_expires_at,
    sent_at,
    last_error,
    created_at,
    updated_at,
    reminder_after
});

impl MailRow {
    pub fn link_expires_at(&self) -> Option<DateTime<Utc>> {
        self.link_expires_at.as_deref().and_then(parse_ts)
    }
}

/// The columns of [`MailRow`], for SELECT and RETURNING.
pub const COLUMNS: &str = "id, user_id, inquiry_row, kind, status, message_id, attempts, next_attempt_at, \
     link_expires_at, sent_at, last_error, created_at, updated_at, reminder_after";

/// A reminder caught mid-send by a crash may have reached the user: it is never sent again
/// (a reminder goes out at most once), so the queries that pick mails to (re)send skip it.
const NOT_INTERRUPTED_REMINDER: &str = "NOT (kind = 'reminder' AND status = 'sending')";

static SELECT: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM mails"));

/// Queues a mail inside the caller's transaction (the one that records what it links to), and
/// returns it as stored.
pub async fn enqueue(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    inquiry_row: Option<i64>,
    kind: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<MailRow> {
    enqueue_as(conn, user_id, inquiry_row, kind, message_id, false, now).await
}

/// [`enqueue`], or, when `sending`, stored as `sending` with its first attempt counted (what
/// [`mark_sending`] would write next), for a caller that sends it right after the commit.
pub async fn enqueue_as(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    inquiry_row: Option<i64>,
    kind: &str,
    message_id: &str,
    sending: bool,
    now: DateTime<Utc>,
) -> Result<MailRow> {
    let ts = format_ts(now);
    static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO mails (user_id, inquiry_row, kind, status, attempts, message_id, next_attempt_at, \
               created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7) RETURNING {COLUMNS}"
        )
    });
    Ok(sqlx::query_as::<_, MailRow>(ENQUEUE.as_str())
        .bind(user_id)
        .bind(inquiry_row)
        .bind(kind)
        .bind(if sending { "sending" } else { "queued" })
        .bind(i64::from(sending))
        .bind(message_id)
        .bind(&ts)
        .fetch_one(conn)
        .await?)
}

/// What a user has had in mail so far, read where the next one is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailHistory {
    /// Any mail at all, sent or not.
    pub any: bool,
    /// One waiting to go out (queued, or caught mid-send).
    pub unsent: bool,
}

/// The user's [`MailHistory`], inside the caller's transaction.
pub async fn history_in(conn: &mut sqlx::SqliteConnection, user_id: &str) -> Result<MailHistory> {
    let (any, unsent): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM mails WHERE user_id = ?1), \
           EXISTS (SELECT 1 FROM mails WHERE user_id = ?1 AND status IN ('queued', 'sending'))",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    Ok(MailHistory { any, unsent })
}

/// The user's mail waiting to go out (queued, or caught mid-send by a crash), if any.
pub async fn unsent_for_user(
    conn: impl sqlx::SqliteExecutor<'_>,
    user_id: &str,
) -> Result<Option<MailRow>> {
    let sql = format!(
        "{} WHERE user_id = ? AND status IN ('queued', 'sending') AND {NOT_INTERRUPTED_REMINDER} \
         ORDER BY id DESC LIMIT 1",
        *SELECT
    );
    Ok(sqlx::query_as::<_, MailRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
}

pub async fn last_for_user(
    conn: impl sqlx::SqliteExecutor<'_>,
    user_id: &str,
) -> Result<Option<MailRow>> {
    let sql = format!("{} WHERE user_id = ? ORDER BY id DESC LIMIT 1", *SELECT);
    Ok(sqlx::query_as::<_, MailRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
}

/// Counts an attempt before the send: a crash during it leaves `sending`, and the next run sends
/// again with the same Message-ID.
pub async fn mark_sending(
    store: &Store,
    id: i64,
    link_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE mails SET status = 'sending', attempts = attempts + 1, link_expires_at = ?, updated_at = ? WHERE id = ?",
    )
    .bind(link_expires_at.map(format_ts))
    .bind(format_ts(now))
    .bind(id)
    .execute(store.writer())
    .await?;
    Ok(())
}

/// The mail went out, inside the caller's transaction (the one that moves its user on).
pub async fn mark_sent(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    link_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE mails SET status = 'sent', sent_at = ?1, last_error = NULL, \
           link_expires_at = COALESCE(?2, link_expires_at), updated_at = ?1 WHERE id = ?3",
    )
    .bind(format_ts(now))
    .bind(link_expires_at.map(format_ts))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A transient failure: back to the queue, due again at `next`.
pub async fn mark_retry(
    store: &Store,
    id: i64,
    next: DateTime<Utc>,
    error: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE mails SET status = 'queued', next_attempt_at = ?, last_error = ?, updated_at = ? WHERE id = ?")
        .bind(format_ts(next))
        .bind(error)
        .bind(format_ts(now))
        .bind(id)
        .execute(store.writer())
        .await?;
    Ok(())
}

/// Puts a counted attempt back without blaming the mail (e.g. the run stopped before sending).
pub async fn unclaim(store: &Store, id: i64) -> Result<()> {
    sqlx::query("UPDATE mails SET status = 'queued', attempts = MAX(attempts - 1, 0) WHERE id = ? AND status = 'sending'")
        .bind(id)
        .execute(store.writer())
        .await?;
    Ok(())
}

pub async fn mark_failed(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE mails SET status = 'failed', last_error = ?, updated_at = ? WHERE id = ?")
        .bind(error)
        .bind(format_ts(now))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// When the first link went out to anyone (the start of the daemon's history with Persona).
pub async fn first_sent_at(store: &Store) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(sent_at) FROM mails WHERE sent_at IS NOT NULL")
            .fetch_one(store.reader())
            .await?,
    )
}

/// Drops a user's unsent mails (the user finished, or a newer mail replaces them).
pub async fn cancel_unsent(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE mails SET status = 'cancelled', updated_at = ? WHERE user_id = ? AND status IN ('queued', 'sending')",
    )
    .bind(format_ts(now))
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Users with a mail that is due now and are not pending (refresh's renewed mails after a crash).
pub async fn due_users_not_pending(
    store: &Store,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT m.user_id FROM mails m JOIN user_states s ON s.user_id = m.user_id \
         WHERE m.status IN ('queued', 'sending') AND m.next_attempt_at <= ? AND s.state != 'pending' \
         AND {NOT_INTERRUPTED_REMINDER} LIMIT ?"
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(format_ts(now))
        .bind(i64::from(limit))
        .fetch_all(store.reader())
        .await?)
}

/// What the reminder job reads about a user who may be due a reminder.
#[derive(Debug, Clone)]
pub struct ReminderFacts {
    pub user_id: String,
    pub state: String,
    /// When the user's first invite was sent: the cadence counts from here.
    pub invited_at: DateTime<Utc>,
    /// The last mail to the user (or the last that may have reached them).
    pub last_mailed_at: Option<DateTime<Utc>>,
    /// The `after` entries already recorded for the user, in seconds, whatever became of them.
    pub recorded: Vec<i64>,
    /// A mail of any kind is waiting to go out: it goes first.
    pub unsent: bool,
}

/// Users still `invited` or `started` whose invite went out at `invited_by` or before — or,
/// with `only_user`, that user whatever their state (for `status --user` and the re-check
/// under the lease).
pub async fn reminder_facts(
    conn: impl sqlx::SqliteExecutor<'_>,
    only_user: Option<&str>,
    invited_by: DateTime<Utc>,
) -> Result<Vec<ReminderFacts>> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT * FROM ( \
           SELECT s.user_id, s.state, s.last_mailed_at, \
             (SELECT MIN(m.sent_at) FROM mails m WHERE m.user_id = s.user_id AND m.kind = 'invite') AS invited_at, \
             (SELECT json_group_array(m.reminder_after) FROM mails m \
                WHERE m.user_id = s.user_id AND m.kind = 'reminder') AS recorded, \
             EXISTS (SELECT 1 FROM mails m WHERE m.user_id = s.user_id \
                AND m.status IN ('queued', 'sending')) AS unsent \
           FROM user_states s \
           WHERE (?1 IS NULL AND s.state IN ('invited', 'started')) OR s.user_id = ?1) \
         WHERE invited_at IS NOT NULL AND invited_at <= ?2",
    )
    .bind(only_user)
    .bind(format_ts(invited_by))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let invited_at: String = r.try_get("invited_at")?;
            let recorded: String = r.try_get("recorded")?;
            let last: Option<String> = r.try_get("last_mailed_at")?;
            Ok(ReminderFacts {
                user_id: r.try_get("user_id")?,
                state: r.try_get("state")?,
                invited_at: parse_ts(&invited_at).ok_or_else(|| {
                    super::StoreError::Conflict(format!(
                        "mails: invite sent_at {invited_at:?} is not a timestamp"
                    ))
                })?,
                last_mailed_at: last.as_deref().and_then(parse_ts),
                recorded: serde_json::from_str(&recorded).map_err(|e| {
                    super::StoreError::Conflict(format!(
                        "mails: reminder_after list {recorded:?}: {e}"
                    ))
                })?,
                unsent: r.try_get("unsent")?,
            })
        })
        .collect()
}

/// Records a reminder for the `after` entry (seconds) and queues it, inside the caller's
/// transaction; `None` when that entry is recorded for the user already.
pub async fn enqueue_reminder(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    inquiry_row: Option<i64>,
    message_id: &str,
    after_secs: i64,
    now: DateTime<Utc>,
) -> Result<Option<MailRow>> {
    let ts = format_ts(now);
    static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO mails (user_id, inquiry_row, kind, status, message_id, next_attempt_at, created_at, updated_at, reminder_after) \
             VALUES (?, ?, 'reminder', 'queued', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        )
    });
    Ok(sqlx::query_as::<_, MailRow>(ENQUEUE.as_str())
        .bind(user_id)
        .bind(inquiry_row)
        .bind(message_id)
        .bind(&ts)
        .bind(&ts)
        .bind(&ts)
        .bind(after_secs)
        .fetch_optional(conn)
        .await?)
}

/// Reminders a crash caught between `sending` and their outcome.
pub async fn interrupted_reminders(store: &Store) -> Result<Vec<MailRow>> {
    let sql = format!(
        "{} WHERE kind = 'reminder' AND status = 'sending' ORDER BY id",
        *SELECT
    );
    Ok(sqlx::query_as::<_, MailRow>(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.reader())
        .await?)
}

/// Closes an interrupted reminder without sending it again, inside the caller's transaction.
pub async fn close_interrupted_reminder(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    why: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE mails SET status = 'cancelled', last_error = ?, updated_at = ? \
         WHERE id = ? AND kind = 'reminder' AND status = 'sending'",
    )
    .bind(why)
    .bind(format_ts(now))
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// One user's reminders, in cadence order.
pub async fn reminders_of(
    conn: impl sqlx::SqliteExecutor<'_>,
    user_id: &str,
) -> Result<Vec<MailRow>> {
    let sql = format!(
        "{} WHERE user_id = ? AND kind = 'reminder' ORDER BY reminder_after",
        *SELECT
    );
    Ok(sqlx::query_as::<_, MailRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_all(conn)
        .await?)
}

/// Users with a mail waiting to go out (queued, or caught mid-send).
pub async fn users_with_unsent(store: &Store) -> Result<std::collections::HashSet<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM mails WHERE status IN ('queued', 'sending')",
    )
    .fetch_all(store.reader())
    .await?;
    Ok(ids.into_iter().collect())
}
