//! Where mail goes: an SMTP server, a directory of `.eml` files, or memory (tests).
//! Every send waits for the shared `messages_per_minute` limiter and, for SMTP, a timeout.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::OutgoingMail;
use super::error::{MailError, SendError};
use super::file_outbox;
use super::settings::{MailSettings, TransportKind};
use super::smtp::SmtpPool;

/// One mail the memory transport accepted.
#[derive(Clone)]
pub struct SentMail {
    pub mail: OutgoingMail,
    /// The whole message as it would have gone on the wire (it holds the link: never log it).
    pub raw: String,
}

impl fmt::Debug for SentMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentMail")
            .field("mail", &self.mail)
            .field("raw_bytes", &self.raw.len())
            .finish()
    }
}

/// The memory transport's mailbox. Clones share it, so a test keeps one and reads what was sent.
#[derive(Debug, Clone, Default)]
pub struct MemoryOutbox {
    inner: Arc<Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    sent: Vec<SentMail>,
    failures: Vec<SendError>,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sent(&self) -> Vec<SentMail> {
        self.state().sent.clone()
    }

    pub fn len(&self) -> usize {
        self.state().sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the next sends fail with these errors, in order (for testing callers' retries).
    pub fn fail_next(&self, errors: impl IntoIterator<Item = SendError>) {
        let mut state = self.state();
        let mut errors: Vec<SendError> = errors.into_iter().collect();
        errors.reverse();
        errors.append(&mut state.failures);
        state.failures = errors;
    }

    fn record(&self, mail: &OutgoingMail, raw: String) -> Result<(), SendError> {
        let mut state = self.state();
        if let Some(err) = state.failures.pop() {
            return Err(err);
        }
        state.sent.push(SentMail {
            mail: mail.clone(),
            raw,
        });
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A test that panicked while holding the lock must not hide what was sent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
enum Backend {
    Smtp(Arc<SmtpPool>),
    File(PathBuf),
    Memory(MemoryOutbox),
}

/// The configured way out. Cheap to clone; clones share the connection pool and the limiter.
#[derive(Clone)]
pub struct Transport {
    backend: Backend,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Transport {
    pub fn from_settings(settings: &MailSettings) -> Result<Transport, MailError> {
        let backend = match settings.transport {
            TransportKind::Smtp => {
                // The TLS configurations are built here; make sure rustls has a provider.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Backend::Smtp(Arc::new(SmtpPool::from_settings(settings)?))
            }
            TransportKind::File => Backend::File(settings.file_dir.clone()),
        };
        Ok(Transport {
            backend,
            limiter: None,
        }
        .with_messages_per_minute(settings.messages_per_minute))
    }

    /// An unlimited in-memory transport; read what it sent through [`Transport::outbox`].
    pub fn memory() -> Transport {
        Self::with_outbox(MemoryOutbox::new())
    }

    /// An in-memory transport recording into an outbox the caller already holds.
    pub fn with_outbox(outbox: MemoryOutbox) -> Transport {
        Transport {
            backend: Backend::Memory(outbox),
            limiter: None,
        }
    }

    /// Caps sends across this transport and all its clones made afterwards.
    pub fn with_messages_per_minute(mut self, per_minute: NonZeroU32) -> Transport {
        self.limiter = Some(Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))));
        self
    }

    pub fn outbox(&self) -> Option<&MemoryOutbox> {
        match &self.backend {
            Backend::Memory(outbox) => Some(outbox),
            _ => None,
        }
    }

    /// Safe to log: `smtp smtp://host:port`, `file outbox/`, `memory`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Smtp(pool) => format!("smtp {}", pool.endpoint()),
            Backend::File(dir) => format!("file {}", dir.display()),
            Backend::Memory(_) => "memory".to_owned(),
        }
    }

    /// Sends one mail once. The caller decides whether to retry, from [`SendError`].
    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), SendError> {
        let message = mail.to_message()?;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        match &self.backend {
            Backend::Smtp(pool) => pool.send(message.envelope(), &message.formatted()).await,
            Backend::File(dir) => {
                let dir = dir.clone();
                let message_id = mail.message_id.clone();
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || file_outbox::write(&dir, &message_id, &bytes))
                    .await
                    .map_err(|e| {
                        SendError::Transient(format!("file outbox: writer task failed: {e}"))
                    })?
                    .map(drop)
                    .map_err(|e| SendError::Transient(e.to_string()))
            }
            Backend::Memory(outbox) => {
                let raw = String::from_utf8_lossy(&message.formatted()).into_owned();
                outbox.record(mail, raw)
            }
        }
    }

    /// Sends, retrying transient failures with exponential backoff and jitter, `attempts` times
    /// in all. Permanent failures return at once.
    pub async fn send_with_retry(
        &self,
        mail: &OutgoingMail,
        attempts: usize,
    ) -> Result<(), SendError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(attempts.saturating_sub(1))
            .with_jitter();
        (|| self.send(mail))
            .retry(backoff)
            .when(SendError::is_transient)
            .notify(|err, wait| {
                tracing::warn!(message_id = %mail.message_id, error = %err, ?wait, "mail send failed, retrying");
            })
            .await
    }

    /// For `check`: SMTP connects and says EHLO and NOOP; a file outbox must be writable.
    pub async fn check(&self) -> Result<String, MailError> {
        match &self.backend {
            Backend::Smtp(pool) => pool.check().await,
            Backend::File(dir) => {
                let probe_dir = dir.clone();
                tokio::task::spawn_blocking(move || file_outbox::check_writable(&probe_dir))
                    .await
                    .map_err(|e| MailError::FileDir {
                        dir: dir.clone(),
                        source: std::io::Error::other(e),
                    })?
                    .map_err(|source| MailError::FileDir {
                        dir: dir.clone(),
                        source,
                    })?;
                Ok(format!("file outbox {} is writable", dir.display()))
            }
            Backend::Memory(_) => Ok("memory outbox (tests only)".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SecretText;

    #[test]
    fn settings_debug_hides_the_password() {
        let settings = MailSettings {
            transport: TransportKind::Smtp,
            smtp_url: "smtp://bob:hunter2@mail.example.com:587".into(),
            smtp_password: Some(SecretText::new("s3cret")),
            file_dir: "outbox".into(),
            messages_per_minute: NonZeroU32::new(10).unwrap(),
            send_timeout: Duration::from_secs(5),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn a_password_needs_a_user() {
        let settings = MailSettings {
            transport: TransportKind::Smtp,
            smtp_url: "smtp://mail.example.com:587".into(),
            smtp_password: Some(SecretText::new("s3cret")),
            file_dir: "outbox".into(),
            messages_per_minute: NonZeroU32::new(10).unwrap(),
            send_timeout: Duration::from_secs(5),
        };
        let err = Transport::from_settings(&settings).unwrap_err();
        assert!(err.to_string().contains("names no user"), "{err}");
    }
}
