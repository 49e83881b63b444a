//! A daemon mailing `kind = "redirect"` links, and a browser-less client for its endpoint that
//! does not follow redirects, so each answer is seen as the daemon gave it.

use std::time::Duration;

use persona_sim::SimHandle;

use super::daemon::{Daemon, free_port, listen_on, wait_for_status};
use super::smtp::ReceivedMail;
use super::stack::{Backend, Stack};

/// What the shipped config.toml has for `public_url` (commented out).
const PUBLIC_URL_LINE: &str = "# public_url = \"https://verify.example.com\"";

/// A stack on `kind = "redirect"` with `users` invited by a running daemon whose listener is
/// the `public_url`; `edits` change config.toml further. Returns the invites too.
pub async fn redirect_daemon(
    users: usize,
    edits: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (Stack, Daemon, Vec<ReceivedMail>) {
    redirect_daemon_on(Backend::Sqlite, users, edits, env)
        .await
        .expect("a SQLite stack always starts")
}

/// [`redirect_daemon`] on `backend`; `None` when PostgreSQL is not installed (the test skips).
pub async fn redirect_daemon_on(
    backend: Backend,
    users: usize,
    edits: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Option<(Stack, Daemon, Vec<ReceivedMail>)> {
    let port = free_port();
    let listen = listen_on(port);
    let public = format!("public_url = \"http://127.0.0.1:{port}\"");
    let mut all: Vec<(&str, &str)> = vec![(listen.0, &listen.1), (PUBLIC_URL_LINE, &public)];
    all.extend_from_slice(edits);
    let stack = Stack::start_on(backend, "redirect", &all).await?;
    stack.add_users(users);
    let mut daemon = Daemon::start(&stack, port, env);
    daemon.wait_ready().await;
    wait_for_status(&stack, &[], "every user invited", |s| {
        s["users"]["invited"].as_i64() == Some(users as i64)
    })
    .await;
    let invites = stack.smtp.wait_for_messages(users).await;
    Some((stack, daemon, invites))
}

/// The mailed link of `user` (`usr_3`) among `mails`.
pub fn link_of(mails: &[ReceivedMail], user: &str) -> String {
    let n: usize = user.trim_start_matches("usr_").parse().expect("usr_N");
    let to = format!("user{n}@example.com");
    let mail = mails
        .iter()
        .find(|m| m.to.contains(&to))
        .unwrap_or_else(|| panic!("no mail to {to}"));
    mailed_link(mail)
}

/// The one link in a mail's text part, which must point at the daemon's `/link/` path.
pub fn mailed_link(mail: &ReceivedMail) -> String {
    let link = crate::provisioning::link_in(mail);
    assert!(link.contains("/link/"), "not a redirect link: {link}");
    link
}

/// One answer of the endpoint.
#[derive(Debug)]
pub struct Hit {
    pub status: u16,
    pub location: Option<String>,
    pub csp: Option<String>,
    pub body: String,
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds")
}

async fn read(r: reqwest::Response) -> Hit {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, location, csp) = (
        r.status().as_u16(),
        header("location"),
        header("content-security-policy"),
    );
    Hit {
        status,
        location,
        csp,
        body: r.text().await.expect("body"),
    }
}

pub async fn get(url: &str) -> Hit {
    read(client().get(url).send().await.expect("daemon answers GET")).await
}

/// The Continue button: a POST of the form, with no fields.
pub async fn post(url: &str) -> Hit {
    read(
        client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("")
            .send()
            .await
            .expect("daemon answers POST"),
    )
    .await
}

/// Where the simulator's request log stands now.
pub fn mark(sim: &SimHandle) -> u64 {
    sim.requests().last().map_or(0, |r| r.seq)
}

/// The Persona calls since `mark` that a click makes, by route: everything but the refresh
/// job's status listing (`GET /inquiries`), which the daemon runs on its own schedule.
pub fn calls_since(sim: &SimHandle, mark: u64) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.seq > mark)
        .filter(|r| !(r.method == "GET" && r.route.as_deref() == Some("/inquiries")))
        .map(|r| format!("{} {}", r.method, r.route.unwrap_or_else(|| r.path.clone())))
        .collect()
}
