//! The incremental status sync: a search for the template's inquiries updated since the cursor
//! (minus the overlap) only says which may have changed; those, the rows the daemon's own clock
//! makes due, and the finished ones awaiting a decision are then read fresh by id, and only
//! the fresh reads are applied (SPEC "Decisions on fresh reads").

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::RefreshReport;
use super::plan::FullBecause;
use super::policy::due_by_clock;
use super::sync::{by_inquiry_id, read_by_id};
use crate::domain::{InquiryId, InquiryStatus};
use crate::jobs::{JobContext, JobError};
use crate::persona::SearchError;
use crate::store::inquiries::{self, InquiryRow, RowStatus};

/// Runs the incremental sync; `Ok(Err(why))` when the search gave no answer and the run must
/// list everything instead.
pub(super) async fn sync(
    ctx: &JobContext,
    report: &mut RefreshReport,
    since: DateTime<Utc>,
) -> Result<Result<(), FullBecause>, JobError> {
    let changed = match search(ctx, report, since).await {
        Ok(ids) => ids,
        Err(SearchError::Refused(e)) => {
            tracing::warn!(error = %e, "Persona refuses the inquiry search; listing every live inquiry instead");
            return Ok(Err(FullBecause::SearchRefused));
        }
        Err(SearchError::Transient(e)) => {
            tracing::warn!(error = %e, "the inquiry search failed for now; listing every live inquiry instead");
            return Ok(Err(FullBecause::SearchFailed));
        }
        Err(SearchError::Failed(e)) => return Err(JobError::Persona(e)),
    };
    let now = ctx.clock.now();
    let followed = inquiries::followed(&ctx.store, now).await?;
    let picked: Vec<InquiryRow> = followed
        .into_iter()
        .filter(|row| {
            row.inquiry_id
                .as_ref()
                .is_some_and(|id| changed.contains(id))
                || awaits_a_decision(row)
                || (row.superseded_at.is_none()
                    && due_by_clock(row, now, &ctx.settings.inquiries, ctx.settings.link_kind))
        })
        .collect();
    report.sync_reads = picked.len();
    read_by_id(ctx, report, &by_inquiry_id(&picked), now).await?;
    Ok(Ok(()))
}

/// `completed` and `needs_review` are followed until decided (SPEC "Outcomes after
/// completion"); they are read every run, as before search existed.
fn awaits_a_decision(row: &InquiryRow) -> bool {
    matches!(
        row.status,
        RowStatus::Persona(InquiryStatus::Completed | InquiryStatus::NeedsReview)
    )
}

/// The ids of the template's inquiries updated at or after `since` by Persona's search index,
/// every page; each page is one Persona call of the sync, an unanswered one too.
async fn search(
    ctx: &JobContext,
    report: &mut RefreshReport,
    since: DateTime<Utc>,
) -> Result<HashSet<InquiryId>, SearchError> {
    let mut pages = ctx
        .persona
        .search_updated_since(&ctx.settings.template_id, since);
    let mut ids = HashSet::new();
    loop {
        let page = pages.next_page().await;
        report.sync_calls += usize::from(!matches!(page, Ok(None)));
        match page? {
            Some(found) => ids.extend(found.into_iter().map(|i| i.id)),
            None => return Ok(ids),
        }
    }
}
