//! Applying an inquiry status learned from Persona (a list page, a lookup, a webhook) to the
//! store: the inquiry row, the user's state, and no more mail once the user has finished.

use chrono::{DateTime, Utc};

use crate::domain::InquiryStatus;
use crate::store::inquiries::{self, InquiryRow};
use crate::store::user_states::UserState;
use crate::store::{Result, Store, events, mails, user_states};

/// What applying a status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Updated,
    /// One of the user's inquiries finished: the user is done and gets no more mail.
    Finished,
}

/// What Persona said about an inquiry, and when it said it: the moment of a fresh read, or a
/// webhook event's `created-at`.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub status: &'a InquiryStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub observed_at: DateTime<Utc>,
    pub source: &'a str,
}

/// How far along its lifecycle a status is. A status is never replaced by one further back:
/// `created` comes first; `pending` and `expired` alternate (expiry, resume); a finished status
/// may still be decided (`completed` → `needs_review` → `approved`/`declined`), never undecided.
fn stage(status: &str) -> u8 {
    match status {
        "creating" | "created" => 0,
        "pending" | "expired" => 1,
        "needs_review" => 3,
        "approved" | "declined" => 4,
        _ => 2,
    }
}

/// Records the observation for the inquiry of `row`. A finished status finishes the user,
/// whichever of their inquiries it is about (the current one or one being replaced); a live
/// status moves the user only for their current inquiry. News older than what the row holds is
/// not applied (webhooks come in any order).
pub async fn apply(
    store: &Store,
    row: &InquiryRow,
    seen: &Observation<'_>,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let status = seen.status;
    if row.status == *status && row.expires_at == seen.expires_at {
        return Ok(Applied::Unchanged);
    }
    if row.status_observed_at.is_some_and(|t| seen.observed_at < t)
        || stage(status.as_str()) < stage(row.status.as_str())
    {
        return Ok(Applied::Unchanged);
    }
    let mut tx = store.begin_write().await?;
    inquiries::update_status_observed(
        &mut tx,
        row.id,
        status,
        seen.expires_at,
        seen.observed_at,
        now,
    )
    .await?;
    let mut applied = Applied::Updated;
    let inquiry = row.inquiry_id.as_ref();
    let user = user_states::state_and_outcome_in(&mut tx, &row.user_id).await?;
    match user {
        None => {}
        Some((UserState::Finished, outcome)) => {
            // A decision after completion (`completed` → `approved`) reaches the outcome.
            let later = outcome
                .as_deref()
                .is_none_or(|o| stage(status.as_str()) > stage(o));
            if status.is_finished() && later {
                user_states::set_outcome(&mut tx, &row.user_id, status.as_str(), now).await?;
                let detail = format!(
                    "outcome {} → {status} per {}",
                    outcome.as_deref().unwrap_or("-"),
                    seen.source
                );
                events::record(
                    &mut tx,
                    now,
                    Some(&row.user_id),
                    inquiry,
                    "user.outcome",
                    &detail,
                )
                .await?;
            }
        }
        Some((UserState::Skipped, _)) => {}
        Some((current, _)) if status.is_finished() => {
            user_states::set_state(
                &mut tx,
                &row.user_id,
                UserState::Finished,
                None,
                Some(status.as_str()),
                now,
            )
            .await?;
            let dropped = mails::cancel_unsent(&mut tx, &row.user_id, now).await?;
            let replaced = if row.superseded_at.is_some() {
                " (an inquiry being replaced)"
            } else {
                ""
            };
            let detail = format!(
                "inquiry {status}{replaced} (was {current}) per {}{}",
                seen.source,
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
        Some((current, _)) if row.superseded_at.is_none() && row.status != *status => {
            // `pending` means the user started; anything else live keeps the state they had.
            let next = if *status == InquiryStatus::Pending && current == UserState::Invited {
                UserState::Started
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
                &format!("{} → {} per {}", row.status, status, seen.source),
            )
            .await?;
        }
        Some(_) => {}
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::stage;

    #[test]
    fn stages_never_go_back_from_a_decision() {
        assert!(stage("created") < stage("pending"));
        assert_eq!(stage("pending"), stage("expired"));
        assert!(stage("expired") < stage("completed"));
        assert!(stage("completed") < stage("needs_review"));
        assert!(stage("needs_review") < stage("approved"));
        assert_eq!(stage("approved"), stage("declined"));
        assert_eq!(stage("some-new-status"), stage("completed"));
    }
}
