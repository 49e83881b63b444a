//! `preview --user ID`: the user's next e-mail, rendered to stdout; nothing is sent and no
//! Persona budget is spent (a secret that only a send would obtain is shown as a placeholder).

use std::process::ExitCode;

use super::UsageError;
use crate::app::{self, open_store};
use crate::config::Config;
use crate::domain::{
    InquiryId, LinkKind, OneTimeLink, RedirectToken, ReferenceId, SessionToken, User, UserId,
};
use crate::jobs::fresh_link::one_time_link_expiry;
use crate::links::{LinkTarget, build_link};
use crate::mail::{MailKind, Mailer, Transport};
use crate::store::user_states::UserState;
use crate::store::{inquiries, mails, user_states, users};
use chrono::{DateTime, Utc};

/// When the link a send would mail now stops working: the inquiry's expiry (for a user without
/// one yet, the one provisioning will give it), for one-time links capped by their own lifetime.
fn link_expiry(
    settings: &crate::jobs::JobSettings,
    row: Option<&inquiries::InquiryRow>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let inquiry_expiry = || {
        row.and_then(|r| r.expires_at)
            .filter(|t| *t > now)
            .or_else(|| {
                chrono::Duration::from_std(settings.inquiries.expires_after)
                    .ok()
                    .map(|d| now + d)
            })
    };
    match settings.link_kind {
        // A redirect link heals itself on click, so like a static one it has no end.
        LinkKind::Static | LinkKind::Redirect => None,
        LinkKind::Session => inquiry_expiry(),
        LinkKind::OneTime => {
            one_time_link_expiry(settings.one_time_link_expires_after, now, inquiry_expiry())
        }
    }
}

pub async fn run(config: &Config, user_id: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let raw = users::get(&store, user_id)
        .await?
        .ok_or_else(|| UsageError(format!("user {user_id:?} is not in the users table")))?;
    let now = chrono::Utc::now();
    let user = match User::parse(&raw, now.date_naive()) {
        Ok(u) => u,
        Err(e) => {
            println!("user {user_id} gets no mail: the row cannot be used: {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    // The id exactly as the row has it: the daemon's own rows copy it so.
    let uid = UserId::parse_stored(&raw.id)?;
    let state = user_states::get_state(&store, &uid).await?;
    if matches!(state, Some(UserState::Finished | UserState::Skipped)) {
        let h = crate::store::status::user_history(&store, user_id)
            .await?
            .expect("exists");
        println!(
            "user {user_id} gets no more mail: {}{}",
            h.user.state,
            h.user.reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let unsent = mails::unsent_for_user(&store, &uid).await?;
    let kind = match (&unsent, mails::last_for_user(&store, &uid).await?) {
        (Some(m), _) => m.kind,
        (None, None) => MailKind::Invite,
        (None, Some(_)) => MailKind::Renewed,
    };
    let reference = match user_states::reference_of(&store, &uid).await? {
        Some(r) => r,
        None => {
            eprintln!(
                "note: the daemon has not seen this user yet; the reference id shown is a placeholder"
            );
            ReferenceId::parse("ref_PREVIEWPLACEHOLDER")?
        }
    };
    let row = inquiries::current(&store, &uid).await?;
    let settings = crate::jobs::JobSettings::from_config(config);
    let placeholder_id = InquiryId::parse("inq_CREATEDATSENDTIME")?;
    let inquiry_id = match row.as_ref().and_then(|r| r.inquiry_id.clone()) {
        Some(id) => id,
        None => {
            if settings.link_kind.precreates() {
                eprintln!(
                    "note: no inquiry yet; provisioning creates it, so the link shows a placeholder inquiry id"
                );
            }
            placeholder_id
        }
    };
    let status = row.as_ref().map(|r| r.status.as_str()).unwrap_or("created");
    let token = SessionToken::new("SESSION-TOKEN-OBTAINED-AT-SEND-TIME");
    let one_time =
        OneTimeLink::new("https://withpersona.com/verify?code=ONE-TIME-CODE-OBTAINED-AT-SEND-TIME");
    let redirect_token =
        RedirectToken::parse("TOKENMADEATSENDTIMExxxxxxxxxxxxx").expect("placeholder fits");
    let target = match settings.link_kind {
        LinkKind::Static => LinkTarget::Static {
            reference_id: &reference,
        },
        LinkKind::Session if status == "created" => LinkTarget::Session {
            inquiry_id: &inquiry_id,
            token: None,
        },
        LinkKind::Session => {
            eprintln!(
                "note: this inquiry needs a session token, which a send obtains by resuming it; preview spends no resume and shows a placeholder"
            );
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: Some(&token),
            }
        }
        LinkKind::OneTime => {
            eprintln!(
                "note: a one-time link is made by Persona at send time; preview spends no session and shows a placeholder"
            );
            LinkTarget::OneTime { link: &one_time }
        }
        LinkKind::Redirect => {
            eprintln!(
                "note: a redirect link's token is made at send time and stored only as a hash; preview shows a placeholder"
            );
            LinkTarget::Redirect {
                token: &redirect_token,
            }
        }
    };
    let link = build_link(&settings.links, target, user.locale.as_ref())?;
    let mailer = Mailer::new(
        Transport::memory(),
        app::load_templates(config)?,
        &app::sender(config),
    )?;
    let message_id = unsent
        .as_ref()
        .map(|m| m.message_id.clone())
        .unwrap_or_else(|| mailer.new_message_id());
    let expires = link_expiry(&settings, row.as_ref(), now);
    let mail = mailer.compose(
        kind,
        &user,
        link,
        expires,
        status == "pending",
        &message_id,
        now,
    )?;
    println!("{kind} mail for {user_id} (not sent)");
    println!("From: {}", mail.from);
    println!("To: {}", mail.to);
    if let Some(r) = &mail.reply_to {
        println!("Reply-To: {r}");
    }
    println!("Message-ID: {}", mail.message_id);
    println!("Subject: {}", mail.rendered.subject);
    println!("\n--- text/plain ---\n{}", mail.rendered.text);
    println!("--- text/html ---\n{}", mail.rendered.html);
    store.close().await;
    Ok(ExitCode::SUCCESS)
}
