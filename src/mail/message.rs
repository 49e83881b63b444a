//! One outgoing mail and how it becomes a MIME message: multipart/alternative (text, then
//! HTML) with our own Message-ID, so a resend carries the same id and support can trace it.

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::RenderedMail;
use super::error::SendError;
use crate::domain::{Email, random_alnum};

#[derive(Debug, Clone)]
pub struct OutgoingMail {
    /// `<local@domain>`, chosen once by the caller and stored, so a resend keeps it.
    pub message_id: String,
    pub to: Email,
    pub to_name: Option<String>,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub date: DateTime<Utc>,
    pub rendered: RenderedMail,
}

/// A fresh `<random@domain>` id; pass the domain of the From address.
pub fn new_message_id(domain: &str) -> String {
    format!("<{}@{}>", random_alnum(24), domain)
}

impl OutgoingMail {
    /// The MIME message. An address lettre refuses is permanent: retrying cannot fix it.
    pub fn to_message(&self) -> Result<Message, SendError> {
        let address = self.to.as_str().parse().map_err(|e| {
            SendError::Permanent(format!(
                "recipient {} is not a deliverable address: {e}",
                self.to
            ))
        })?;
        let to_name = self
            .to_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let mut builder = Message::builder()
            .message_id(Some(self.message_id.clone()))
            .date(self.date.into())
            .from(self.from.clone())
            .to(Mailbox::new(to_name.map(str::to_owned), address))
            .subject(self.rendered.subject.clone())
            // RFC 3834: tells auto-responders (vacation replies) not to answer.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                self.rendered.text.clone(),
                self.rendered.html.clone(),
            ))
            .map_err(|e| {
                SendError::Permanent(format!("cannot build message {}: {e}", self.message_id))
            })
    }
}
