//! The daemon's view of each user: state, opaque reference id, and a lease so that two workers
//! (or a `once` beside a `run`) never work on the same user at the same time.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Result, Store, events};
use crate::clock::format_ts;
use crate::domain::{RawUser, ReferenceId, User};

/// A user taken for work, with what the daemon knows of them.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub user_id: String,
    pub reference_id: ReferenceId,
    pub generation: i64,
    pub row_fingerprint: String,
    pub last_mailed_at: Option<String>,
}

fn claimed_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Claimed> {
    let reference: String = r.get("reference_id");
    Ok(Claimed {
        user_id: r.get("user_id"),
        reference_id: ReferenceId::parse(&reference)
            .map_err(|e| super::StoreError::Conflict(format!("user_states: {e}")))?,
        generation: r.get("generation"),
        row_fingerprint: r.get("row_fingerprint"),
        last_mailed_at: r.get("last_mailed_at"),
    })
}

/// This process's name on the leases it takes: its pid, and a nonce against pid reuse.
pub fn lease_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| format!("{}:{}", std::process::id(), crate::domain::random_alnum(8)))
}

fn process_alive(pid: i32) -> bool {
    // Signal 0 checks existence only. EPERM means it exists but is someone else's.
    // SAFETY: kill with signal 0 sends nothing; it only reports whether the pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Frees the leases of processes that no longer exist (a daemon killed mid-run), so their
/// users are taken up again now rather than when the lease lapses. The database is a local
/// SQLite file, so every process that can hold a lease runs on this machine.
pub async fn release_orphaned(store: &Store, now: DateTime<Utc>) -> Result<u64> {
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT lease_owner FROM user_states WHERE lease_owner IS NOT NULL AND lease_until > ?",
    )
    .bind(format_ts(now))
    .fetch_all(store.reader())
    .await?;
    let mut freed = 0;
    for owner in owners {
        if owner == lease_owner() {
            continue;
        }
        let pid = owner.split(':').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| p > 0 && !process_alive(p)) {
            freed += sqlx::query("UPDATE user_states SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = ?")
                .bind(&owner)
                .execute(store.writer())
                .await?
                .rows_affected();
        }
    }
    if freed > 0 {
        tracing::info!(
            users = freed,
            "took back users leased by a process that is gone"
        );
    }
    Ok(freed)
}

/// Gives every user row the daemon has not seen yet a state: `pending` when the row is usable,
/// `skipped` with the reasons when not; one page of at most `limit`, in id order after `after`.
pub async fn discover(
    store: &Store,
    now: DateTime<Utc>,
    after: Option<&str>,
    limit: u32,
) -> Result<Discovered> {
    let rows = super::users::unseen(store, after, limit).await?;
    let Some(last) = rows.last() else {
        return Ok(Discovered::default());
    };
    let last_id = Some(last.id.clone());
    let today = now.date_naive();
    let ts = format_ts(now);
    let verdicts: Vec<(&RawUser, Option<String>)> = rows
        .iter()
        .map(|raw| (raw, User::parse(raw, today).err().map(|e| e.0)))
        .collect();
    // Two statements per page, not two per user: each statement is a round trip to sqlx's
    // connection thread, and a backlog of a million would otherwise take minutes to see.
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO user_states (user_id, reference_id, state, reason, row_fingerprint, created_at, updated_at) ",
    );
    insert.push_values(&verdicts, |mut row, (raw, reason)| {
        row.push_bind(raw.id.clone())
            .push_bind(ReferenceId::generate().as_str().to_owned())
            .push_bind(if reason.is_some() {
                "skipped"
            } else {
                "pending"
            })
            .push_bind(reason.clone())
            .push_bind(raw.fingerprint())
            .push_bind(ts.clone())
            .push_bind(ts.clone());
    });
    insert.push(" ON CONFLICT (user_id) DO NOTHING RETURNING user_id");
    let mut tx = store.begin_write().await?;
    let inserted: HashSet<String> = insert
        .build_query_scalar::<String>()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let new: Vec<&(&RawUser, Option<String>)> = verdicts
        .iter()
        .filter(|(raw, _)| inserted.contains(&raw.id))
        .collect();
    let (mut pending, mut skipped) = (0, 0);
    for (raw, reason) in &new {
        match reason {
            None => pending += 1,
            Some(r) => {
                skipped += 1;
                tracing::warn!(user = %raw.id, reason = %r, "user row cannot be used; skipped");
            }
        }
    }
    if !new.is_empty() {
        let mut events =
            QueryBuilder::<Sqlite>::new("INSERT INTO events (user_id, kind, detail, at) ");
        events.push_values(&new, |mut row, (raw, reason)| {
            let (kind, detail) = match reason {
                None => ("user.discovered", "new user, pending"),
                Some(r) => ("user.skipped", r.as_str()),
            };
            row.push_bind(raw.id.clone())
                .push_bind(kind)
                .push_bind(detail.to_owned())
                .push_bind(ts.clone());
        });
        events.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Discovered {
        pending,
        skipped,
        last_id,
    })
}

/// One page of [`discover`]: how many new users, and the id to continue after.
#[derive(Debug, Default)]
pub struct Discovered {
    pub pending: usize,
    pub skipped: usize,
    /// `None` when there was nothing left to discover.
    pub last_id: Option<String>,
}

/// Skipped users whose row the application has since edited get validated again.
pub async fn revalidate_edited(store: &Store, now: DateTime<Utc>) -> Result<usize> {
    let rows = sqlx::query(
        "SELECT u.id, u.email, u.name_first, u.name_last, u.birthdate, u.phone_number, u.locale, s.row_fingerprint \
         FROM users u JOIN user_states s ON s.user_id = u.id \
         WHERE s.state = 'skipped' AND s.generation = 0",
    )
    .fetch_all(store.reader())
    .await?;
    let mut changed = 0;
    for r in rows {
        let raw = RawUser {
            id: r.get("id"),
            email: r.get("email"),
            name_first: r.get("name_first"),
            name_last: r.get("name_last"),
            birthdate: r.get("birthdate"),
            phone_number: r.get("phone_number"),
            locale: r.get("locale"),
        };
        let old: String = r.get("row_fingerprint");
        let fp = raw.fingerprint();
        if fp == old {
            continue;
        }
        let mut tx = store.begin_write().await?;
        let (state, reason, kind, detail) = match User::parse(&raw, now.date_naive()) {
            Ok(_) => (
                "pending",
                None,
                "user.revalidated",
                "the row was edited and is now usable".to_owned(),
            ),
            Err(e) => ("skipped", Some(e.0.clone()), "user.skipped", e.0),
        };
        sqlx::query(
            "UPDATE user_states SET state = ?, reason = ?, row_fingerprint = ?, updated_at = ? WHERE user_id = ?",
        )
        .bind(state)
        .bind(&reason)
        .bind(&fp)
        .bind(format_ts(now))
        .bind(&raw.id)
        .execute(&mut *tx)
        .await?;
        events::record(&mut tx, now, Some(&raw.id), None, kind, &detail).await?;
        tx.commit().await?;
        changed += 1;
    }
    Ok(changed)
}

/// Leases up to `limit` pending users that have work now: no inquiry or mail yet, an unfinished
/// create, or a mail that is due. Users whose mail waits for a later retry are left alone, and so
/// are users deferred during this run (their lease was stamped after `run_started`).
pub async fn claim_pending(
    store: &Store,
    now: DateTime<Utc>,
    run_started: DateTime<Utc>,
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<Claimed>> {
    let ts = format_ts(now);
    let until =
        format_ts(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5)));
    let mut tx = store.begin_write().await?;
    let rows = sqlx::query(
        "UPDATE user_states SET lease_until = ?1, lease_owner = ?5 \
         WHERE user_id IN ( \
             SELECT s.user_id FROM user_states s \
             WHERE s.state = 'pending' AND (s.lease_until IS NULL OR s.lease_until < ?4) \
               AND NOT EXISTS (SELECT 1 FROM mails m WHERE m.user_id = s.user_id \
                               AND m.status IN ('queued', 'sending') AND m.next_attempt_at > ?2) \
             ORDER BY s.created_at, s.user_id LIMIT ?3) \
         RETURNING user_id, reference_id, generation, row_fingerprint, last_mailed_at",
    )
    .bind(&until)
    .bind(&ts)
    .bind(i64::from(limit))
    .bind(format_ts(run_started))
    .bind(lease_owner())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter().map(claimed_from_row).collect()
}

/// Leases one user by id whatever their state (refresh and webhooks use this); `None` when the
/// user is leased by someone else or unknown.
pub async fn claim_one(
    store: &Store,
    user_id: &str,
    now: DateTime<Utc>,
    lease: std::time::Duration,
) -> Result<Option<Claimed>> {
    let until =
        format_ts(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5)));
    let mut tx = store.begin_write().await?;
    let row = sqlx::query(
        "UPDATE user_states SET lease_until = ?1, lease_owner = ?4 \
         WHERE user_id = ?2 AND (lease_until IS NULL OR lease_until < ?3) \
         RETURNING user_id, reference_id, generation, row_fingerprint, last_mailed_at",
    )
    .bind(&until)
    .bind(user_id)
    .bind(format_ts(now))
    .bind(lease_owner())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.as_ref().map(claimed_from_row).transpose()
}

/// Ends a lease. `defer_until`: the user is not to be taken again before then (a run that
/// started earlier will not take them again at all).
pub async fn release(
    store: &Store,
    user_id: &str,
    defer_until: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query("UPDATE user_states SET lease_until = ? WHERE user_id = ?")
        .bind(defer_until.map(format_ts))
        .bind(user_id)
        .execute(store.writer())
        .await?;
    Ok(())
}

/// Sets a user's state (and reason/outcome) inside the caller's transaction.
pub async fn set_state(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    state: &str,
    reason: Option<&str>,
    outcome: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE user_states SET state = ?, reason = ?, outcome = COALESCE(?, outcome), updated_at = ? \
         WHERE user_id = ?",
    )
    .bind(state)
    .bind(reason)
    .bind(outcome)
    .bind(format_ts(now))
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a user skipped with the reason, and records why, inside the caller's transaction.
pub async fn skip(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    why: &str,
    event_kind: &str,
    inquiry_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    set_state(conn, user_id, "skipped", Some(why), None, now).await?;
    events::record(conn, now, Some(user_id), inquiry_id, event_kind, why).await
}

/// The user's state, inside the caller's transaction.
pub async fn state_in(conn: &mut sqlx::SqliteConnection, user_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT state FROM user_states WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Stamps the moment the user was last mailed (for `min_resend_interval`) and, unless the user
/// already finished or was skipped, moves them to `state` with no reason left, inside the
/// caller's transaction. SQLite evaluates every SET expression against the row as it was, so
/// `state` in them is the old one.
pub async fn mark_mailed(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    state: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE user_states SET \
           state = CASE WHEN state IN ('pending', 'invited', 'started') THEN ?1 ELSE state END, \
           reason = CASE WHEN state IN ('pending', 'invited', 'started') THEN NULL ELSE reason END, \
           updated_at = CASE WHEN state IN ('pending', 'invited', 'started') THEN ?2 ELSE updated_at END, \
           last_mailed_at = ?2 \
         WHERE user_id = ?3",
    )
    .bind(state)
    .bind(format_ts(now))
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the user's lease, inside the caller's transaction (the one that finishes with them).
pub async fn end_lease(conn: &mut sqlx::SqliteConnection, user_id: &str) -> Result<()> {
    sqlx::query("UPDATE user_states SET lease_until = NULL WHERE user_id = ?")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a mail that may have reached the user toward `min_resend_interval`: the last-mailed
/// time moves to `at` unless it is later already. Inside the caller's transaction.
pub async fn note_possibly_mailed(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    at: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE user_states SET last_mailed_at = MAX(COALESCE(last_mailed_at, ''), ?1) WHERE user_id = ?2",
    )
    .bind(at)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn reason_of(store: &Store, user_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT reason FROM user_states WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(store.reader())
            .await?
            .flatten(),
    )
}

pub async fn reference_of(store: &Store, user_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT reference_id FROM user_states WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(store.reader())
            .await?,
    )
}

/// Unfinished users (invited or started) with when they were last mailed.
pub async fn last_mailed_of_unfinished(store: &Store) -> Result<Vec<(String, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT user_id, last_mailed_at FROM user_states WHERE state IN ('invited', 'started')",
    )
    .fetch_all(store.reader())
    .await?)
}

/// Only the reason (e.g. which limit holds the user back), leaving the state alone.
pub async fn set_reason(store: &Store, user_id: &str, reason: Option<&str>) -> Result<()> {
    let mut conn = store.writer().acquire().await?;
    set_reason_in(&mut conn, user_id, reason).await
}

pub async fn set_reason_in(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE user_states SET reason = ? WHERE user_id = ?")
        .bind(reason)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get_state(store: &Store, user_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT state FROM user_states WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(store.reader())
            .await?,
    )
}

pub async fn by_reference(store: &Store, reference_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM user_states WHERE reference_id = ?")
            .bind(reference_id)
            .fetch_optional(store.reader())
            .await?,
    )
}

/// A finished user's outcome moves on (`completed` → `approved`), inside the caller's
/// transaction.
pub async fn set_outcome(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE user_states SET outcome = ?, updated_at = ? WHERE user_id = ? AND state = 'finished'",
    )
    .bind(outcome)
    .bind(format_ts(now))
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The user's state and outcome, inside the caller's transaction.
pub async fn state_and_outcome_in(
    conn: &mut sqlx::SqliteConnection,
    user_id: &str,
) -> Result<Option<(String, Option<String>)>> {
    Ok(
        sqlx::query_as("SELECT state, outcome FROM user_states WHERE user_id = ?")
            .bind(user_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Whether the user still wants links: pending, invited or started (not finished, not skipped).
pub async fn is_unfinished(store: &Store, user_id: &str) -> Result<bool> {
    Ok(get_state(store, user_id)
        .await?
        .is_some_and(|s| matches!(s.as_str(), "pending" | "invited" | "started")))
}
