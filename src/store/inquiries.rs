//! The inquiries the daemon started. A row is written with its idempotency key *before* the
//! create call, and completed with Persona's answer after it, so a crash never loses a create.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::row::{row, rows};
use super::{Result, Store, StoreError, Ts, WriteTx, ts, ts_opt};
use crate::domain::{InquiryId, InquiryStatus, UserId, random_alnum};

/// How long a `completed` or `needs_review` inquiry is followed for a decision.
pub const FOLLOW_UNDECIDED: chrono::Duration = chrono::Duration::days(30);

/// A row's status: Persona's, or one of the daemon's own for rows Persona never answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowStatus {
    /// The create call has not been answered yet.
    Creating,
    /// Persona refused to create it (a permanent error); the user is skipped.
    Rejected,
    /// A replacement the daemon decided not to create after all: the user finished first.
    Abandoned,
    /// What Persona last said about it.
    Persona(InquiryStatus),
}

impl RowStatus {
    pub fn parse(s: &str) -> RowStatus {
        match s {
            "creating" => RowStatus::Creating,
            "rejected" => RowStatus::Rejected,
            "abandoned" => RowStatus::Abandoned,
            other => RowStatus::Persona(InquiryStatus::parse(other)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RowStatus::Creating => "creating",
            RowStatus::Rejected => "rejected",
            RowStatus::Abandoned => "abandoned",
            RowStatus::Persona(s) => s.as_str(),
        }
    }

    /// Persona's status, when Persona has answered for the row.
    pub fn persona(&self) -> Option<&InquiryStatus> {
        match self {
            RowStatus::Persona(s) => Some(s),
            _ => None,
        }
    }
}

impl PartialEq<InquiryStatus> for RowStatus {
    fn eq(&self, other: &InquiryStatus) -> bool {
        self.persona() == Some(other)
    }
}

impl fmt::Display for RowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct InquiryRow {
    pub id: i64,
    pub user_id: UserId,
    pub generation: i64,
    pub idempotency_key: String,
    pub key_created_at: DateTime<Utc>,
    pub inquiry_id: Option<InquiryId>,
    pub status: RowStatus,
    pub template_id: String,
    pub template_version_id: Option<String>,
    pub persona_created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub resume_count: i64,
    pub session_count: i64,
    pub superseded_at: Option<DateTime<Utc>>,
    pub superseded_reason: Option<String>,
    pub expired_remotely_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When Persona last said what `status` is: older news is not applied.
    pub status_observed_at: Option<DateTime<Utc>>,
}

from_row!(InquiryRow in "inquiries" by id {
    id,
    user_id,
    generation,
    idempotency_key,
    key_created_at as Ts,
    inquiry_id,
    status,
    template_id,
    template_version_id,
    persona_created_at as Option<Ts>,
    expires_at as Option<Ts>,
    resume_count,
    session_count,
    superseded_at as Option<Ts>,
    superseded_reason,
    expired_remotely_at as Option<Ts>,
    created_at as Ts,
    status_observed_at as Option<Ts>,
});

impl InquiryRow {
    /// When Persona created it (falls back to when the row was written).
    pub fn born_at(&self) -> DateTime<Utc> {
        self.persona_created_at.unwrap_or(self.created_at)
    }

    /// Its Persona id; a row without one has not been answered yet.
    pub fn persona_id(&self) -> Result<&InquiryId> {
        self.inquiry_id.as_ref().ok_or_else(|| StoreError::Missing {
            table: "inquiries",
            key: format!("{} inquiry_id", self.id),
        })
    }
}

/// What Persona said about an inquiry, in the store's terms.
#[derive(Debug, Clone)]
pub struct InquiryFacts {
    pub inquiry_id: InquiryId,
    pub status: InquiryStatus,
    pub template_version_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns of [`InquiryRow`], for SELECT and RETURNING.
const COLUMNS: &str = "id, user_id, generation, idempotency_key, key_created_at, inquiry_id, status, \
     template_id, template_version_id, persona_created_at, expires_at, resume_count, session_count, \
     superseded_at, superseded_reason, expired_remotely_at, created_at, status_observed_at";

static SELECT: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM inquiries"));

/// Whether the row aliased `i` is its user's current inquiry: the newest one not replaced.
const IS_CURRENT: &str = "i.superseded_at IS NULL \
     AND i.generation = (SELECT MAX(j.generation) FROM inquiries j \
                         WHERE j.user_id = i.user_id AND j.superseded_at IS NULL)";

static CURRENT: LazyLock<String> =
    LazyLock::new(|| format!("{} i WHERE i.user_id = $1 AND {IS_CURRENT}", *SELECT));

static BY_ROW_ID: LazyLock<String> = LazyLock::new(|| format!("{} WHERE id = $1", *SELECT));

/// A fresh idempotency key: unique per (user, generation) and per retry-after-prune.
pub fn new_idempotency_key(reference_id: &str, generation: i64) -> String {
    format!("im-{reference_id}-g{generation}-{}", random_alnum(8))
}

/// The user's newest inquiry that has not been replaced.
pub async fn current(store: &Store, user_id: &UserId) -> Result<Option<InquiryRow>> {
    on_read!(store, |c| row(sqlx::query(CURRENT.as_str())
        .bind(user_id)
        .fetch_optional(c)
        .await?))
}

pub async fn by_inquiry_id(store: &Store, inquiry_id: &InquiryId) -> Result<Option<InquiryRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| format!("{} WHERE inquiry_id = $1", *SELECT));
    on_read!(store, |c| row(sqlx::query(SQL.as_str())
        .bind(inquiry_id)
        .fetch_optional(c)
        .await?))
}

/// The Persona ids of every inquiry recorded for the user, replaced ones included.
pub async fn recorded_ids(store: &Store, user_id: &UserId) -> Result<HashSet<String>> {
    let ids: Vec<String> = on_read!(store, |c| sqlx::query_scalar(
        "SELECT inquiry_id FROM inquiries WHERE user_id = $1 AND inquiry_id IS NOT NULL",
    )
    .bind(user_id)
    .fetch_all(c)
    .await?);
    Ok(ids.into_iter().collect())
}

pub async fn by_row_id(store: &Store, id: i64) -> Result<Option<InquiryRow>> {
    on_read!(store, |c| row(sqlx::query(BY_ROW_ID.as_str())
        .bind(id)
        .fetch_optional(c)
        .await?))
}

/// [`by_row_id`] inside the caller's transaction; a row that is not there is [`StoreError::Missing`].
pub async fn by_row_id_in(tx: &mut WriteTx, id: i64) -> Result<InquiryRow> {
    let found = on_tx!(tx, |c| row(sqlx::query(BY_ROW_ID.as_str())
        .bind(id)
        .fetch_optional(c)
        .await?))?;
    found.ok_or_else(|| StoreError::Missing {
        table: "inquiries",
        key: id.to_string(),
    })
}

/// Writes the intent to create the user's next inquiry (next generation, new idempotency key)
/// inside the caller's transaction. The create call happens after this commits.
pub async fn begin_create(
    tx: &mut WriteTx,
    user_id: &UserId,
    template_id: &str,
    now: DateTime<Utc>,
) -> Result<InquiryRow> {
    write_intents(tx, &[user_id], template_id, now)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Missing {
            table: "user_states",
            key: user_id.to_string(),
        })
}

/// [`begin_create`] for each of `user_ids` (known to `user_states`), as one transaction of its
/// own: what a provisioning batch writes before its first create call.
pub async fn begin_create_many(
    store: &Store,
    user_ids: &[&UserId],
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

/// Moves each user to their next generation and writes a `creating` row with a new key for
/// each at it, two statements whatever their number. The users travel as one JSON array read
/// with `json_each` on SQLite, as two unnested text[] on PostgreSQL (dialects differ). On
/// PostgreSQL the first statement locks the users' rows, so the generation the second reads
/// is the one this transaction set.
async fn write_intents(
    tx: &mut WriteTx,
    user_ids: &[&UserId],
    template_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<InquiryRow>> {
    const SQLITE_NEXT_GENERATION: &str = "UPDATE user_states SET generation = generation + 1 \
         WHERE user_id IN (SELECT value ->> '$.user' FROM json_each($1))";
    const POSTGRES_NEXT_GENERATION: &str = "UPDATE user_states SET generation = generation + 1 \
         WHERE user_id = ANY($1::text[])";
    // The key reads like [`new_idempotency_key`] makes it.
    static SQLITE_INSERT_INTENTS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO inquiries (user_id, generation, idempotency_key, key_created_at, status, \
               template_id, created_at, updated_at) \
             SELECT s.user_id, s.generation, \
               'im-' || s.reference_id || '-g' || s.generation || '-' || (j.value ->> '$.nonce'), \
               $2, $4, $3, $2, $2 \
             FROM json_each($1) j JOIN user_states s ON s.user_id = j.value ->> '$.user' \
             RETURNING {COLUMNS}"
        )
    });
    static POSTGRES_INSERT_INTENTS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO inquiries (user_id, generation, idempotency_key, key_created_at, status, \
               template_id, created_at, updated_at) \
             SELECT s.user_id, s.generation, \
               'im-' || s.reference_id || '-g' || s.generation || '-' || j.nonce, \
               $2, $4, $3, $2, $2 \
             FROM unnest($1::text[], $5::text[]) AS j(user_id, nonce) \
               JOIN user_states s ON s.user_id = j.user_id \
             RETURNING {COLUMNS}"
        )
    });
    let nonces: Vec<String> = user_ids.iter().map(|_| random_alnum(8)).collect();
    on_tx!(
        tx,
        sqlite | c | {
            let intents: Vec<serde_json::Value> = user_ids
                .iter()
                .zip(&nonces)
                .map(|(user, nonce)| serde_json::json!({ "user": user.as_str(), "nonce": nonce }))
                .collect();
            let intents = serde_json::Value::Array(intents).to_string();
            sqlx::query(SQLITE_NEXT_GENERATION)
                .bind(&intents)
                .execute(&mut *c)
                .await?;
            rows(
                &sqlx::query(SQLITE_INSERT_INTENTS.as_str())
                    .bind(&intents)
                    .bind(ts(now))
                    .bind(template_id)
                    .bind(RowStatus::Creating)
                    .fetch_all(c)
                    .await?,
            )
        },
        postgres | c | {
            let users: Vec<&str> = user_ids.iter().map(|u| u.as_str()).collect();
            sqlx::query(POSTGRES_NEXT_GENERATION)
                .bind(&users)
                .execute(&mut *c)
                .await?;
            rows(
                &sqlx::query(POSTGRES_INSERT_INTENTS.as_str())
                    .bind(&users)
                    .bind(ts(now))
                    .bind(template_id)
                    .bind(RowStatus::Creating)
                    .bind(&nonces)
                    .fetch_all(c)
                    .await?,
            )
        }
    )
}

/// The newest unreplaced inquiry of each of `user_ids` that has one, in one statement: the
/// ids travel as one JSON array on SQLite, as one text[] on PostgreSQL (dialects differ).
pub async fn current_of_users(store: &Store, user_ids: &[&UserId]) -> Result<Vec<InquiryRow>> {
    static SQLITE: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} i WHERE i.user_id IN (SELECT value FROM json_each($1)) AND {IS_CURRENT}",
            *SELECT
        )
    });
    static POSTGRES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} i WHERE i.user_id = ANY($1::text[]) AND {IS_CURRENT}",
            *SELECT
        )
    });
    let ids: Vec<&str> = user_ids.iter().map(|u| u.as_str()).collect();
    on_read!(
        store,
        sqlite
            | c
            | rows(
                &sqlx::query(SQLITE.as_str())
                    .bind(serde_json::to_string(&ids).expect("strings serialize"))
                    .fetch_all(c)
                    .await?
            ),
        postgres
            | c
            | rows(
                &sqlx::query(POSTGRES.as_str())
                    .bind(&ids)
                    .fetch_all(c)
                    .await?
            )
    )
}

/// Gives a still-`creating` row a new key: its old one is older than Persona keeps keys, and
/// Persona was searched and holds no live inquiry for the user.
pub async fn renew_key(
    store: &Store,
    row: &InquiryRow,
    reference_id: &str,
    now: DateTime<Utc>,
) -> Result<InquiryRow> {
    let mut tx = store.begin_write().await?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE inquiries SET idempotency_key = $1, key_created_at = $2, updated_at = $2 \
         WHERE id = $3 AND status = $4"
    )
    .bind(new_idempotency_key(reference_id, row.generation))
    .bind(ts(now))
    .bind(row.id)
    .bind(RowStatus::Creating)
    .execute(c)
    .await?
    .rows_affected());
    let renewed = by_row_id_in(&mut tx, row.id).await?;
    tx.commit().await?;
    Ok(renewed)
}

/// Marks a `creating` row's key as no longer to be trusted (Persona stored an error under it):
/// the next attempt searches Persona before creating with a new key.
pub async fn distrust_key(store: &Store, row_id: i64) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE inquiries SET key_created_at = $1 WHERE id = $2 AND status = $3"
    )
    .bind(ts(DateTime::UNIX_EPOCH))
    .bind(row_id)
    .bind(RowStatus::Creating)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Records Persona's answer on a row, inside the caller's transaction.
pub async fn record_facts(
    tx: &mut WriteTx,
    row_id: i64,
    facts: &InquiryFacts,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE inquiries SET inquiry_id = $1, status = $2, template_version_id = COALESCE($3, template_version_id), \
         persona_created_at = COALESCE($4, persona_created_at), expires_at = $5, updated_at = $6, \
         status_observed_at = $6 WHERE id = $7",
    )
    .bind(&facts.inquiry_id)
    .bind(RowStatus::Persona(facts.status.clone()))
    .bind(&facts.template_version_id)
    .bind(ts_opt(facts.created_at))
    .bind(ts_opt(facts.expires_at))
    .bind(ts(now))
    .bind(row_id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// Persona refused to create this inquiry (a permanent error); the row stays as a record.
pub async fn mark_rejected(tx: &mut WriteTx, row_id: i64, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE inquiries SET status = $1, updated_at = $2 WHERE id = $3"
    )
    .bind(RowStatus::Rejected)
    .bind(ts(now))
    .bind(row_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Each unfinished (invited or started) user's newest inquiry, unless replaced: live ones and
/// ones whose create was interrupted (`creating`).
pub async fn current_of_unfinished_users(store: &Store) -> Result<Vec<InquiryRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} i JOIN user_states s ON s.user_id = i.user_id \
             WHERE s.state IN ('invited', 'started') AND {IS_CURRENT} \
               AND i.status IN ('created', 'pending', 'expired', 'creating') ORDER BY i.id",
            select_aliased()
        )
    });
    on_read!(store, |c| rows(
        &sqlx::query(SQL.as_str()).fetch_all(c).await?
    ))
}

/// `SELECT i.col, … FROM inquiries`.
fn select_aliased() -> String {
    let cols: Vec<String> = COLUMNS
        .split(',')
        .map(|c| format!("i.{}", c.trim()))
        .collect();
    format!("SELECT {} FROM inquiries", cols.join(", "))
}

/// A status (and expiry) learned later: from a list, a webhook, a resume.
pub async fn update_status(
    tx: &mut WriteTx,
    row_id: i64,
    status: &InquiryStatus,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    update_status_observed(tx, row_id, status, expires_at, now, now).await
}

/// [`update_status`] with when Persona said so (a webhook's created-at); stamps when the row
/// first reached a finished status.
pub async fn update_status_observed(
    tx: &mut WriteTx,
    row_id: i64,
    status: &InquiryStatus,
    expires_at: Option<DateTime<Utc>>,
    observed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE inquiries SET status = $1, expires_at = $2, updated_at = $3, status_observed_at = $4, \
         finished_at = CASE WHEN $5 THEN COALESCE(finished_at, $3) ELSE finished_at END WHERE id = $6",
    )
    .bind(RowStatus::Persona(status.clone()))
    .bind(ts_opt(expires_at))
    .bind(ts(now))
    .bind(ts(observed_at))
    .bind(status.is_finished())
    .bind(row_id)
    .execute(c)
    .await?.rows_affected()
    });
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
    on_write!(store, |c| {
        sqlx::query(
        "UPDATE inquiries SET status = $1, superseded_at = $2, superseded_reason = $3, updated_at = $2 \
         WHERE id = $4 AND status = $5",
    )
    .bind(RowStatus::Abandoned)
    .bind(ts(now))
    .bind(why)
    .bind(row_id)
    .bind(RowStatus::Creating)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// A replaced inquiry becomes current again: its user started it before it was expired (after
/// a crash between the decision and the expire), and a started user is never cut off.
pub async fn restore(store: &Store, row_id: i64, now: DateTime<Utc>) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE inquiries SET superseded_at = NULL, superseded_reason = NULL, updated_at = $1 \
         WHERE id = $2 AND expired_remotely_at IS NULL",
    )
    .bind(ts(now))
    .bind(row_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Records a resume (each creates or reuses a session at Persona); `counted`: whether it counts
/// toward `max_resumes` (a token fetched for a mail retry does not).
pub async fn record_resume(
    tx: &mut WriteTx,
    row_id: i64,
    counted: bool,
    status: &InquiryStatus,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE inquiries SET status = $1, expires_at = $2, resume_count = resume_count + $3, \
         session_count = session_count + 1, updated_at = $4, status_observed_at = $4 WHERE id = $5",
    )
    .bind(RowStatus::Persona(status.clone()))
    .bind(ts_opt(expires_at))
    .bind(i64::from(counted))
    .bind(ts(now))
    .bind(row_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Counts a session created without a resume (a one-time link).
pub async fn record_session(tx: &mut WriteTx, row_id: i64) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE inquiries SET session_count = session_count + 1 WHERE id = $1"
    )
    .bind(row_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Marks a row replaced by a newer generation; the refresh job expires it at Persona.
pub async fn supersede(
    tx: &mut WriteTx,
    row_id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE inquiries SET superseded_at = $1, superseded_reason = $2, updated_at = $1 WHERE id = $3"
    )
    .bind(ts(now))
    .bind(reason)
    .bind(row_id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// The expire call for a replaced inquiry succeeded: Persona answered it `expired`.
pub async fn mark_expired_remotely(store: &Store, row_id: i64, now: DateTime<Utc>) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE inquiries SET expired_remotely_at = $1, status = $2, expires_at = NULL, \
                 updated_at = $1, status_observed_at = $1 WHERE id = $3",
    )
    .bind(ts(now))
    .bind(RowStatus::Persona(InquiryStatus::Expired))
    .bind(row_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Superseded inquiries still live at Persona (their expire call has not succeeded yet).
pub async fn superseded_unexpired(store: &Store, limit: u32) -> Result<Vec<InquiryRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE superseded_at IS NOT NULL AND expired_remotely_at IS NULL \
             AND inquiry_id IS NOT NULL AND status IN ('created', 'pending') ORDER BY id LIMIT $1",
            *SELECT
        )
    });
    on_read!(store, |c| rows(
        &sqlx::query(SQL.as_str())
            .bind(i64::from(limit))
            .fetch_all(c)
            .await?
    ))
}

/// One user's replaced inquiries still live at Persona.
pub async fn superseded_unexpired_of(store: &Store, user_id: &UserId) -> Result<Vec<InquiryRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE user_id = $1 AND superseded_at IS NOT NULL AND expired_remotely_at IS NULL \
             AND inquiry_id IS NOT NULL AND status IN ('created', 'pending') ORDER BY id",
            *SELECT
        )
    });
    on_read!(store, |c| rows(
        &sqlx::query(SQL.as_str()).bind(user_id).fetch_all(c).await?
    ))
}

/// Every inquiry whose status refresh follows: the current ones not finished; replaced ones
/// not yet expired at Persona (a user may finish one of those too); and finished ones still
/// awaiting a decision (`completed`, `needs_review`) for [`FOLLOW_UNDECIDED`].
pub async fn followed(store: &Store, now: DateTime<Utc>) -> Result<Vec<InquiryRow>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} WHERE inquiry_id IS NOT NULL AND ( \
               (superseded_at IS NULL AND status IN ('created', 'pending', 'expired')) \
               OR (superseded_at IS NOT NULL AND expired_remotely_at IS NULL AND status IN ('created', 'pending')) \
               OR (status IN ('completed', 'needs_review') AND COALESCE(finished_at, updated_at) > $1)) \
             ORDER BY id",
            *SELECT
        )
    });
    on_read!(store, |c| rows(
        &sqlx::query(SQL.as_str())
            .bind(ts(now - FOLLOW_UNDECIDED))
            .fetch_all(c)
            .await?
    ))
}
