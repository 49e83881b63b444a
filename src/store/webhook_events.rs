//! Webhook event ids already applied: Persona may deliver one event several times.

use chrono::{DateTime, Utc};

use super::{Result, Store, ts};

pub async fn seen(store: &Store, event_id: &str) -> Result<bool> {
    let found: Option<String> = on_read!(store, |c| sqlx::query_scalar(
        "SELECT event_id FROM webhook_events WHERE event_id = $1"
    )
    .bind(event_id)
    .fetch_optional(c)
    .await?);
    Ok(found.is_some())
}

pub async fn record(
    store: &Store,
    event_id: &str,
    name: &str,
    inquiry_id: Option<&str>,
    at: DateTime<Utc>,
) -> Result<()> {
    on_write!(store, |c| {
        sqlx::query(
        "INSERT INTO webhook_events (event_id, name, inquiry_id, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(name)
    .bind(inquiry_id)
    .bind(ts(at))
    .execute(c)
    .await?.rows_affected()
    });
    Ok(())
}
