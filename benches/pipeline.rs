//! Benchmarks of the whole pipeline, run by hand (never in CI, never as timed assertions):
//!
//! ```text
//! cargo bench --bench pipeline -- throughput 1000     # users/s and CPU/user beside the SMTP sink's ceiling
//! cargo bench --bench pipeline -- rss 1000            # peak RSS of `once` over 1,000 pending users
//! cargo bench --bench pipeline -- rss 1000000 120     # … over a million, stopped (SIGTERM) after 120 s
//! cargo bench --bench pipeline -- rate                # 1,500 users at 600/min against 300 ms latency
//! cargo bench --bench pipeline -- refresh 10000       # Persona calls of a refresh with nothing due
//! cargo bench --bench pipeline -- ready 10            # `run` start to READY=1, median of 10
//! ```
//!
//! The daemon runs as the release binary (`once` or `run`, a child process, so its CPU time and
//! peak RSS are its own: read with `wait4`), against the bundled simulator in this process and
//! aiosmtpd's discarding `Sink` handler on loopback (Python from `$TEST_PYTHON`, else the venv
//! `.ci/run` makes under `target/`). `BENCH_WRAP="perf record -g -o /tmp/perf.data"` runs each
//! `once` under a profiler.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use inquiry_mailer::clock::Clock;
use inquiry_mailer::domain::EnvironmentId;
use lettre::Message;
use lettre::message::MultiPart;
use persona_sim::{self as sim, SimConfig, SimHandle};

const API_KEY: &str = "bench-key-for-the-simulator-only";
const ENVIRONMENT: &str = "env_benchmarkenvironment0001";
const BIN: &str = env!("CARGO_BIN_EXE_inquiry-mailer");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The connections the daemon's SMTP pool keeps (src/mail/transport.rs), so the clients the
/// daemon is measured against get the same.
const SMTP_CONNECTIONS: u32 = 4;

fn main() -> anyhow::Result<()> {
    // `cargo bench` adds `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        args.get(i)
            .map(|s| s.replace('_', "").parse().context("a number"))
            .transpose()
            .map(|n| n.unwrap_or(default))
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("throughput") => rt.block_on(throughput(number(1, 1000)?)),
        Some("rss") => rt.block_on(rss(number(1, 1000)?, number(2, 0)?)),
        Some("rate") => rt.block_on(rate(number(1, 1500)?)),
        Some("refresh") => rt.block_on(refresh(number(1, 10_000)?)),
        Some("ready") => rt.block_on(ready(number(1, 10)?)),
        _ => {
            eprintln!(
                "usage: cargo bench --bench pipeline -- \
                 throughput [N] | rss [N] [SECONDS] | rate [N] | refresh [N] | ready [TIMES]"
            );
            Ok(())
        }
    }
}

/// Provisioning throughput and CPU per user, beside the sink's own ceiling: the rate of the
/// least a client can do against it (see [`bare_exchange`]), measured before and after.
async fn throughput(users: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let sim = start_sim(|_| {}).await?;
    let (before, bare_cpu) = cpu_of(bare_exchange(&sink, users)).await?;
    let work = Workdir::new(&sim, &sink.url(), &[])?;
    let seeded = work.seed(users).await?;
    let cpu_before = own_cpu();
    let run = work.once("provision", None)?;
    let sim_cpu = own_cpu() - cpu_before;
    let (after, _) = cpu_of(bare_exchange(&sink, users)).await?;
    let sent = count_sent(&work)?;
    anyhow::ensure!(
        sent == users,
        "only {sent} of {users} users were mailed: {}",
        run.stderr_tail
    );
    let per_user = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / users as f64;
    let rate = users as f64 / run.wall.as_secs_f64();
    let sink_ceiling = (before + after) / 2.0;
    println!("users                 {users} (seeded in {:.2?})", seeded);
    println!(
        "SMTP sink ceiling     {before:.0} / {after:.0} mails/s before / after (bare client, {SMTP_CONNECTIONS} connections)"
    );
    println!(
        "provisioning          {rate:.0} users/s ({:.2?} wall) = {:.0} % of the ceiling",
        run.wall,
        100.0 * rate / sink_ceiling
    );
    println!(
        "CPU per user          {:.3} ms ({:.2?} user + {:.2?} system, the daemon process only)",
        per_user(run.cpu()),
        run.user,
        run.system
    );
    println!(
        "bare client CPU       {:.3} ms per mail (MAIL, RCPT, DATA, body and nothing else: the floor under any client of this sink)",
        per_user(bare_cpu)
    );
    println!(
        "simulator CPU         {:.3} ms per user (this process while the daemon ran)",
        per_user(sim_cpu)
    );
    println!(
        "Persona calls         {} (POST /inquiries)",
        sim.count_requests("POST", "/inquiries")
    );
    println!("peak RSS              {:.1} MiB", run.max_rss_mib());
    sim.shutdown().await;
    Ok(())
}

/// What `work` returns, and the CPU this process spent while it ran.
async fn cpu_of<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, Duration)> {
    let before = own_cpu();
    let out = work.await?;
    Ok((out, own_cpu() - before))
}

/// Peak RSS of `once` over `users` pending users; with `seconds` > 0 it is stopped with
/// SIGTERM after that long (a million users would take hours to mail).
async fn rss(users: u64, seconds: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let sim = start_sim(|_| {}).await?;
    let work = Workdir::new(&sim, &sink.url(), &[])?;
    let seeded = work.seed(users).await?;
    let stop_after = (seconds > 0).then(|| Duration::from_secs(seconds));
    let run = work.once("provision", stop_after)?;
    let sent = count_sent(&work)?;
    println!(
        "users                 {users} pending (seeded in one transaction in {seeded:.2?}; database {:.1} MiB)",
        std::fs::metadata(work.db())?.len() as f64 / 1048576.0
    );
    println!(
        "run                   {:.2?}{}, {sent} mailed, exit {}",
        run.wall,
        if stop_after.is_some() {
            " then SIGTERM"
        } else {
            ""
        },
        run.status
    );
    let (discovered, seconds) = work.discovery().await?;
    println!(
        "discovery             {discovered} users seen, a page at a time between claims, over {seconds:.1}s"
    );
    println!("peak RSS              {:.1} MiB", run.max_rss_mib());
    sim.shutdown().await;
    Ok(())
}

/// Rate-budget use: 600/min configured, the simulator enforcing 600/min with 300 ms latency.
async fn rate(users: u64) -> anyhow::Result<()> {
    const BUDGET: u32 = 600;
    let sink = Sink::start()?;
    let sim = start_sim(|c| {
        c.rate_limit_per_minute = Some(BUDGET);
        c.latency = Duration::from_millis(300);
    })
    .await?;
    let rpm = format!("requests_per_minute = {BUDGET}");
    let work = Workdir::new(&sim, &sink.url(), &[("requests_per_minute", &rpm)])?;
    work.seed(users).await?;
    let run = work.once("provision", None)?;
    let requests = sim.requests();
    let too_many = requests.iter().filter(|r| r.status == Some(429)).count();
    // The simulator records API calls only (not its control surface), each with its answer.
    let api = &requests;
    let sent = count_sent(&work)?;
    let minutes = run.wall.as_secs_f64() / 60.0;
    let per_minute = api.len() as f64 / minutes;
    println!(
        "users                 {users}, {sent} mailed in {:.1?}",
        run.wall
    );
    println!(
        "Persona calls         {} = {per_minute:.1}/min = {:.1} % of the {BUDGET}/min budget",
        api.len(),
        100.0 * per_minute / f64::from(BUDGET)
    );
    println!("429 answers           {too_many}");
    sim.shutdown().await;
    Ok(())
}

/// Persona calls of one refresh over `live` inquiries of which none is due.
async fn refresh(live: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let sim = start_sim(|_| {}).await?;
    let work = Workdir::new(&sim, &sink.url(), &[])?;
    work.seed(live).await?;
    let provisioned = work.once("provision", None)?;
    anyhow::ensure!(
        count_sent(&work)? == live,
        "provisioning failed: {}",
        provisioned.stderr_tail
    );
    sim.clear_requests();
    let run = work.once("refresh", None)?;
    let requests = sim.requests();
    let by = |method: &str, route: &str| sim.count_requests(method, route);
    println!("live inquiries        {live}, nothing due");
    println!(
        "refresh run           {:.2?} wall, {:.2?} CPU",
        run.wall,
        run.cpu()
    );
    println!(
        "Persona calls         {} = {} list pages + {} template + {} retrieve + {} resume + {} create",
        requests.len(),
        by("GET", "/inquiries"),
        by("GET", "/inquiry-templates/{inquiry-template-id}"),
        by("GET", "/inquiries/{inquiry-id}"),
        by("POST", "/inquiries/{inquiry-id}/resume"),
        by("POST", "/inquiries")
    );
    sim.shutdown().await;
    Ok(())
}

/// `run` from exec to READY=1 on the notify socket, `times` times on an existing database.
async fn ready(times: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let sim = start_sim(|_| {}).await?;
    let work = Workdir::new(&sim, &sink.url(), &[])?;
    work.seed(0).await?;
    let mut samples = Vec::new();
    for _ in 0..times.max(1) {
        samples.push(work.time_to_ready()?);
    }
    samples.sort();
    println!(
        "run → READY=1         median {:.1?}, min {:.1?}, max {:.1?} over {} starts",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
    sim.shutdown().await;
    Ok(())
}

/// Mails/s of the least a client can do per mail against this sink, which does not offer
/// PIPELINING (RFC 2920): four round trips (MAIL, RCPT, DATA, the body), on
/// `SMTP_CONNECTIONS` connections opened beforehand, with invite-sized messages formatted
/// before the clock starts. Its CPU is the floor under any SMTP client's, ours included.
async fn bare_exchange(sink: &Sink, n: u64) -> anyhow::Result<f64> {
    const BARE_BODIES: u64 = 64;
    use tokio::io::{AsyncWriteExt, BufReader};
    let connections = u64::from(SMTP_CONNECTIONS);
    let mut streams = Vec::new();
    for _ in 0..connections {
        let mut stream = BufReader::new(tokio::net::TcpStream::connect(sink.addr).await?);
        stream.get_mut().set_nodelay(true)?;
        expect_reply(&mut stream, "220").await?;
        stream
            .get_mut()
            .write_all(b"EHLO bench.localhost\r\n")
            .await?;
        expect_reply(&mut stream, "250").await?;
        streams.push(stream);
    }
    // A few distinct bodies, reused: formatting all `n` up front would leave this process
    // large when it spawns the daemon, and a vforked child's peak RSS counts its parent's.
    let bodies = (0..BARE_BODIES)
        .map(|i| Ok(dot_stuffed(&invite_sized_message(i)?.formatted())))
        .collect::<anyhow::Result<Vec<Vec<u8>>>>()?;
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut stream) in (0..connections).zip(streams) {
        let bodies = bodies.clone();
        tasks.spawn(async move {
            for i in (k..n).step_by(connections as usize) {
                let rcpt = format!("RCPT TO:<user{i}@example.com>\r\n");
                for (line, code) in [
                    (&b"MAIL FROM:<verify@example.com>\r\n"[..], "250"),
                    (rcpt.as_bytes(), "250"),
                    (b"DATA\r\n", "354"),
                    (&bodies[(i % BARE_BODIES) as usize], "250"),
                ] {
                    stream.get_mut().write_all(line).await?;
                    expect_reply(&mut stream, code).await?;
                }
            }
            stream.get_mut().write_all(b"QUIT\r\n").await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Reads one (possibly multi-line) SMTP reply and checks its code.
async fn expect_reply(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    code: &str,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("the sink closed the connection");
        }
        anyhow::ensure!(
            line.starts_with(code),
            "expected {code}, the sink said {line:?}"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

/// The message as DATA sends it: lines starting with a dot doubled, ended by `.` alone.
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A multipart/alternative message with parts the size of a rendered invite (about 1 KiB of
/// text and 3 KiB of HTML).
fn invite_sized_message(i: u64) -> anyhow::Result<Message> {
    let link = format!(
        "http://127.0.0.1/verify?inquiry-id=inq_{i:024}&session-token={:0>120}",
        i
    );
    let text = format!(
        "Hello Sam,\n\n{}\n{link}\n",
        "Please verify your identity. ".repeat(30)
    );
    let html = format!(
        "<!doctype html><html><body><p>Hello Sam,</p><p>{}</p><a href=\"{link}\">Verify</a></body></html>",
        "Please verify your identity. ".repeat(95)
    );
    Ok(Message::builder()
        .from("Verification <verify@example.com>".parse()?)
        .to(format!("user{i}@example.com").parse()?)
        .subject("Verify your identity for Example App")
        .multipart(MultiPart::alternative_plain_html(text, html))?)
}

async fn start_sim(tune: impl FnOnce(&mut SimConfig)) -> anyhow::Result<SimHandle> {
    let mut cfg = SimConfig::new(API_KEY, Clock::system());
    cfg.environment_id = EnvironmentId::parse(ENVIRONMENT)?.to_string();
    tune(&mut cfg);
    Ok(sim::start(cfg).await?)
}

/// aiosmtpd's `Sink` handler: accepts every message and keeps none.
struct Sink {
    addr: SocketAddr,
    child: Child,
}

impl Sink {
    fn start() -> anyhow::Result<Sink> {
        let python = std::env::var_os("TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(REPO).join("target/test-venv/bin/python3"));
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l"])
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start aiosmtpd with {} (run .ci/run once, or set TEST_PYTHON)",
                    python.display()
                )
            })?;
        let sink = Sink { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("aiosmtpd did not listen on {addr} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(sink)
    }

    fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with config.toml and the SQLite file, pointed at the simulator and the sink.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    /// `edits` replace whole lines of the generated config that start with the given key.
    fn new(sim: &SimHandle, smtp_url: &str, edits: &[(&str, &str)]) -> anyhow::Result<Workdir> {
        let dir = tempfile::Builder::new()
            .prefix("inquiry-mailer-bench-")
            .tempdir()?;
        let (template, _) = sim.templates()[0].clone();
        let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = format!(
            r#"log_format = "text"
[database]
url = "sqlite://bench.db"
[persona]
api_base = "{api}"
inquiry_template_id = "{template}"
environment_id = "{ENVIRONMENT}"
requests_per_minute = 100000
[links]
kind = "session"
hosted_flow_url = "{hosted}"
[mail]
transport = "smtp"
smtp_url = "{smtp_url}"
from = "Verification <verify@example.com>"
messages_per_minute = 1000000
[server]
listen = "{listen}"
[templates]
dir = "{templates}"
"#,
            api = sim.api_base().as_str().trim_end_matches('/'),
            hosted = sim.hosted_flow_url(),
            templates = Path::new(REPO).join("templates").display(),
        );
        let config = config
            .lines()
            .map(|line| {
                edits
                    .iter()
                    .find(|(key, _)| line.starts_with(key))
                    .map_or(line, |(_, new)| new)
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("config.toml"), config)?;
        Ok(Workdir { dir })
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("bench.db")
    }

    fn command(&self, args: &[&str]) -> Command {
        // BENCH_WRAP="perf record -g -o perf.data" (or strace -f -c …) profiles the daemon runs.
        let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace().filter(|_| args[0] == "once");
        let mut cmd = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(args)
            .arg("--config")
            .arg(self.config())
            .env("PERSONA_API_KEY", API_KEY)
            .env("PERSONA_WEBHOOK_SECRET", "bench-webhook-secret")
            .env("RUST_LOG", "warn")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null());
        cmd
    }

    /// Migrates, then inserts `users` pending users in one statement; returns the insert time.
    async fn seed(&self, users: u64) -> anyhow::Result<Duration> {
        let out = self.command(&["migrate"]).stderr(Stdio::piped()).output()?;
        anyhow::ensure!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.db())
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = sqlx::SqlitePool::connect_with(options).await?;
        let started = Instant::now();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 WHERE ?1 > 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO users (id, email, name_first, name_last, birthdate, phone_number, created_at) \
             SELECT printf('usr_%08d', i), printf('user%d@example.com', i), 'Sam', printf('Walker%d', i), \
                    '1985-04-12', '+1 415 555 0100', strftime('%Y-%m-%d %H:%M:%S', 'now') FROM n",
        )
        .bind(users as i64)
        .execute(&pool)
        .await?;
        let took = started.elapsed();
        pool.close().await;
        Ok(took)
    }

    /// How many users the daemon discovered, and the seconds from the first to the last.
    async fn discovery(&self) -> anyhow::Result<(i64, f64)> {
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(self.db()),
        )
        .await?;
        let (count, first, last): (i64, Option<String>, Option<String>) = sqlx::query_as(
            "SELECT count(*), min(at), max(at) FROM events WHERE kind = 'user.discovered'",
        )
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        let parse =
            |t: Option<String>| t.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
        let seconds = match (parse(first), parse(last)) {
            (Some(a), Some(b)) => (b - a).as_seconds_f64(),
            _ => 0.0,
        };
        Ok((count, seconds))
    }

    /// Runs `once --job JOB` to the end (or SIGTERM after `stop_after`), measuring the child.
    fn once(&self, job: &str, stop_after: Option<Duration>) -> anyhow::Result<Measured> {
        let child = self
            .command(&["once", "--job", job])
            .stderr(Stdio::piped())
            .spawn()?;
        measure(child, stop_after)
    }

    /// Starts `run` with NOTIFY_SOCKET on a socket of ours; the time to READY=1; then SIGTERM.
    fn time_to_ready(&self) -> anyhow::Result<Duration> {
        let socket_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path)?;
        socket.set_read_timeout(Some(Duration::from_secs(30)))?;
        let started = Instant::now();
        let mut child = self
            .command(&["run"])
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(Stdio::null())
            .spawn()?;
        let mut buf = [0u8; 4096];
        let took = loop {
            let n = socket.recv(&mut buf).context("no READY=1 within 30 s")?;
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break started.elapsed();
            }
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait()?;
        Ok(took)
    }
}

/// Users whose invite went out (`sent` mails), read from the daemon's own tables.
fn count_sent(work: &Workdir) -> anyhow::Result<u64> {
    let out = work
        .command(&["status", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(json["mails"]["sent"].as_u64().unwrap_or(0))
}

/// CPU (user + system) this bench process has used so far.
fn own_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

/// What `wait4` says of a finished child.
struct Measured {
    wall: Duration,
    user: Duration,
    system: Duration,
    max_rss_kib: i64,
    status: i32,
    stderr_tail: String,
}

impl Measured {
    fn cpu(&self) -> Duration {
        self.user + self.system
    }

    fn max_rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }
}

fn measure(mut child: Child, stop_after: Option<Duration>) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let pid = child.id() as i32;
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    if let Some(after) = stop_after {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            // SAFETY: kill(2) on our child's pid; if it already exited and was reaped the pid
            // is not reused before this thread runs in any realistic bench.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        });
    }
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals above.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(
        waited == pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    let wall = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
    Ok(Measured {
        wall,
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss,
        status: libc::WEXITSTATUS(status),
        stderr_tail: tail,
    })
}
