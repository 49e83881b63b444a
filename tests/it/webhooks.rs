//! `POST /webhooks/persona` on the running daemon: a genuine event is applied exactly once
//! however often it arrives, anything not signed right is refused with a bare 401 and changes
//! nothing, and the simulator's own webhooks finish a user in seconds without a refresh run.

use std::time::{Duration, Instant};

use inquiry_mailer::daemon::signature::sign;
use inquiry_mailer::domain::{InquiryId, random_alnum};
use persona_sim::{Action, WebhookTarget};
use serde_json::Value;

use crate::support::app::repo_root;
use crate::support::daemon::{
    Answer, Daemon, PATIENCE, free_port, listen_on, sample, wait_for_status,
};
use crate::support::stack::Stack;

pub(crate) const SECRET: &str = "wbhsec_test_daemon_secret";

/// A stack with `users` provisioned by a daemon that has the webhook secret.
pub(crate) async fn daemon_with_users(users: usize) -> (Stack, Daemon) {
    let port = free_port();
    let listen = listen_on(port);
    let stack = Stack::start("session", &[(listen.0, &listen.1)]).await;
    stack.add_users(users);
    let mut daemon = Daemon::start(&stack, port, &[("PERSONA_WEBHOOK_SECRET", SECRET)]);
    daemon.wait_ready().await;
    wait_for_status(&stack, &[], "every user invited", |s| {
        s["users"]["invited"].as_i64() == Some(users as i64)
    })
    .await;
    (stack, daemon)
}

pub(crate) fn history(stack: &Stack, user: &str) -> Value {
    let run = stack.run(&["status", "--json", "--user", user]);
    run.assert_code(0);
    run.json()
}

pub(crate) fn inquiry_of(stack: &Stack, user: &str) -> String {
    history(stack, user)["inquiries"][0]["inquiry_id"]
        .as_str()
        .expect("the user has an inquiry")
        .to_owned()
}

/// The spec's example event `fixture` (tests/fixtures/webhooks), about `inquiry`, as a new event.
fn event(fixture: &str, inquiry: &str) -> (String, Vec<u8>) {
    event_at(fixture, inquiry, chrono::Utc::now())
}

/// [`event`], created by Persona at `at`.
pub(crate) fn event_at(
    fixture: &str,
    inquiry: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> (String, Vec<u8>) {
    let path = repo_root()
        .join("tests/fixtures/webhooks")
        .join(format!("{fixture}.json"));
    let mut body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let id = format!("evt_{}", random_alnum(24));
    body["data"]["id"] = Value::String(id.clone());
    // A new event happens now: one dated before the inquiry existed would be older news than
    // what the daemon read when it created it, and events are applied by `created-at`.
    body["data"]["attributes"]["created-at"] = Value::String(inquiry_mailer::clock::format_ts(at));
    body["data"]["attributes"]["payload"]["data"]["id"] = Value::String(inquiry.to_owned());
    (id, serde_json::to_vec(&body).unwrap())
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn result_of(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["result"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The history's events that came from webhook event `id`.
fn events_from(history: &Value, id: &str) -> usize {
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap_or_default().contains(id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_event_is_applied_once_and_anything_unsigned_changes_nothing() {
    let (stack, daemon) = daemon_with_users(2).await;
    let inquiry = inquiry_of(&stack, "usr_0");
    let (id, body) = event("inquiry-completed", &inquiry);
    let untouched = history(&stack, "usr_0");
    assert_eq!(untouched["user"]["state"], "invited");

    let mut altered = body.clone();
    let at = String::from_utf8_lossy(&altered)
        .find("\"completed\"")
        .unwrap();
    altered[at + 1..at + 10].copy_from_slice(b"approved ");
    let refused = [
        (
            "wrong secret",
            body.clone(),
            Some(sign("wbhsec_other", now(), &body)),
        ),
        (
            "stale",
            body.clone(),
            Some(sign(SECRET, now() - 600, &body)),
        ),
        ("no header", body.clone(), None),
        (
            "altered after signing",
            altered,
            Some(sign(SECRET, now(), &body)),
        ),
    ];
    for (why, bytes, signature) in &refused {
        let answer = daemon.post_webhook(bytes, signature.as_deref()).await;
        assert_eq!(answer.status, 401, "{why}: {answer:?}");
        assert_eq!(answer.body, "", "{why}: a refusal says nothing more");
    }
    let after = history(&stack, "usr_0");
    assert_eq!(
        after["user"], untouched["user"],
        "refused events change nothing"
    );
    assert_eq!(after["inquiries"], untouched["inquiries"]);
    assert_eq!(after["events"], untouched["events"]);

    // Persona redelivers when an answer is slow or lost: three deliveries, one change.
    let signature = sign(SECRET, now(), &body);
    let mut results = Vec::new();
    for _ in 0..3 {
        results.push(result_of(
            &daemon.post_webhook(&body, Some(&signature)).await,
        ));
    }
    assert_eq!(results, ["accepted", "duplicate", "duplicate"]);
    let h = history(&stack, "usr_0");
    assert_eq!(h["user"]["state"], "finished", "{h:#}");
    assert_eq!(h["user"]["outcome"], "completed", "{h:#}");
    assert_eq!(h["inquiries"][0]["status"], "completed", "{h:#}");
    assert_eq!(events_from(&h, &id), 1, "one event from {id}: {h:#}");

    // Deliveries that race each other are applied once too.
    let inquiry = inquiry_of(&stack, "usr_1");
    let (id, body) = event("inquiry-completed", &inquiry);
    let signature = sign(SECRET, now(), &body);
    let (a, b, c) = tokio::join!(
        daemon.post_webhook(&body, Some(&signature)),
        daemon.post_webhook(&body, Some(&signature)),
        daemon.post_webhook(&body, Some(&signature)),
    );
    let mut results = [result_of(&a), result_of(&b), result_of(&c)];
    results.sort();
    assert_eq!(results, ["accepted", "duplicate", "duplicate"]);
    let h = history(&stack, "usr_1");
    assert_eq!(h["user"]["state"], "finished", "{h:#}");
    assert_eq!(events_from(&h, &id), 1, "one event from {id}: {h:#}");

    let metrics = daemon.get("/metrics").await.body;
    assert_eq!(
        sample(&metrics, r#"webhook_events_total{outcome="rejected"}"#),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"webhook_events_total{outcome="duplicate"}"#),
        Some(4.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_headers_pass_and_oversized_or_malformed_bodies_are_refused() {
    let (stack, daemon) = daemon_with_users(1).await;
    let inquiry = inquiry_of(&stack, "usr_0");

    // During a secret rotation Persona signs with both; only the new one is configured here.
    let (_, body) = event("inquiry-started", &inquiry);
    let header = format!(
        "{} {}",
        sign("wbhsec_old_rotated_out", now(), &body),
        sign(SECRET, now(), &body)
    );
    let answer = daemon.post_webhook(&body, Some(&header)).await;
    assert_eq!(result_of(&answer), "accepted");
    assert_eq!(history(&stack, "usr_0")["user"]["state"], "started");

    let limit = stack.config().server.max_body_bytes;
    let mut huge = event("inquiry-completed", &inquiry).1;
    huge.pop();
    huge.extend(std::iter::repeat_n(b' ', limit));
    huge.push(b'}');
    let answer = daemon
        .post_webhook(&huge, Some(&sign(SECRET, now(), &huge)))
        .await;
    assert_eq!(answer.status, 413, "{} bytes: {answer:?}", huge.len());

    let malformed = br#"{"data":{"type":"event","id":"evt_malformed0001"}}"#;
    let answer = daemon
        .post_webhook(malformed, Some(&sign(SECRET, now(), malformed)))
        .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body.contains("data.attributes"),
        "a signed sender learns what is wrong: {answer:?}"
    );

    // Still serving, and still applying.
    assert_eq!(daemon.get("/healthz").await.status, 200);
    let (_, body) = event("inquiry-completed", &inquiry);
    let answer = daemon
        .post_webhook(&body, Some(&sign(SECRET, now(), &body)))
        .await;
    assert_eq!(result_of(&answer), "accepted");
    assert_eq!(history(&stack, "usr_0")["user"]["state"], "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_webhooks_finish_a_user_without_a_refresh_run() {
    let port = free_port();
    let listen = listen_on(port);
    let target = WebhookTarget {
        url: format!("http://127.0.0.1:{port}/webhooks/persona")
            .parse()
            .unwrap(),
        secret: SECRET.to_owned(),
    };
    let stack = Stack::start_with("session", &[(listen.0, &listen.1)], |c| {
        c.webhook = Some(target)
    })
    .await;
    stack.add_users(1);
    let mut daemon = Daemon::start(&stack, port, &[("PERSONA_WEBHOOK_SECRET", SECRET)]);
    daemon.wait_ready().await;
    wait_for_status(&stack, &[], "the user invited", |s| {
        s["users"]["invited"].as_i64() == Some(1)
    })
    .await;
    let db = stack.db().await;
    let refresh_runs = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_runs WHERE job = 'refresh'")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    // The start-up refresh run must be over, so a status change cannot come from it.
    let deadline = Instant::now() + PATIENCE;
    while sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM job_runs WHERE job = 'refresh' AND finished_at IS NULL",
    )
    .fetch_one(&db)
    .await
    .unwrap()
        > 0
        || refresh_runs().await == 0
    {
        assert!(
            Instant::now() < deadline,
            "start-up refresh run never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs_before = refresh_runs().await;

    let inquiry = InquiryId::parse(&inquiry_of(&stack, "usr_0")).unwrap();
    let acted = Instant::now();
    stack.sim.act(&inquiry, Action::Complete).unwrap();
    let h = wait_for_status(&stack, &["--user", "usr_0"], "the user finished", |h| {
        h["user"]["state"] == "finished"
    })
    .await;
    eprintln!(
        "finished {} ms after the end user completed",
        acted.elapsed().as_millis()
    );
    assert_eq!(h["user"]["outcome"], "completed", "{h:#}");
    let finished = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "user.finished")
        .unwrap_or_else(|| panic!("no user.finished event: {h:#}"));
    assert!(
        finished["detail"]
            .as_str()
            .unwrap()
            .contains("webhook inquiry.completed evt_"),
        "{finished}"
    );
    assert_eq!(
        refresh_runs().await,
        runs_before,
        "no refresh run was involved"
    );
    let deliveries = stack.sim.wait_for_deliveries(2, PATIENCE).await;
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:?}"
    );
    db.close().await;
}
