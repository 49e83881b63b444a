//! The whole pipeline on loopback: the Persona simulator, a real SMTP server (aiosmtpd), a
//! temp folder with config.toml and the SQLite file. Jobs run in-process (sharing the
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
use super::sim::{API_KEY, start_sim};
use super::smtp::SmtpServer;

pub struct Stack {
    pub sim: SimHandle,
    pub smtp: SmtpServer,
    pub app: TestApp,
    pub clock: Clock,
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
        }
    }

    pub fn config(&self) -> Config {
        let env = TestEnv(vec![("PERSONA_API_KEY".into(), API_KEY.into())]);
        Config::load_with(&self.app.config, &env).expect("stack config loads")
    }

    /// The jobs' context, in-process, on the simulator's clock and the real SMTP server.
    pub async fn context(&self) -> JobContext {
        let config = self.config();
        inquiry_mailer::app::build(&config, self.clock.clone(), CancellationToken::new(), None)
            .await
            .expect("job context builds")
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
