//! E-mail: rendering the templates into a multipart message and delivering it through one
//! transport (SMTP, a directory of `.eml` files, or memory for tests).

mod error;
mod file_outbox;
mod mailer;
mod message;
mod settings;
mod smtp;
mod templates;
mod transport;

pub use error::{MailError, SendError};
pub use mailer::{Mailer, Sender, SenderError};
pub use message::{OutgoingMail, new_message_id};
pub use settings::{MailSettings, TransportKind};
pub use templates::{MailContext, RenderedMail, TemplateError, Templates, human_time};
pub use transport::{MemoryOutbox, SentMail, Transport};

use std::fmt;

/// Which mail a user gets: the first link, a new one after a resume or a recreate, or a
/// reminder on the `[reminders]` cadence. `as_str` is the name stored in the database and the
/// templates' file-name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailKind {
    Invite,
    Renewed,
    Reminder,
}

impl MailKind {
    pub const ALL: [MailKind; 3] = [MailKind::Invite, MailKind::Renewed, MailKind::Reminder];

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Invite => "invite",
            MailKind::Renewed => "renewed",
            MailKind::Reminder => "reminder",
        }
    }

    pub fn parse(s: &str) -> Result<Self, crate::domain::ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                crate::domain::ParseError(format!("{s:?} is not one of invite, renewed, reminder"))
            })
    }
}

impl fmt::Display for MailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MailKind {
    type Err = crate::domain::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
