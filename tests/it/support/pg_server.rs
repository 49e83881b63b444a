//! A throw-away PostgreSQL server on loopback, shared by the tests (`support/postgres.rs`, one
//! per test process) and the bench (`benches/pipeline.rs`, one per run) through `#[path]`.
//!
//! The server runs under a watchdog shell whose stdin is a pipe this process holds the other
//! end of: when this process ends in any way (normal exit, panic, Ctrl-C, kill -9) the kernel
//! closes that end, the watchdog reads EOF, stops the server (fast shutdown) and deletes its
//! folder. [`Server::stop`] (and dropping the [`Server`]) closes the pipe and waits for that.

use std::ffi::CString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

/// Where Debian's `postgresql` package puts the server binaries: `<here>/<major>/bin`.
pub const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// The superuser initdb makes; its loopback connections are trusted, so it needs no password.
const SUPERUSER: &str = "postgres";
/// The system user the package creates, which runs the server when we run as root (initdb
/// and postgres refuse to run as root).
const SYSTEM_USER: &str = "postgres";
/// Loopback logins are trusted, except for the members of this role (which no one creates
/// but a test that wants one): they must give their password (scram-sha-256).
pub const PASSWORD_GROUP: &str = "password_logins";
/// On a server with [`Tls`], the members of this role (likewise) must log in over TLS with a
/// client certificate from [`Tls::client_ca`] whose common name is the role's name.
pub const CERTIFICATE_GROUP: &str = "certificate_logins";

/// What a server with TLS on is given, in PEM.
pub struct Tls<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    /// The CA whose client certificates the server accepts.
    pub client_ca: &'a str,
}
/// How often a bind race on the freshly picked port is retried with another port.
const PORT_ATTEMPTS: usize = 3;
/// How long initdb and the server's start may take.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A fresh, empty database of its own on a [`Server`].
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// `postgres://postgres@127.0.0.1:<port>/<name>`
    pub url: String,
    pub name: String,
}

/// A running server; stopped when dropped.
pub struct Server {
    port: u16,
    /// The watchdog; taking it closes its stdin, which stops the server.
    watchdog: Mutex<Option<Child>>,
    databases: AtomicU64,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who runs initdb and the server: ourselves, or the package's system user when we are root.
#[derive(Clone, Copy)]
struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    fn find() -> RunAs {
        // SAFETY: geteuid cannot fail and touches no memory of ours.
        if unsafe { libc::geteuid() } != 0 {
            return RunAs { ids: None };
        }
        let name = CString::new(SYSTEM_USER).expect("no NUL");
        // SAFETY: getpwnam returns NULL or a pointer to a static record, read at once here;
        // nothing else in the tests looks users up concurrently.
        let record = unsafe { libc::getpwnam(name.as_ptr()) };
        assert!(
            !record.is_null(),
            "running as root, and there is no `{SYSTEM_USER}` system user to run PostgreSQL as \
             (Debian's postgresql package creates it)"
        );
        // SAFETY: checked non-NULL above.
        let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
        RunAs {
            ids: Some((uid, gid)),
        }
    }

    fn command(self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Hands `path` to the server's user.
    fn own(self, path: &Path) {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

/// The newest `<major>/bin` holding initdb and postgres.
fn server_binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_PG_ROOT)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The watchdog shell: runs initdb, puts `$PG_TEST_HBA`'s lines first in pg_hba.conf, starts
/// the server as its child, then waits for EOF on stdin (this process gone), stops the server
/// and removes the folder. Arguments: the folder, initdb, the data folder, then the server's
/// command line.
const WATCHDOG: &str = r#"
dir=$1 initdb=$2 data=$3; shift 3
if "$initdb" --pgdata="$data" --username="$PG_TEST_SUPERUSER" --auth=trust --encoding=UTF8 --locale=C \
    --no-sync --no-instructions >>"$dir/server.log" 2>&1; then
  { printf '%s\n' "$PG_TEST_HBA"; cat "$data/pg_hba.conf"; } \
    >"$data/pg_hba.first" && mv "$data/pg_hba.first" "$data/pg_hba.conf"
  "$@" -D "$data" </dev/null >>"$dir/server.log" 2>&1 &
  server=$!
else
  echo "FATAL:  initdb failed" >>"$dir/server.log"
fi
read -r _ || true
[ -n "${server-}" ] && kill -INT "$server" 2>/dev/null && wait "$server"
rm -rf "$dir"
"#;

impl Server {
    /// initdb into a fresh folder under `parent` and the server on a free loopback port, with
    /// TLS on when `tls` is given; `None` when PostgreSQL is not installed, a panic with its log
    /// when it does not start.
    pub fn start(parent: &Path, tls: Option<&Tls<'_>>) -> Option<Server> {
        let bin = server_binaries()?;
        let began = Instant::now();
        let run_as = RunAs::find();
        for attempt in 1..=PORT_ATTEMPTS {
            match Server::launch(parent, &bin, run_as, tls) {
                Ok(server) => {
                    eprintln!(
                        "PostgreSQL from {} on 127.0.0.1:{} ready in {} ms",
                        bin.display(),
                        server.port,
                        began.elapsed().as_millis()
                    );
                    return Some(server);
                }
                // Another test took the port between our check and the server's bind.
                Err(log)
                    if attempt < PORT_ATTEMPTS
                        && log.contains("could not create any TCP/IP sockets") => {}
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// initdb into a fresh folder, then the server under its watchdog on a free port;
    /// `Err(log)` when it does not come up (the watchdog has cleaned up by then).
    fn launch(
        parent: &Path,
        bin: &Path,
        run_as: RunAs,
        tls: Option<&Tls<'_>>,
    ) -> Result<Server, String> {
        let dir = fresh_folder(parent, run_as);
        let data = dir.join("data");
        let mut hba = vec![format!(
            "host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256"
        )];
        let mut tls_settings = Vec::new();
        if let Some(tls) = tls {
            for (name, pem, setting) in [
                ("server.crt", tls.cert, "ssl_cert_file"),
                ("server.key", tls.key, "ssl_key_file"),
                ("client-ca.crt", tls.client_ca, "ssl_ca_file"),
            ] {
                let path = dir.join(name);
                fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
                // The server refuses a key that others may read.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
                run_as.own(&path);
                tls_settings.extend(["-c".to_owned(), format!("{setting}={}", path.display())]);
            }
            tls_settings.extend(["-c".to_owned(), "ssl=on".to_owned()]);
            hba.push(format!(
                "hostssl all +{CERTIFICATE_GROUP} 127.0.0.1/32 cert"
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind loopback port 0")
            .port();
        let watchdog = run_as
            .command("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("pg-test-watchdog")
            .arg(&dir)
            .arg(bin.join("initdb"))
            .arg(&data)
            .env("PG_TEST_SUPERUSER", SUPERUSER)
            .env("PG_TEST_HBA", hba.join("\n"))
            .arg(bin.join("postgres"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Throw-away data: no crash safety needed, only speed.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ])
            .args(&tls_settings)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C reaches the tests, and the watchdog sees EOF.
            .process_group(0)
            .spawn()
            .expect("sh starts the watchdog");
        let server = Server {
            port,
            watchdog: Mutex::new(Some(watchdog)),
            databases: AtomicU64::new(0),
        };
        match server.wait_ready(bin, &dir) {
            Ok(()) => Ok(server),
            Err(log) => {
                server.stop();
                Err(log)
            }
        }
    }

    /// Until the server accepts connections; `Err(log)` when it gave up instead.
    fn wait_ready(&self, bin: &Path, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_PATIENCE;
        let log = || fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        loop {
            // pg_isready exits 0 only once the server accepts connections.
            let ready = Command::new(bin.join("pg_isready"))
                .args(["--host=127.0.0.1", "--quiet", "--timeout=1"])
                .arg(format!("--port={}", self.port))
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            let text = log();
            if text.lines().any(gave_up) || Instant::now() > deadline {
                return Err(text);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the watchdog's stdin and waits until it has stopped the server (and removed its
    /// folder); a second call does nothing.
    pub fn stop(&self) {
        let taken = self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut watchdog) = taken {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }

    /// The process group of the watchdog, the server and every backend it forks.
    pub fn process_group(&self) -> Option<u32> {
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watchdog.as_ref().map(Child::id)
    }

    /// A new, empty database of its own.
    pub async fn create_database(&self) -> TestDatabase {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("it_{n}");
        let base = format!("postgres://{SUPERUSER}@127.0.0.1:{}", self.port);
        let mut admin = PgConnection::connect(&format!("{base}/postgres"))
            .await
            .expect("connect to the test server");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        admin.close().await.ok();
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

/// Whether a server log line says it will not come up. Our own pg_isready probes make the
/// server log "FATAL: the database system is starting up" while it starts; that one is not.
fn gave_up(line: &str) -> bool {
    line.contains("FATAL:") && !line.contains("starting up")
}

/// `<parent>/<pid>-<nanos>`, empty and owned by whoever runs the server. When that is the
/// system user, `parent` is sticky and world-writable (like /tmp) so its watchdog
/// may remove the folder.
fn fresh_folder(parent: &Path, run_as: RunAs) -> PathBuf {
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    if run_as.ids.is_some() {
        fs::set_permissions(parent, fs::Permissions::from_mode(0o1777))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", parent.display()));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .subsec_nanos();
    let dir = parent.join(format!("{}-{nanos}", std::process::id()));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod the folder");
    run_as.own(&dir);
    dir
}
