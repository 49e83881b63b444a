//! Secrets at rest and in logs: no session token or one-time link that Persona issued, no
//! redirect link token, and not the API key, is in the SQLite file (or its WAL), in a
//! trace-level log, or in `status`.

use persona_sim::{Action, SimHandle};
use url::Url;

use crate::provisioning::link_in;
use crate::support::redirect::{mailed_link, post, redirect_daemon};
use crate::support::safety::{UNPACED, execute};
use crate::support::sim::{API_KEY, open_link};
use crate::support::smtp::ReceivedMail;
use crate::support::stack::Stack;

const USERS: usize = 5;

/// Every secret the simulator handed out, read from its responses: session tokens, one-time
/// links and the code inside each.
fn issued_secrets(sim: &SimHandle) -> Vec<String> {
    let mut secrets = Vec::new();
    for r in sim.requests() {
        let Some(meta) = r.response.as_ref().map(|b| &b["meta"]) else {
            continue;
        };
        if let Some(token) = meta["session-token"].as_str() {
            secrets.push(token.to_owned());
        }
        if let Some(link) = meta["one-time-link"].as_str() {
            let code = Url::parse(link)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .expect("a one-time link carries a code");
            secrets.push(link.to_owned());
            secrets.push(code);
        }
    }
    secrets
}

/// `once --job provision` with every log line there is, stderr kept.
fn traced_provision(stack: &Stack) -> String {
    let out = stack
        .command(&["once", "--job", "provision"])
        .env("RUST_LOG", "trace")
        .output()
        .expect("run binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The database file and its WAL, as bytes.
fn database_bytes(stack: &Stack) -> Vec<(String, Vec<u8>)> {
    let db = stack.app.db_path();
    let mut files = vec![(db.display().to_string(), std::fs::read(&db).unwrap())];
    for suffix in ["-wal", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Asserts that no secret is in the database, the logs or `status --user` of any user.
fn assert_nowhere(stack: &Stack, secrets: &[String], logs: &[String]) {
    let mut places = database_bytes(stack);
    // A control: what is not secret is found, so the search does look at the stored rows.
    for inq in stack.sim.inquiries() {
        assert!(
            places.iter().any(|(_, b)| contains(b, inq.id.as_str())),
            "the database holds inquiry ids"
        );
    }
    for (i, log) in logs.iter().enumerate() {
        assert!(log.contains("TRACE"), "the log is at trace level");
        places.push((format!("trace log {i}"), log.as_bytes().to_vec()));
    }
    for i in 0..USERS {
        let id = format!("usr_{i}");
        places.push((
            format!("status --json --user {id}"),
            stack
                .run(&["status", "--json", "--user", &id])
                .stdout
                .into(),
        ));
        places.push((
            format!("status --user {id}"),
            stack.run(&["status", "--user", &id]).stdout.into(),
        ));
    }
    for (place, bytes) in &places {
        for secret in secrets.iter().map(String::as_str).chain([API_KEY]) {
            assert!(
                !contains(bytes, secret),
                "{place} holds a secret ({} characters)",
                secret.len()
            );
        }
    }
}

/// Each mail's link carries one of the issued secrets: they are the secrets that went out.
fn assert_mailed(mails: &[ReceivedMail], secrets: &[String]) {
    assert_eq!(mails.len(), USERS);
    for m in mails {
        let link = link_in(m);
        assert!(
            secrets.iter().any(|s| link.contains(s.as_str())),
            "the mailed link carries an issued secret: {link}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_links_are_never_at_rest_or_in_trace_logs() {
    let mut stack = Stack::start("one-time", &UNPACED).await;
    stack.add_users(USERS);
    // The first run gets a link with each inquiry but cannot mail it; the next one asks for new
    // links. Both generations must stay out of the file and the logs.
    stack.smtp.stop();
    let mut logs = vec![traced_provision(&stack)];
    stack.smtp.restart();
    logs.push(traced_provision(&stack));

    let secrets = issued_secrets(&stack.sim);
    assert_eq!(
        secrets.len(),
        2 * 2 * USERS,
        "a link and its code, twice per user"
    );
    let mails = stack.smtp.wait_for_messages(USERS).await;
    assert_mailed(&mails, &secrets);
    assert_nowhere(&stack, &secrets, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tokens_from_a_resume_are_never_at_rest_or_in_trace_logs() {
    let mut stack = Stack::start("session", &UNPACED).await;
    stack.add_users(USERS);
    stack.smtp.stop();
    let mut logs = vec![traced_provision(&stack)];

    // The users start their inquiries before the invites go out (say, through the app), and the
    // daemon learns it (as a webhook would tell it): a link now needs a session token, which
    // only a resume gives.
    for inq in stack.sim.inquiries() {
        stack.sim.act(&inq.id, Action::Start).unwrap();
    }
    let started = execute(
        &stack,
        "UPDATE inquiries SET status = 'pending' WHERE status = 'created'",
    )
    .await;
    assert_eq!(started, USERS as u64);

    stack.smtp.restart();
    logs.push(traced_provision(&stack));
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/resume"),
        USERS
    );

    let secrets = issued_secrets(&stack.sim);
    assert_eq!(secrets.len(), USERS, "one session token per resume");
    let mails = stack.smtp.wait_for_messages(USERS).await;
    assert_mailed(&mails, &secrets);
    for m in &mails {
        let opened = open_link(&link_in(m)).await;
        assert_eq!(opened.status, 200, "the token opens the pending inquiry");
    }
    assert_nowhere(&stack, &secrets, &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_tokens_and_the_links_they_lead_to_are_never_at_rest_or_in_trace_logs() {
    let (stack, daemon, invites) = redirect_daemon(USERS, &UNPACED, &[("RUST_LOG", "trace")]).await;
    // Each user clicks twice: the first click creates the inquiry with a one-time link, the
    // second asks for a new one; one user's inquiry expires first, so a resume hands over a
    // session token too.
    let mut tokens = Vec::new();
    for (i, mail) in invites.iter().enumerate() {
        let link = mailed_link(mail);
        tokens.push(link.rsplit('/').next().unwrap().to_owned());
        for _ in 0..2 {
            let hit = post(&link).await;
            assert_eq!(hit.status, 303, "{hit:?}");
        }
        if i == 0 {
            stack
                .sim
                .advance_clock(std::time::Duration::from_secs(8 * 86_400));
        }
    }
    let expired = post(&mailed_link(&invites[0])).await;
    assert_eq!(expired.status, 303, "{expired:?}");
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/resume"),
        1,
        "one click resumed"
    );

    let mut secrets = issued_secrets(&stack.sim);
    assert_eq!(
        secrets.len(),
        2 * (2 * USERS + 1) + 1,
        "a link and its code per click, and the resume's session token"
    );
    secrets.extend(tokens);
    assert_nowhere(&stack, &secrets, &[daemon.stderr()]);
}
