//! The events log: every decision the daemon takes about a user, with its reason, in order.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Result, Store};
use crate::clock::format_ts;

/// One line of a user's history.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub user_id: Option<String>,
    pub inquiry_id: Option<String>,
    pub kind: String,
    pub detail: String,
    pub at: String,
}

from_row!(Event {
    id,
    user_id,
    inquiry_id,
    kind,
    detail,
    at
});

/// Records an event inside the caller's transaction, so the decision and its record commit together.
pub async fn record(
    conn: &mut sqlx::SqliteConnection,
    at: DateTime<Utc>,
    user_id: Option<&str>,
    inquiry_id: Option<&str>,
    kind: &str,
    detail: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (user_id, inquiry_id, kind, detail, at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(inquiry_id)
    .bind(kind)
    .bind(detail)
    .bind(format_ts(at))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn for_user(store: &Store, user_id: &str) -> Result<Vec<Event>> {
    Ok(sqlx::query_as::<_, Event>(
        "SELECT id, user_id, inquiry_id, kind, detail, at FROM events WHERE user_id = ? ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(store.reader())
    .await?)
}
