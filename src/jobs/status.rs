//! Applying an inquiry status learned from Persona (a list page, a lookup, a webhook) to the
//! store: the inquiry row, the user's state, and no more mail once the user has finished.

use chrono::{DateTime, Utc};

use crate::domain::InquiryStatus;
use crate::store::inquiries::{self, InquiryRow};
use crate::store::{Result, Store, StoreError, events, mails, user_states};

/// What applying a status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Updated,
    /// The user's current inquiry finished: the user is done and gets no more mail.
    Finished,
}

/// Records `status` (and `expires_at`) for the inquiry of `row`. Only the user's current
/// inquiry moves the user's state; a replaced one only updates its own row.
pub async fn apply(
    store: &Store,
    row: &InquiryRow,
    status: &InquiryStatus,
    expires_at: Option<DateTime<Utc>>,
    source: &str,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let same_expiry = row.expires_at() == expires_at;
    if row.status == status.as_str() && same_expiry {
        return Ok(Applied::Unchanged);
    }
    // A finished inquiry never becomes live again: a live status arriving now is older news
    // (webhooks come in any order).
    let row_finished = !matches!(
        row.status.as_str(),
        "created" | "pending" | "expired" | inquiries::CREATING
    );
    if row_finished && !status.is_finished() {
        return Ok(Applied::Unchanged);
    }
    let mut tx = store.begin_write().await?;
    inquiries::update_status(&mut tx, row.id, status.as_str(), expires_at, now).await?;
    let mut applied = Applied::Updated;
    if row.superseded_at.is_none() && row.status != status.as_str() {
        let state = user_states::state_in(&mut tx, &row.user_id).await?;
        let inquiry = row.inquiry_id.as_deref();
        match state.as_deref() {
            Some("finished" | "skipped") | None => {}
            Some(current) if status.is_finished() => {
                user_states::set_state(
                    &mut tx,
                    &row.user_id,
                    "finished",
                    None,
                    Some(status.as_str()),
                    now,
                )
                .await?;
                let dropped = mails::cancel_unsent(&mut tx, &row.user_id, now).await?;
                let detail = format!(
                    "inquiry {} (was {current}) per {source}{}",
                    status,
                    if dropped > 0 {
                        format!("; {dropped} unsent mail dropped")
                    } else {
                        String::new()
                    }
                );
                events::record(
                    &mut tx,
                    now,
                    Some(&row.user_id),
                    inquiry,
                    "user.finished",
                    &detail,
                )
                .await?;
                applied = Applied::Finished;
            }
            Some(current) => {
                // `pending` means the user started; anything else live keeps the state they had.
                let next = if *status == InquiryStatus::Pending && current == "invited" {
                    "started"
                } else {
                    current
                };
                if next != current {
                    user_states::set_state(&mut tx, &row.user_id, next, None, None, now).await?;
                }
                events::record(
                    &mut tx,
                    now,
                    Some(&row.user_id),
                    inquiry,
                    "inquiry.status",
                    &format!("{} → {} per {source}", row.status, status),
                )
                .await?;
            }
        }
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(applied)
}
