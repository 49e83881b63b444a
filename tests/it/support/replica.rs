//! One `inquiry-mailer run` (or `once`) process on a [`Stack`]'s database, beside others: its
//! own config (its own listen port, and whatever else a test gives it) and its own stderr file,
//! so several replicas can share one PostgreSQL database in one test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::app::BIN;
use super::daemon::free_port;
use super::sim::API_KEY;
use super::stack::Stack;

/// One process of the binary on the stack's database, with a config of its own and its own
/// stderr file. Dropped, it is killed.
pub struct Replica {
    child: Child,
    pub name: String,
    log: PathBuf,
}

impl Replica {
    pub fn start(stack: &Stack, name: &str) -> Replica {
        Self::spawn(stack, name, &["run"])
    }

    /// The binary with `args` (e.g. `once --job provision`) on the stack's database.
    pub fn spawn(stack: &Stack, name: &str, args: &[&str]) -> Replica {
        Self::start_with(stack, name, args, &[])
    }

    /// [`Replica::spawn`] with this replica's config changed further: each `(prefix, line)`
    /// replaces the first line starting with `prefix` (e.g. its own `url = ` under
    /// `[database]`, or the Persona base URL), after the listen port was given its own.
    pub fn start_with(
        stack: &Stack,
        name: &str,
        args: &[&str],
        lines: &[(&str, String)],
    ) -> Replica {
        let shipped = std::fs::read_to_string(&stack.app.config).expect("stack config");
        let port = free_port();
        let mut text = replace_line(
            &shipped,
            "listen = ",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        for (prefix, line) in lines {
            text = replace_line(&text, prefix, line);
        }
        let config = stack.app.path().join(format!("config-{name}.toml"));
        std::fs::write(&config, text).expect("write replica config");
        let log = stack.app.path().join(format!("{name}.stderr"));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("PERSONA_API_KEY", API_KEY)
            // The scheduler's debug line tells a tick another replica took.
            .env(
                "RUST_LOG",
                "info,inquiry_mailer::daemon::scheduler=debug,inquiry_mailer::persona=debug",
            )
            .env_remove("NOTIFY_SOCKET")
            .env_remove("INQUIRY_MAILER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("stderr file"))
            .spawn()
            .expect("spawn inquiry-mailer");
        Replica {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// The file the process's stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) and returns at once.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child by its pid.
        let sent = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            sent,
            0,
            "signal {sig} to {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// kill -9: no shutdown, leases left as they are.
    pub fn kill(&mut self) {
        // SAFETY: signals our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signals our own child by its pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not stop; stderr:\n{}", self.name, self.stderr());
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` with the first line starting with `prefix` replaced by `line`.
pub fn replace_line(text: &str, prefix: &str, line: &str) -> String {
    let mut done = false;
    let out: Vec<&str> = text
        .lines()
        .map(|l| {
            if !done && l.starts_with(prefix) {
                done = true;
                line
            } else {
                l
            }
        })
        .collect();
    assert!(done, "config has no line starting with {prefix:?}");
    out.join("\n") + "\n"
}
