//! What a refresh run did, as `once` prints it and the scheduler logs it.

use super::super::deliver::Delivery;
use super::plan::SyncMode;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    /// How the statuses were synced: incremental, or full and why.
    pub sync: SyncMode,
    /// Persona calls of the status sync (search, list and lookup pages); the renewals' own
    /// calls (resume, create, expire) are per user and counted by `persona_requests_total`.
    pub sync_calls: usize,
    /// Inquiries an incremental sync read fresh by id (changed, due, or awaiting a decision).
    pub sync_reads: usize,
    /// Live inquiries a full listing saw (0 when the run did not list them).
    pub live_inquiries: usize,
    pub statuses_changed: usize,
    pub users_finished: usize,
    pub resumed: usize,
    pub recreated: usize,
    pub held_back: usize,
    pub mails_sent: usize,
    pub mails_deferred: usize,
    /// Mails given up on (the server refused them for good); not waiting for anything.
    pub mails_failed: usize,
    pub old_inquiries_expired: usize,
    pub reminders: crate::jobs::reminders::ReminderReport,
    /// How the template's latest version was learned: "template", "inquiry", or "unknown".
    pub template_version_source: &'static str,
}

impl std::fmt::Display for RefreshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status sync {} ({} Persona calls, {} read by id), {} live inquiries listed, {} status changes ({} users finished), {} resumed, {} recreated, {} held back by limits, {} mails sent, {} waiting for a retry, {} failed, {} replaced inquiries expired, {} reminders sent",
            self.sync,
            self.sync_calls,
            self.sync_reads,
            self.live_inquiries,
            self.statuses_changed,
            self.users_finished,
            self.resumed,
            self.recreated,
            self.held_back,
            self.mails_sent,
            self.mails_deferred,
            self.mails_failed,
            self.old_inquiries_expired,
            self.reminders.sent
        )
    }
}

impl RefreshReport {
    pub(super) fn count(&mut self, delivery: Option<&Delivery>) {
        match delivery {
            Some(Delivery::Sent) => self.mails_sent += 1,
            Some(Delivery::Deferred(_)) => self.mails_deferred += 1,
            Some(Delivery::Failed(_)) => self.mails_failed += 1,
            Some(Delivery::Dropped) | None => {}
        }
    }
}
