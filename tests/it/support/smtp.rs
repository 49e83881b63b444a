//! A real SMTP server for tests: aiosmtpd (PyPI) on a free loopback port, storing what it
//! receives in a Maildir; Python's own `email` package reads the mails back for assertions.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One mail as the server stored it, decoded by Python's `email` package (policy=default).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub raw: String,
    /// The envelope recipients (aiosmtpd's `X-RcptTo`).
    pub rcpt_to: String,
    pub to: String,
    pub from: String,
    pub reply_to: Option<String>,
    pub subject: String,
    pub message_id: String,
    pub date: Option<String>,
    pub content_type: String,
    /// `text/plain` and `text/html` parts, transfer-decoded; None when absent.
    pub text_part: Option<String>,
    pub html_part: Option<String>,
    /// Content types of the direct sub-parts, in order.
    pub part_types: Vec<String>,
}

pub struct SmtpServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    size_limit: Option<usize>,
    tls: Option<Tls>,
    /// When set, the server offers AUTH PLAIN/LOGIN and takes mail only after this login.
    login: Option<(String, String)>,
    child: Option<Child>,
}

/// aiosmtpd's controller with an authenticator: `PORT MAILDIR USER PASSWORD`. AUTH is required
/// before MAIL and offered without TLS (aiosmtpd warns about that; it is loopback).
const LOGIN_SERVER: &str = r#"
import sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult
port, maildir, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def check(server, session, envelope, mechanism, data):
    ok = data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok, handled=False)
Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, authenticator=check,
           auth_required=True, auth_require_tls=False).start()
while True:
    time.sleep(3600)
"#;

/// How a TLS server offers TLS, with a self-signed certificate for `localhost` that no client
/// should trust.
#[derive(Debug, Clone, Copy)]
pub enum Tls {
    /// TLS from the first byte (`smtps://`, aiosmtpd's `--smtpscert`).
    Implicit,
    /// STARTTLS offered after the greeting (aiosmtpd's `--tlscert`).
    StartTls,
}

/// Prints the mails of a Maildir (`maildir DIR`, oldest first) or of files (`files F…`) as JSON.
const READ_MAILS: &str = r#"
import email, email.policy, json, mailbox, sys
def maildir_order(key):
    seconds, rest = key.split(".")[:2]
    return (int(seconds), int(rest[1:].split("P")[0]))
if sys.argv[1] == "maildir":
    box = mailbox.Maildir(sys.argv[2], factory=None, create=False)
    raws = [box.get_bytes(k) for k in sorted(box.keys(), key=maildir_order)]
else:
    raws = [open(f, "rb").read() for f in sys.argv[2:]]
out = []
for raw in raws:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    def body(kind):
        part = msg.get_body(preferencelist=(kind,))
        return None if part is None else part.get_content()
    parts = [p.get_content_type() for p in msg.iter_parts()] if msg.is_multipart() else []
    out.append({
        "raw": raw.decode("utf-8", "replace"),
        "rcpt_to": str(msg.get("X-RcptTo", "")),
        "to": str(msg.get("To", "")),
        "from": str(msg.get("From", "")),
        "reply_to": None if msg.get("Reply-To") is None else str(msg.get("Reply-To")),
        "subject": str(msg.get("Subject", "")),
        "message_id": str(msg.get("Message-ID", "")),
        "date": None if msg.get("Date") is None else str(msg.get("Date")),
        "content_type": msg.get_content_type(),
        "text_part": body("plain"),
        "html_part": body("html"),
        "part_types": parts,
    })
print(json.dumps(out))
"#;

impl SmtpServer {
    pub fn start() -> SmtpServer {
        Self::start_with(None, None, None)
    }

    /// A server that refuses (552) any message over `bytes`: a permanent refusal to test with.
    pub fn start_with_size_limit(bytes: usize) -> SmtpServer {
        Self::start_with(Some(bytes), None, None)
    }

    /// A server speaking TLS with an untrusted (self-signed) certificate.
    pub fn start_with_tls(tls: Tls) -> SmtpServer {
        Self::start_with(None, Some(tls), None)
    }

    /// A server that takes mail only from a client logged in as `user` with `password`.
    pub fn start_with_login(user: &str, password: &str) -> SmtpServer {
        Self::start_with(None, None, Some((user.to_owned(), password.to_owned())))
    }

    fn start_with(
        size_limit: Option<usize>,
        tls: Option<Tls>,
        login: Option<(String, String)>,
    ) -> SmtpServer {
        let mut server = SmtpServer {
            addr: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            size_limit,
            tls,
            login,
            child: None,
        };
        // The port is free when picked but not held: another test may bind it before aiosmtpd
        // does, and then another port is picked.
        for attempt in 1..=PORT_ATTEMPTS {
            match server.try_spawn() {
                Ok(()) => return server,
                Err(log)
                    if attempt < PORT_ATTEMPTS
                        && log.to_lowercase().contains("address already in use") =>
                {
                    server.addr = free_port();
                }
                Err(log) => panic!("aiosmtpd did not start on {}: {log}", server.addr),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT`, the form `[mail] smtp_url` takes.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Kills the server; the port stays ours for [`SmtpServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same Maildir.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.try_spawn() {
            panic!("aiosmtpd did not start again on {}: {log}", self.addr);
        }
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        if !self.maildir().join("new").is_dir() {
            return Vec::new();
        }
        read_mails(
            Command::new(python())
                .args(["-c", READ_MAILS, "maildir"])
                .arg(self.maildir()),
        )
    }

    /// Waits until a mail to `rcpt` has arrived, for up to `within`; fails the test otherwise,
    /// with `log()` (the daemon's stderr, say).
    pub async fn wait_for_mail_to(&self, rcpt: &str, within: Duration, log: impl Fn() -> String) {
        let deadline = Instant::now() + within;
        while !self.messages().iter().any(|m| m.rcpt_to == rcpt) {
            assert!(
                Instant::now() < deadline,
                "no mail to {rcpt} within {within:?}\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) until `n` mails have arrived, then returns them all.
    pub async fn wait_for_messages(&self, n: usize) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.messages();
            if mails.len() >= n || Instant::now() > deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts aiosmtpd and waits until it greets; `Err(log)` when it exits or does not listen.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(python());
        if let Some((user, password)) = &self.login {
            cmd.args(["-c", LOGIN_SERVER, &self.addr.port().to_string()])
                .arg(self.maildir())
                .args([user, password]);
        } else {
            cmd.args(["-m", "aiosmtpd", "-n", "-l", &self.addr.to_string()]);
            if let Some(bytes) = self.size_limit {
                cmd.args(["-s", &bytes.to_string()]);
            }
            if let Some(tls) = self.tls {
                let (cert, key) = self.self_signed_certificate();
                let (cert_flag, key_flag) = match tls {
                    Tls::Implicit => ("--smtpscert", "--smtpskey"),
                    Tls::StartTls => ("--tlscert", "--tlskey"),
                };
                cmd.arg(cert_flag)
                    .arg(cert)
                    .arg(key_flag)
                    .arg(key)
                    .arg("--no-requiretls");
            }
            cmd.args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(self.maildir());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd)");
        self.child = Some(child);
        self.wait_until_ready()
    }

    /// Bounded: the server must greet with 220 within 15 s; `Err` with its log otherwise.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "exited ({status}) before listening: {}",
                    self.log()
                ));
            }
            let ready = match self.tls {
                // The greeting comes inside TLS: listening is all a plain probe can see.
                Some(Tls::Implicit) => TcpStream::connect(self.addr).is_ok(),
                _ => greets(self.addr),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("did not listen within 15 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A certificate and key for `localhost`, made for this server: (cert.pem, key.pem).
    fn self_signed_certificate(&self) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
        let cert = self.dir.path().join("cert.pem");
        let key = self.dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("write cert.pem");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key.pem");
        (cert, key)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn greets(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220")
}

/// How often a bind race on the freshly picked port is retried with another port.
const PORT_ATTEMPTS: usize = 3;

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}

/// Parses `.eml` files the same way as the server's Maildir.
pub fn parse_eml_files(files: &[PathBuf]) -> Vec<ReceivedMail> {
    read_mails(
        Command::new(python())
            .args(["-c", READ_MAILS, "files"])
            .args(files),
    )
}

fn read_mails(cmd: &mut Command) -> Vec<ReceivedMail> {
    let out = cmd.output().expect("run python3 to read mails");
    assert!(
        out.status.success(),
        "reading mails failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("mails as JSON")
}

/// Every `.eml` file of a directory, sorted by name.
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
}

/// The Python that has aiosmtpd: `$TEST_PYTHON` (set by .ci/run to its venv), else `python3`.
pub fn python() -> String {
    std::env::var("TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}
