//! How delivery fails: per mail (transient or permanent), or for the whole transport.

use std::path::PathBuf;

/// Why a send failed, split by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later: server down or busy, timeouts, 4xx replies, I/O errors.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying the same mail cannot help: 5xx replies (unknown recipient, refused), bad address.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }
}

/// A transport that cannot be built or checked; the message names the config key or server.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("[mail] smtp_url: {0}")]
    SmtpUrl(String),
    #[error("SMTP server {endpoint}: {reason}")]
    SmtpUnreachable { endpoint: String, reason: String },
    #[error("[mail] file_dir {}: {source}", dir.display())]
    FileDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}
