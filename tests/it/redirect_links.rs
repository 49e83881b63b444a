//! `[links] kind = "redirect"` on the running daemon: the mailed link shows a page on GET and
//! calls nothing; its Continue button (a POST) creates, links, resumes or recreates just in
//! time and answers 303 to a link the simulator opens; finished users get a "done" page,
//! guessed tokens a 404, and an expiry sends no renewed mail. Persona calls are counted per click.

use std::time::Duration;

use inquiry_mailer::domain::{InquiryId, random_alnum};
use persona_sim::{Action, Status};

use crate::support::redirect::{Hit, calls_since, get, link_of, mark, post, redirect_daemon};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const DAY: Duration = Duration::from_secs(86_400);

/// The link a 303 sends the browser to, opened as the browser would: the inquiry it opens.
async fn follow(hit: &Hit) -> serde_json::Value {
    assert_eq!(hit.status, 303, "not a redirect: {hit:?}");
    let location = hit.location.as_deref().expect("a Location");
    let opened = open_link(location).await;
    assert_eq!(
        opened.status, 200,
        "the simulator refused it: {}",
        opened.body
    );
    opened.body
}

/// The user's inquiries at the simulator (by their reference id), oldest first.
fn inquiries_of(stack: &Stack, user: &str) -> Vec<persona_sim::InquirySnapshot> {
    let status = stack.run(&["status", "--json", "--user", user]).json();
    let reference = status["user"]["reference_id"]
        .as_str()
        .expect("a reference id")
        .to_owned();
    let mut all: Vec<_> = stack
        .sim
        .inquiries()
        .into_iter()
        .filter(|i| i.reference_id.as_deref() == Some(reference.as_str()))
        .collect();
    all.sort_by_key(|i| i.created_at);
    all
}

fn live(inqs: &[persona_sim::InquirySnapshot]) -> usize {
    inqs.iter().filter(|i| i.status.is_open()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_shows_a_post_form_and_calls_persona_for_nothing() {
    let (stack, _daemon, invites) = redirect_daemon(2, &[], &[]).await;
    assert!(
        stack.sim.inquiries().is_empty(),
        "no inquiry before anyone clicks"
    );
    let link = link_of(&invites, "usr_0");
    let token = link.rsplit('/').next().unwrap();
    assert!(token.len() >= 22, "at least 128 bits of token: {link}");
    let before = mark(&stack.sim);
    for _ in 0..3 {
        let page = get(&link).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains("<form method=\"post\""), "{}", page.body);
        assert!(page.body.contains("Continue"));
        assert!(page.body.contains("Example App"), "the app's name");
        assert!(!page.body.contains("<script"), "no script");
        assert!(
            !page.body.contains("http"),
            "no external asset: {}",
            page.body
        );
        let csp = page.csp.as_deref().expect("a Content-Security-Policy");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self'"), "{csp}");
    }
    assert_eq!(calls_since(&stack.sim, before), Vec::<String>::new());
    assert!(stack.sim.inquiries().is_empty(), "a GET created nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_creates_links_recreates_on_a_new_version_and_resumes_after_expiry() {
    // Resends are not held back by spacing here: only the kind keeps refresh from mailing.
    let (stack, daemon, invites) = redirect_daemon(
        3,
        &[(
            "min_resend_interval = \"24h\"",
            "min_resend_interval = \"1s\"",
        )],
        &[],
    )
    .await;

    // Day 0, first click: the inquiry is made with its one-time link in one call.
    let link0 = link_of(&invites, "usr_0");
    let before = mark(&stack.sim);
    let first = post(&link0).await;
    let opened = follow(&first).await;
    let inquiry = opened["inquiry-id"].as_str().unwrap().to_owned();
    let calls = calls_since(&stack.sim, before);
    eprintln!("first click: {calls:?}");
    assert_eq!(calls, ["POST /inquiries"]);

    // Twice at once (a double click, two tabs): both get a working link, one live inquiry.
    let before = mark(&stack.sim);
    let (a, b) = tokio::join!(post(&link0), post(&link0));
    assert_ne!(
        a.location, b.location,
        "each click has its own one-time link"
    );
    for hit in [&a, &b] {
        assert_eq!(follow(hit).await["inquiry-id"], inquiry.as_str());
    }
    let calls = calls_since(&stack.sim, before);
    eprintln!("two clicks at once: {calls:?}");
    assert_eq!(
        calls,
        [
            "GET /inquiries/{inquiry-id}",
            "POST /inquiries/{inquiry-id}/generate-one-time-link",
            "GET /inquiries/{inquiry-id}",
            "POST /inquiries/{inquiry-id}/generate-one-time-link"
        ]
    );
    assert_eq!(live(&inquiries_of(&stack, "usr_0")), 1);

    // A new template version for a user who never started: the old inquiry is expired first,
    // then a new one on the latest version.
    let link1 = link_of(&invites, "usr_1");
    let old = follow(&post(&link1).await).await["inquiry-id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (template, _) = stack.sim.templates()[0].clone();
    let latest = stack.sim.publish_template_version(&template).unwrap();
    let before = mark(&stack.sim);
    let recreated = follow(&post(&link1).await).await;
    let calls = calls_since(&stack.sim, before);
    eprintln!("click after a new version: {calls:?}");
    assert_eq!(
        calls,
        [
            "GET /inquiries/{inquiry-id}",
            "POST /inquiries/{inquiry-id}/expire",
            "POST /inquiries"
        ]
    );
    assert_ne!(recreated["inquiry-id"], old.as_str());
    assert_eq!(recreated["latest-version"], true, "{recreated}");
    assert_eq!(recreated["template-version-id"], latest.as_str());
    let usr1 = inquiries_of(&stack, "usr_1");
    assert_eq!(usr1.len(), 2);
    assert_eq!(usr1[0].status, Status::Expired, "the old one ended");
    assert_eq!(live(&usr1), 1);

    // A started user whose inquiry expired: resumed (not replaced), then a fresh link.
    let link2 = link_of(&invites, "usr_2");
    let started = follow(&post(&link2).await).await["inquiry-id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .sim
        .act(started.parse::<InquiryId>().unwrap(), Action::Start)
        .unwrap();
    stack.sim.advance_clock(8 * DAY);
    let before = mark(&stack.sim);
    let resumed = follow(&post(&link2).await).await;
    let calls = calls_since(&stack.sim, before);
    eprintln!("click after expiry: {calls:?}");
    assert_eq!(
        calls,
        [
            "GET /inquiries/{inquiry-id}",
            "POST /inquiries/{inquiry-id}/resume",
            "POST /inquiries/{inquiry-id}/generate-one-time-link"
        ]
    );
    assert_eq!(resumed["inquiry-id"], started.as_str(), "the same inquiry");
    assert_eq!(live(&inquiries_of(&stack, "usr_2")), 1);

    // Everyone's inquiry has expired now; refresh renews nothing by mail for this kind.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refreshed = stack.run(&["once", "--job", "refresh"]);
    refreshed.assert_code(0);
    eprintln!("refresh: {}", refreshed.stdout);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.smtp.messages().len(), 3, "only the three invites");
    let history = stack.run(&["status", "--json", "--user", "usr_0"]).json();
    let kinds: Vec<&str> = history["mails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["invite"], "{history:#}");
    assert!(
        !daemon.stderr().contains("/link/"),
        "no link in the log:\n{}",
        daemon.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_user_sees_a_done_page_and_a_guessed_token_a_404() {
    let (stack, _daemon, invites) = redirect_daemon(1, &[], &[]).await;
    let link = link_of(&invites, "usr_0");
    let inquiry = follow(&post(&link).await).await["inquiry-id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .sim
        .act(inquiry.parse::<InquiryId>().unwrap(), Action::Complete)
        .unwrap();

    // The click finds the user finished on its fresh read: no create, resume or link call.
    let before = mark(&stack.sim);
    let done = post(&link).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(done.body.contains("verification is done"), "{}", done.body);
    assert_eq!(
        calls_since(&stack.sim, before),
        ["GET /inquiries/{inquiry-id}"]
    );
    // Known finished now: the page costs nothing at all.
    let before = mark(&stack.sim);
    for hit in [post(&link).await, get(&link).await] {
        assert_eq!(hit.status, 200);
        assert!(hit.body.contains("verification is done"), "{}", hit.body);
    }
    assert_eq!(calls_since(&stack.sim, before), Vec::<String>::new());

    // Guessed, malformed and truncated tokens: 404, no Persona call.
    let base = link.rsplit_once('/').unwrap().0.to_owned();
    let before = mark(&stack.sim);
    for guess in [
        random_alnum(32),
        "abc".to_owned(),
        link.rsplit('/').next().unwrap()[..31].to_owned(),
        format!("{}-", &link.rsplit('/').next().unwrap()[..31]),
    ] {
        let url = format!("{base}/{guess}");
        for hit in [get(&url).await, post(&url).await] {
            assert_eq!(hit.status, 404, "{url}: {hit:?}");
            assert!(hit.location.is_none());
        }
    }
    assert_eq!(calls_since(&stack.sim, before), Vec::<String>::new());
    assert_eq!(stack.sim.inquiries().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_users_are_capped_as_configured() {
    let (stack, _daemon, invites) = redirect_daemon(
        1,
        &[
            (
                "redirect_requests_per_minute = 60",
                "redirect_requests_per_minute = 4",
            ),
            (
                "redirect_persona_calls_per_hour = 60",
                "redirect_persona_calls_per_hour = 2",
            ),
        ],
        &[],
    )
    .await;
    let link = link_of(&invites, "usr_0");
    // 1 call (create), then 2 more would be 3 of 2: the second click is held back.
    follow(&post(&link).await).await;
    let before = mark(&stack.sim);
    let capped = post(&link).await;
    assert_eq!(capped.status, 429, "{capped:?}");
    assert!(capped.location.is_none());
    // The fresh read took the budget's last call; the one-time link would have been one more.
    assert_eq!(
        calls_since(&stack.sim, before),
        ["GET /inquiries/{inquiry-id}"]
    );
    // Two requests used of four this minute: the third and fourth pass, the fifth does not.
    assert_eq!(get(&link).await.status, 200);
    assert_eq!(get(&link).await.status, 200);
    let limited = get(&link).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.body.contains("Please wait"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wants_a_public_url_and_warns_when_it_is_not_https() {
    let stack = Stack::start(
        "redirect",
        &[(
            "# public_url = \"https://verify.example.com\"",
            "public_url = \"http://verify.example.com\"",
        )],
    )
    .await;
    stack.run(&["migrate"]).assert_code(0);
    let run = stack.run(&["check"]);
    run.assert_code(0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("links"))
        .unwrap_or_else(|| panic!("no links line:\n{}", run.stdout));
    assert!(line.starts_with("warn"), "{line}");
    assert!(line.contains("not https://"), "{line}");

    let missing = Stack::start("redirect", &[]).await;
    let run = missing.run(&["check"]);
    run.assert_code(78);
    assert!(
        run.stderr
            .contains("[links] public_url is required with kind = \"redirect\""),
        "{}",
        run.stderr
    );
}
