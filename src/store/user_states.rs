//! The daemon's view of each user: state, opaque reference id, and a lease so that two workers
//! (or a `once` beside a `run`) never work on the same user at the same time.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row};

use super::row::{AnyRow, Place, rows, value_of};
use super::{Dialect, Result, Store, Stored, Ts, WriteTx, events, ts, ts_opt};
use crate::domain::{InquiryId, ParseError, RawUser, ReferenceId, User, UserId};

/// A user's state (SPEC.md, "User states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserState {
    Pending,
    Invited,
    Started,
    Finished,
    Skipped,
}

impl UserState {
    /// In the order `status` prints them.
    pub const ALL: [UserState; 5] = [
        UserState::Pending,
        UserState::Invited,
        UserState::Started,
        UserState::Finished,
        UserState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Pending => "pending",
            UserState::Invited => "invited",
            UserState::Started => "started",
            UserState::Finished => "finished",
            UserState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Result<UserState, ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseError(format!("{s:?} is not a user state")))
    }

    /// Still wants links: not finished, not skipped.
    pub fn is_unfinished(self) -> bool {
        matches!(
            self,
            UserState::Pending | UserState::Invited | UserState::Started
        )
    }
}

impl fmt::Display for UserState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user taken for work, with what the daemon knows of them.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub user_id: UserId,
    pub reference_id: ReferenceId,
    pub generation: i64,
    pub row_fingerprint: String,
    pub last_mailed_at: Option<DateTime<Utc>>,
}

from_row!(Claimed in "user_states" by user_id {
    user_id,
    reference_id,
    generation,
    row_fingerprint,
    last_mailed_at as Option<Ts>,
});

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
/// users are taken up again now rather than when the lease lapses. Only on SQLite: a local
/// file means every process that can hold a lease runs on this machine, so a pid says whether
/// it lives. A PostgreSQL server may be shared by processes elsewhere, whose pids mean nothing
/// here: their users come back when the lease runs out.
pub async fn release_orphaned(store: &Store, now: DateTime<Utc>) -> Result<u64> {
    if store.dialect() == Dialect::Postgres {
        return Ok(0);
    }
    let owners: Vec<String> = on_read!(store, |c| {
        sqlx::query_scalar(
        "SELECT DISTINCT lease_owner FROM user_states WHERE lease_owner IS NOT NULL AND lease_until > $1",
    )
    .bind(ts(now))
    .fetch_all(c)
    .await?
    });
    let mut freed = 0;
    for owner in owners {
        if owner == lease_owner() {
            continue;
        }
        let pid = owner.split(':').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| p > 0 && !process_alive(p)) {
            freed += on_write!(store, |c| {
                sqlx::query(
                "UPDATE user_states SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1"
            )
            .bind(&owner)
            .execute(c)
            .await?
            .rows_affected()
            });
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
    let found = super::users::unseen(store, after, limit).await?;
    let Some(last) = found.last() else {
        return Ok(Discovered::default());
    };
    let last_id = Some(last.id.clone());
    let today = now.date_naive();
    let verdicts: Vec<(&RawUser, Option<String>)> = found
        .iter()
        .map(|raw| (raw, User::parse(raw, today).err().map(|e| e.0)))
        .collect();
    // Two statements per page, not two per user: each statement is a round trip to sqlx's
    // connection thread, and a backlog of a million would otherwise take minutes to see.
    let mut tx = store.begin_write().await?;
    let inserted: HashSet<String> = on_tx!(tx, |c| {
        let mut insert = QueryBuilder::new(
            "INSERT INTO user_states (user_id, reference_id, state, reason, row_fingerprint, created_at, updated_at) ",
        );
        insert.push_values(&verdicts, |mut row, (raw, reason)| {
            let state = if reason.is_some() {
                UserState::Skipped
            } else {
                UserState::Pending
            };
            row.push_bind(raw.id.clone())
                .push_bind(ReferenceId::generate())
                .push_bind(state)
                .push_bind(reason.clone())
                .push_bind(raw.fingerprint())
                .push_bind(ts(now))
                .push_bind(ts(now));
        });
        insert.push(" ON CONFLICT (user_id) DO NOTHING RETURNING user_id");
        insert
            .build_query_scalar::<String>()
            .fetch_all(&mut *c)
            .await?
            .into_iter()
            .collect()
    });
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
        on_tx!(tx, |c| {
            let mut events = QueryBuilder::new("INSERT INTO events (user_id, kind, detail, at) ");
            events.push_values(&new, |mut row, (raw, reason)| {
                let (kind, detail) = match reason {
                    None => ("user.discovered", "new user, pending"),
                    Some(r) => ("user.skipped", r.as_str()),
                };
                row.push_bind(raw.id.clone())
                    .push_bind(kind)
                    .push_bind(detail.to_owned())
                    .push_bind(ts(now));
            });
            events.build().execute(&mut *c).await?;
        });
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
    let found: Vec<(RawUser, String)> = on_read!(store, |c| {
        sqlx::query(
        "SELECT u.id, u.email, u.name_first, u.name_last, u.birthdate, u.phone_number, u.locale, s.row_fingerprint \
         FROM users u JOIN user_states s ON s.user_id = u.id \
         WHERE s.state = 'skipped' AND s.generation = 0",
    )
    .fetch_all(c)
    .await?
    .iter()
    .map(|r| {
        let raw = RawUser {
            id: r.get("id"),
            email: r.get("email"),
            name_first: r.get("name_first"),
            name_last: r.get("name_last"),
            birthdate: r.get("birthdate"),
            phone_number: r.get("phone_number"),
            locale: r.get("locale"),
        };
        (raw, r.get("row_fingerprint"))
    })
    .collect()
    });
    let mut changed = 0;
    for (raw, old) in found {
        let fp = raw.fingerprint();
        if fp == old {
            continue;
        }
        let mut tx = store.begin_write().await?;
        let (state, reason, kind, detail) = match User::parse(&raw, now.date_naive()) {
            Ok(_) => (
                UserState::Pending,
                None,
                "user.revalidated",
                "the row was edited and is now usable".to_owned(),
            ),
            Err(e) => (UserState::Skipped, Some(e.0.clone()), "user.skipped", e.0),
        };
        on_tx!(tx, |c| {
            sqlx::query(
            "UPDATE user_states SET state = $1, reason = $2, row_fingerprint = $3, updated_at = $4 WHERE user_id = $5",
        )
        .bind(state)
        .bind(&reason)
        .bind(&fp)
        .bind(ts(now))
        .bind(&raw.id)
        .execute(c)
        .await?.rows_affected()
        });
        events::record_raw(&mut tx, now, Some(&raw.id), None, kind, &detail).await?;
        tx.commit().await?;
        changed += 1;
    }
    Ok(changed)
}

fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> Ts {
    ts(now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5)))
}

const CLAIM_PENDING_HEAD: &str = "UPDATE user_states SET lease_until = $1, lease_owner = $5 \
     WHERE user_id IN ( \
         SELECT s.user_id FROM user_states s \
         WHERE s.state = 'pending' AND (s.lease_until IS NULL OR s.lease_until < $4) \
           AND NOT EXISTS (SELECT 1 FROM mails m WHERE m.user_id = s.user_id \
                           AND m.status IN ('queued', 'sending') AND m.next_attempt_at > $2) \
         ORDER BY s.created_at, s.user_id LIMIT $3";
const CLAIM_PENDING_TAIL: &str =
    ") RETURNING user_id, reference_id, generation, row_fingerprint, last_mailed_at";

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
    // PostgreSQL: READ COMMITTED lets two claims pick the same rows in their subquery, so it
    // locks what it picks and skips rows another claim holds (dialects differ).
    static SQLITE: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{CLAIM_PENDING_HEAD}{CLAIM_PENDING_TAIL}"));
    static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("{CLAIM_PENDING_HEAD} FOR UPDATE SKIP LOCKED{CLAIM_PENDING_TAIL}")
    });
    let sql = match store.dialect() {
        Dialect::Sqlite => SQLITE.as_str(),
        Dialect::Postgres => POSTGRES.as_str(),
    };
    let mut tx = store.begin_write().await?;
    let claimed = on_tx!(tx, |c| rows(
        &sqlx::query(sql)
            .bind(lease_end(now, lease))
            .bind(ts(now))
            .bind(i64::from(limit))
            .bind(ts(run_started))
            .bind(lease_owner())
            .fetch_all(c)
            .await?
    ))?;
    tx.commit().await?;
    Ok(claimed)
}

/// Leases one user by id whatever their state (refresh and webhooks use this); `None` when the
/// user is leased by someone else or unknown.
pub async fn claim_one(
    store: &Store,
    user_id: &UserId,
    now: DateTime<Utc>,
    lease: std::time::Duration,
) -> Result<Option<Claimed>> {
    let mut tx = store.begin_write().await?;
    let claimed = on_tx!(tx, |c| sqlx::query(
        "UPDATE user_states SET lease_until = $1, lease_owner = $4 \
         WHERE user_id = $2 AND (lease_until IS NULL OR lease_until < $3) \
         RETURNING user_id, reference_id, generation, row_fingerprint, last_mailed_at",
    )
    .bind(lease_end(now, lease))
    .bind(user_id)
    .bind(ts(now))
    .bind(lease_owner())
    .fetch_optional(c)
    .await?
    .as_ref()
    .map(AnyRow::decode)
    .transpose())?;
    tx.commit().await?;
    Ok(claimed)
}

/// Ends a lease. `defer_until`: the user is not to be taken again before then (a run that
/// started earlier will not take them again at all).
pub async fn release(
    store: &Store,
    user_id: &UserId,
    defer_until: Option<DateTime<Utc>>,
) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE user_states SET lease_until = $1 WHERE user_id = $2"
    )
    .bind(ts_opt(defer_until))
    .bind(user_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Sets a user's state (and reason/outcome) inside the caller's transaction.
pub async fn set_state(
    tx: &mut WriteTx,
    user_id: &UserId,
    state: UserState,
    reason: Option<&str>,
    outcome: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE user_states SET state = $1, reason = $2, outcome = COALESCE($3, outcome), updated_at = $4 \
         WHERE user_id = $5",
    )
    .bind(state)
    .bind(reason)
    .bind(outcome)
    .bind(ts(now))
    .bind(user_id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// Marks a user skipped with the reason, and records why, inside the caller's transaction.
pub async fn skip(
    tx: &mut WriteTx,
    user_id: &UserId,
    why: &str,
    event_kind: &str,
    inquiry_id: Option<&InquiryId>,
    now: DateTime<Utc>,
) -> Result<()> {
    set_state(tx, user_id, UserState::Skipped, Some(why), None, now).await?;
    events::record(tx, now, Some(user_id), inquiry_id, event_kind, why).await
}

/// The user's state, inside the caller's transaction.
pub async fn state_in(tx: &mut WriteTx, user_id: &UserId) -> Result<Option<UserState>> {
    Ok(state_and_outcome_in(tx, user_id).await?.map(|(s, _)| s))
}

/// Stamps the moment the user was last mailed (for `min_resend_interval`) and, unless the user
/// already finished or was skipped, moves them to `state` with no reason left, inside the
/// caller's transaction.
pub async fn mark_mailed(
    tx: &mut WriteTx,
    user_id: &UserId,
    state: UserState,
    now: DateTime<Utc>,
) -> Result<()> {
    let moves_on = state_in(tx, user_id)
        .await?
        .is_some_and(UserState::is_unfinished);
    if moves_on {
        on_tx!(tx, |c| {
            sqlx::query(
            "UPDATE user_states SET state = $1, reason = NULL, updated_at = $2, last_mailed_at = $2 \
             WHERE user_id = $3",
        )
        .bind(state)
        .bind(ts(now))
        .bind(user_id)
        .execute(c)
        .await?.rows_affected()
        });
    } else {
        on_tx!(tx, |c| sqlx::query(
            "UPDATE user_states SET last_mailed_at = $1 WHERE user_id = $2"
        )
        .bind(ts(now))
        .bind(user_id)
        .execute(c)
        .await?
        .rows_affected());
    }
    Ok(())
}

/// Ends the user's lease, inside the caller's transaction (the one that finishes with them).
pub async fn end_lease(tx: &mut WriteTx, user_id: &UserId) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE user_states SET lease_until = NULL WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// Counts a mail that may have reached the user toward `min_resend_interval`: the last-mailed
/// time moves to `at` unless it is later already. Inside the caller's transaction.
pub async fn note_possibly_mailed(
    tx: &mut WriteTx,
    user_id: &UserId,
    at: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE user_states SET last_mailed_at = $1 \
         WHERE user_id = $2 AND (last_mailed_at IS NULL OR last_mailed_at < $1)",
    )
    .bind(ts(at))
    .bind(user_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn reason_of(store: &Store, user_id: &UserId) -> Result<Option<String>> {
    Ok(on_read!(store, |c| sqlx::query_scalar::<_, Option<String>>(
        "SELECT reason FROM user_states WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(c)
    .await?)
    .flatten())
}

pub async fn reference_of(store: &Store, user_id: &UserId) -> Result<Option<ReferenceId>> {
    on_read!(store, |c| {
        let found = sqlx::query("SELECT user_id, reference_id FROM user_states WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(c)
            .await?;
        found
            .as_ref()
            .map(|r| value_of(r, "user_states", "user_id", "reference_id"))
            .transpose()
    })
}

/// Unfinished users (invited or started) with when they were last mailed.
pub async fn last_mailed_of_unfinished(
    store: &Store,
) -> Result<Vec<(UserId, Option<DateTime<Utc>>)>> {
    on_read!(store, |c| {
        let found = sqlx::query(
            "SELECT user_id, last_mailed_at FROM user_states WHERE state IN ('invited', 'started')",
        )
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
                Ok((
                    at.get("user_id")?,
                    at.get::<Option<Ts>>("last_mailed_at")?.value(),
                ))
            })
            .collect()
    })
}

/// Only the reason (e.g. which limit holds the user back), leaving the state alone.
pub async fn set_reason(store: &Store, user_id: &UserId, reason: Option<&str>) -> Result<()> {
    let mut tx = store.begin_write().await?;
    set_reason_in(&mut tx, user_id, reason).await?;
    tx.commit().await
}

pub async fn set_reason_in(tx: &mut WriteTx, user_id: &UserId, reason: Option<&str>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE user_states SET reason = $1 WHERE user_id = $2"
    )
    .bind(reason)
    .bind(user_id)
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn get_state(store: &Store, user_id: &UserId) -> Result<Option<UserState>> {
    on_read!(store, |c| {
        let found = sqlx::query("SELECT user_id, state FROM user_states WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(c)
            .await?;
        found
            .as_ref()
            .map(|r| value_of(r, "user_states", "user_id", "state"))
            .transpose()
    })
}

pub async fn by_reference(store: &Store, reference_id: &ReferenceId) -> Result<Option<UserId>> {
    on_read!(store, |c| {
        let found = sqlx::query("SELECT user_id FROM user_states WHERE reference_id = $1")
            .bind(reference_id)
            .fetch_optional(c)
            .await?;
        found
            .as_ref()
            .map(|r| value_of(r, "user_states", "user_id", "user_id"))
            .transpose()
    })
}

/// A finished user's outcome moves on (`completed` → `approved`), inside the caller's
/// transaction.
pub async fn set_outcome(
    tx: &mut WriteTx,
    user_id: &UserId,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE user_states SET outcome = $1, updated_at = $2 WHERE user_id = $3 AND state = 'finished'",
    )
    .bind(outcome)
    .bind(ts(now))
    .bind(user_id)
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}

/// The user's state and outcome, inside the caller's transaction.
pub async fn state_and_outcome_in(
    tx: &mut WriteTx,
    user_id: &UserId,
) -> Result<Option<(UserState, Option<String>)>> {
    // PostgreSQL: the caller decides its writes on what it reads here, so the row stays locked
    // until its commit, as SQLite's BEGIN IMMEDIATE kept every row (dialects differ).
    let sql = match tx.dialect() {
        Dialect::Sqlite => "SELECT user_id, state, outcome FROM user_states WHERE user_id = $1",
        Dialect::Postgres => {
            "SELECT user_id, state, outcome FROM user_states WHERE user_id = $1 FOR UPDATE"
        }
    };
    on_tx!(tx, |c| {
        let found = sqlx::query(sql).bind(user_id).fetch_optional(c).await?;
        found
            .as_ref()
            .map(|r| {
                let at = Place {
                    row: r,
                    table: "user_states",
                    key: "user_id",
                };
                Ok((at.get("state")?, at.get("outcome")?))
            })
            .transpose()
    })
}

/// Whether the user still wants links: pending, invited or started (not finished, not skipped).
pub async fn is_unfinished(store: &Store, user_id: &UserId) -> Result<bool> {
    Ok(get_state(store, user_id)
        .await?
        .is_some_and(UserState::is_unfinished))
}
