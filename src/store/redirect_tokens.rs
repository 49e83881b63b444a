//! The tokens of mailed redirect links, kept only as SHA-256 digests, each bound to one user.

use chrono::{DateTime, Utc};

use super::row::value_of;
use super::{Result, Store, ts};
use crate::domain::{RedirectToken, UserId};

/// Records a new token for `user_id` (one per mail, so earlier mails keep working).
pub async fn insert(
    store: &Store,
    user_id: &UserId,
    token: &RedirectToken,
    now: DateTime<Utc>,
) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "INSERT INTO redirect_tokens (token_hash, user_id, created_at) VALUES ($1, $2, $3)"
    )
    .bind(token.digest().as_slice())
    .bind(user_id)
    .bind(ts(now))
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}

/// The user a token belongs to. The lookup is by digest on the primary key, so the time it
/// takes says nothing about how close a guess came.
pub async fn user_of(store: &Store, token: &RedirectToken) -> Result<Option<UserId>> {
    on_read!(store, |c| {
        let found = sqlx::query("SELECT user_id FROM redirect_tokens WHERE token_hash = $1")
            .bind(token.digest().as_slice())
            .fetch_optional(c)
            .await?;
        found
            .as_ref()
            .map(|r| value_of(r, "redirect_tokens", "user_id", "user_id"))
            .transpose()
    })
}

/// Stamps the token's last click.
pub async fn mark_used(store: &Store, token: &RedirectToken, now: DateTime<Utc>) -> Result<()> {
    on_write!(store, |c| sqlx::query(
        "UPDATE redirect_tokens SET last_used_at = $1 WHERE token_hash = $2"
    )
    .bind(ts(now))
    .bind(token.digest().as_slice())
    .execute(c)
    .await?
    .rows_affected());
    Ok(())
}
