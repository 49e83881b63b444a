//! Turns Unix signals into the daemon's two requests: SIGTERM/SIGINT cancel the shutdown token,
//! SIGHUP bumps a reload counter that the daemon watches.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM (systemd stop) or SIGINT (Ctrl-C): finish in-flight work and exit.
    Shutdown,
    /// SIGHUP (`systemctl reload`): read config and templates again.
    Reload,
}

/// The installed handlers. While they exist, these signals no longer kill the process.
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

/// The receiving side of reload requests: `changed().await` wakes once per burst of SIGHUPs
/// (several signals before the daemon looks are one reload; the value counts them).
pub type ReloadRequests = watch::Receiver<u64>;

impl Signals {
    /// Installs the handlers; must run inside a tokio runtime. Install before announcing
    /// readiness, so an early `systemctl stop` is not lost.
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next request, or `None` once the runtime is shutting down.
    pub async fn recv(&mut self) -> Option<Request> {
        let (name, request) = tokio::select! {
            got = self.terminate.recv() => (got.map(|()| "SIGTERM"), Request::Shutdown),
            got = self.interrupt.recv() => (got.map(|()| "SIGINT"), Request::Shutdown),
            got = self.hangup.recv() => (got.map(|()| "SIGHUP"), Request::Reload),
        };
        let name = name?;
        tracing::info!(signal = name, ?request, "signal received");
        Some(request)
    }

    /// A reload channel for `dispatch`, starting at zero requests.
    pub fn reload_channel() -> (watch::Sender<u64>, ReloadRequests) {
        watch::channel(0)
    }

    /// Routes signals until shutdown: a shutdown signal cancels `shutdown` and returns; SIGHUP
    /// bumps `reloads`. Also returns when `shutdown` is cancelled by someone else.
    pub async fn dispatch(mut self, shutdown: CancellationToken, reloads: watch::Sender<u64>) {
        loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => return,
                request = self.recv() => request,
            };
            match request {
                Some(Request::Reload) => reloads.send_modify(|n| *n += 1),
                Some(Request::Shutdown) | None => {
                    shutdown.cancel();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn raise(signal: libc::c_int) {
        // SAFETY: kill(2) with our own pid and a signal whose handler tokio has installed.
        let rc = unsafe { libc::kill(libc::getpid(), signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    const PATIENCE: Duration = Duration::from_secs(10);

    // One test for all signals: they go to the whole test process, so two tests raising them
    // in parallel would see each other's.
    #[tokio::test]
    async fn hangup_requests_a_reload_and_term_or_int_a_shutdown() {
        let signals = Signals::install().expect("install");
        let shutdown = CancellationToken::new();
        let (reload_tx, mut reloads) = Signals::reload_channel();
        let task = tokio::spawn(signals.dispatch(shutdown.clone(), reload_tx));

        raise(libc::SIGHUP);
        tokio::time::timeout(PATIENCE, reloads.changed())
            .await
            .expect("reload requested")
            .expect("dispatcher alive");
        assert_eq!(*reloads.borrow_and_update(), 1);
        assert!(!shutdown.is_cancelled(), "a reload is not a shutdown");

        raise(libc::SIGINT);
        tokio::time::timeout(PATIENCE, shutdown.cancelled())
            .await
            .expect("SIGINT cancels the shutdown token");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the dispatcher returns after a shutdown")
            .unwrap();

        let signals = Signals::install().expect("install again");
        let shutdown = CancellationToken::new();
        let (reload_tx, _reloads) = Signals::reload_channel();
        let task = tokio::spawn(signals.dispatch(shutdown.clone(), reload_tx));
        raise(libc::SIGTERM);
        tokio::time::timeout(PATIENCE, shutdown.cancelled())
            .await
            .expect("SIGTERM cancels the shutdown token");
        tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn dispatch_returns_when_shutdown_comes_from_elsewhere() {
        let signals = Signals::install().expect("install");
        let shutdown = CancellationToken::new();
        let (reload_tx, _reloads) = Signals::reload_channel();
        let task = tokio::spawn(signals.dispatch(shutdown.clone(), reload_tx));
        shutdown.cancel();
        tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
    }
}
