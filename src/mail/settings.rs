//! What the transports are built from: `[mail]`'s transport, URL, password and limits.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::SecretText;

/// `[mail] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Smtp,
    File,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Smtp => "smtp",
            TransportKind::File => "file",
        }
    }

    pub fn parse(s: &str) -> Result<Self, crate::domain::ParseError> {
        match s {
            "smtp" => Ok(TransportKind::Smtp),
            "file" => Ok(TransportKind::File),
            other => Err(crate::domain::ParseError(format!(
                "{other:?} is not one of smtp, file"
            ))),
        }
    }
}

/// The `[mail]` settings the transport needs.
#[derive(Clone)]
pub struct MailSettings {
    pub transport: TransportKind,
    /// lettre's URL form: `smtp://host:25`, `smtp://user@host:587?tls=required`, `smtps://host:465`.
    pub smtp_url: String,
    pub smtp_password: Option<SecretText>,
    pub file_dir: PathBuf,
    pub messages_per_minute: NonZeroU32,
    pub send_timeout: Duration,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("transport", &self.transport)
            .field("smtp_url", &redacted_url(&self.smtp_url))
            .field("smtp_password", &self.smtp_password)
            .field("file_dir", &self.file_dir)
            .field("messages_per_minute", &self.messages_per_minute)
            .field("send_timeout", &self.send_timeout)
            .finish()
    }
}

/// `smtp_url` without user or password, for messages and logs.
pub(super) fn redacted_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("?");
            match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
