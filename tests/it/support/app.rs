//! A fresh project folder per test (config.toml, templates, SQLite file) and the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_inquiry-mailer");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped config.toml with `edits` applied as (old, new) text replacements.
pub fn shipped_config_with(edits: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(repo_root().join("config.toml")).expect("config.toml");
    for (old, new) in edits {
        assert!(text.contains(old), "config.toml has no {old:?}");
        text = text.replacen(old, new, 1);
    }
    text
}

/// The shipped `[reminders]` cadence line, for tests to replace with their own.
pub const SHIPPED_REMINDERS: &str = "after = [\"2d\", \"4d\"]";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl TestApp {
    /// A folder with the shipped config (database and outbox inside the folder) and templates.
    pub fn new() -> TestApp {
        Self::with_config(&[])
    }

    pub fn with_config(edits: &[(&str, &str)]) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        // Reminders are off unless a test sets its own cadence: the other tests count mails.
        let mut edits = edits.to_vec();
        if !edits
            .iter()
            .any(|(old, _)| old.starts_with(SHIPPED_REMINDERS))
        {
            edits.push((SHIPPED_REMINDERS, "after = []"));
        }
        let edits = edits.as_slice();
        // Tests never reach real Persona or a real mail host: both point at a closed loopback
        // port unless a test points them at its simulator or SMTP server.
        let text = shipped_config_with(edits)
            .replacen(
                "api_base = \"https://api.withpersona.com/api/v1\"",
                "api_base = \"http://127.0.0.1:9/api/v1\"",
                1,
            )
            .replacen(
                "smtp_url = \"smtp://127.0.0.1:25\"",
                "smtp_url = \"smtp://127.0.0.1:9\"",
                1,
            );
        std::fs::write(&config, text).expect("write config");
        copy_dir(
            &repo_root().join("templates"),
            &dir.path().join("templates"),
        );
        TestApp { dir, config }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("inquiry-mailer.db")
    }

    /// The binary with `--config` set and no inherited overrides or secrets.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("INQUIRY_MAILER")
                || k == "PERSONA_API_KEY"
                || k == "CREDENTIALS_DIRECTORY"
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run binary"))
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    if !from.is_dir() {
        return;
    }
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        if e.path().is_dir() {
            // Locale folders (templates/de/).
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// What a run of the binary printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The line of a `check` report about `part`, e.g. `ok   persona    http://…: the API key
    /// works (…)`.
    #[track_caller]
    pub fn check_line(&self, part: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(part))
            .unwrap_or_else(|| panic!("no {part} line in:\n{}", self.stdout))
    }
}
