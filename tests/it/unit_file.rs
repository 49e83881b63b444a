//! The shipped systemd unit is valid, runs the binary the way its command line expects, stops
//! later than the daemon drains, and keeps its sandbox at an exposure of 2.0 or better.

use std::path::PathBuf;
use std::process::{Command, Output};

use inquiry_mailer::config::{DATABASE_PASSWORD, PERSONA_API_KEY, SMTP_PASSWORD, WEBHOOK_SECRET};

use crate::support::app::{BIN, repo_root};

const UNIT_NAME: &str = "inquiry-mailer.service";
const INSTALLED_BIN: &str = "/usr/local/bin/inquiry-mailer";
const MAX_EXPOSURE: f64 = 2.0;

fn unit_path() -> PathBuf {
    repo_root().join("deploy").join(UNIT_NAME)
}

fn unit_text() -> String {
    std::fs::read_to_string(unit_path()).expect("deploy/inquiry-mailer.service")
}

/// The value of the one `key=` line of the unit.
fn setting(key: &str) -> String {
    let prefix = format!("{key}=");
    let values: Vec<String> = unit_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    assert_eq!(values.len(), 1, "the unit should set {key}= once");
    values.into_iter().next().unwrap()
}

fn systemd_analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed, so the unit file cannot be checked: install \
             systemd (apt-get install systemd), as .ci/run does"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

#[test]
fn systemd_analyze_verify_finds_nothing_wrong() {
    // verify insists that ExecStart= exists, and the binary is not installed on a build machine:
    // check a copy that runs the freshly built binary instead.
    let text = unit_text();
    assert_eq!(
        text.matches(INSTALLED_BIN).count(),
        1,
        "ExecStart should name {INSTALLED_BIN} once"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join(UNIT_NAME);
    std::fs::write(&copy, text.replace(INSTALLED_BIN, BIN)).expect("write unit copy");

    let out = systemd_analyze(&["verify", copy.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 even for many problems: what it says is the verdict.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
    assert!(out.status.success(), "systemd-analyze verify failed");
}

#[test]
fn the_sandbox_exposure_is_at_most_two() {
    let path = unit_path();
    let out = systemd_analyze(&["security", "--offline=yes", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in systemd-analyze security output:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "→ Overall exposure level for inquiry-mailer.service: 1.1 OK 🙂"
    let exposure: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure level from {line:?}"));
    println!("systemd-analyze security --offline=yes deploy/{UNIT_NAME}: exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn the_exec_start_command_line_is_one_the_binary_accepts() {
    let exec_start = setting("ExecStart");
    let mut words = exec_start.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_BIN));
    let args: Vec<&str> = words.collect();
    assert_eq!(args.last(), Some(&"run"), "the unit runs the daemon");
    // `--help` after the subcommand: clap checks the whole line, then prints help and exits 0.
    let out = Command::new(BIN)
        .args(&args)
        .arg("--help")
        .output()
        .expect("run binary");
    assert!(
        out.status.success(),
        "{BIN} {} --help was refused:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_waits_longer_than_the_daemon_drains() {
    let stop = humantime::parse_duration(&format!("{}s", setting("TimeoutStopSec")))
        .expect("TimeoutStopSec in seconds");
    let config: toml::Table = std::fs::read_to_string(repo_root().join("config.toml"))
        .expect("config.toml")
        .parse()
        .expect("config.toml is TOML");
    let drain = config["server"]["shutdown_timeout"]
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .expect("[server] shutdown_timeout");
    assert!(
        stop > drain,
        "TimeoutStopSec ({stop:?}) must exceed shutdown_timeout ({drain:?}), or systemd kills \
         the daemon mid-drain"
    );
}

#[test]
fn the_unit_is_a_notify_service_with_a_watchdog_and_reload() {
    assert_eq!(setting("Type"), "notify");
    assert_eq!(setting("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(setting("WatchdogSec"), "30");
    assert_eq!(setting("StateDirectory"), "inquiry-mailer");
    let text = unit_text();
    for credential in [
        PERSONA_API_KEY,
        SMTP_PASSWORD,
        WEBHOOK_SECRET,
        DATABASE_PASSWORD,
    ]
    .map(|s| s.credential)
    {
        assert!(
            text.contains(&format!(
                "LoadCredential={credential}:/etc/inquiry-mailer/credentials/{credential}"
            )),
            "the unit loads the {credential} credential the config reads"
        );
    }
}
