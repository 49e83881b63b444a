//! `inquiry-mailer run` as systemd runs it: the real binary on a free loopback port, with
//! `NOTIFY_SOCKET` pointing at a datagram socket this test owns, signals, and its stderr kept.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::os::unix::net::UnixDatagram;

use super::stack::Stack;

/// How long anything the daemon is asked to do may take before the test gives up.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A loopback port nobody listens on right now (bound, then freed for the daemon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback port 0")
        .port()
}

/// The config edit that makes the daemon listen on `port`.
pub fn listen_on(port: u16) -> (&'static str, String) {
    (
        "listen = \"127.0.0.1:8080\"",
        format!("listen = \"127.0.0.1:{port}\""),
    )
}

/// One datagram the daemon sent to the notify socket, and when it arrived.
#[derive(Debug, Clone)]
pub struct Notification {
    pub text: String,
    pub at: Instant,
}

impl Notification {
    /// Whether one of its `KEY=value` lines is exactly `line`.
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }
}

/// Stands in for systemd's notify socket: a thread collects every datagram.
struct FakeSystemd {
    _dir: tempfile::TempDir,
    path: PathBuf,
    received: Arc<Mutex<Vec<Notification>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeSystemd {
    fn bind() -> FakeSystemd {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let received: Arc<Mutex<Vec<Notification>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !done.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let at = Instant::now();
                        received.lock().unwrap().push(Notification { text, at });
                    }
                }
            })
        };
        FakeSystemd {
            _dir: dir,
            path,
            received,
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running `inquiry-mailer run`. Dropping it kills the process if it is still running.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    pub spawned_at: Instant,
    systemd: FakeSystemd,
    log: PathBuf,
    http: reqwest::Client,
    exit: Option<ExitStatus>,
}

/// An HTTP answer from the daemon.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

impl Daemon {
    /// Starts `run` for `stack` (whose config must listen on `port`), with `env` added.
    pub fn start(stack: &Stack, port: u16, env: &[(&str, &str)]) -> Daemon {
        let systemd = FakeSystemd::bind();
        let log = stack.app.path().join("daemon.stderr");
        let mut cmd = stack.command(&["run"]);
        cmd.env("NOTIFY_SOCKET", &systemd.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let spawned_at = Instant::now();
        let child = cmd.spawn().expect("spawn inquiry-mailer run");
        let _ = rustls::crypto::ring::default_provider().install_default();
        Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            spawned_at,
            systemd,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            exit: None,
        }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every notification so far, oldest first.
    pub fn notifications(&self) -> Vec<Notification> {
        self.systemd.received.lock().unwrap().clone()
    }

    /// Waits for the first notification at index `from` or later that has the line `line`;
    /// returns its index. Fails with the daemon's stderr when none comes or the daemon exits.
    pub async fn wait_for_note(&mut self, from: usize, line: &str) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(i) = self
                .notifications()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, n)| n.has(line))
                .map(|(i, _)| i)
            {
                return i;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "daemon exited ({status}) before sending {line:?}; notifications {:?}\nstderr:\n{}",
                    self.notifications(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} within {PATIENCE:?}; notifications {:?}\nstderr:\n{}",
                self.notifications(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for READY=1 and returns how long after spawning it arrived.
    pub async fn wait_ready(&mut self) -> Duration {
        let i = self.wait_for_note(0, "READY=1").await;
        self.notifications()[i].at - self.spawned_at
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> Answer {
        let r = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nstderr:\n{}", self.stderr()));
        Self::read(r).await
    }

    /// POSTs `body` to `/webhooks/persona` with the given `Persona-Signature` (none if `None`).
    pub async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> Answer {
        let mut req = self
            .http
            .post(self.url("/webhooks/persona"))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("Persona-Signature", s);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST webhook: {e}\nstderr:\n{}", self.stderr()));
        Self::read(r).await
    }

    async fn read(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = r.text().await.expect("body");
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// Polls `/metrics` until `pred` holds for its text; returns that text.
    pub async fn wait_for_metrics(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.get("/metrics").await.body;
            if pred(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics never showed {what} within {PATIENCE:?}:\n{text}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` (libc::SIGHUP, SIGTERM, …) to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits (bounded) for the daemon to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE * 2;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running after {:?}\nstderr:\n{}",
                PATIENCE * 2,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        if self.try_exit().is_none() {
            self.signal(libc::SIGTERM);
        }
        self.wait_exit().await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `value` of the Prometheus sample `name{labels}` (labels as the exporter writes them).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Polls `status --json` (the real binary) until `pred` holds for its output.
pub async fn wait_for_status(
    stack: &Stack,
    args: &[&str],
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    let mut full = vec!["status", "--json"];
    full.extend_from_slice(args);
    loop {
        let run = stack.run(&full);
        run.assert_code(0);
        let json = run.json();
        if pred(&json) {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {what} within {PATIENCE:?}: {json:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
