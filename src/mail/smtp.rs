//! The SMTP server's side of delivery: our own connections and their pool, with lettre speaking
//! the protocol on them (commands, replies, STARTTLS, AUTH, dot-stuffing).
//!
//! Why not lettre 0.11's `AsyncSmtpTransport` pool, even behind a semaphore the size of the pool
//! (tried and measured, README "Performance"): it opens its sockets with Nagle's algorithm on and
//! writes a message's body and its closing `.` as two writes, so every mail on a reused
//! connection waits for the server's delayed ACK (40 ms on Linux; lettre/lettre#1159, not
//! released) — four connections stay below the 100 users/s floor; and it hands a connection
//! back to its pool in a task it spawns after the send has returned, so the next send can find
//! the pool empty and open a fifth. Here a connection is opened with `TCP_NODELAY`, at most
//! [`SMTP_CONNECTIONS`] sends are in flight, a reused connection goes straight to `MAIL FROM`,
//! and if the server has closed it meanwhile (nothing of the mail was taken yet) the mail goes
//! over a new one.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::{Category, Code, Severity};
use rustls::pki_types::ServerName;
use rustls_platform_verifier::ConfigVerifierExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::error::{MailError, SendError};
use super::settings::{MailSettings, redacted_url};

/// Connections kept open to the server, and so the most sends in flight at once.
pub(super) const SMTP_CONNECTIONS: usize = 4;

/// A connection idle for longer is closed rather than reused: servers drop idle clients
/// (Postfix after 300 s), and an old socket is likelier to be dead than worth a try.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Where and how to reach the server, from `[mail] smtp_url` and the SMTP password.
struct Server {
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
}

enum Security {
    /// `smtp://host`: no TLS.
    Plain,
    /// `smtp://host?tls=required|opportunistic`: STARTTLS after the greeting.
    StartTls {
        required: bool,
        params: TlsParameters,
    },
    /// `smtps://host`: TLS from the first byte.
    Implicit {
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    },
}

/// The pool of connections to one SMTP server. Shared by every clone of the transport.
pub(super) struct SmtpPool {
    server: Server,
    /// The URL without credentials, for messages.
    endpoint: String,
    /// One permit per connection: a send holds one while it talks to the server.
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    timeout: Duration,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

impl SmtpPool {
    pub(super) fn from_settings(settings: &MailSettings) -> Result<SmtpPool, MailError> {
        let endpoint = redacted_url(&settings.smtp_url);
        let url = url::Url::parse(&settings.smtp_url)
            .map_err(|e| MailError::SmtpUrl(format!("{endpoint:?} does not parse: {e}")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| MailError::SmtpUrl(format!("{endpoint} names no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let starttls = |required: bool| {
            TlsParameters::new(host.clone())
                .map(|params| Security::StartTls { required, params })
                .map_err(|e| MailError::SmtpUrl(format!("{endpoint}: {e}")))
        };
        // lettre's URL form, its default ports included.
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (starttls(true)?, 587),
            ("smtp", Some("opportunistic")) => (starttls(false)?, 587),
            ("smtps", None) => (implicit_tls(&host, &endpoint)?, 465),
            (scheme, tls) => {
                return Err(MailError::SmtpUrl(format!(
                    "{endpoint}: scheme {scheme:?} with tls={tls:?} is not one of smtp://HOST, \
                     smtp://HOST?tls=required, smtp://HOST?tls=opportunistic, smtps://HOST"
                )));
            }
        };
        let hello = match url.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_owned()),
        };
        Ok(SmtpPool {
            server: Server {
                host,
                port: url.port().unwrap_or(default_port),
                security,
                hello,
                credentials: credentials(&url, settings, &endpoint)?,
            },
            endpoint,
            permits: Semaphore::new(SMTP_CONNECTIONS),
            idle: Mutex::new(Vec::new()),
            timeout: settings.send_timeout,
        })
    }

    /// `smtp://host:port`, without credentials.
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one message once. Waiting for a free connection does not count against the
    /// timeout; everything after it does.
    pub(super) async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| self.transient("the connection pool is closed"))?;
        match tokio::time::timeout(self.timeout, self.exchange(envelope, message)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(self.transient(&self.no_answer())),
        }
    }

    /// For `check`: a new connection (TLS and login included) that answers NOOP.
    pub(super) async fn check(&self) -> Result<String, MailError> {
        let unreachable = |reason: String| MailError::SmtpUnreachable {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let probe = async {
            let mut conn = self.connect().await?;
            let answers = conn.test_connected().await;
            let _ = conn.quit().await;
            Ok::<_, String>(answers)
        };
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(Ok(true)) => Ok(format!(
                "SMTP server {} answers EHLO and NOOP",
                self.endpoint
            )),
            Ok(Ok(false)) => Err(unreachable("the server did not accept NOOP".into())),
            Ok(Err(reason)) => Err(unreachable(reason)),
            Err(_) => Err(unreachable(self.no_answer())),
        }
    }

    async fn exchange(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let mut conn = self.conn_with_sender(envelope, message).await?;
        let rest = async {
            for to in envelope.to() {
                conn.command(Rcpt::new(to.clone(), vec![])).await?;
            }
            conn.command(Data).await?;
            conn.message(message).await
        };
        match rest.await {
            Ok(_accepted) => {
                self.put_back(conn);
                Ok(())
            }
            Err(e) => {
                conn.abort().await;
                Err(classify(&self.endpoint, &e))
            }
        }
    }

    /// A connection on which the server took this mail's `MAIL FROM`: an idle one if the
    /// server still has it open, else a new one.
    async fn conn_with_sender(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<AsyncSmtpConnection, SendError> {
        if let Some(mut conn) = self.take_idle() {
            match self.mail_from(&mut conn, envelope, message).await {
                Ok(()) => return Ok(conn),
                // Closed while idle; the mail was not taken, so a new connection may send it.
                Err(Refusal::Smtp(e)) if closed_while_idle(&e) => drop(conn),
                Err(refusal) => return Err(self.give_up(conn, refusal).await),
            }
        }
        let mut conn = self
            .connect()
            .await
            .map_err(|reason| self.transient(&reason))?;
        match self.mail_from(&mut conn, envelope, message).await {
            Ok(()) => Ok(conn),
            Err(refusal) => Err(self.give_up(conn, refusal).await),
        }
    }

    async fn mail_from(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), Refusal> {
        let parameters = self.mail_parameters(conn, envelope, message)?;
        conn.command(Mail::new(envelope.from().cloned(), parameters))
            .await
            .map(drop)
            .map_err(Refusal::Smtp)
    }

    /// What `MAIL FROM` must announce (RFC 6531, RFC 6152), or why this server cannot take the
    /// mail at all.
    fn mail_parameters(
        &self,
        conn: &AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Vec<MailParameter>, Refusal> {
        let server = conn.server_info();
        let mut parameters = Vec::new();
        let non_ascii_address = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|address| !<lettre::Address as AsRef<str>>::as_ref(address).is_ascii());
        if non_ascii_address {
            if !server.supports_feature(Extension::SmtpUtfEight) {
                return Err(Refusal::Mail(format!(
                    "SMTP server {}: an address is not ASCII and the server does not offer SMTPUTF8",
                    self.endpoint
                )));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            if !server.supports_feature(Extension::EightBitMime) {
                return Err(Refusal::Mail(format!(
                    "SMTP server {}: the message is not ASCII and the server does not offer 8BITMIME",
                    self.endpoint
                )));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        Ok(parameters)
    }

    async fn give_up(&self, conn: AsyncSmtpConnection, refusal: Refusal) -> SendError {
        match refusal {
            // Nothing was said on the connection: it is as good as before.
            Refusal::Mail(text) => {
                self.put_back(conn);
                SendError::Permanent(text)
            }
            Refusal::Smtp(e) => {
                let mut conn = conn;
                conn.abort().await;
                classify(&self.endpoint, &e)
            }
        }
    }

    /// A connected, greeted, encrypted (as configured) and logged-in connection.
    async fn connect(&self) -> Result<AsyncSmtpConnection, String> {
        let server = &self.server;
        let tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let stream: Box<dyn AsyncTokioStream> = match &server.security {
            Security::Implicit { config, name } => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Box::new(ImplicitTls(tls))
            }
            Security::Plain | Security::StartTls { .. } => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &server.hello)
            .await
            .map_err(|e| e.to_string())?;
        if let Security::StartTls { required, params } = &server.security {
            if conn.can_starttls() {
                conn.starttls(params.clone(), &server.hello)
                    .await
                    .map_err(|e| format!("STARTTLS: {e}"))?;
            } else if *required {
                let _ = conn.quit().await;
                return Err(
                    "the server does not offer STARTTLS, and [mail] smtp_url says tls=required"
                        .into(),
                );
            }
        }
        if let Some(credentials) = &server.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|e| {
                    format!(
                        "{e} (the server refused our login: check the user in [mail] smtp_url \
                         and SMTP_PASSWORD)"
                    )
                })?;
        }
        Ok(conn)
    }

    /// The most recently used idle connection that is not too old; older ones are closed.
    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(Idle { conn, since }) = idle.pop() {
            if since.elapsed() < IDLE_LIMIT {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < SMTP_CONNECTIONS {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    fn transient(&self, reason: &str) -> SendError {
        SendError::Transient(format!("SMTP server {}: {reason}", self.endpoint))
    }

    fn no_answer(&self) -> String {
        format!(
            "no answer within {}",
            humantime::format_duration(self.timeout)
        )
    }
}

/// Why `MAIL FROM` did not go through.
enum Refusal {
    /// We did not send it: this server cannot take this mail (the text says why).
    Mail(String),
    /// The server's answer, or the connection's failure.
    Smtp(SmtpError),
}

/// A reused connection that fails its first command with no reply, or with 421 (the server is
/// closing the channel), was closed by the server while it sat in the pool.
fn closed_while_idle(e: &SmtpError) -> bool {
    match e.status() {
        None => !e.is_client(),
        Some(code) => u16::from(code) == 421,
    }
}

/// lettre's errors during a mail to ours. Permanent means "this mail will never be taken
/// here": a 5xx reply about the mail. Problems of the whole server or our login (refused
/// connection, 4xx, timeouts, TLS, 5xx to AUTH) are transient: fixing them makes every
/// waiting mail go, so no mail should be given up for them.
fn classify(endpoint: &str, e: &SmtpError) -> SendError {
    let text = format!("SMTP server {endpoint}: {e}");
    if is_about_this_mail(e.status()) {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

fn is_about_this_mail(code: Option<Code>) -> bool {
    // x3z replies are RFC 4954's authentication ones (530, 534, 535, 538).
    code.is_some_and(|code| {
        code.severity == Severity::PermanentNegativeCompletion
            && code.category != Category::Unspecified3
    })
}

/// The user and password for AUTH: the user from the URL, the password from it or (better)
/// from `SMTP_PASSWORD` / the `smtp-password` credential — not both.
fn credentials(
    url: &url::Url,
    settings: &MailSettings,
    endpoint: &str,
) -> Result<Option<Credentials>, MailError> {
    let password = match (url.password(), &settings.smtp_password) {
        (Some(_), Some(_)) => {
            return Err(MailError::SmtpUrl(
                "has a password and SMTP_PASSWORD/smtp-password is set too: keep only the secret"
                    .into(),
            ));
        }
        (Some(in_url), None) => percent_decode(in_url),
        (None, Some(secret)) => secret.expose().to_owned(),
        (None, None) => return Ok(None),
    };
    if url.username().is_empty() {
        return Err(MailError::SmtpUrl(format!(
            "{endpoint} names no user, but an SMTP password is set: use smtp://USER@host…"
        )));
    }
    Ok(Some(Credentials::new(
        percent_decode(url.username()),
        password,
    )))
}

fn implicit_tls(host: &str, endpoint: &str) -> Result<Security, MailError> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| MailError::SmtpUrl(format!("{endpoint}: {e}")))?;
    let config = rustls::ClientConfig::with_platform_verifier()
        .map_err(|e| MailError::SmtpUrl(format!("{endpoint}: TLS set-up: {e}")))?;
    Ok(Security::Implicit {
        config: Arc::new(config),
        name,
    })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A TLS stream from the first byte (`smtps://`), in the shape lettre takes a stream in.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SecretText;
    use crate::mail::TransportKind;
    use lettre::transport::smtp::response::Detail;
    use std::num::NonZeroU32;

    fn settings(url: &str, password: Option<&str>) -> MailSettings {
        MailSettings {
            transport: TransportKind::Smtp,
            smtp_url: url.into(),
            smtp_password: password.map(SecretText::new),
            file_dir: "outbox".into(),
            messages_per_minute: NonZeroU32::new(10).unwrap(),
            send_timeout: Duration::from_secs(5),
        }
    }

    fn pool(url: &str) -> SmtpPool {
        SmtpPool::from_settings(&settings(url, None)).unwrap()
    }

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
    fn the_url_forms_and_their_default_ports() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cases = [
            ("smtp://mail.example.com", 25),
            ("smtp://mail.example.com?tls=required", 587),
            ("smtp://mail.example.com?tls=opportunistic", 587),
            ("smtps://mail.example.com", 465),
            ("smtp://mail.example.com:2525", 2525),
        ];
        for (url, port) in cases {
            let pool = pool(url);
            assert_eq!(pool.server.port, port, "{url}");
            assert_eq!(pool.server.host, "mail.example.com", "{url}");
        }
        assert!(matches!(
            pool("smtp://h?tls=required").server.security,
            Security::StartTls { required: true, .. }
        ));
        assert!(matches!(
            pool("smtp://h?tls=opportunistic").server.security,
            Security::StartTls {
                required: false,
                ..
            }
        ));
        assert!(matches!(
            pool("smtps://h").server.security,
            Security::Implicit { .. }
        ));
        assert!(matches!(pool("smtp://h").server.security, Security::Plain));
        assert!(matches!(
            pool("smtp://h/relay.example.org").server.hello,
            ClientId::Domain(ref name) if name == "relay.example.org"
        ));
    }

    #[test]
    fn bad_urls_are_refused_naming_the_key() {
        for url in [
            "imap://mail.example.com",
            "smtp://mail.example.com?tls=sometimes",
            "smtp://",
            "not a url",
        ] {
            let err = SmtpPool::from_settings(&settings(url, None))
                .err()
                .unwrap_or_else(|| panic!("{url} was taken"));
            assert!(err.to_string().starts_with("[mail] smtp_url"), "{err}");
        }
    }

    #[test]
    fn passwords_come_from_one_place_and_need_a_user() {
        let both = SmtpPool::from_settings(&settings("smtp://bob:pw@h", Some("s3cret")));
        assert!(
            both.err()
                .unwrap()
                .to_string()
                .contains("keep only the secret")
        );
        let no_user = SmtpPool::from_settings(&settings("smtp://h", Some("s3cret")));
        assert!(no_user.err().unwrap().to_string().contains("names no user"));
        assert!(pool("smtp://bob@h").server.credentials.is_none());
        assert!(
            SmtpPool::from_settings(&settings("smtp://bob%40example.com@h", Some("s3cret")))
                .unwrap()
                .server
                .credentials
                .is_some()
        );
    }

    #[test]
    fn user_names_are_percent_decoded() {
        assert_eq!(percent_decode("bob%40example.com"), "bob@example.com");
        assert_eq!(percent_decode("a+b"), "a+b");
    }

    #[test]
    fn only_replies_about_the_mail_are_permanent() {
        let code = |severity, category| Some(Code::new(severity, category, Detail::Zero));
        let perm = Severity::PermanentNegativeCompletion;
        let temp = Severity::TransientNegativeCompletion;
        assert!(is_about_this_mail(code(perm, Category::MailSystem))); // 550 unknown user
        assert!(is_about_this_mail(code(perm, Category::Syntax))); // 501 bad address
        assert!(!is_about_this_mail(code(perm, Category::Unspecified3))); // 535 login refused
        assert!(!is_about_this_mail(code(temp, Category::MailSystem))); // 450 mailbox busy
        assert!(!is_about_this_mail(None)); // the connection failed
    }
}
