//! Tells systemd how the daemon is doing (`Type=notify`): ready, status lines, reloading,
//! stopping, and the watchdog keep-alive. Without `NOTIFY_SOCKET` every call does nothing.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Where notifications go. Read from the environment once at start-up (`from_env`), or aimed
/// at a socket of the test's choosing (`to_socket`), so nothing depends on a process-wide
/// variable that tests running in parallel would fight over.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<NotifySocket>,
    watchdog_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NotifySocket {
    Path(PathBuf),
    /// `NOTIFY_SOCKET=@name`: a socket in Linux's abstract namespace.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// `NOTIFY_SOCKET`, and `WATCHDOG_USEC` when `WATCHDOG_PID` is this process, as systemd set them.
    pub fn from_env() -> Notifier {
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec) && usec > 0;
        Notifier::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            watchdog.then(|| Duration::from_micros(usec)),
        )
    }

    fn from_vars(notify_socket: Option<OsString>, watchdog_timeout: Option<Duration>) -> Notifier {
        let socket = notify_socket.filter(|s| !s.is_empty()).map(|s| {
            match s.as_bytes().strip_prefix(b"@") {
                Some(name) => NotifySocket::Abstract(name.to_vec()),
                None => NotifySocket::Path(PathBuf::from(s)),
            }
        });
        // Pings with nowhere to go are not worth a task.
        let watchdog_timeout = watchdog_timeout.filter(|_| socket.is_some());
        Notifier {
            socket,
            watchdog_timeout,
        }
    }

    /// Notifications to the datagram socket at `path`, no watchdog.
    pub fn to_socket(path: impl Into<PathBuf>) -> Notifier {
        Notifier {
            socket: Some(NotifySocket::Path(path.into())),
            watchdog_timeout: None,
        }
    }

    /// A notifier that says nothing (not run by systemd).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// The same notifier with a watchdog timeout, as `WATCHDOG_USEC` would give it.
    pub fn with_watchdog(mut self, timeout: Duration) -> Notifier {
        self.watchdog_timeout = Some(timeout).filter(|t| !t.is_zero());
        self
    }

    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Start-up finished: systemd considers the unit started (and `systemctl start` returns).
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// A one-line status shown by `systemctl status`.
    pub fn status(&self, text: &str) {
        // A newline would start another assignment in the datagram.
        let line = text.replace(['\n', '\r'], " ");
        self.send(&[NotifyState::Status(&line)]);
    }

    /// A reload (SIGHUP) began; call `ready` when it is done.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown began; systemd waits up to `TimeoutStopSec=` for the process to exit.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) advises.
    /// `None` when systemd runs no watchdog for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_timeout.map(|t| t / 2)
    }

    /// Pings `WATCHDOG=1` every `watchdog_interval` until `cancel` is cancelled; returns at once
    /// when there is no watchdog. The pings prove the runtime still schedules tasks, which is
    /// what a hung daemon stops doing.
    pub async fn run_watchdog(self, cancel: CancellationToken) {
        let Some(every) = self.watchdog_interval() else {
            return;
        };
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => self.send(&[NotifyState::Watchdog]),
            }
        }
    }

    /// Failures are logged, never raised: systemd being unreachable must not stop the work.
    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = send_datagram(socket, message.as_bytes()) {
            tracing::warn!(error = %e, "could not notify systemd");
        }
    }
}

fn send_datagram(socket: &NotifySocket, message: &[u8]) -> io::Result<()> {
    let address = match socket {
        NotifySocket::Path(path) => SocketAddr::from_pathname(path)?,
        NotifySocket::Abstract(name) => SocketAddr::from_abstract_name(name)?,
    };
    let sent = UnixDatagram::unbound()?.send_to_addr(message, &address)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound socket standing in for systemd's.
    struct FakeSystemd {
        _dir: tempfile::TempDir,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl FakeSystemd {
        fn new() -> FakeSystemd {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("notify.sock");
            let socket = UnixDatagram::bind(&path).expect("bind");
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            FakeSystemd {
                _dir: dir,
                path,
                socket,
            }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self
                .socket
                .recv(&mut buf)
                .expect("a notification within 10 s");
            String::from_utf8(buf[..n].to_vec()).expect("utf-8")
        }
    }

    #[test]
    fn states_arrive_as_sd_notify_assignments() {
        let systemd = FakeSystemd::new();
        let notifier = Notifier::to_socket(&systemd.path);
        assert!(notifier.is_enabled());
        notifier.ready();
        assert_eq!(systemd.recv(), "READY=1\n");
        notifier.status("provisioning\n3 users");
        assert_eq!(systemd.recv(), "STATUS=provisioning 3 users\n");
        notifier.reloading();
        let reloading = systemd.recv();
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        notifier.stopping();
        assert_eq!(systemd.recv(), "STOPPING=1\n");
    }

    #[test]
    fn without_a_socket_nothing_happens_and_nothing_breaks() {
        let notifier = Notifier::from_vars(None, Some(Duration::from_secs(30)));
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready();
        notifier.status("x");
        notifier.stopping();
        let gone = Notifier::to_socket("/nonexistent/inquiry-mailer/notify.sock");
        gone.ready();
        gone.stopping();
    }

    #[test]
    fn the_environment_forms_are_understood() {
        let path = Notifier::from_vars(Some("/run/systemd/notify".into()), None);
        assert_eq!(
            path.socket,
            Some(NotifySocket::Path("/run/systemd/notify".into()))
        );
        let abs = Notifier::from_vars(Some("@sd-notify".into()), Some(Duration::from_secs(30)));
        assert_eq!(
            abs.socket,
            Some(NotifySocket::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(abs.watchdog_interval(), Some(Duration::from_secs(15)));
        assert!(!Notifier::from_vars(Some("".into()), None).is_enabled());
    }

    #[test]
    fn abstract_sockets_receive_notifications() {
        let name = format!("inquiry-mailer-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Notifier::from_vars(Some(format!("@{name}").into()), None).ready();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("notification");
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[tokio::test]
    async fn the_watchdog_pings_until_cancelled() {
        let systemd = FakeSystemd::new();
        let notifier = Notifier::to_socket(&systemd.path).with_watchdog(Duration::from_millis(40));
        assert_eq!(
            notifier.watchdog_interval(),
            Some(Duration::from_millis(20))
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(notifier.run_watchdog(cancel.clone()));
        let received = tokio::task::spawn_blocking(move || {
            let pings = [systemd.recv(), systemd.recv()];
            (pings, systemd)
        })
        .await
        .unwrap();
        assert_eq!(received.0, ["WATCHDOG=1\n", "WATCHDOG=1\n"]);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the watchdog stops when cancelled")
            .unwrap();
    }

    #[tokio::test]
    async fn without_a_watchdog_the_task_returns_at_once() {
        let systemd = FakeSystemd::new();
        let never_cancelled = CancellationToken::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            Notifier::to_socket(&systemd.path).run_watchdog(never_cancelled),
        )
        .await
        .expect("returns without waiting for cancellation");
    }
}
