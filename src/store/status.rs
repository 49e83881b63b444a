//! Read-only views for `status`: counts by state, and one user's whole history.

use serde::Serialize;
use sqlx::Row;

use super::events::{self, Event};
use super::row::{row, rows};
use super::{Result, Store, TsText};

/// The user states of SPEC.md, in the order `status` prints them.
pub const STATES: [&str; 5] = ["pending", "invited", "started", "finished", "skipped"];

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StateCounts {
    pub pending: i64,
    pub invited: i64,
    pub started: i64,
    pub finished: i64,
    pub skipped: i64,
}

impl StateCounts {
    pub fn get(&self, state: &str) -> i64 {
        match state {
            "pending" => self.pending,
            "invited" => self.invited,
            "started" => self.started,
            "finished" => self.finished,
            "skipped" => self.skipped,
            _ => 0,
        }
    }

    pub fn total(&self) -> i64 {
        STATES.iter().map(|s| self.get(s)).sum()
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MailCounts {
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
}

/// Users by state; a row the daemon has not looked at yet counts as pending.
pub async fn state_counts(store: &Store) -> Result<StateCounts> {
    on_read!(store, |c| {
        let found = sqlx::query(
            "SELECT COALESCE(s.state, 'pending') AS state, COUNT(*) AS n \
         FROM users u LEFT JOIN user_states s ON s.user_id = u.id GROUP BY 1",
        )
        .fetch_all(c)
        .await?;
        let mut c = StateCounts::default();
        for r in found {
            let n: i64 = r.get("n");
            match r.get::<String, _>("state").as_str() {
                "pending" => c.pending = n,
                "invited" => c.invited = n,
                "started" => c.started = n,
                "finished" => c.finished = n,
                "skipped" => c.skipped = n,
                _ => {}
            }
        }
        Ok(c)
    })
}

pub async fn mail_counts(store: &Store) -> Result<MailCounts> {
    on_read!(store, |c| {
        let found = sqlx::query("SELECT status, COUNT(*) AS n FROM mails GROUP BY status")
            .fetch_all(c)
            .await?;
        let mut c = MailCounts::default();
        for r in found {
            let n: i64 = r.get("n");
            match r.get::<String, _>("status").as_str() {
                "queued" | "sending" => c.queued += n,
                "sent" => c.sent = n,
                "failed" => c.failed = n,
                _ => {}
            }
        }
        Ok(c)
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub id: String,
    pub email: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_mailed_at: Option<String>,
}

from_row!(UserSummary in "users" by id {
    id,
    email,
    state,
    reason,
    outcome,
    reference_id,
    last_mailed_at as Option<TsText>,
});

#[derive(Debug, Clone, Serialize)]
pub struct InquirySummary {
    pub generation: i64,
    pub inquiry_id: Option<String>,
    pub status: String,
    pub template_version_id: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub resume_count: i64,
    pub superseded_reason: Option<String>,
}

from_row!(InquirySummary in "inquiries" by generation {
    generation,
    inquiry_id,
    status,
    template_version_id,
    created_at as TsText,
    expires_at as Option<TsText>,
    resume_count,
    superseded_reason
});

#[derive(Debug, Clone, Serialize)]
pub struct MailSummary {
    pub kind: String,
    pub status: String,
    pub message_id: String,
    pub attempts: i64,
    pub sent_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
}

from_row!(MailSummary in "mails" by message_id {
    kind,
    status,
    message_id,
    attempts,
    sent_at as Option<TsText>,
    next_attempt_at as Option<TsText>,
    last_error,
    created_at as TsText
});

#[derive(Debug, Clone, Serialize)]
pub struct UserHistory {
    pub user: UserSummary,
    pub inquiries: Vec<InquirySummary>,
    pub mails: Vec<MailSummary>,
    pub events: Vec<Event>,
}

/// Everything about one user, with no secret in it (none is stored). `None`: no such user.
pub async fn user_history(store: &Store, user_id: &str) -> Result<Option<UserHistory>> {
    let found = on_read!(store, |c| row(sqlx::query(
        "SELECT u.id, u.email, COALESCE(s.state, 'pending') AS state, s.reason, s.outcome, \
                s.reference_id, s.last_mailed_at \
         FROM users u LEFT JOIN user_states s ON s.user_id = u.id WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(c)
    .await?))?;
    let Some(user) = found else {
        return Ok(None);
    };
    let inquiries = on_read!(store, |c| {
        rows(
        &sqlx::query(
            "SELECT generation, inquiry_id, status, template_version_id, created_at, expires_at, \
                resume_count, superseded_reason \
             FROM inquiries WHERE user_id = $1 ORDER BY generation",
        )
        .bind(user_id)
        .fetch_all(c)
        .await?
    )
    })?;
    let mails = on_read!(store, |c| {
        rows(&sqlx::query(
        "SELECT kind, status, message_id, attempts, sent_at, \
                CASE WHEN status IN ('queued', 'sending') THEN next_attempt_at END AS next_attempt_at, \
                last_error, created_at \
         FROM mails WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(c)
    .await?)
    })?;
    let events = events::for_user(store, user_id).await?;
    Ok(Some(UserHistory {
        user,
        inquiries,
        mails,
        events,
    }))
}
