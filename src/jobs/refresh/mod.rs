//! Refresh: after each run every unfinished user's latest mail carries a link that works now,
//! unless a documented limit holds it back (and then `status --user` says which).
//!
//! A run: (1) syncs statuses — incremental: a search for what changed since the last sync,
//! then fresh reads by id of those and of the rows due by the daemon's clock; at most once per
//! `[sync] full_every`, and whenever the cursor cannot be trusted, a full reconciliation: one
//! list of the template's live inquiries plus id lookups for the rest (static links: a list of
//! what was created since the last run, to find users who opened their link); (2) learns the
//! template's latest published version once; (3) decides per current inquiry: nothing, resume,
//! or recreate; (4) retries renewed mails that did not go out; (5) expires at Persona the
//! inquiries it replaced. (1) is `sync`, choosing by the pure `plan`, the incremental path in
//! `incremental`, its cursor in `bookmarks`; (2) and (3) are `renew`, over the pure `policy`,
//! replacing through jobs/replace.rs; (4) and (5) are `cleanup`.

mod bookmarks;
mod cleanup;
mod incremental;
pub mod plan;
pub mod policy;
mod renew;
mod report;
mod sync;

use std::sync::Arc;

pub use bookmarks::{LastSync, LastSyncRun, last_sync};
pub use plan::{FullBecause, SyncMode, SyncSettings};
pub use report::RefreshReport;

use super::{JobContext, JobError, RunFlags};
use crate::domain::LinkKind;
use crate::store::user_states;
use cleanup::{expire_replaced, retry_unsent};
use renew::{act_on_due, latest_version};
use sync::{sync_static, sync_statuses};

pub async fn run(ctx: &JobContext) -> Result<RefreshReport, JobError> {
    let report = run_phases(ctx).await?;
    record_sync_metrics(&report);
    Ok(report)
}

/// The last run's sync, for `GET /metrics` (names and help texts in daemon/metrics.rs).
fn record_sync_metrics(report: &RefreshReport) {
    let full = usize::from(matches!(report.sync, SyncMode::Full(_)));
    metrics::gauge!("refresh_sync_full").set(full as f64);
    metrics::gauge!("refresh_sync_persona_calls").set(report.sync_calls as f64);
    let reason = report.sync.full_because().map_or("", FullBecause::as_str);
    metrics::counter!("refresh_syncs_total", "mode" => report.sync.kind(), "reason" => reason)
        .increment(1);
}

async fn run_phases(ctx: &JobContext) -> Result<RefreshReport, JobError> {
    let mut report = RefreshReport::default();
    let _leases = super::lease_keeper::LeaseKeeper::start(ctx);
    user_states::release_orphaned(&ctx.store, ctx.clock.now()).await?;
    if ctx.settings.link_kind == LinkKind::Static {
        // Static links never expire; what is left is learning who finished.
        sync_static(ctx, &mut report).await?;
        retry_unsent(ctx, &mut report, &Arc::new(RunFlags::default())).await?;
        report.reminders = super::reminders::run(ctx).await?;
        return Ok(report);
    }
    sync_statuses(ctx, &mut report).await?;
    let flags = Arc::new(RunFlags::default());
    // Redirect links heal on the click (jobs/click.rs): nothing to resume or renew by mail.
    if ctx.settings.link_kind != LinkKind::Redirect {
        let latest = latest_version(ctx, &mut report).await?;
        act_on_due(ctx, &mut report, latest, &flags).await?;
    }
    retry_unsent(ctx, &mut report, &flags).await?;
    expire_replaced(ctx, &mut report).await?;
    report.reminders = super::reminders::run(ctx).await?;
    Ok(report)
}
