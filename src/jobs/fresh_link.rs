//! A link that works now for a user's mail: built from what is in hand (a token or one-time
//! link just returned by Persona), or obtained from Persona (resume, generate-one-time-link)
//! within the inquiry's resume and session budget.

use chrono::{DateTime, Utc};

use super::JobContext;
use crate::domain::{
    InquiryId, InquiryStatus, LinkKind, Locale, OneTimeLink, RedirectToken, SessionToken,
};
use crate::links::{LinkError, LinkTarget, MailLink, build_link};
use crate::persona::{IdempotencyKey, Inquiry, PersonaError};
use crate::store::inquiries::{self, InquiryFacts, InquiryRow, RowStatus};
use crate::store::user_states::Claimed;
use crate::store::{StoreError, events, redirect_tokens};

/// Persona's default cap on sessions per inquiry.
pub const MAX_SESSIONS: i64 = 25;

/// A secret Persona handed over in the call that created or resumed the inquiry. Kept in
/// memory only: never stored, so a mail retried later obtains a fresh one.
#[derive(Debug, Default)]
pub enum Fresh {
    #[default]
    Nothing,
    Token(SessionToken),
    OneTime(OneTimeLink),
}

pub struct ObtainedLink {
    pub link: MailLink,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkProblem {
    #[error("{0}")]
    Persona(#[from] PersonaError),
    #[error("the inquiry has used {used} of its {max} resumes")]
    OutOfResumes { used: i64, max: u32 },
    #[error("the inquiry has used {0} of Persona's {MAX_SESSIONS} sessions")]
    OutOfSessions(i64),
    #[error("the inquiry has finished ({0})")]
    Finished(RowStatus),
    #[error("no inquiry to link to")]
    NoInquiry,
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LinkProblem {
    /// Problems that a new inquiry would solve (the refresh job recreates).
    pub fn wants_recreate(&self) -> bool {
        matches!(self, Self::OutOfResumes { .. } | Self::OutOfSessions(_))
    }
}

pub fn facts_of(inquiry: &Inquiry) -> InquiryFacts {
    InquiryFacts {
        inquiry_id: inquiry.id.clone(),
        status: inquiry.status.clone(),
        template_version_id: inquiry
            .template_version_id
            .as_ref()
            .map(ToString::to_string),
        created_at: inquiry.created_at,
        expires_at: inquiry.expires_at,
    }
}

/// Whether the row's inquiry can no longer be opened without a resume.
fn needs_resume(row: &InquiryRow, now: DateTime<Utc>) -> bool {
    row.status == InquiryStatus::Expired || row.expires_at.is_some_and(|t| t <= now)
}

/// Whether [`obtain`] would have to ask Persona for this link (a token or one-time link, which
/// spends one of the inquiry's sessions): then it is asked for only once the mail can go out.
pub fn asks_persona(
    kind: LinkKind,
    row: Option<&InquiryRow>,
    fresh: &Fresh,
    now: DateTime<Utc>,
) -> bool {
    let Some(row) = row else { return false };
    match (kind, fresh) {
        (LinkKind::Static, _) | (LinkKind::Session, Fresh::Token(_)) => false,
        (LinkKind::OneTime, Fresh::OneTime(_)) => false,
        (LinkKind::Session, _) => row.status != InquiryStatus::Created || needs_resume(row, now),
        (LinkKind::OneTime, _) => true,
        // A redirect mail carries our own link; the click asks Persona, not the mail.
        (LinkKind::Redirect, _) => false,
    }
}

/// `language` is the user's locale, carried by the link to Persona's hosted flow.
pub async fn obtain(
    ctx: &JobContext,
    claimed: &Claimed,
    row: Option<&InquiryRow>,
    fresh: Fresh,
    language: Option<&Locale>,
) -> Result<ObtainedLink, LinkProblem> {
    let s = &ctx.settings;
    if s.link_kind == LinkKind::Redirect {
        return redirect(ctx, claimed).await;
    }
    if s.link_kind == LinkKind::Static {
        let link = build_link(
            &s.links,
            LinkTarget::Static {
                reference_id: &claimed.reference_id,
            },
            language,
        )?;
        return Ok(ObtainedLink {
            link,
            expires_at: None,
        });
    }
    let row = row.ok_or(LinkProblem::NoInquiry)?;
    let inquiry_id = row.inquiry_id.clone().ok_or(LinkProblem::NoInquiry)?;
    if row.status.persona().is_none_or(InquiryStatus::is_finished) {
        return Err(LinkProblem::Finished(row.status.clone()));
    }
    let now = ctx.clock.now();
    match (s.link_kind, fresh) {
        (LinkKind::Session, Fresh::Token(token)) => Ok(ObtainedLink {
            link: build_link(
                &s.links,
                LinkTarget::Session {
                    inquiry_id: &inquiry_id,
                    token: Some(&token),
                },
                language,
            )?,
            expires_at: row.expires_at,
        }),
        (LinkKind::Session, _)
            if row.status == InquiryStatus::Created && !needs_resume(row, now) =>
        {
            // A created inquiry opens with its id alone: no token, no Persona call.
            Ok(ObtainedLink {
                link: build_link(
                    &s.links,
                    LinkTarget::Session {
                        inquiry_id: &inquiry_id,
                        token: None,
                    },
                    language,
                )?,
                expires_at: row.expires_at,
            })
        }
        (LinkKind::Session, _) => {
            // A token for a mail (a retry, or a resume's token lost to a crash): not a resume
            // of the lifecycle, so it does not count toward max_resumes.
            let (inquiry, token) = resume(ctx, claimed, row, &inquiry_id, false).await?;
            Ok(ObtainedLink {
                link: build_link(
                    &s.links,
                    LinkTarget::Session {
                        inquiry_id: &inquiry_id,
                        token: Some(&token),
                    },
                    language,
                )?,
                expires_at: inquiry.expires_at,
            })
        }
        (LinkKind::OneTime, Fresh::OneTime(link)) => Ok(ObtainedLink {
            expires_at: one_time_expiry(ctx, now, row.expires_at),
            link: build_link(&s.links, LinkTarget::OneTime { link: &link }, language)?,
        }),
        (LinkKind::OneTime, _) => one_time(ctx, claimed, row, &inquiry_id, language).await,
        (LinkKind::Static | LinkKind::Redirect, _) => unreachable!("handled above"),
    }
}

/// A fresh one-time link for the row's inquiry (resumed first when it expired), counted and
/// recorded: what a `one-time` mail and a redirect click both hand out.
pub async fn one_time(
    ctx: &JobContext,
    claimed: &Claimed,
    row: &InquiryRow,
    inquiry_id: &InquiryId,
    language: Option<&Locale>,
) -> Result<ObtainedLink, LinkProblem> {
    let s = &ctx.settings;
    let now = ctx.clock.now();
    let mut inquiry_expiry = row.expires_at;
    let mut sessions = row.session_count;
    if needs_resume(row, now) {
        // Persona cannot make a one-time link for an expired inquiry: resume first.
        let (inquiry, _token) = resume(ctx, claimed, row, inquiry_id, false).await?;
        inquiry_expiry = inquiry.expires_at;
        sessions += 1;
    }
    if sessions >= MAX_SESSIONS {
        return Err(LinkProblem::OutOfSessions(sessions));
    }
    let key = IdempotencyKey::generate();
    let (inquiry, link) = ctx
        .persona
        .generate_one_time_link(inquiry_id, s.one_time_link_expires_after, &key)
        .await?;
    let mut tx = ctx.store.begin_write().await?;
    inquiries::record_session(&mut tx, row.id).await?;
    inquiries::update_status(
        &mut tx,
        row.id,
        &inquiry.status,
        inquiry.expires_at.or(inquiry_expiry),
        now,
    )
    .await?;
    events::record(
        &mut tx,
        now,
        Some(&claimed.user_id),
        Some(inquiry_id),
        "inquiry.one-time-link",
        "generated a one-time link",
    )
    .await?;
    tx.commit().await?;
    Ok(ObtainedLink {
        expires_at: one_time_expiry(ctx, now, inquiry.expires_at.or(inquiry_expiry)),
        link: build_link(&s.links, LinkTarget::OneTime { link: &link }, language)?,
    })
}

/// A new redirect token for the user, stored as its digest, in a link to the daemon: it works
/// for the user's whole journey, so it carries no expiry.
async fn redirect(ctx: &JobContext, claimed: &Claimed) -> Result<ObtainedLink, LinkProblem> {
    let token = RedirectToken::generate();
    // The link leads to our own page; the language goes on the Persona link a click obtains.
    let link = build_link(
        &ctx.settings.links,
        LinkTarget::Redirect { token: &token },
        None,
    )?;
    redirect_tokens::insert(&ctx.store, &claimed.user_id, &token, ctx.clock.now()).await?;
    Ok(ObtainedLink {
        link,
        expires_at: None,
    })
}

/// A one-time link dies with its inquiry or at its own expiry, whichever comes first.
fn one_time_expiry(
    ctx: &JobContext,
    now: DateTime<Utc>,
    inquiry_expiry: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    one_time_link_expiry(
        ctx.settings.one_time_link_expires_after,
        now,
        inquiry_expiry,
    )
}

/// A one-time link made at `now` dies with its inquiry or at its own expiry, whichever comes
/// first.
pub fn one_time_link_expiry(
    lifetime: std::time::Duration,
    now: DateTime<Utc>,
    inquiry_expiry: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let own = chrono::Duration::from_std(lifetime).ok().map(|d| now + d);
    match (own, inquiry_expiry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Resumes within budget and records it; the returned inquiry is `pending`. `counted`: a
/// resume of the lifecycle (refresh renewing a link), which `max_resumes` bounds; a token
/// fetched for a mail is not.
pub async fn resume(
    ctx: &JobContext,
    claimed: &Claimed,
    row: &InquiryRow,
    inquiry_id: &InquiryId,
    counted: bool,
) -> Result<(Inquiry, SessionToken), LinkProblem> {
    let max = ctx.settings.inquiries.max_resumes;
    if counted && row.resume_count >= i64::from(max) {
        return Err(LinkProblem::OutOfResumes {
            used: row.resume_count,
            max,
        });
    }
    if row.session_count >= MAX_SESSIONS {
        return Err(LinkProblem::OutOfSessions(row.session_count));
    }
    let key = IdempotencyKey::generate();
    let (inquiry, token) = ctx.persona.resume_inquiry(inquiry_id, &key).await?;
    let now = ctx.clock.now();
    let mut tx = ctx.store.begin_write().await?;
    inquiries::record_resume(
        &mut tx,
        row.id,
        counted,
        &inquiry.status,
        inquiry.expires_at,
        now,
    )
    .await?;
    events::record(
        &mut tx,
        now,
        Some(&claimed.user_id),
        Some(inquiry_id),
        "inquiry.resumed",
        &format!(
            "{}; now {} until {}",
            if counted {
                format!("resumed ({} of {max})", row.resume_count + 1)
            } else {
                "session token fetched for a mail (not counted as a resume)".to_owned()
            },
            inquiry.status,
            inquiry
                .expires_at
                .map(crate::clock::format_ts)
                .unwrap_or_else(|| "-".into())
        ),
    )
    .await?;
    tx.commit().await?;
    Ok((inquiry, token))
}
