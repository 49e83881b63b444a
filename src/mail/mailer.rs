//! A transport plus the templates and the sender's identity: turns (kind, user, link) into an
//! `OutgoingMail` and sends it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;

use super::{
    MailContext, MailKind, OutgoingMail, TemplateError, Templates, Transport, new_message_id,
};
use crate::domain::User;
use crate::links::MailLink;

#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    templates: Arc<Templates>,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    app_name: String,
    support_email: Option<String>,
}

/// What the mails say about who sends them.
#[derive(Debug, Clone)]
pub struct Sender {
    pub from: String,
    pub reply_to: Option<String>,
    pub app_name: String,
    pub support_email: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("[mail] {key} = {value:?} is not an address like \"Verification <verify@example.com>\"")]
pub struct SenderError {
    key: &'static str,
    value: String,
}

impl Mailer {
    pub fn new(
        transport: Transport,
        templates: Arc<Templates>,
        sender: &Sender,
    ) -> Result<Mailer, SenderError> {
        let parse = |key: &'static str, value: &str| {
            value.parse::<Mailbox>().map_err(|_| SenderError {
                key,
                value: value.to_owned(),
            })
        };
        Ok(Mailer {
            transport,
            templates,
            from: parse("from", &sender.from)?,
            reply_to: sender
                .reply_to
                .as_deref()
                .map(|r| parse("reply_to", r))
                .transpose()?,
            app_name: sender.app_name.clone(),
            support_email: sender.support_email.clone(),
        })
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// `[mail] app_name`: how the mails (and the redirect pages) name the application.
    pub fn app_name(&self) -> &str {
        &self.app_name
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// A new Message-ID in the From address's domain, to be stored with the queued mail.
    pub fn new_message_id(&self) -> String {
        new_message_id(self.from.email.domain())
    }

    /// The `kind` mail for `user`, in their language; `started` says they have begun the flow.
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &self,
        kind: MailKind,
        user: &User,
        link: MailLink,
        link_expires_at: Option<DateTime<Utc>>,
        started: bool,
        message_id: &str,
        date: DateTime<Utc>,
    ) -> Result<OutgoingMail, TemplateError> {
        let name_first = user.name_first.as_ref().map(|n| n.as_str().to_owned());
        let name_last = user.name_last.as_ref().map(|n| n.as_str().to_owned());
        let to_name = match (&name_first, &name_last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            (Some(n), None) | (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        };
        let rendered = self.templates.render(
            kind,
            &MailContext {
                name_first,
                name_last,
                link,
                link_expires_at,
                app_name: self.app_name.clone(),
                support_email: self.support_email.clone(),
                locale: user.locale.clone(),
                started,
            },
        )?;
        Ok(OutgoingMail {
            message_id: message_id.to_owned(),
            to: user.email.clone(),
            to_name,
            from: self.from.clone(),
            reply_to: self.reply_to.clone(),
            date,
            rendered,
        })
    }
}
