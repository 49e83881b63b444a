//! The tokens of mailed redirect links, kept only as SHA-256 digests, each bound to one user.

use chrono::{DateTime, Utc};

use super::{Result, Store};
use crate::clock::format_ts;
use crate::domain::RedirectToken;

/// Records a new token for `user_id` (one per mail, so earlier mails keep working).
pub async fn insert(
    store: &Store,
    user_id: &str,
    token: &RedirectToken,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO redirect_tokens (token_hash, user_id, created_at) VALUES (?, ?, ?)")
        .bind(token.digest().as_slice())
        .bind(user_id)
        .bind(format_ts(now))
        .execute(store.writer())
        .await?;
    Ok(())
}

/// The user a token belongs to. The lookup is by digest on the primary key, so the time it
/// takes says nothing about how close a guess came.
pub async fn user_of(store: &Store, token: &RedirectToken) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM redirect_tokens WHERE token_hash = ?")
            .bind(token.digest().as_slice())
            .fetch_optional(store.reader())
            .await?,
    )
}

/// Stamps the token's last click.
pub async fn mark_used(store: &Store, token: &RedirectToken, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE redirect_tokens SET last_used_at = ? WHERE token_hash = ?")
        .bind(format_ts(now))
        .bind(token.digest().as_slice())
        .execute(store.writer())
        .await?;
    Ok(())
}
