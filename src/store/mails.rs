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
    created_at
});

impl MailRow {
    pub fn link_expires_at(&self) -> Option<DateTime<Utc>> {
        self.link_expires_at.as_deref().and_then(parse_ts)
    }
}

/// The columns of [`MailRow`], for SELECT and RETURNING.
pub const COLUMNS: &str = "id, user_id, inquiry_row, kind, status, message_id, attempts, next_attempt_at, \
     link_expires_at, sent_at, last_error, created_at";

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
    let ts = format_ts(now);
    static ENQUEUE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO mails (user_id, inquiry_row, kind, status, message_id, next_attempt_at, created_at, updated_at) \
             VALUES (?, ?, ?, 'queued', ?, ?, ?, ?) RETURNING {COLUMNS}"
        )
    });
    Ok(sqlx::query_as::<_, MailRow>(ENQUEUE.as_str())
        .bind(user_id)
        .bind(inquiry_row)
        .bind(kind)
        .bind(message_id)
        .bind(&ts)
        .bind(&ts)
        .bind(&ts)
        .fetch_one(conn)
        .await?)
}

/// The user's mail waiting to go out (queued, or caught mid-send by a crash), if any.
pub async fn unsent_for_user(
    conn: impl sqlx::SqliteExecutor<'_>,
    user_id: &str,
) -> Result<Option<MailRow>> {
    let sql = format!(
        "{} WHERE user_id = ? AND status IN ('queued', 'sending') ORDER BY id DESC LIMIT 1",
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
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT m.user_id FROM mails m JOIN user_states s ON s.user_id = m.user_id \
         WHERE m.status IN ('queued', 'sending') AND m.next_attempt_at <= ? AND s.state != 'pending' LIMIT ?",
    )
    .bind(format_ts(now))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
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
