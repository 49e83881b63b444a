//! The simulator's own list of inquiry statuses, kept apart from the product's `InquiryStatus`
//! so a misreading of Persona's statuses cannot hide in code both sides share.

use serde::Serialize;

/// An inquiry's `status` as the simulated Persona reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Pending,
    Completed,
    Failed,
    Expired,
    NeedsReview,
    Approved,
    Declined,
}

impl Status {
    /// The wire spelling (`needs_review`, not `needs-review`: Persona's status values are
    /// snake_case even under kebab-case key inflection).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::NeedsReview => "needs_review",
            Self::Approved => "approved",
            Self::Declined => "declined",
        }
    }

    /// Persona takes no more end-user or API changes to the flow once an inquiry left these.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Created | Self::Pending | Self::Expired)
    }

    /// Open to the end user right now, without a resume; Persona's expirer watches these.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Created | Self::Pending)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
