//! Benchmarks of the whole pipeline, run by hand (never in CI, never as timed assertions):
//!
//! ```text
//! cargo bench --bench pipeline -- throughput 1000     # users/s and CPU/user, rate limits lifted (floor 100/s), SQLite and PostgreSQL
//! cargo bench --bench pipeline -- rss 1000            # peak RSS of `once` over 1,000 pending users
//! cargo bench --bench pipeline -- rss 1000000 120     # … over a million, stopped (SIGTERM) after 120 s
//! cargo bench --bench pipeline -- rate                # 1,500 users at 600/min against 300 ms latency, SQLite and PostgreSQL
//! cargo bench --bench pipeline -- refresh 10000       # Persona calls of refresh runs: full, nothing changed
//! cargo bench --bench pipeline -- refresh 10000 50    # … and after 50 inquiries completed
//! cargo bench --bench pipeline -- ready 10            # `run` start to READY=1, median of 10
//! cargo bench --bench pipeline -- latency 20          # `run` up: insert → SMTP accepted, 20 users at random moments, SQLite and PostgreSQL
//! cargo bench --bench pipeline -- idle 600            # `run` up with nothing to do: its CPU over 600 s, per hour
//! cargo bench --bench pipeline -- bulk 50000 1000     # `run` up: 50,000 rows imported 1,000 a commit; runs, start, RSS
//! ```
//!
//! The daemon runs as the release binary (`once` or `run`, a child process, so its CPU time and
//! peak RSS are its own: read with `wait4`), against the bundled simulator in this process and
//! aiosmtpd's discarding `Sink` handler on loopback (Python from `$TEST_PYTHON`, else the venv
//! `.ci/run` makes under `target/`). `BENCH_WRAP="perf record -g -o /tmp/perf.data"` runs each
//! `once` under a profiler.
//!
//! `throughput`, `rate` and `latency` take a last word, `sqlite`, `postgres` or `both` (the default): with
//! PostgreSQL the bench starts a throw-away server of its own (Debian's binaries, as the tests
//! do: `tests/it/support/pg_server.rs`) and also reads the CPU of the server's processes.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use inquiry_mailer::clock::Clock;
use inquiry_mailer::domain::EnvironmentId;
use persona_sim::{self as sim, SimConfig, SimHandle};

// The server the tests start; the bench needs neither its TLS nor its login groups.
#[path = "../tests/it/support/pg_server.rs"]
#[allow(dead_code)]
mod pg_server;

const API_KEY: &str = "bench-key-for-the-simulator-only";
const ENVIRONMENT: &str = "env_benchmarkenvironment0001";
const BIN: &str = env!("CARGO_BIN_EXE_inquiry-mailer");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn main() -> anyhow::Result<()> {
    // `cargo bench` adds `--bench`; everything else is ours.
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let stores = match args.last().and_then(|word| Store::named(word)) {
        Some(named) => {
            args.pop();
            named
        }
        None => vec![Store::Sqlite, Store::Postgres],
    };
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
        Some("throughput") => rt.block_on(throughput(number(1, 1000)?, &stores)),
        Some("rss") => rt.block_on(rss(number(1, 1000)?, number(2, 0)?)),
        Some("rate") => rt.block_on(rate(number(1, 1500)?, &stores)),
        Some("refresh") => rt.block_on(refresh(number(1, 10_000)?, number(2, 0)?)),
        Some("ready") => rt.block_on(ready(number(1, 10)?)),
        Some("latency") => rt.block_on(latency(number(1, 20)?, &stores)),
        Some("idle") => rt.block_on(idle(number(1, 600)?)),
        Some("bulk") => rt.block_on(bulk(number(1, 50_000)?, number(2, 1000)?)),
        _ => {
            eprintln!(
                "usage: cargo bench --bench pipeline -- \
                 throughput [N] [STORE] | rss [N] [SECONDS] | rate [N] [STORE] | refresh [N] [K] | \
                 ready [TIMES] | latency [USERS] [STORE] | idle [SECONDS] | bulk [ROWS] [ROWS_PER_COMMIT] \
                 (STORE: sqlite, postgres or both, the default)"
            );
            Ok(())
        }
    }
}

/// Provisioning throughput and CPU per user with the rate limits lifted (the floor is 100
/// users/s, ten times the default mail rate), on each store in turn.
async fn throughput(users: u64, stores: &[Store]) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let postgres = PostgresServer::start_for(stores)?;
    let mut rows = Vec::new();
    for &store in stores {
        let sim = start_sim(|_| {}).await?;
        let database = postgres.database_for(store).await?;
        let work = Workdir::new(&sim, &sink.url(), database, &[])?;
        let seeded = work.seed(users).await?;
        let sim_cpu_before = own_cpu();
        let server_cpu_before = postgres.cpu_for(store)?;
        let run = work.once("provision", None)?;
        let sim_cpu = own_cpu() - sim_cpu_before;
        let server_cpu = postgres
            .cpu_for(store)?
            .zip(server_cpu_before)
            .map(|(after, before)| after - before);
        let sent = count_sent(&work)?;
        anyhow::ensure!(
            sent == users,
            "{store}: only {sent} of {users} users were mailed: {}",
            run.stderr_tail
        );
        let per_user = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / users as f64;
        let calls = sim.count_requests("POST", "/inquiries");
        println!(
            "{store} ({}): {users} users seeded in {seeded:.2?}, mailed in {:.2?}",
            work.database, run.wall
        );
        rows.push([
            store.to_string(),
            format!("{:.0}", users as f64 / run.wall.as_secs_f64()),
            format!(
                "{:.3} ms ({:.2?} user + {:.2?} system)",
                per_user(run.cpu()),
                run.user,
                run.system
            ),
            server_cpu.map_or("-".into(), |cpu| format!("{:.3} ms", per_user(cpu))),
            format!("{:.3} ms", per_user(sim_cpu)),
            calls.to_string(),
            format!("{:.1} MiB", run.max_rss_mib()),
        ]);
        sim.shutdown().await;
    }
    println!();
    print_table(
        &[
            "store",
            "users/s (floor 100)",
            "daemon CPU per user",
            "DB server CPU per user",
            "simulator CPU per user",
            "POST /inquiries",
            "daemon peak RSS",
        ],
        &rows,
    );
    Ok(())
}

/// Peak RSS of `once` over `users` pending users; with `seconds` > 0 it is stopped with
/// SIGTERM after that long (a million users would take hours to mail).
async fn rss(users: u64, seconds: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let sim = start_sim(|_| {}).await?;
    let work = Workdir::new(&sim, &sink.url(), Database::Sqlite, &[])?;
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

/// Rate-budget use: 600/min configured, the simulator enforcing 600/min with 300 ms latency,
/// on each store in turn.
async fn rate(users: u64, stores: &[Store]) -> anyhow::Result<()> {
    const BUDGET: u32 = 600;
    let sink = Sink::start()?;
    let postgres = PostgresServer::start_for(stores)?;
    let rpm = format!("requests_per_minute = {BUDGET}");
    let mut rows = Vec::new();
    for &store in stores {
        let sim = start_sim(|c| {
            c.rate_limit_per_minute = Some(BUDGET);
            c.latency = Duration::from_millis(300);
        })
        .await?;
        let database = postgres.database_for(store).await?;
        let work = Workdir::new(
            &sim,
            &sink.url(),
            database,
            &[("requests_per_minute", &rpm)],
        )?;
        work.seed(users).await?;
        let run = work.once("provision", None)?;
        // The simulator records API calls only (not its control surface), each with its answer.
        let requests = sim.requests();
        let too_many = requests.iter().filter(|r| r.status == Some(429)).count();
        let sent = count_sent(&work)?;
        let per_minute = requests.len() as f64 / (run.wall.as_secs_f64() / 60.0);
        println!(
            "{store} ({}): {users} users, {sent} mailed in {:.1?}",
            work.database, run.wall
        );
        rows.push([
            store.to_string(),
            format!("{sent} of {users}"),
            format!("{:.1?}", run.wall),
            requests.len().to_string(),
            format!("{per_minute:.1}"),
            format!("{:.1} %", 100.0 * per_minute / f64::from(BUDGET)),
            too_many.to_string(),
        ]);
        sim.shutdown().await;
    }
    println!();
    print_table(
        &[
            "store",
            "mailed",
            "wall",
            "Persona calls",
            "calls/min",
            &format!("of the {BUDGET}/min budget"),
            "429 answers",
        ],
        &rows,
    );
    Ok(())
}

/// Persona calls of refresh runs over `live` inquiries of which none is due: the first (a full
/// reconciliation: no cursor yet), one with nothing changed (incremental), and, when `changes`
/// is given, one after that many inquiries were completed at the simulator.
async fn refresh(live: u64, changes: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    // The index trails by 1 s (Persona: about a minute) and the overlap is 5 s, so the runs need
    // not wait minutes for it; what a run costs does not depend on either.
    let sim = start_sim(|c| c.switches.search_lag_seconds = 1).await?;
    let work = Workdir::new(
        &sim,
        &sink.url(),
        Database::Sqlite,
        &[("overlap", "overlap = \"5s\"")],
    )?;
    work.seed(live).await?;
    let provisioned = work.once("provision", None)?;
    anyhow::ensure!(
        count_sent(&work)? == live,
        "provisioning failed: {}",
        provisioned.stderr_tail
    );
    // The creations must be older than a search of the second run looks back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!("live inquiries        {live}, nothing due");
    refresh_once(&sim, &work, "full run (first)")?;
    refresh_once(&sim, &work, "nothing changed")?;
    if changes > 0 {
        let ids: Vec<String> = sim
            .inquiries()
            .into_iter()
            .take(changes as usize)
            .map(|i| i.id)
            .collect();
        for id in &ids {
            sim.act(id, sim::Action::Complete)?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        refresh_once(&sim, &work, &format!("after {changes} completed"))?;
    }
    sim.shutdown().await;
    Ok(())
}

/// One `once --job refresh`, with the Persona calls it made by endpoint.
fn refresh_once(sim: &SimHandle, work: &Workdir, what: &str) -> anyhow::Result<()> {
    sim.clear_requests();
    let run = work.once("refresh", None)?;
    anyhow::ensure!(run.status == 0, "refresh failed: {}", run.stderr_tail);
    let by = |method: &str, route: &str| sim.count_requests(method, route);
    println!(
        "{what:<21} {:.2?} wall, {:.2?} CPU; Persona calls {} = {} search pages + {} list/lookup pages + {} template + {} retrieve + {} resume + {} create",
        run.wall,
        run.cpu(),
        sim.requests().len(),
        by("POST", "/inquiries/search"),
        by("GET", "/inquiries"),
        by("GET", "/inquiry-templates/{inquiry-template-id}"),
        by("GET", "/inquiries/{inquiry-id}"),
        by("POST", "/inquiries/{inquiry-id}/resume"),
        by("POST", "/inquiries")
    );
    Ok(())
}

/// `run` from exec to READY=1 on the notify socket, `times` times on an existing database.
async fn ready(times: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let sim = start_sim(|_| {}).await?;
    let work = Workdir::new(&sim, &sink.url(), Database::Sqlite, &[])?;
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

/// Sign-up to inbox with `run` up and the shipped schedule, on each store in turn: `users`
/// rows inserted one at a time at random moments by another connection, each timed from its
/// commit to the SMTP server's 250 for its invite.
async fn latency(users: u64, stores: &[Store]) -> anyhow::Result<()> {
    use rand::Rng as _;
    let postgres = PostgresServer::start_for(stores)?;
    let mut rows = Vec::new();
    for &store in stores {
        let receiver = Receiver::start()?;
        let database = postgres.database_for(store).await?;
        let (sim, work, daemon) = run_up(&receiver.url(), database).await?;
        let app = work.application().await?;
        let mut inserted = Vec::new();
        for i in 0..users {
            // Random gaps, so the inserts fall at every phase of the watch's poll and of the cron.
            let gap = rand::rng().random_range(250..2000);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            app.insert_users(i, 1).await?;
            inserted.push((format!("user{i}@example.com"), Instant::now()));
        }
        let accepted = receiver
            .wait_for(users as usize, Duration::from_secs(120))
            .await?;
        let cpu = daemon.cpu()?;
        daemon.stop()?;
        let mut waits = inserted
            .iter()
            .map(|(rcpt, at)| {
                let got = accepted
                    .get(rcpt)
                    .with_context(|| format!("{store}: {rcpt} never reached the SMTP server"))?;
                Ok(got.duration_since(*at))
            })
            .collect::<anyhow::Result<Vec<Duration>>>()?;
        waits.sort();
        println!(
            "{store} ({}): {} users at random moments",
            work.database,
            waits.len()
        );
        rows.push([
            store.to_string(),
            format!("{:.0?}", waits[waits.len() / 2]),
            format!("{:.0?}", waits[waits.len() - 1]),
            format!("{:.0?}", waits[0]),
            format!("{cpu:.2?}"),
        ]);
        app.close().await;
        sim.shutdown().await;
    }
    println!();
    print_table(
        &[
            "store",
            "insert → SMTP accepted, median",
            "max",
            "min",
            "daemon CPU (start-up and the users)",
        ],
        &rows,
    );
    Ok(())
}

/// `run` up with the shipped schedule and nothing to do (the start-up runs over): the CPU it
/// uses over `seconds`, which is the new-user watch's polls plus the cron runs that fall in.
async fn idle(seconds: u64) -> anyhow::Result<()> {
    let sink = Sink::start()?;
    let (sim, work, daemon) = run_up(&sink.url(), Database::Sqlite).await?;
    // The start-up refresh follows the start-up provision run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = daemon.cpu()?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
    let used = daemon.cpu()? - before;
    let wall = started.elapsed();
    daemon.stop()?;
    let runs = work.runs_of("provision").await?;
    let per_hour = used.as_secs_f64() * 3600.0 / wall.as_secs_f64();
    println!(
        "idle CPU                {:.2?} over {:.0?} = {per_hour:.2} s per hour ({:.3} % of one core)",
        used,
        wall,
        100.0 * per_hour / 3600.0
    );
    println!(
        "provision runs          {} (the cron's, every minute; a refresh every 15 min)",
        runs.len()
    );
    sim.shutdown().await;
    Ok(())
}

/// `run` up; `rows` users imported `chunk` rows a commit, as fast as SQLite takes them: when
/// provisioning starts, how many runs it takes (and whether any overlap), and the daemon's RSS
/// from before the import until every invite is accepted.
async fn bulk(rows: u64, chunk: u64) -> anyhow::Result<()> {
    let receiver = Receiver::start()?;
    let (sim, work, daemon) = run_up(&receiver.url(), Database::Sqlite).await?;
    let rss_before = daemon.rss_kib()?;
    let app = work.application().await?;
    let import_started = chrono::Utc::now();
    let started = Instant::now();
    let mut first_commit = None;
    for start in (0..rows).step_by(chunk.max(1) as usize) {
        app.insert_users(start, chunk.min(rows - start)).await?;
        first_commit.get_or_insert_with(|| (Instant::now(), chrono::Utc::now()));
    }
    let imported = started.elapsed();
    let (first_commit, first_commit_wall) = first_commit.context("nothing imported")?;
    // RSS at each tenth of the invites accepted.
    let mut rss_at = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut peak = rss_before;
    loop {
        let accepted = receiver.count();
        peak = peak.max(daemon.rss_kib()?);
        let tenth = (accepted * 10 / rows as usize).min(10);
        while rss_at.len() < tenth {
            rss_at.push(daemon.rss_kib()?);
        }
        if accepted as u64 >= rows || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_mailed = first_commit.elapsed();
    let first_mail = receiver
        .first_at()
        .map(|at| at.duration_since(first_commit));
    let hwm = daemon.peak_rss_kib()?;
    daemon.stop()?;
    app.close().await;
    let runs = work.runs_of("provision").await?;
    let after: Vec<&RunSpan> = runs.iter().filter(|r| r.0 > import_started).collect();
    let overlaps = runs
        .windows(2)
        .filter(|w| w[1].0 < w[0].1.unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC))
        .count();
    let refreshes = work
        .runs_of("refresh")
        .await?
        .iter()
        .filter(|r| r.0 > import_started)
        .count();
    let first_run = after
        .first()
        .map(|r| (r.0 - first_commit_wall).to_std().unwrap_or_default());
    let mib = |kib: i64| kib as f64 / 1024.0;
    println!("import                  {rows} rows, {chunk} a commit, in {imported:.2?} (`run` up)");
    println!(
        "provisioning started    {:.0?} after the first commit (its run's start in job_runs); first invite accepted {:.0?} after it",
        first_run.unwrap_or_default(),
        first_mail.unwrap_or_default()
    );
    println!(
        "runs                    {} provision runs from the import to the last invite, {overlaps} overlapping ({refreshes} refresh runs fell in); all {} accepted {:.1?} after the first commit",
        after.len(),
        receiver.count(),
        all_mailed
    );
    println!(
        "RSS                     {:.1} MiB before the import; at each tenth of the invites: {}; peak {:.1} MiB (VmHWM {:.1} MiB)",
        mib(rss_before),
        rss_at
            .iter()
            .map(|k| format!("{:.1}", mib(*k)))
            .collect::<Vec<_>>()
            .join(" "),
        mib(peak),
        mib(hwm)
    );
    sim.shutdown().await;
    Ok(())
}

/// `run` up on an empty migrated database with the shipped schedule, mailing to `smtp_url`, its
/// start-up runs over.
async fn run_up(
    smtp_url: &str,
    database: Database,
) -> anyhow::Result<(SimHandle, Workdir, RunningDaemon)> {
    let sim = start_sim(|_| {}).await?;
    let work = Workdir::new(&sim, smtp_url, database, &[])?;
    work.seed(0).await?;
    let daemon = work.start_run()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while work
        .runs_of("provision")
        .await?
        .first()
        .is_none_or(|r| r.1.is_none())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no start-up provision run within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((sim, work, daemon))
}

/// The application's own connections to the workdir's database.
enum AppDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl AppDb {
    /// Inserts users `first..first + n` in one statement (one commit), as the application would.
    async fn insert_users(&self, first: u64, n: u64) -> anyhow::Result<()> {
        match self {
            AppDb::Sqlite(pool) => sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT ?1 WHERE ?2 > 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?1 + ?2) \
                 INSERT INTO users (id, email, name_first, name_last, birthdate, phone_number) \
                 SELECT printf('usr_%08d', i), printf('user%d@example.com', i), 'Sam', printf('Walker%d', i), \
                        '1985-04-12', '+1 415 555 0100' FROM n",
            )
            .bind(first as i64)
            .bind(n as i64)
            .execute(pool)
            .await
            .map(drop),
            AppDb::Postgres(pool) => sqlx::query(
                "INSERT INTO users (id, email, name_first, name_last, birthdate, phone_number) \
                 SELECT format('usr_%s', lpad(i::text, 8, '0')), format('user%s@example.com', i), 'Sam', \
                        format('Walker%s', i), '1985-04-12', '+1 415 555 0100' \
                 FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS i",
            )
            .bind(first as i64)
            .bind(n as i64)
            .execute(pool)
            .await
            .map(drop),
        }?;
        Ok(())
    }

    /// Every run of `job` in `job_runs`, oldest first.
    async fn runs_of(&self, job: &str) -> anyhow::Result<Vec<RunSpan>> {
        match self {
            AppDb::Sqlite(pool) => {
                let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT started_at, finished_at FROM job_runs WHERE job = ? ORDER BY id",
                )
                .bind(job)
                .fetch_all(pool)
                .await?;
                let parse = |t: &str| {
                    inquiry_mailer::clock::parse_ts(t)
                        .with_context(|| format!("job_runs time {t:?}"))
                };
                rows.iter()
                    .map(|(started, finished)| {
                        Ok((parse(started)?, finished.as_deref().map(parse).transpose()?))
                    })
                    .collect()
            }
            AppDb::Postgres(pool) => Ok(sqlx::query_as(
                "SELECT started_at, finished_at FROM job_runs WHERE job = $1 ORDER BY id",
            )
            .bind(job)
            .fetch_all(pool)
            .await?),
        }
    }

    async fn close(self) {
        match self {
            AppDb::Sqlite(pool) => pool.close().await,
            AppDb::Postgres(pool) => pool.close().await,
        }
    }
}

/// The store a bench's daemon runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Sqlite,
    Postgres,
}

impl Store {
    /// What a bench's last word `sqlite`, `postgres` or `both` asks for.
    fn named(word: &str) -> Option<Vec<Store>> {
        match word {
            "sqlite" => Some(vec![Store::Sqlite]),
            "postgres" => Some(vec![Store::Postgres]),
            "both" => Some(vec![Store::Sqlite, Store::Postgres]),
            _ => None,
        }
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Sqlite => "SQLite",
            Store::Postgres => "PostgreSQL",
        })
    }
}

/// One workdir's database: the SQLite file in its folder, or a database of its own on the
/// bench's PostgreSQL server.
enum Database {
    Sqlite,
    Postgres(pg_server::TestDatabase),
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite => f.write_str("bench.db in a temporary folder"),
            Database::Postgres(db) => write!(f, "database {} on the bench's server", db.name),
        }
    }
}

impl Database {
    fn url(&self) -> &str {
        match self {
            Database::Sqlite => "sqlite://bench.db",
            Database::Postgres(db) => &db.url,
        }
    }
}

/// The bench's own throw-away PostgreSQL server, started when a bench runs on PostgreSQL and
/// stopped (its folder under `target/pg-test/` removed) when dropped.
struct PostgresServer(Option<pg_server::Server>);

impl PostgresServer {
    fn start_for(stores: &[Store]) -> anyhow::Result<PostgresServer> {
        if !stores.contains(&Store::Postgres) {
            return Ok(PostgresServer(None));
        }
        let server = pg_server::Server::start(&Path::new(REPO).join("target/pg-test"), None)
            .with_context(|| {
                format!(
                    "no PostgreSQL server binaries under {}/<major>/bin (apt-get install postgresql)",
                    pg_server::DEBIAN_PG_ROOT
                )
            })?;
        Ok(PostgresServer(Some(server)))
    }

    /// A fresh database for a run on `store`.
    async fn database_for(&self, store: Store) -> anyhow::Result<Database> {
        match (store, &self.0) {
            (Store::Sqlite, _) => Ok(Database::Sqlite),
            (Store::Postgres, Some(server)) => {
                Ok(Database::Postgres(server.create_database().await))
            }
            (Store::Postgres, None) => bail!("the PostgreSQL server was not started"),
        }
    }

    /// The CPU the server's processes (postmaster, every backend, and the ones already gone)
    /// have used so far, when `store` is PostgreSQL.
    fn cpu_for(&self, store: Store) -> anyhow::Result<Option<Duration>> {
        let (Store::Postgres, Some(server)) = (store, &self.0) else {
            return Ok(None);
        };
        let group = server.process_group().context("the server has stopped")?;
        let mut ticks = 0u64;
        for entry in std::fs::read_dir("/proc")? {
            let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
                continue;
            };
            let Some(fields) = stat_fields(&stat) else {
                continue;
            };
            // pgrp, then utime, stime, cutime, cstime: a reaped backend's time is in its
            // parent's cutime and cstime, and in no live process's own.
            if fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(group) {
                for field in &fields[11..15] {
                    ticks += field.parse::<u64>()?;
                }
            }
        }
        Ok(Some(ticks_to_duration(ticks)))
    }
}

/// The fields of /proc/PID/stat after the command name (field 3, the state, first).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    // The command name (field 2) may hold spaces; the fields after it do not.
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    Some(after_name.split_whitespace().collect())
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Rows under a header, each column as wide as its widest cell.
fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A provision run's start and end, from `job_runs`.
type RunSpan = (
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

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
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = spawn_python(
            Command::new(python())
                .args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l"])
                .arg(addr.to_string())
                .stdout(Stdio::null()),
            addr,
        )?;
        Ok(Sink { addr, child })
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

/// The Python the tests use: `$TEST_PYTHON`, else the venv `.ci/run` makes.
fn python() -> PathBuf {
    std::env::var_os("TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target/test-venv/bin/python3"))
}

/// Spawns an aiosmtpd `cmd` and waits until it listens on `addr`.
fn spawn_python(cmd: &mut Command, addr: SocketAddr) -> anyhow::Result<Child> {
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start aiosmtpd with {} (run .ci/run once, or set TEST_PYTHON)",
            python().display()
        )
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("aiosmtpd did not listen on {addr} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// aiosmtpd with a handler that keeps nothing and prints each accepted message's recipients
/// the moment before it answers 250: when the server took each mail.
const RECEIVER: &str = r#"
import sys, time
from aiosmtpd.controller import Controller
class Report:
    async def handle_DATA(self, server, session, envelope):
        print(",".join(envelope.rcpt_tos), flush=True)
        return "250 OK"
Controller(Report(), hostname="127.0.0.1", port=int(sys.argv[1])).start()
while True:
    time.sleep(3600)
"#;

/// A [`RECEIVER`] and the instant each recipient's mail was accepted (a thread reads its
/// stdout as it comes).
struct Receiver {
    addr: SocketAddr,
    child: Child,
    accepted: Arc<std::sync::Mutex<Accepted>>,
}

#[derive(Default)]
struct Accepted {
    first: Option<Instant>,
    count: usize,
    /// Only kept for the first 1,000 recipients: a bulk run needs the count, not the names.
    at: std::collections::HashMap<String, Instant>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        use std::io::BufRead as _;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut child = spawn_python(
            Command::new(python())
                .args(["-c", RECEIVER, &addr.port().to_string()])
                .stdout(Stdio::piped()),
            addr,
        )?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let accepted: Arc<std::sync::Mutex<Accepted>> = Arc::default();
        let into = accepted.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                let mut a = into.lock().unwrap();
                a.first.get_or_insert(now);
                a.count += 1;
                if a.at.len() < 1000 {
                    a.at.entry(line).or_insert(now);
                }
            }
        });
        Ok(Receiver {
            addr,
            child,
            accepted,
        })
    }

    fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.accepted.lock().unwrap().count
    }

    fn first_at(&self) -> Option<Instant> {
        self.accepted.lock().unwrap().first
    }

    /// Waits (at most `within`) for `n` accepted mails; returns when each recipient's was.
    async fn wait_for(
        &self,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<std::collections::HashMap<String, Instant>> {
        let deadline = Instant::now() + within;
        while self.count() < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} mails accepted within {within:?}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(self.accepted.lock().unwrap().at.clone())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A folder with config.toml (and the SQLite file, on SQLite), pointed at the simulator, the
/// sink and the database.
struct Workdir {
    dir: tempfile::TempDir,
    database: Database,
}

impl Workdir {
    /// `edits` replace whole lines of the generated config that start with the given key.
    fn new(
        sim: &SimHandle,
        smtp_url: &str,
        database: Database,
        edits: &[(&str, &str)],
    ) -> anyhow::Result<Workdir> {
        let dir = tempfile::Builder::new()
            .prefix("inquiry-mailer-bench-")
            .tempdir()?;
        let (template, _) = sim.templates()[0].clone();
        let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = format!(
            r#"log_format = "text"
[database]
url = "{database_url}"
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
[sync]
overlap = "2m"
[server]
listen = "{listen}"
[templates]
dir = "{templates}"
"#,
            api = sim.api_base().as_str().trim_end_matches('/'),
            hosted = sim.hosted_flow_url(),
            templates = Path::new(REPO).join("templates").display(),
            database_url = database.url(),
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
        Ok(Workdir { dir, database })
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
        let app = self.application().await?;
        let started = Instant::now();
        app.insert_users(1, users).await?;
        let took = started.elapsed();
        app.close().await;
        Ok(took)
    }

    /// A connection pool on the database, as the application has one.
    async fn application(&self) -> anyhow::Result<AppDb> {
        Ok(match &self.database {
            Database::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.db())
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(30));
                AppDb::Sqlite(sqlx::SqlitePool::connect_with(options).await?)
            }
            Database::Postgres(db) => AppDb::Postgres(sqlx::PgPool::connect(&db.url).await?),
        })
    }

    /// Every run of `job` in `job_runs`, oldest first.
    async fn runs_of(&self, job: &str) -> anyhow::Result<Vec<RunSpan>> {
        let app = self.application().await?;
        let runs = app.runs_of(job).await;
        app.close().await;
        runs
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
        let started = Instant::now();
        let daemon = self.start_run()?;
        let took = started.elapsed();
        daemon.stop()?;
        Ok(took)
    }

    /// Starts `run` and returns once it has sent READY=1 to a notify socket of ours.
    fn start_run(&self) -> anyhow::Result<RunningDaemon> {
        let socket_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path)?;
        socket.set_read_timeout(Some(Duration::from_secs(30)))?;
        let child = self
            .command(&["run"])
            .env("NOTIFY_SOCKET", &socket_path)
            .stderr(Stdio::null())
            .spawn()?;
        let daemon = RunningDaemon { child };
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).context("no READY=1 within 30 s")?;
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return Ok(daemon);
            }
        }
    }
}

/// `run` as a child process, read through /proc while it runs; SIGTERM on `stop` (or drop).
struct RunningDaemon {
    child: Child,
}

impl RunningDaemon {
    /// User + system CPU so far, from /proc/PID/stat (fields 14 and 15, in clock ticks).
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let fields = stat_fields(&stat).context("/proc stat format")?;
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(ticks_to_duration(ticks))
    }

    /// The current resident set (VmRSS), KiB.
    fn rss_kib(&self) -> anyhow::Result<i64> {
        self.status_kib("VmRSS:")
    }

    /// The peak resident set so far (VmHWM), KiB.
    fn peak_rss_kib(&self) -> anyhow::Result<i64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<i64> {
        proc_status_kib(self.child.id(), field)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "`run` exited with {status}");
        Ok(())
    }
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

/// A `field:` of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} in /proc status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// What `wait4` says of a finished child, and its peak RSS.
struct Measured {
    wall: Duration,
    user: Duration,
    system: Duration,
    /// The last VmHWM read while it ran (every 10 ms). Not wait4's ru_maxrss: the child is
    /// spawned with vfork and exec, and the kernel counts the parent's resident set at exec
    /// into the child's ru_maxrss, so after a big bench it reports the bench's size.
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
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let done = done.clone();
        move || {
            let mut peak = 0;
            // A zombie's status has no VmHWM: the last reading is the one before it exited.
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(kib) = proc_status_kib(pid as u32, "VmHWM:") {
                    peak = kib;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        }
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
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let max_rss_kib = sampler.join().unwrap_or_default();
    let stderr = reader.join().unwrap_or_default();
    let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
    Ok(Measured {
        wall,
        user: timeval(usage.ru_utime),
        system: timeval(usage.ru_stime),
        max_rss_kib,
        status: libc::WEXITSTATUS(status),
        stderr_tail: tail,
    })
}
