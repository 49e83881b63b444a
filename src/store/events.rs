//! The events log: every decision the daemon takes about a user, with its reason, in order.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::row::rows;
use super::{Result, Store, Ts, WriteTx, ts};
use crate::domain::{InquiryId, UserId};

/// One line of a user's history. `user_id` stays text: users whose row the daemon refused
/// (an id that does not parse) have events too.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub user_id: Option<String>,
    pub inquiry_id: Option<String>,
    pub kind: String,
    pub detail: String,
    #[serde(serialize_with = "super::serde_ts")]
    pub at: DateTime<Utc>,
}

from_row!(Event in "events" by id {
    id,
    user_id,
    inquiry_id,
    kind,
    detail,
    at as Ts,
});

/// Records an event inside the caller's transaction, so the decision and its record commit together.
pub async fn record(
    tx: &mut WriteTx,
    at: DateTime<Utc>,
    user_id: Option<&UserId>,
    inquiry_id: Option<&InquiryId>,
    kind: &str,
    detail: &str,
) -> Result<()> {
    record_raw(
        tx,
        at,
        user_id.map(UserId::as_str),
        inquiry_id.map(InquiryId::as_str),
        kind,
        detail,
    )
    .await
}

/// [`record`] for a user id as the application wrote it (one that may not parse).
pub(super) async fn record_raw(
    tx: &mut WriteTx,
    at: DateTime<Utc>,
    user_id: Option<&str>,
    inquiry_id: Option<&str>,
    kind: &str,
    detail: &str,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO events (user_id, inquiry_id, kind, detail, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user_id)
    .bind(inquiry_id)
    .bind(kind)
    .bind(detail)
    .bind(ts(at))
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn for_user(store: &Store, user_id: &str) -> Result<Vec<Event>> {
    on_read!(store, |c| {
        rows(
        &sqlx::query(
            "SELECT id, user_id, inquiry_id, kind, detail, at FROM events WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(c)
        .await?
    )
    })
}

/// Every event after `after` (an event id), in order: what the demo tells day by day.
pub async fn since(store: &Store, after: i64) -> Result<Vec<Event>> {
    on_read!(store, |c| {
        rows(
        &sqlx::query(
            "SELECT id, user_id, inquiry_id, kind, detail, at FROM events WHERE id > $1 ORDER BY id",
        )
        .bind(after)
        .fetch_all(c)
        .await?
    )
    })
}
