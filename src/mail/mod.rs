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

/// Defined in domain (the store records it too); mail is where templates and senders use it.
pub use crate::domain::MailKind;
