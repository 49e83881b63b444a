//! Webhook event ids already applied: Persona may deliver one event several times.

use chrono::{DateTime, Utc};

use super::{Result, Store};
use crate::clock::format_ts;

pub async fn seen(store: &Store, event_id: &str) -> Result<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT event_id FROM webhook_events WHERE event_id = ?")
            .bind(event_id)
            .fetch_optional(store.reader())
            .await?;
    Ok(found.is_some())
}

pub async fn record(
    store: &Store,
    event_id: &str,
    name: &str,
    inquiry_id: Option<&str>,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_events (event_id, name, inquiry_id, received_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(name)
    .bind(inquiry_id)
    .bind(format_ts(at))
    .execute(store.writer())
    .await?;
    Ok(())
}
