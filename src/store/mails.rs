//! The outbox. A mail row holds what to send and how it went, never the link itself: links with
//! secrets in them are rebuilt at send time and never stored.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::row::{AnyRow as _, Place, row, rows, value_of};
use super::user_states::UserState;
use super::{Dialect, Result, Store, StoreError, Stored, Ts, WriteTx, ts, ts_opt};
use crate::domain::MailKind;
use crate::domain::{ParseError, UserId};

/// Where a mail stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailStatus {
    /// Waiting to go out, due at `next_attempt_at`.
    Queued,
    /// An attempt was counted and the send may be under way (or was caught by a crash).
    Sending,
    Sent,
    Failed,
    Cancelled,
}

impl MailStatus {
    pub const ALL: [MailStatus; 5] = [
        MailStatus::Queued,
        MailStatus::Sending,
        MailStatus::Sent,
        MailStatus::Failed,
        MailStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Sending => "sending",
            MailStatus::Sent => "sent",
            MailStatus::Failed => "failed",
            MailStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<MailStatus, ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseError(format!("{s:?} is not a mail status")))
    }
}

#[derive(Debug, Clone)]
pub struct MailRow {
    pub id: i64,
    pub user_id: UserId,
    pub inquiry_row: Option<i64>,
    pub kind: MailKind,
    pub status: MailStatus,
    pub message_id: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub link_expires_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// For a reminder: the `[reminders] after` entry it stands for, in seconds since the invite.
    pub reminder_after: Option<i64>,
}

from_row!(MailRow in "mails" by id {
    id,
    user_id,
    inquiry_row,
    kind,
    status,
    message_id,
    attempts,
    next_attempt_at as Ts,
    link_expires_at as Option<Ts>,
    sent_at as Option<Ts>,
    last_error,
    created_at as Ts,
    updated_at as Ts,
    reminder_after,
});

/// The columns of [`MailRow`], for SELECT and RETURNING.
const COLUMNS: &str = "id, user_id, inquiry_row, kind, status, message_id, attempts, next_attempt_at, \
     link_expires_at, sent_at, last_error, created_at, updated_at, reminder_after";

/// A reminder caught mid-send by a crash may have reached the user: it is never sent again
/// (a reminder goes out at most once), so the queries that pick mails to (re)send skip it.
const NOT_INTERRUPTED_REMINDER: &str = "NOT (kind = 'reminder' AND status = 'sending')";

static SELECT: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM mails"));

/// Queues a mail inside the caller's transaction (the one that records what it links to), and
/// returns it as stored.
pub async fn enqueue(
    tx: &mut WriteTx,
    user_id: &UserId,
    inquiry_row: Option<i64>,
    kind: MailKind,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<MailRow> {
    enqueue_as(tx, user_id, inquiry_row, kind, message_id, false, now).await
}

/// [`enqueue`], or, when `sending`, stored as `sending` with its first attempt counted (what
/// [`mark_sending`] would write next), for a caller that sends it right after the commit.
pub async fn enqueue_as(
    tx: &mut WriteTx,
    user_id: &UserId,
    inquiry_row: Option<i64>,
    kind: MailKind,
    message_id: &str,
    sending: bool,
    now: DateTime<Utc>,
) -> Result<MailRow> {
    static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO mails (user_id, inquiry_row, kind, status, attempts, message_id, next_attempt_at, \
               created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) RETURNING {COLUMNS}"
        )
    });
    let status = if sending {
        MailStatus::Sending
    } else {
        MailStatus::Queued
    };
    on_tx!(tx, |c| sqlx::query(ENQUEUE.as_str())
        .bind(user_id)
        .bind(inquiry_row)
        .bind(kind)
        .bind(status)
        .bind(i64::from(sending))
        .bind(message_id)
        .bind(ts(now))
        .fetch_one(c)
        .await?
        .decode())
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
pub async fn history_in(tx: &mut WriteTx, user_id: &UserId) -> Result<MailHistory> {
    let (any, unsent): (bool, bool) = on_tx!(tx, |c| sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM mails WHERE user_id = $1), \
           EXISTS (SELECT 1 FROM mails WHERE user_id = $1 AND status IN ('queued', 'sending'))",
    )
    .bind(user_id)
    .fetch_one(c)
    .await?);
    Ok(MailHistory { any, unsent })
}

static UNSENT_FOR_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE user_id = $1 AND status IN ('queued', 'sending') AND {NOT_INTERRUPTED_REMINDER} \
         ORDER BY id DESC LIMIT 1",
        *SELECT
    )
});

/// The user's mail waiting to go out (queued, or caught mid-send by a crash), if any.
pub async fn unsent_for_user(store: &Store, user_id: &UserId) -> Result<Option<MailRow>> {
    on_read!(store, |c| row(sqlx::query(UNSENT_FOR_USER.as_str())
        .bind(user_id)
        .fetch_optional(c)
        .await?))
}

pub async fn last_for_user(store: &Store, user_id: &UserId) -> Result<Option<MailRow>> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("{} WHERE user_id = $1 ORDER BY id DESC LIMIT 1", *SELECT));
    on_read!(store, |c| row(sqlx::query(SQL.as_str())
        .bind(user_id)
        .fetch_optional(c)
        .await?))
}

/// Counts an attempt before the send: a crash during it leaves `sending`, and the next run sends
/// again with the same Message-ID.
pub async fn mark_sending(
    store: &Store,
    id: i64,
    link_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_write!(store, |c| {
        sqlx::query(
        "UPDATE mails SET status = $1, attempts = attempts + 1, link_expires_at = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(MailStatus::Sending)
    .bind(ts_opt(link_expires_at))
    .bind(ts(now))
    .bind(id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// The mail went out, inside the caller's transaction (the one that moves its user on).
pub async fn mark_sent(
    tx: &mut WriteTx,
    id: i64,
    link_expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE mails SET status = $1, sent_at = $2, last_error = NULL, \
           link_expires_at = COALESCE($3, link_expires_at), updated_at = $2 WHERE id = $4",
    )
    .bind(MailStatus::Sent)
    .bind(ts(now))
    .bind(ts_opt(link_expires_at))
    .bind(id)
    .execute(c)
    .await?
    .rows_affected());
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
    on_write!(store, |c| {
        sqlx::query(
        "UPDATE mails SET status = $1, next_attempt_at = $2, last_error = $3, updated_at = $4 WHERE id = $5"
    )
    .bind(MailStatus::Queued)
    .bind(ts(next))
    .bind(error)
    .bind(ts(now))
    .bind(id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// Puts a counted attempt back without blaming the mail (e.g. the run stopped before sending).
pub async fn unclaim(store: &Store, id: i64) -> Result<()> {
    on_write!(store, |c| {
        sqlx::query(
        "UPDATE mails SET status = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
         WHERE id = $1 AND status = 'sending'"
    )
    .bind(id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

pub async fn mark_failed(tx: &mut WriteTx, id: i64, error: &str, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE mails SET status = $1, last_error = $2, updated_at = $3 WHERE id = $4"
    )
    .bind(MailStatus::Failed)
    .bind(error)
    .bind(ts(now))
    .bind(id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// When the first link went out to anyone (the start of the daemon's history with Persona).
pub async fn first_sent_at(store: &Store) -> Result<Option<DateTime<Utc>>> {
    let first: Option<Ts> = on_read!(store, |c| sqlx::query_scalar(
        "SELECT MIN(sent_at) FROM mails WHERE sent_at IS NOT NULL"
    )
    .fetch_one(c)
    .await?);
    Ok(first.value())
}

/// Drops a user's unsent mails (the user finished, or a newer mail replaces them).
pub async fn cancel_unsent(tx: &mut WriteTx, user_id: &UserId, now: DateTime<Utc>) -> Result<u64> {
    Ok(on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE mails SET status = 'cancelled', updated_at = $1 WHERE user_id = $2 AND status IN ('queued', 'sending')",
    )
    .bind(ts(now))
    .bind(user_id)
    .execute(c)
    .await?
    .rows_affected()
    }))
}

/// Users with a mail that is due now and are not pending (refresh's renewed mails after a crash).
pub async fn due_users_not_pending(
    store: &Store,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<UserId>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT DISTINCT m.user_id FROM mails m JOIN user_states s ON s.user_id = m.user_id \
             WHERE m.status IN ('queued', 'sending') AND m.next_attempt_at <= $1 AND s.state != 'pending' \
             AND {NOT_INTERRUPTED_REMINDER} LIMIT $2"
        )
    });
    on_read!(store, |c| {
        let found = sqlx::query(SQL.as_str())
            .bind(ts(now))
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?;
        found
            .iter()
            .map(|r| value_of(r, "mails", "user_id", "user_id"))
            .collect()
    })
}

/// What the reminder job reads about a user who may be due a reminder.
#[derive(Debug, Clone)]
pub struct ReminderFacts {
    pub user_id: UserId,
    pub state: UserState,
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
/// under the lease). The recorded entries come back as one JSON array of numbers:
/// `json_group_array` on SQLite, `json_agg` on PostgreSQL (dialects differ).
pub async fn reminder_facts(
    store: &Store,
    only_user: Option<&UserId>,
    invited_by: DateTime<Utc>,
) -> Result<Vec<ReminderFacts>> {
    static SQLITE: LazyLock<String> = LazyLock::new(|| {
        reminder_facts_sql("(SELECT json_group_array(m.reminder_after) FROM mails m")
    });
    static POSTGRES: LazyLock<String> = LazyLock::new(|| {
        reminder_facts_sql("(SELECT COALESCE(json_agg(m.reminder_after)::text, '[]') FROM mails m")
    });
    let sql = match store.dialect() {
        Dialect::Sqlite => SQLITE.as_str(),
        Dialect::Postgres => POSTGRES.as_str(),
    };
    on_read!(store, |c| {
        let found = sqlx::query(sql)
            .bind(only_user)
            .bind(ts(invited_by))
            .fetch_all(c)
            .await?;
        found
            .iter()
            .map(|r| {
                let at = Place {
                    row: r,
                    table: "user_states",
                    key: "user_id",
                };
                let recorded: String = at.get("recorded")?;
                Ok(ReminderFacts {
                    user_id: at.get("user_id")?,
                    state: at.get("state")?,
                    invited_at: at.get::<Ts>("invited_at")?.value(),
                    last_mailed_at: at.get::<Option<Ts>>("last_mailed_at")?.value(),
                    recorded: serde_json::from_str(&recorded).map_err(|e| {
                        StoreError::BadValue {
                            table: "mails",
                            row: r.try_get::<String, _>("user_id").unwrap_or_default(),
                            column: "reminder_after",
                            why: format!("{recorded:?}: {e}"),
                        }
                    })?,
                    unsent: at.get("unsent")?,
                })
            })
            .collect()
    })
}

/// [`reminder_facts`]' statement around `recorded`, the start of its one subquery that differs.
fn reminder_facts_sql(recorded: &str) -> String {
    format!(
        "SELECT * FROM ( \
           SELECT s.user_id, s.state, s.last_mailed_at, \
             (SELECT MIN(m.sent_at) FROM mails m WHERE m.user_id = s.user_id AND m.kind = 'invite') AS invited_at, \
             {recorded} WHERE m.user_id = s.user_id AND m.kind = 'reminder') AS recorded, \
             EXISTS (SELECT 1 FROM mails m WHERE m.user_id = s.user_id \
                AND m.status IN ('queued', 'sending')) AS unsent \
           FROM user_states s \
           WHERE ($1 IS NULL AND s.state IN ('invited', 'started')) OR s.user_id = $1) AS facts \
         WHERE invited_at IS NOT NULL AND invited_at <= $2"
    )
}

/// Records a reminder for the `after` entry (seconds) and queues it, inside the caller's
/// transaction; `None` when that entry is recorded for the user already.
pub async fn enqueue_reminder(
    tx: &mut WriteTx,
    user_id: &UserId,
    inquiry_row: Option<i64>,
    message_id: &str,
    after_secs: i64,
    now: DateTime<Utc>,
) -> Result<Option<MailRow>> {
    static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO mails (user_id, inquiry_row, kind, status, message_id, next_attempt_at, created_at, updated_at, reminder_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        )
    });
    on_tx!(tx, |c| row(sqlx::query(ENQUEUE.as_str())
        .bind(user_id)
        .bind(inquiry_row)
        .bind(MailKind::Reminder)
        .bind(MailStatus::Queued)
        .bind(message_id)
        .bind(ts(now))
        .bind(after_secs)
        .fetch_optional(c)
        .await?))
}

/// Reminders a crash caught between `sending` and their outcome.
pub async fn interrupted_reminders(store: &Store) -> Result<Vec<MailRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE kind = 'reminder' AND status = 'sending' ORDER BY id",
            *SELECT
        )
    });
    on_read!(store, |c| rows(
        &sqlx::query(SQL.as_str()).fetch_all(c).await?
    ))
}

/// Closes an interrupted reminder without sending it again, inside the caller's transaction.
pub async fn close_interrupted_reminder(
    tx: &mut WriteTx,
    id: i64,
    why: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(on_tx!(tx, |c| sqlx::query(
        "UPDATE mails SET status = 'cancelled', last_error = $1, updated_at = $2 \
         WHERE id = $3 AND kind = 'reminder' AND status = 'sending'",
    )
    .bind(why)
    .bind(ts(now))
    .bind(id)
    .execute(c)
    .await?
    .rows_affected())
        == 1)
}

/// One user's reminders, in cadence order.
pub async fn reminders_of(store: &Store, user_id: &UserId) -> Result<Vec<MailRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE user_id = $1 AND kind = 'reminder' ORDER BY reminder_after",
            *SELECT
        )
    });
    on_read!(store, |c| rows(
        &sqlx::query(SQL.as_str()).bind(user_id).fetch_all(c).await?
    ))
}

/// Users with a mail waiting to go out (queued, or caught mid-send).
pub async fn users_with_unsent(store: &Store) -> Result<HashSet<UserId>> {
    on_read!(store, |c| {
        let found =
            sqlx::query("SELECT DISTINCT user_id FROM mails WHERE status IN ('queued', 'sending')")
                .fetch_all(c)
                .await?;
        found
            .iter()
            .map(|r| value_of(r, "mails", "user_id", "user_id"))
            .collect()
    })
}

/// Sent mails by kind, in kind order (the demo's summary).
pub async fn sent_by_kind(store: &Store) -> Result<Vec<(String, i64)>> {
    Ok(on_read!(store, |c| sqlx::query_as(
        "SELECT kind, COUNT(*) FROM mails WHERE status = 'sent' GROUP BY kind ORDER BY kind",
    )
    .fetch_all(c)
    .await?))
}
