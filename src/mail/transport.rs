//! Where mail goes: an SMTP server, a directory of `.eml` files, or memory (tests).
//! Every send waits for the shared `messages_per_minute` limiter and, for SMTP, a timeout.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::response::{Category, Code, Severity};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::OutgoingMail;
use super::file_outbox;
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
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The URL without credentials, for messages.
        endpoint: String,
    },
    File(PathBuf),
    Memory(MemoryOutbox),
}

/// The configured way out. Cheap to clone; clones share the connection pool and the limiter.
#[derive(Clone)]
pub struct Transport {
    backend: Backend,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    send_timeout: Duration,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl Transport {
    pub fn from_settings(settings: &MailSettings) -> Result<Transport, MailError> {
        let backend = match settings.transport {
            TransportKind::Smtp => smtp_backend(settings)?,
            TransportKind::File => Backend::File(settings.file_dir.clone()),
        };
        Ok(Transport {
            backend,
            limiter: None,
            send_timeout: settings.send_timeout,
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
            send_timeout: DEFAULT_SEND_TIMEOUT,
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
            Backend::Smtp { endpoint, .. } => format!("smtp {endpoint}"),
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
            Backend::Smtp {
                transport,
                endpoint,
            } => match tokio::time::timeout(self.send_timeout, transport.send(message)).await {
                Ok(Ok(_response)) => Ok(()),
                Ok(Err(e)) => Err(classify_smtp(endpoint, &e)),
                Err(_elapsed) => Err(SendError::Transient(format!(
                    "SMTP server {endpoint}: no answer within {}",
                    humantime::format_duration(self.send_timeout)
                ))),
            },
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
            Backend::Smtp {
                transport,
                endpoint,
            } => {
                let unreachable = |reason: String| MailError::SmtpUnreachable {
                    endpoint: endpoint.clone(),
                    reason,
                };
                match tokio::time::timeout(self.send_timeout, transport.test_connection()).await {
                    Ok(Ok(true)) => Ok(format!("SMTP server {endpoint} answers EHLO and NOOP")),
                    Ok(Ok(false)) => Err(unreachable("the server did not accept NOOP".into())),
                    Ok(Err(e)) => Err(unreachable(e.to_string())),
                    Err(_) => Err(unreachable(format!(
                        "no answer within {}",
                        humantime::format_duration(self.send_timeout)
                    ))),
                }
            }
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

fn smtp_backend(settings: &MailSettings) -> Result<Backend, MailError> {
    // lettre builds its TLS config when the transport is built; make sure rustls has a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let url = url::Url::parse(&settings.smtp_url).map_err(|e| {
        MailError::SmtpUrl(format!(
            "{:?} does not parse: {e}",
            redacted_url(&settings.smtp_url)
        ))
    })?;
    if url.password().is_some() && settings.smtp_password.is_some() {
        return Err(MailError::SmtpUrl(
            "has a password and SMTP_PASSWORD/smtp-password is set too: keep only the secret"
                .into(),
        ));
    }
    if settings.smtp_password.is_some() && url.username().is_empty() {
        return Err(MailError::SmtpUrl(format!(
            "{} names no user, but an SMTP password is set: use smtp://USER@host…",
            redacted_url(&settings.smtp_url)
        )));
    }
    let endpoint = redacted_url(&settings.smtp_url);
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.smtp_url)
        .map_err(|e| MailError::SmtpUrl(format!("{endpoint}: {e}")))?
        .timeout(Some(settings.send_timeout))
        // Servers drop idle connections; a short idle timeout keeps the pool from holding dead ones.
        .pool_config(
            PoolConfig::new()
                .max_size(4)
                .idle_timeout(Duration::from_secs(30)),
        );
    if let Some(password) = &settings.smtp_password {
        let user = percent_encoding_decode(url.username());
        builder = builder.credentials(Credentials::new(user, password.expose().to_owned()));
    }
    Ok(Backend::Smtp {
        transport: builder.build(),
        endpoint,
    })
}

fn percent_encoding_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `smtp_url` without user or password, for messages and logs.
fn redacted_url(raw: &str) -> String {
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

/// lettre's error kinds to ours. Permanent means "this mail will never be taken here": a 5xx
/// reply about the mail, or lettre refusing this envelope for this server. Problems of the
/// whole server or our login (refused connection, 4xx, timeouts, TLS, 5xx to AUTH) are
/// transient: fixing them makes every waiting mail go, so no mail should be given up for them.
fn classify_smtp(endpoint: &str, e: &lettre::transport::smtp::Error) -> SendError {
    let text = format!("SMTP server {endpoint}: {e}");
    let client_refusal = e.is_client().then(|| e.to_string());
    if is_about_this_mail(e.status(), client_refusal.as_deref()) {
        SendError::Permanent(text)
    } else if e
        .status()
        .is_some_and(|code| code.category == Category::Unspecified3)
    {
        SendError::Transient(format!(
            "{text} (the server refused our login: check the user in [mail] smtp_url and SMTP_PASSWORD)"
        ))
    } else {
        SendError::Transient(text)
    }
}

fn is_about_this_mail(code: Option<Code>, client_refusal: Option<&str>) -> bool {
    if let Some(code) = code {
        // x3z replies are RFC 4954's authentication ones (530, 534, 535, 538).
        return code.severity == Severity::PermanentNegativeCompletion
            && code.category != Category::Unspecified3;
    }
    // lettre's own refusals before talking: only these two are about the message (non-ASCII
    // addresses or body the server cannot take); the rest (no STARTTLS, no auth mechanism) are
    // about the server. Pinned by a test against aiosmtpd.
    client_refusal
        .is_some_and(|m| m.contains("Envelope contains") || m.contains("Message contains"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::transport::smtp::response::Detail;

    #[test]
    fn redacted_url_drops_credentials() {
        assert_eq!(
            redacted_url("smtp://bob:hunter2@mail.example.com:587?tls=required"),
            "smtp://mail.example.com:587"
        );
        assert_eq!(
            redacted_url("smtps://mail.example.com"),
            "smtps://mail.example.com"
        );
    }

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

    #[test]
    fn unknown_schemes_are_refused_naming_the_key() {
        let settings = MailSettings {
            transport: TransportKind::Smtp,
            smtp_url: "imap://mail.example.com".into(),
            smtp_password: None,
            file_dir: "outbox".into(),
            messages_per_minute: NonZeroU32::new(10).unwrap(),
            send_timeout: Duration::from_secs(5),
        };
        let err = Transport::from_settings(&settings).unwrap_err();
        assert!(err.to_string().starts_with("[mail] smtp_url"), "{err}");
    }

    #[test]
    fn only_replies_about_the_mail_are_permanent() {
        let code = |severity, category| Some(Code::new(severity, category, Detail::Zero));
        let perm = Severity::PermanentNegativeCompletion;
        let temp = Severity::TransientNegativeCompletion;
        assert!(is_about_this_mail(code(perm, Category::MailSystem), None)); // 550 unknown user
        assert!(is_about_this_mail(code(perm, Category::Syntax), None)); // 501 bad address
        assert!(!is_about_this_mail(
            code(perm, Category::Unspecified3),
            None
        )); // 535 login refused
        assert!(!is_about_this_mail(code(temp, Category::MailSystem), None)); // 450 mailbox busy
        assert!(is_about_this_mail(
            None,
            Some("internal client error: Envelope contains non-ascii chars")
        ));
        assert!(!is_about_this_mail(
            None,
            Some("internal client error: STARTTLS is not supported on this server")
        ));
        assert!(!is_about_this_mail(None, None));
    }

    #[test]
    fn user_names_are_percent_decoded() {
        assert_eq!(
            percent_encoding_decode("bob%40example.com"),
            "bob@example.com"
        );
        assert_eq!(percent_encoding_decode("a+b"), "a+b");
    }
}
