//! The inquiries the daemon started. A row is written with its idempotency key *before* the
//! create call, and completed with Persona's answer after it, so a crash never loses a create.

use chrono::{DateTime, Utc};

use std::sync::LazyLock;

use sqlx::FromRow as _;

use super::{Result, Script, Store};
use crate::clock::{format_ts, parse_ts};
use crate::domain::random_alnum;

/// Status of a row whose create call has not been answered yet.
pub const CREATING: &str = "creating";
/// Status of a row Persona refused to create (a permanent error); the user is skipped.
pub const REJECTED: &str = "rejected";

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
    created_at
});

impl InquiryRow {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at.as_deref().and_then(parse_ts)
    }

    pub fn key_created_at(&self) -> Option<DateTime<Utc>> {
        parse_ts(&self.key_created_at)
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
     superseded_at, superseded_reason, expired_remotely_at, created_at";

static SELECT: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM inquiries"));

/// Whether the row aliased `i` is its user's current inquiry: the newest one not replaced.
const IS_CURRENT: &str = "i.superseded_at IS NULL \
     AND i.generation = (SELECT MAX(j.generation) FROM inquiries j \
                         WHERE j.user_id = i.user_id AND j.superseded_at IS NULL)";

/// The intent to create the next inquiry of each user in ?1 (a JSON array of `{"user", "nonce"}`):
/// next generation, a new key, a `creating` row. ?2 now, ?3 template, ?4 [`CREATING`]. The key
/// reads like [`new_idempotency_key`] makes it.
static BEGIN_CREATE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE user_states SET generation = generation + 1 \
         WHERE user_id IN (SELECT value ->> '$.user' FROM json_each(?1)); \
         INSERT INTO inquiries (user_id, generation, idempotency_key, key_created_at, status, \
           template_id, created_at, updated_at) \
         SELECT s.user_id, s.generation, \
           'im-' || s.reference_id || '-g' || s.generation || '-' || (j.value ->> '$.nonce'), \
           ?2, ?4, ?3, ?2, ?2 \
         FROM json_each(?1) j JOIN user_states s ON s.user_id = j.value ->> '$.user' \
         RETURNING {COLUMNS};"
    )
});

static BEGIN_CREATE_ALONE: LazyLock<String> =
    LazyLock::new(|| super::transaction_script(&BEGIN_CREATE));

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
    let row = begin_create_query(&BEGIN_CREATE, &[user_id], template_id, now)
        .fetch_one(conn)
        .await?;
    Ok(InquiryRow::from_row(&row)?)
}

/// [`begin_create`] for each of `user_ids` (known to `user_states`), as one transaction of its
/// own in one round trip: what a provisioning batch writes before its first create call.
pub async fn begin_create_many(
    store: &Store,
    user_ids: &[&str],
    template_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<InquiryRow>> {
    if user_ids.is_empty() {
        return Ok(Vec::new());
    }
    let script = begin_create_query(&BEGIN_CREATE_ALONE, user_ids, template_id, now);
    let rows = store.run_script(script).await?;
    Ok(rows
        .iter()
        .map(InquiryRow::from_row)
        .collect::<Result<_, _>>()?)
}

fn begin_create_query(
    sql: &'static str,
    user_ids: &[&str],
    template_id: &str,
    now: DateTime<Utc>,
) -> Script {
    let intents: Vec<serde_json::Value> = user_ids
        .iter()
        .map(|user| serde_json::json!({ "user": user, "nonce": random_alnum(8) }))
        .collect();
    sqlx::query(sql)
        .bind(serde_json::Value::Array(intents).to_string())
        .bind(format_ts(now))
        .bind(template_id.to_owned())
        .bind(CREATING)
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
        "UPDATE inquiries SET inquiry_id = ?, status = ?, template_version_id = COALESCE(?, template_version_id), \
         persona_created_at = COALESCE(?, persona_created_at), expires_at = ?, updated_at = ? WHERE id = ?",
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
    Ok(sqlx::query_as(
        "SELECT i.id, i.user_id, i.generation, i.idempotency_key, i.key_created_at, i.inquiry_id, i.status, \
                i.template_id, i.template_version_id, i.persona_created_at, i.expires_at, i.resume_count, \
                i.session_count, i.superseded_at, i.superseded_reason, i.expired_remotely_at, i.created_at \
         FROM inquiries i JOIN user_states s ON s.user_id = i.user_id \
         WHERE s.state IN ('invited', 'started') AND i.superseded_at IS NULL \
           AND i.generation = (SELECT MAX(generation) FROM inquiries j WHERE j.user_id = i.user_id) \
           AND i.status IN ('created', 'pending', 'expired', 'creating') ORDER BY i.id",
    )
    .fetch_all(store.reader())
    .await?)
}

/// A status (and expiry) learned later: from a list, a webhook, a resume.
pub async fn update_status(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    status: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE inquiries SET status = ?, expires_at = ?, updated_at = ? WHERE id = ?")
        .bind(status)
        .bind(expires_at.map(format_ts))
        .bind(format_ts(now))
        .bind(row_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a resume (each creates or reuses a session at Persona).
pub async fn record_resume(
    conn: &mut sqlx::SqliteConnection,
    row_id: i64,
    status: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE inquiries SET status = ?, expires_at = ?, resume_count = resume_count + 1, \
         session_count = session_count + 1, updated_at = ? WHERE id = ?",
    )
    .bind(status)
    .bind(expires_at.map(format_ts))
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

pub async fn mark_expired_remotely(store: &Store, row_id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE inquiries SET expired_remotely_at = ?, status = 'expired', updated_at = ? WHERE id = ?")
        .bind(format_ts(now))
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

/// Every current (not superseded) inquiry whose status is not finished, for refresh.
pub async fn live(store: &Store) -> Result<Vec<InquiryRow>> {
    let sql = format!(
        "{} WHERE superseded_at IS NULL AND inquiry_id IS NOT NULL \
         AND status IN ('created', 'pending', 'expired') ORDER BY id",
        *SELECT
    );
    Ok(sqlx::query_as::<_, InquiryRow>(sqlx::AssertSqlSafe(sql))
        .fetch_all(store.reader())
        .await?)
}
