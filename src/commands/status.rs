//! `status`: users by state for people or machines, or one user's history.

use std::process::ExitCode;

use serde_json::json;

use super::UsageError;
use crate::app::open_store;
use crate::config::Config;
use crate::jobs::refresh::{LastSyncRun, last_sync};
use crate::jobs::reminders::{self, Standing};
use crate::store::status::{self, STATES, UserHistory};

pub async fn run(config: &Config, as_json: bool, user: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let result = match user {
        Some(id) => {
            let history = status::user_history(&store, id)
                .await?
                .ok_or_else(|| UsageError(format!("user {id:?} is not in the users table")))?;
            let settings = crate::jobs::JobSettings::from_config(config);
            let reminders = reminders::standing(&store, &settings, id, chrono::Utc::now()).await?;
            if as_json {
                let mut out = serde_json::to_value(&history)?;
                out["reminders"] = serde_json::to_value(&reminders)?;
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_history(&history);
                print_reminders(&reminders);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let users = status::state_counts(&store).await?;
            let mails = status::mail_counts(&store).await?;
            let sync = last_sync(&store).await?;
            if as_json {
                let all = json!({ "users": users, "mails": mails, "last_sync": sync });
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("users ({} in all)", users.total());
                for s in STATES {
                    println!("  {s:<9} {:>8}", users.get(s));
                }
                println!(
                    "mails: {} sent, {} waiting, {} failed",
                    mails.sent, mails.queued, mails.failed
                );
                println!("{}", sync_line(sync.as_ref()));
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    store.close().await;
    result
}

/// The last refresh run's status sync: its mode (and why it was full) and its Persona calls.
fn sync_line(sync: Option<&LastSyncRun>) -> String {
    let Some(s) = sync else {
        return "last status sync: none yet".into();
    };
    let why = s
        .full_because
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    format!(
        "last status sync: {}{why} at {}, {} Persona calls",
        s.mode, s.started_at, s.persona_calls
    )
}

fn print_history(h: &UserHistory) {
    let u = &h.user;
    print!("user {} <{}>: {}", u.id, u.email, u.state);
    if let Some(o) = &u.outcome {
        print!(" ({o})");
    }
    println!();
    if let Some(r) = &u.reason {
        println!("  reason: {r}");
    }
    if !h.inquiries.is_empty() {
        println!("inquiries:");
        for i in &h.inquiries {
            println!(
                "  #{} {} {} expires {} resumes {}{}",
                i.generation,
                i.inquiry_id.as_deref().unwrap_or("(being created)"),
                i.status,
                i.expires_at.as_deref().unwrap_or("-"),
                i.resume_count,
                i.superseded_reason
                    .as_deref()
                    .map(|r| format!(", replaced: {r}"))
                    .unwrap_or_default()
            );
        }
    }
    if !h.mails.is_empty() {
        println!("mails:");
        for m in &h.mails {
            println!(
                "  {} {} attempts {} {}{}{}",
                m.kind,
                m.status,
                m.attempts,
                m.sent_at.as_deref().unwrap_or(""),
                m.next_attempt_at
                    .as_deref()
                    .map(|t| format!("next attempt {t}"))
                    .unwrap_or_default(),
                m.last_error
                    .as_deref()
                    .map(|e| format!(" last error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if !h.events.is_empty() {
        println!("events:");
        for e in &h.events {
            println!("  {} {} {}", e.at, e.kind, e.detail);
        }
    }
}

fn print_reminders(r: &Standing) {
    if r.cadence.is_empty() {
        return;
    }
    println!("reminders ({} after the invite):", r.cadence.join(", "));
    for m in &r.recorded {
        println!(
            "  {} {} {}{}",
            m.after,
            m.status,
            m.sent_at.as_deref().unwrap_or(""),
            m.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
    }
    match (&r.next, &r.none_because) {
        (Some(n), _) => println!("  next: {} after the invite, due {}", n.after, n.due_at),
        (None, Some(why)) => println!("  next: none ({why})"),
        (None, None) => println!("  next: none"),
    }
}
