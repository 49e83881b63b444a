//! The inquiries the daemon started. A row is written with its idempotency key *before* the
//! create call, and completed with Persona's answer after it, so a crash never loses a create.

use chrono::{DateTime, Utc};

use std::sync::LazyLock;

use super::{Result, Store, StoreError};
use crate::clock::{format_ts, parse_ts};
use crate::domain::random_alnum;

/// Status of a row whose create call has not been answered yet.
pub const CREATING: &str = "creating";
/// Status of a row Persona refused to create (a permanent error); the user is skipped.
pub const REJECTED: &str = "rejected";
/// Status of a replacement the daemon decided not to create after all: the user finished first.
pub const ABANDONED: &str = "abandoned";

/// How long a `completed` or `needs_review` inquiry is followed for a decision.
pub const FOLLOW_UNDECIDED: chrono::Duration = chrono::Duration::days(30);

#[derive(Debug, Clone)]
pub struct InquiryRow {
    pub id: i64,
    pub user_id: String,
    pub generation: i64,
    pub idempotency_key: String,
    pub key_created_at: String,
    pub inquiry_id: Option<String>,
    pub status: String,
    pub template_id: String,
    pub template_version_id: Option<String>,
    pub persona_created_at: Option<String>,
    pub expires_at: Option<String>,
    pub resume_count: i64,
    pub session_count: i64,
    pub superseded_at: Option<String>,
    pub superseded_reason: Option<String>,
    pub expired_remotely_at: Option<String>,
    pub created_at: String,
    /// When Persona last said what `status` is: older news is not applied.
    pub status_observed_at: Option<String>,
}

from_row!(InquiryRow {
    id,
    user_id,
    generation,
    idempotency_key,
    key_created_at,
    inquiry_id,
    status,
    template_id,
    template_version_id,
    persona_created_at,
    expires_at,
    resume_count,
    session_count,
    superseded_at,
    superseded_reason,
    expired_remotely_at,
    created_at,
    status_observed_at
});

impl InquiryRow {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at.as_deref().and_then(parse_ts)
    }

    pub fn key_created_at(&self) -> Option<DateTime<Utc>> {
        parse_ts(&self.key_created_at)
    }

    pub fn status_observed_at(&self) -> Option<DateTime<Utc>> {
        self.status_observed_at.as_deref().and_then(parse_ts)
    }

    /// When Persona created it (falls back to when the row was written).
    pub fn born_at(&self) -> Option<DateTime<Utc>> {
        self.persona_created_at
            .as_deref()
            .and_then(parse_ts)
            .or_else(|| parse_ts(&self.created_at))
    }
}

/// What Persona said about an inquiry, in the store's terms.
#[derive(Debug, Clone)]
pub struct InquiryFacts {
    pub inquiry_id: String,
    pub status: String,
    pub template_version_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns of [`InquiryRow`], for SELECT and RETURNING.
pub const COLUMNS: &str = "id, user_id, generation, idempotency_key, key_created_at, inquiry_id, status, \
     template_id, template_version_id, persona_created_at, expires_at, resume_count, session_count, \
     superseded_at, superseded_reason, expired_remotely_at, created_at, status_observed_at";

static SELECT: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM inquiries"));

/// Whether the row aliased `i` is its user's current inquiry: the newest one not replaced.
const IS_CURRENT: &str = "i.superseded_at IS NULL \
     AND i.generation = (SELECT MAX(j.generation) FROM inquiries j \
                         WHERE j.user_id = i.user_id AND j.superseded_at IS NULL)";

/// Moves each user in ?1 (a JSON array of `{"user", "nonce"}`) to their next generation; the
/// first half of an intent, [`INSERT_INTENTS`] the second.
const NEXT_GENERATION: &str = "UPDATE user_states SET generation = generation + 1 \
     WHERE user_id IN (SELECT value ->> '$.user' FROM json_each(?1))";

/// A `creating` row with a new key for each user in ?1 at their (just raised) generation. ?2 now,
/// ?3 template, ?4 [`CREATING`]. The key reads like [`new_idempotency_key`] makes it.
static INSERT_INTENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO inquiries (user_id, generation, idempotency_key, key_created_at, status, \
           template_id, created_at, updated_at) \
         SELECT s.user_id, s.generation, \
           'im-' || s.reference_id || '-g' || s.generation || '-' || (j.value ->> '$.nonce'), \
           ?2, ?4, ?3, ?2, ?2 \
         FROM json_each(?1) j JOIN user_states s ON s.user_id = j.value ->> '$.user' \
         RETURNING {COLUMNS}"
    )
});

/// A fresh idempotency key: unique per (user, generation) and per retry-after-prune.
pub fn new_idempotency_key(reference_id: &str, generation: i64) -> String {
    format!("im-{reference_id}-g{generation}-{}", random_alnum(8))
}

/// The user's newest inquiry that has not been replaced.
pub async fn current(
    conn: impl sqlx::SqliteExecutor<'_>,
    user_id: &str,
) -> Result<Option<InquiryRow>> {
    let sql = format!("{} i WHERE i.user_id = ? AND {IS_CURRENT}", *SELECT);
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await?)
}

pub async fn by_inquiry_id(store: &Store, inquiry_id: &str) -> Result<Option<InquiryRow>> {
    let sql = format!("{} WHERE inquiry_id = ?", *SELECT);
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(inquiry_id)
        .fetch_optional(store.reader())
        .await?)
}

/// The Persona ids of every inquiry recorded for the user, replaced ones included.
pub async fn recorded_ids(
    store: &Store,
    user_id: &str,
) -> Result<std::collections::HashSet<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT inquiry_id FROM inquiries WHERE user_id = ? AND inquiry_id IS NOT NULL",
    )
    .bind(user_id)
    .fetch_all(store.reader())
    .await?;
    Ok(ids.into_iter().collect())
}

pub async fn by_row_id(conn: impl sqlx::SqliteExecutor<'_>, id: i64) -> Result<Option<InquiryRow>> {
    let sql = format!("{} WHERE id = ?", *SELECT);
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?)
}

/// Writes the intent to create the user's next inquiry (next generation, new idempotency key)
/// inside the caller's transaction. The create call happens after this commits.
pub async fn begin_create(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    template_id: &str,
    now: DateTime<Utc>,
) -> Result<InquiryRow> {
    write_intents(conn, &[user_id], template_id, now)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Missing {
            table: "user_states",
            key: user_id.to_owned(),
        })
}

/// [`begin_create`] for each of `user_ids` (known to `user_states`), as one transaction of its
/// own: what a provisioning batch writes before its first create call.
pub async fn begin_create_many(
    store: &Store,
    user_ids: &[&str],
    template_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<InquiryRow>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin_write().await?;
    let rows = write_intents(&mut tx, user_ids, template_id, now).await?;
    tx.commit().await?;
    Ok(rows)
}

async fn write_intents(
    conn: &mut sqlx::SqliteConnection,
    user_ids: &[&str],
    template_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<InquiryRow>> {
    let intents: Vec<serde_json::Value> = user_ids
        .iter()
        .map(|user| serde_json::json!({ "user": user, "nonce": random_alnum(8) }))
        .collect();
    let intents = serde_json::Value::Array(intents).to_string();
    sqlx::query(NEXT_GENERATION)
        .bind(&intents)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_as::<_, InquiryRow>(INSERT_INTENTS.as_str())
        .bind(&intents)
        .bind(format_ts(now))
        .bind(template_id)
        .bind(CREATING)
        .fetch_all(conn)
        .await?)
}

/// The newest unreplaced inquiry of each of `user_ids` that has one, in one statement.
pub async fn current_of_users(store: &Store, user_ids: &[&str]) -> Result<Vec<InquiryRow>> {
    let sql = format!(
        "{} i WHERE i.user_id IN (SELECT value FROM json_each(?1)) AND {IS_CURRENT}",
        *SELECT
    );
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::to_string(user_ids).expect("strings serialize"))
        .fetch_all(store.reader())
        .await?)
}

/// Gives a still-`creating` row a new key: its old one is older than Persona keeps keys, and
/// Persona was searched and holds no live inquiry for the user.
pub async fn renew_key(
    store: &Store,
    row: &InquiryRow,
    reference_id: &str,
    now: DateTime<Utc>,
) -> Result<InquiryRow> {
    sqlx::query("UPDATE inquiries SET idempotency_key = ?, key_created_at = ?, updated_at = ? WHERE id = ? AND status = ?")
        .bind(new_idempotency_key(reference_id, row.generation))
        .bind(format_ts(now))
        .bind(format_ts(now))
        .bind(row.id)
        .bind(CREATING)
        .execute(store.writer())
        .await?;
    Ok(by_row_id(store.reader(), row.id)
        .await?
        .expect("row exists"))
}

/// Marks a `creating` row's key as no longer to be trusted (Persona stored an error under it):
/// the next attempt searches Persona before creating with a new key.
pub async fn distrust_key(store: &Store, row_id: i64) -> Result<()> {
    sqlx::query("UPDATE inquiries SET key_created_at = '1970-01-01T00:00:00.000Z' WHERE id = ? AND status = ?")
        .bind(row_id)
        .bind(CREATING)
        .execute(store.writer())
        .await?;
    Ok(())
}

/// Records Persona's answer on a row, inside the caller's transaction.
pub async fn record_facts(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    facts: &InquiryFacts,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE inquiries SET inquiry_id = ?1, status = ?2, template_version_id = COALESCE(?3, template_version_id), \
         persona_created_at = COALESCE(?4, persona_created_at), expires_at = ?5, updated_at = ?6, \
         status_observed_at = ?6 WHERE id = ?7",
    )
    .bind(&facts.inquiry_id)
    .bind(&facts.status)
    .bind(&facts.template_version_id)
    .bind(facts.created_at.map(format_ts))
    .bind(facts.expires_at.map(format_ts))
    .bind(format_ts(now))
    .bind(row_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Persona refused to create this inquiry (a permanent error); the row stays as a record.
pub async fn mark_rejected(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE inquiries SET status = ?, updated_at = ? WHERE id = ?")
        .bind(REJECTED)
        .bind(format_ts(now))
        .bind(row_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Each unfinished (invited or started) user's newest inquiry, unless replaced: live ones and
/// ones whose create was interrupted (`creating`).
pub async fn current_of_unfinished_users(store: &Store) -> Result<Vec<InquiryRow>> {
    let sql = format!(
        "{} i JOIN user_states s ON s.user_id = i.user_id \
         WHERE s.state IN ('invited', 'started') AND {IS_CURRENT} \
           AND i.status IN ('created', 'pending', 'expired', 'creating') ORDER BY i.id",
        select_aliased()
    );
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.reader())
        .await?)
}

/// The current inquiry of one user under the caller's lease, read again after the claim.
pub async fn current_of(store: &Store, user_id: &str) -> Result<Option<InquiryRow>> {
    current(store.reader(), user_id).await
}

/// `SELECT i.col, … FROM inquiries i`.
fn select_aliased() -> String {
    let cols: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("i.{}", c.trim()))
        .collect();
    format!("SELECT {} FROM inquiries", cols.join(", "))
}

/// A status (and expiry) learned later: from a list, a webhook, a resume.
pub async fn update_status(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    status: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    update_status_observed(conn, row_id, status, expires_at, now, now).await
}

/// [`update_status`] with when Persona said so (a webhook's created-at); stamps when the row
/// first reached a finished status.
pub async fn update_status_observed(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    status: &str,
    expires_at: Option<DateTime<Utc>>,
    observed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    let finished = !matches!(status, "created" | "pending" | "expired" | CREATING);
    sqlx::query(
        "UPDATE inquiries SET status = ?, expires_at = ?, updated_at = ?, status_observed_at = ?, \
         finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) ELSE finished_at END WHERE id = ?",
    )
    .bind(status)
    .bind(expires_at.map(format_ts))
    .bind(format_ts(now))
    .bind(format_ts(observed_at))
    .bind(finished)
    .bind(format_ts(now))
    .bind(row_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A replacement the daemon will not create (the user finished first).
/// Marked replaced too, so it is never the user's current inquiry.
pub async fn mark_abandoned(
    store: &Store,
    row_id: i64,
    why: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE inquiries SET status = ?1, superseded_at = ?2, superseded_reason = ?3, updated_at = ?2 \
         WHERE id = ?4 AND status = ?5",
    )
    .bind(ABANDONED)
    .bind(format_ts(now))
    .bind(why)
    .bind(row_id)
    .bind(CREATING)
    .execute(store.writer())
    .await?;
    Ok(())
}

/// A replaced inquiry becomes current again: its user started it before it was expired (after
/// a crash between the decision and the expire), and a started user is never cut off.
pub async fn restore(store: &Store, row_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE inquiries SET superseded_at = NULL, superseded_reason = NULL, updated_at = ? \
         WHERE id = ? AND expired_remotely_at IS NULL",
    )
    .bind(format_ts(now))
    .bind(row_id)
    .execute(store.writer())
    .await?;
    Ok(())
}

/// Records a resume (each creates or reuses a session at Persona); `counted`: whether it counts
/// toward `max_resumes` (a token fetched for a mail retry does not).
pub async fn record_resume(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    counted: bool,
    status: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE inquiries SET status = ?1, expires_at = ?2, resume_count = resume_count + ?3, \
         session_count = session_count + 1, updated_at = ?4, status_observed_at = ?4 WHERE id = ?5",
    )
    .bind(status)
    .bind(expires_at.map(format_ts))
    .bind(i64::from(counted))
    .bind(format_ts(now))
    .bind(row_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a session created without a resume (a one-time link).
pub async fn record_session(conn: &mut sqlx::SqliteConnection, row_id: i64) -> Result<()> {
    sqlx::query("UPDATE inquiries SET session_count = session_count + 1 WHERE id = ?")
        .bind(row_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a row replaced by a newer generation; the refresh job expires it at Persona.
pub async fn supersede(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE inquiries SET superseded_at = ?, superseded_reason = ?, updated_at = ? WHERE id = ?")
        .bind(format_ts(now))
        .bind(reason)
        .bind(format_ts(now))
        .bind(row_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The expire call for a replaced inquiry succeeded: Persona answered it `expired`.
pub async fn mark_expired_remotely(store: &Store, row_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE inquiries SET expired_remotely_at = ?1, status = 'expired', expires_at = NULL, \
                 updated_at = ?1, status_observed_at = ?1 WHERE id = ?2",
    )
    .bind(format_ts(now))
    .bind(row_id)
    .execute(store.writer())
    .await?;
    Ok(())
}

/// Superseded inquiries still live at Persona (their expire call has not succeeded yet).
pub async fn superseded_unexpired(store: &Store, limit: u32) -> Result<Vec<InquiryRow>> {
    let sql = format!(
        "{} WHERE superseded_at IS NOT NULL AND expired_remotely_at IS NULL \
         AND inquiry_id IS NOT NULL AND status IN ('created', 'pending') ORDER BY id LIMIT ?",
        *SELECT
    );
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(i64::from(limit))
        .fetch_all(store.reader())
        .await?)
}

/// One user's replaced inquiries still live at Persona.
pub async fn superseded_unexpired_of(store: &Store, user_id: &str) -> Result<Vec<InquiryRow>> {
    let sql = format!(
        "{} WHERE user_id = ? AND superseded_at IS NOT NULL AND expired_remotely_at IS NULL \
         AND inquiry_id IS NOT NULL AND status IN ('created', 'pending') ORDER BY id",
        *SELECT
    );
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_all(store.reader())
        .await?)
}

/// Every inquiry whose status refresh follows: the current ones not finished; replaced ones
/// not yet expired at Persona (a user may finish one of those too); and finished ones still
/// awaiting a decision (`completed`, `needs_review`) for [`FOLLOW_UNDECIDED`].
pub async fn followed(store: &Store, now: DateTime<Utc>) -> Result<Vec<InquiryRow>> {
    let sql = format!(
        "{} WHERE inquiry_id IS NOT NULL AND ( \
           (superseded_at IS NULL AND status IN ('created', 'pending', 'expired')) \
           OR (superseded_at IS NOT NULL AND expired_remotely_at IS NULL AND status IN ('created', 'pending')) \
           OR (status IN ('completed', 'needs_review') AND COALESCE(finished_at, updated_at) > ?)) \
         ORDER BY id",
        *SELECT
    );
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .bind(format_ts(now - FOLLOW_UNDECIDED))
        .fetch_all(store.reader())
        .await?)
}
