//! Status sync: what Persona says of the followed inquiries. Usually incremental (incremental.rs:
//! a search for what changed, then fresh reads of those and of the rows due); a full
//! reconciliation (a list of the live ones, lookups by id for the rest) when plan.rs says so;
//! for static links, a list of what was created since the last run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::RefreshReport;
use super::bookmarks::{self, LastSync};
use super::incremental;
use super::plan::{Plan, SyncMode, plan};
use crate::clock::format_ts;
use crate::domain::{InquiryId, InquiryStatus, ReferenceId};
use crate::jobs::fresh_link;
use crate::jobs::status::{self, Applied};
use crate::jobs::{JobContext, JobError};
use crate::persona::{Inquiry, InquiryPages, ListFilter, PersonaError};
use crate::store::inquiries::{self, InquiryRow, RowStatus};
use crate::store::user_states;
use crate::store::{events, job_runs, mails};

/// This run's status sync, incremental or full as the bookmarks allow; the cursor moves only
/// when it succeeded.
pub(super) async fn sync_statuses(
    ctx: &JobContext,
    report: &mut RefreshReport,
) -> Result<(), JobError> {
    let started = ctx.clock.now();
    let cursor = bookmarks::cursor(&ctx.store).await?;
    let mode = match plan(started, &cursor, &ctx.settings.sync) {
        Plan::Incremental { since } => match incremental::sync(ctx, report, since).await? {
            Ok(()) => SyncMode::Incremental,
            Err(why) => {
                sync_full(ctx, report).await?;
                SyncMode::Full(why)
            }
        },
        Plan::Full(why) => {
            sync_full(ctx, report).await?;
            SyncMode::Full(why)
        }
    };
    report.sync = mode.clone();
    let last = LastSync {
        mode,
        persona_calls: report.sync_calls,
    };
    bookmarks::record(&ctx.store, started, ctx.clock.now(), &last).await?;
    Ok(())
}

/// One list of the template's live inquiries (100 a page), then lookups by id, 100 a call, for
/// the followed rows that were not in it: ones that expired or finished, and finished ones
/// still awaiting a decision (`completed` → `approved`). Replaced inquiries not yet expired
/// are followed too: a user who finishes one of those is finished.
async fn sync_full(ctx: &JobContext, report: &mut RefreshReport) -> Result<(), JobError> {
    let now = ctx.clock.now();
    let mine: Vec<InquiryRow> = inquiries::followed(&ctx.store, now).await?;
    let mut by_id = by_inquiry_id(&mine);
    let filter = ListFilter {
        statuses: vec![InquiryStatus::Created, InquiryStatus::Pending],
        template_id: Some(ctx.settings.template_id.clone()),
        ..ListFilter::default()
    };
    let mut pages = ctx.persona.inquiry_pages(&filter);
    while let Some(page) = next_page(&mut pages, report).await? {
        for inquiry in page {
            report.live_inquiries += 1;
            if let Some(row) = by_id.remove(&inquiry.id) {
                apply(ctx, report, row, &inquiry, "status sync", now).await?;
            }
        }
    }
    read_by_id(ctx, report, &by_id, now).await
}

/// The next page of a listing, counted as one Persona call of the sync.
pub(super) async fn next_page(
    pages: &mut InquiryPages,
    report: &mut RefreshReport,
) -> Result<Option<Vec<Inquiry>>, JobError> {
    let page = pages.next_page().await.map_err(persona_error)?;
    report.sync_calls += usize::from(page.is_some());
    Ok(page)
}

/// Marks the static-link sync in `job_runs`: its `started_at` is where the next one lists from.
const STATIC_SYNC: &str = "refresh.static-sync";

/// How far before the last sync the next one lists again: covers clock skew with Persona and
/// inquiries created while a listing was under way.
const STATIC_SYNC_OVERLAP: chrono::Duration = chrono::Duration::hours(1);

/// Static links: an inquiry exists only once a user opens their link, and it may finish before
/// any run sees it live. So every inquiry of the template created since the last sync is listed,
/// whatever its status (newest first, stopping at that point), and the ones carrying our
/// reference ids are followed from then on; those already followed are looked up by id.
pub(super) async fn sync_static(
    ctx: &JobContext,
    report: &mut RefreshReport,
) -> Result<(), JobError> {
    let now = ctx.clock.now();
    let Some(since) = static_sync_since(ctx).await? else {
        // No link was sent yet, so nobody can have opened one.
        return Ok(());
    };
    let mine: Vec<InquiryRow> = inquiries::followed(&ctx.store, now).await?;
    let mut by_id = by_inquiry_id(&mine);
    let filter = ListFilter {
        template_id: Some(ctx.settings.template_id.clone()),
        ..ListFilter::default()
    };
    report.sync = SyncMode::Static;
    let mut pages = ctx.persona.inquiry_pages(&filter);
    let mut unknown = Vec::new();
    'pages: while let Some(page) = next_page(&mut pages, report).await? {
        for inquiry in page {
            if inquiry.created_at.is_some_and(|t| t < since) {
                break 'pages;
            }
            report.live_inquiries += usize::from(inquiry.status.is_open());
            match by_id.remove(&inquiry.id) {
                Some(row) => apply(ctx, report, row, &inquiry, "status sync", now).await?,
                None => unknown.push(inquiry),
            }
        }
    }
    // Oldest first, so a user who opened their link twice ends with the newest as current.
    for inquiry in unknown.iter().rev() {
        adopt_static(ctx, report, inquiry, now).await?;
    }
    read_by_id(ctx, report, &by_id, now).await?;
    let detail = format!("listed the inquiries created since {}", format_ts(since));
    job_runs::set_bookmark(&ctx.store, STATIC_SYNC, now, ctx.clock.now(), &detail).await?;
    let last = LastSync {
        mode: SyncMode::Static,
        persona_calls: report.sync_calls,
    };
    bookmarks::record(&ctx.store, now, ctx.clock.now(), &last).await?;
    Ok(())
}

/// Where the static sync lists from: the last sync, else the first link sent; `None` when no
/// link was sent yet.
async fn static_sync_since(ctx: &JobContext) -> Result<Option<DateTime<Utc>>, JobError> {
    let since = match job_runs::last_ok_start(&ctx.store, STATIC_SYNC).await? {
        Some(t) => Some(t),
        None => mails::first_sent_at(&ctx.store).await?,
    };
    Ok(since.map(|t| t - STATIC_SYNC_OVERLAP))
}

pub(super) fn by_inquiry_id(rows: &[InquiryRow]) -> HashMap<InquiryId, &InquiryRow> {
    rows.iter()
        .filter_map(|r| r.inquiry_id.clone().map(|id| (id, r)))
        .collect()
}

/// Fresh reads by id (`filter[inquiry-id]`), 100 a call, applied to their rows: the followed
/// inquiries a listing did not show (they expired or finished, or are older than a static sync
/// lists), or the ones an incremental sync picked.
pub(super) async fn read_by_id(
    ctx: &JobContext,
    report: &mut RefreshReport,
    by_id: &HashMap<InquiryId, &InquiryRow>,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let missing: Vec<InquiryId> = by_id.keys().cloned().collect();
    if missing.is_empty() {
        return Ok(());
    }
    let filter = ListFilter {
        inquiry_ids: missing,
        ..ListFilter::default()
    };
    let mut pages = ctx.persona.inquiry_pages(&filter);
    while let Some(page) = next_page(&mut pages, report).await? {
        for inquiry in page {
            if let Some(row) = by_id.get(&inquiry.id) {
                apply(ctx, report, row, &inquiry, "status sync", now).await?;
            }
        }
    }
    Ok(())
}

pub(super) async fn apply(
    ctx: &JobContext,
    report: &mut RefreshReport,
    row: &InquiryRow,
    inquiry: &Inquiry,
    source: &str,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let seen = status::Observation {
        status: &inquiry.status,
        expires_at: inquiry.expires_at,
        observed_at: now,
        source,
    };
    match status::apply(&ctx.store, row, &seen, now).await? {
        Applied::Unchanged => {}
        Applied::Updated => report.statuses_changed += 1,
        Applied::Finished => {
            report.statuses_changed += 1;
            report.users_finished += 1;
        }
    }
    Ok(())
}

/// A static-link user opened their link: Persona made an inquiry with their reference id. Keep
/// it as the user's current inquiry so its status is followed from now on.
async fn adopt_static(
    ctx: &JobContext,
    report: &mut RefreshReport,
    inquiry: &Inquiry,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    let Some(reference) = inquiry
        .reference_id
        .as_deref()
        .and_then(|r| ReferenceId::parse(r).ok())
    else {
        return Ok(());
    };
    let Some(user_id) = user_states::by_reference(&ctx.store, &reference).await? else {
        return Ok(());
    };
    if inquiries::by_inquiry_id(&ctx.store, &inquiry.id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut tx = ctx.store.begin_write().await?;
    let row =
        inquiries::begin_create(&mut tx, &user_id, ctx.settings.template_id.as_str(), now).await?;
    inquiries::record_facts(&mut tx, row.id, &fresh_link::facts_of(inquiry), now).await?;
    events::record(
        &mut tx,
        now,
        Some(&user_id),
        Some(&inquiry.id),
        "inquiry.seen",
        "the user opened their static link; following this inquiry",
    )
    .await?;
    tx.commit().await?;
    let row = inquiries::by_row_id(&ctx.store, row.id)
        .await?
        .expect("just written");
    // Its state moves like any other inquiry's (created → invited, pending → started).
    let placeholder = InquiryRow {
        status: RowStatus::Persona(InquiryStatus::Created),
        ..row.clone()
    };
    apply(ctx, report, &placeholder, inquiry, "status sync", now).await
}

pub(super) fn persona_error(e: PersonaError) -> JobError {
    JobError::Persona(e)
}
