//! `demo` on a fresh machine: no config file, no account, no mail server. It tells what happened,
//! leaves its mails as `.eml` files in a folder it names, and nothing running.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::app::BIN;
use crate::support::smtp::{ReceivedMail, eml_files, parse_eml_files};

const VALID_USERS: [&str; 5] = [
    "alexander.sample@example.com",
    "beatriz.oliveira@example.com",
    "chidi.okafor@example.org",
    "dana.whitfield@example.net",
    "emi.tanaka@example.com",
];

struct DemoRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `inquiry-mailer demo` in `cwd` with none of this shell's config or secrets; bounded.
fn run_demo(cwd: &Path) -> DemoRun {
    let stdout_path = cwd.join("stdout.txt");
    let stderr_path = cwd.join("stderr.txt");
    let mut cmd = Command::new(BIN);
    cmd.arg("demo")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("INQUIRY_MAILER")
            || k == "PERSONA_API_KEY"
            || k == "CREDENTIALS_DIRECTORY"
            || k == "RUST_LOG"
        {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("run the binary");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "demo still running after 60 s\nstdout:\n{}",
                std::fs::read_to_string(&stdout_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    DemoRun {
        code: status.code(),
        stdout: std::fs::read_to_string(&stdout_path).unwrap(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
    }
}

/// The one run folder under `demo-outbox/`.
fn outbox_of(cwd: &Path) -> PathBuf {
    let root = cwd.join("demo-outbox");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one folder per run: {dirs:?}");
    dirs[0].clone()
}

/// The simulator's address, from the account's first line.
fn simulator_addr(account: &str) -> SocketAddr {
    let start = account
        .find("http://127.0.0.1:")
        .expect("the account names the simulator")
        + "http://".len();
    let host_port = account[start..].split('/').next().unwrap();
    host_port.parse().expect("an address")
}

fn is_renewed(mail: &ReceivedMail) -> bool {
    mail.subject.contains("new verification link")
}

#[test]
fn demo_plays_the_pipeline_without_config_and_leaves_its_mails_and_nothing_running() {
    let cwd = tempfile::tempdir().unwrap();
    let run = run_demo(cwd.path());
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let account = &run.stdout;
    for needle in ["usr_ABC123", "Alexander", "Day 4", "resume", "recreate"] {
        assert!(account.contains(needle), "{needle:?} not in:\n{account}");
    }
    // Day 3's account counts the replaced inquiries it expired at Persona.
    let day3 = account
        .split("Day 3")
        .nth(1)
        .and_then(|rest| rest.split("Day 4").next())
        .expect("a day 3");
    assert!(
        day3.contains("3 recreated") && day3.contains("3 replaced inquiries expired"),
        "{day3}"
    );
    // The skip shows, and it is the invalid address.
    assert!(
        account.contains("skipped") && account.contains("felix.brandt(at)example.com"),
        "{account}"
    );

    let outbox = outbox_of(cwd.path());
    let named = outbox
        .strip_prefix(cwd.path())
        .unwrap()
        .display()
        .to_string();
    assert!(
        account.contains(&named),
        "the account names {named}:\n{account}"
    );

    // Grace, on redirect links: one invite (her own folder) and two clicks on it, on day 0
    // (the inquiry is made) and after it expired (resumed), each a 303 to a one-time link.
    let grace = parse_eml_files(&eml_files(&outbox.join("redirect")));
    assert_eq!(grace.len(), 1, "one mail for Grace");
    assert!(
        grace[0]
            .text_part
            .as_deref()
            .is_some_and(|t| t.contains("/link/")),
        "a redirect link"
    );
    let clicks: Vec<&str> = account
        .lines()
        .filter(|l| l.contains("Grace: GET of her link 200"))
        .collect();
    assert_eq!(clicks.len(), 2, "{account}");
    assert!(clicks[0].contains("303 See Other") && clicks[0].contains("POST /inquiries"));
    assert!(clicks[1].contains("303 See Other") && clicks[1].contains("/resume"));

    let mails = parse_eml_files(&eml_files(&outbox));
    let mut by_recipient: HashMap<String, Vec<&ReceivedMail>> = HashMap::new();
    for mail in &mails {
        let address = mail
            .to
            .rsplit('<')
            .next()
            .unwrap()
            .trim_end_matches('>')
            .to_owned();
        by_recipient.entry(address).or_default().push(mail);
    }
    let mut recipients: Vec<&str> = by_recipient.keys().map(String::as_str).collect();
    recipients.sort();
    let mut expected = VALID_USERS.to_vec();
    expected.sort();
    assert_eq!(
        recipients, expected,
        "mail for every valid user, none for the skipped one"
    );
    for (who, mails) in &by_recipient {
        let invites = mails.iter().filter(|m| !is_renewed(m)).count();
        assert_eq!(invites, 1, "{who}: one invite");
        for m in mails {
            assert!(
                m.text_part
                    .as_deref()
                    .is_some_and(|t| t.contains("/verify?inquiry-id=inq_")),
                "{who}: a link to an inquiry in {}",
                m.subject
            );
        }
    }
    // Alexander has locale "de": his invite is German, and its link opens Persona in German.
    let alexander = &by_recipient["alexander.sample@example.com"][0];
    assert!(
        alexander
            .subject
            .ends_with("Bitte bestätigen Sie Ihre Identität"),
        "{}",
        alexander.subject
    );
    assert!(
        alexander
            .text_part
            .as_deref()
            .is_some_and(|t| t.contains("&language=de") && t.contains("Der Link ist gültig bis")),
        "{:?}",
        alexander.text_part
    );
    assert!(
        account.contains("templates/de/") && account.contains("Guten Tag Alexander Sample"),
        "the account shows the German invite:\n{account}"
    );
    let renewed = |who: &str| by_recipient[who].iter().filter(|m| is_renewed(m)).count();
    // Alexander finished on day 1; Beatriz's expired inquiry was resumed, then everyone
    // unfinished whose inquiry was not running got a new inquiry on the new template version.
    // Beatriz's resumed inquiry is `pending`, which SPEC release 2 never cuts off: it is left
    // alone until it expires (it was replaced too in release 1, hence 2 renewed mails then).
    assert_eq!(renewed("alexander.sample@example.com"), 0);
    assert_eq!(renewed("beatriz.oliveira@example.com"), 1);
    for who in [
        "chidi.okafor@example.org",
        "dana.whitfield@example.net",
        "emi.tanaka@example.com",
    ] {
        assert_eq!(renewed(who), 1, "{who}");
    }

    // Nothing left behind but the mail: no database or config in the working folder, and the
    // simulator's port is closed now that the process has exited.
    let mut left: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["demo-outbox", "stderr.txt", "stdout.txt"]);
    let sim = simulator_addr(account);
    assert!(
        TcpStream::connect_timeout(&sim, Duration::from_millis(500)).is_err(),
        "the simulator at {sim} still answers"
    );
}
