//! The whole pipeline on loopback: the Persona simulator, a real SMTP server (aiosmtpd), a
//! temp folder with config.toml and the database: the SQLite file, or a fresh database on the
//! test process's PostgreSQL server ([`Backend`]). Jobs run in-process (sharing the
//! simulator's clock) or through the real binary.

use std::path::PathBuf;
use std::process::Command;

use inquiry_mailer::clock::Clock;
use inquiry_mailer::config::Config;
use inquiry_mailer::jobs::JobContext;
use inquiry_mailer::store::Store;
use persona_sim::{SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

use super::app::{Run, TestApp};
use super::postgres::{TestDatabase, fresh_database};
use super::sim::{API_KEY, start_sim};
use super::smtp::SmtpServer;

/// The database a stack's daemon keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `inquiry-mailer.db` in the stack's folder (the shipped config).
    Sqlite,
    /// A fresh database on the test process's PostgreSQL server, `[database] url = "postgres://…"`.
    Postgres,
}

/// The shipped config's database line, which a PostgreSQL stack replaces.
const SHIPPED_DATABASE_URL: &str = "url = \"sqlite://inquiry-mailer.db\"";

pub struct Stack {
    pub sim: SimHandle,
    pub smtp: SmtpServer,
    pub app: TestApp,
    pub clock: Clock,
    /// The PostgreSQL database of a [`Backend::Postgres`] stack.
    pub database: Option<TestDatabase>,
}

impl Stack {
    /// A stack mailing `kind` links (`session`, `one-time`, `static`); `edits` change config.toml.
    pub async fn start(kind: &str, edits: &[(&str, &str)]) -> Stack {
        Self::start_with(kind, edits, |_| {}).await
    }

    pub async fn start_with(
        kind: &str,
        edits: &[(&str, &str)],
        tune: impl FnOnce(&mut SimConfig),
    ) -> Stack {
        Self::start_in(None, kind, edits, tune).await
    }

    /// [`Stack::start`] on `backend`; `None` (the test skips) when it is PostgreSQL and the
    /// server binaries are not installed; with `CI=true` that fails instead.
    pub async fn start_on(backend: Backend, kind: &str, edits: &[(&str, &str)]) -> Option<Stack> {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_database().await?),
        };
        Some(Self::start_in(database, kind, edits, |_| {}).await)
    }

    /// [`Stack::start_on`] with the simulator tuned by `tune` (its rate limit, say).
    pub async fn start_on_with(
        backend: Backend,
        kind: &str,
        edits: &[(&str, &str)],
        tune: impl FnOnce(&mut SimConfig),
    ) -> Option<Stack> {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_database().await?),
        };
        Some(Self::start_in(database, kind, edits, tune).await)
    }

    /// A stack on `database`, a database the test made on a server of its own.
    pub async fn start_on_database(
        database: TestDatabase,
        kind: &str,
        edits: &[(&str, &str)],
    ) -> Stack {
        Self::start_in(Some(database), kind, edits, |_| {}).await
    }

    async fn start_in(
        database: Option<TestDatabase>,
        kind: &str,
        edits: &[(&str, &str)],
        tune: impl FnOnce(&mut SimConfig),
    ) -> Stack {
        let clock = Clock::system();
        let shared = clock.clone();
        let sim = start_sim(move |c| {
            c.clock = std::sync::Arc::new(shared);
            tune(c);
        })
        .await;
        let smtp = SmtpServer::start();
        let (template, _) = sim.templates()[0].clone();
        let env = sim_environment(&sim).await;
        let kind_line = format!("kind = \"{kind}\"");
        let template_line = format!("inquiry_template_id = \"{template}\"");
        let env_line = format!("environment_id = \"{env}\"");
        let flow_line = format!("hosted_flow_url = \"{}\"", sim.hosted_flow_url());
        let mut all: Vec<(&str, &str)> = vec![
            ("kind = \"session\"", kind_line.as_str()),
            (
                "inquiry_template_id = \"itmpl_XXXXXXXXXXXXX\"",
                template_line.as_str(),
            ),
            ("environment_id = \"env_XXXXXXXXXXXXX\"", env_line.as_str()),
            (
                "hosted_flow_url = \"https://inquiry.withpersona.com/verify\"",
                flow_line.as_str(),
            ),
        ];
        all.extend_from_slice(edits);
        let database_line = database.as_ref().map(|d| format!("url = \"{}\"", d.url));
        if let Some(line) = &database_line {
            all.push((SHIPPED_DATABASE_URL, line.as_str()));
        }
        // Tests are not rate-budget tests unless they say so.
        if !edits
            .iter()
            .any(|(old, _)| old.contains("requests_per_minute"))
        {
            all.push(("requests_per_minute = 240", "requests_per_minute = 60000"));
        }
        let app = TestApp::with_config(&all);
        // Point the loopback placeholders of TestApp at this stack's servers.
        let text = std::fs::read_to_string(&app.config)
            .unwrap()
            .replacen(
                "http://127.0.0.1:9/api/v1",
                sim.api_base().as_str().trim_end_matches('/'),
                1,
            )
            .replacen("smtp://127.0.0.1:9", &smtp.url(), 1);
        std::fs::write(&app.config, text).unwrap();
        Stack {
            sim,
            smtp,
            app,
            clock,
            database,
        }
    }

    pub fn backend(&self) -> Backend {
        if self.database.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Runs one statement on the stack's database, as the application (or a hand edit) would;
    /// returns the rows it changed. Placeholder-free SQL that both dialects read alike.
    pub async fn execute(&self, statement: &str) -> u64 {
        let sql = sqlx::AssertSqlSafe(statement.to_owned());
        let done = match &self.database {
            None => {
                let pool = self.db().await;
                let n = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                n
            }
            Some(database) => {
                let pool = database.pool().await;
                let n = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                n
            }
        };
        done.unwrap_or_else(|e| panic!("{statement}: {e}"))
    }

    /// The rows of a query whose columns are all text (or NULL) on both backends: cast the
    /// others (`CAST(n AS TEXT)`).
    pub async fn text_rows(&self, query: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::Row as _;
        let sql = sqlx::AssertSqlSafe(query.to_owned());
        let found = match &self.database {
            None => {
                let pool = self.db().await;
                let rows = sqlx::query(sql).fetch_all(&pool).await.map(|rows| {
                    rows.iter()
                        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                        .collect()
                });
                pool.close().await;
                rows
            }
            Some(database) => {
                let pool = database.pool().await;
                let rows = sqlx::query(sql).fetch_all(&pool).await.map(|rows| {
                    rows.iter()
                        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                        .collect()
                });
                pool.close().await;
                rows
            }
        };
        found.unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    pub fn config(&self) -> Config {
        let env = TestEnv(vec![("PERSONA_API_KEY".into(), API_KEY.into())]);
        Config::load_with(&self.app.config, &env).expect("stack config loads")
    }

    /// The jobs' context, in-process, on the simulator's clock and the real SMTP server.
    pub async fn context(&self) -> JobContext {
        let config = self.config();
        let parts = inquiry_mailer::app::build(&config, None)
            .await
            .expect("job context builds");
        JobContext::new(
            &config,
            parts.store,
            parts.persona,
            parts.mailer,
            self.clock.clone(),
            CancellationToken::new(),
        )
    }

    pub async fn store(&self) -> Store {
        let config = self.config();
        inquiry_mailer::app::open_store(&config)
            .await
            .expect("store opens")
    }

    /// A pool of the test's own on the stack's database, for raw SQL as the application (or a
    /// hand edit) would run it: the store itself shows no SQL.
    pub async fn db(&self) -> sqlx::SqlitePool {
        pool(&self.app.db_path()).await
    }

    /// The real binary against this stack, with the API key in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.app.command(args);
        cmd.env("PERSONA_API_KEY", API_KEY);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run binary"))
    }

    /// `n` users `usr_0…` with every prefill column set, through `users import`.
    pub fn add_users(&self, n: usize) -> PathBuf {
        let mut csv = String::from("id,email,name_first,name_last,birthdate,phone_number\n");
        for i in 0..n {
            csv.push_str(&format!(
                "usr_{i},user{i}@example.com,First{i},Last{i},19{:02}-0{}-1{},+1 415 555 {:04}\n",
                50 + i % 50,
                1 + i % 9,
                i % 10,
                i
            ));
        }
        let path = self.app.write("users.csv", &csv);
        self.run(&["users", "import", path.to_str().unwrap()])
            .assert_code(0);
        path
    }
}

async fn sim_environment(sim: &SimHandle) -> String {
    let r = super::sim::http_client()
        .get(sim.api_base().join("rate-limits").unwrap())
        .bearer_auth(API_KEY)
        .header("Persona-Version", "2025-12-08")
        .send()
        .await
        .expect("simulator answers");
    r.headers()
        .get("Persona-Environment-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| "env_SIMULATED".to_owned())
}

struct TestEnv(Vec<(String, String)>);

impl inquiry_mailer::config::Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
}

/// A pool on a SQLite file with a busy timeout, as the README asks of the application.
pub async fn pool(path: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(std::time::Duration::from_secs(5));
    sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the database")
}
