//! The product on PostgreSQL (`[database] url = "postgres://…"`), through the real paths: the
//! binary and the in-process jobs against a fresh database on a real server, the simulator over
//! HTTP, mail into aiosmtpd. Each body runs on both backends (`<test>::sqlite`,
//! `<test>::postgres`), so the PostgreSQL arm is held to exactly what SQLite does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use inquiry_mailer::daemon::signature::sign;
use inquiry_mailer::domain::{InquiryId, InquiryStatus, RawUser, RedirectToken, UserId};
use inquiry_mailer::jobs::{LEASE, refresh};
use inquiry_mailer::mail::MailKind;
use inquiry_mailer::store::changes::FEED_APPLICATION_NAME;
use inquiry_mailer::store::inquiries::{self, InquiryFacts, RowStatus};
use inquiry_mailer::store::mails::{self, MailStatus};
use inquiry_mailer::store::user_states::{self, UserState};
use inquiry_mailer::store::{
    Location, PostgresUrl, Store, StoreError, StoreOptions, events, job_runs, redirect_tokens,
    status, steps, users, webhook_events,
};
use persona_sim::{Action, Faults};

use crate::provisioning::link_in;
use crate::support::app::SHIPPED_REMINDERS;
use crate::support::daemon::{Daemon, free_port, listen_on, wait_for_status};
use crate::support::postgres::fresh_database;
use crate::support::redirect::{get, link_of, post, redirect_daemon_on};
use crate::support::refresh::{
    by_recipient, inquiries_by_user, live_count, provisioned, recipient_of, references,
};
use crate::support::safety::{
    Ending, UNPACED, execute, mails_per_user, provision_run, sends_in_flight, user_of,
};
use crate::support::sim::open_link;
use crate::support::stack::{Backend, Stack};
use crate::webhooks::{SECRET, event_at, history, inquiry_of, result_of};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The stack on `backend`, or `None` when PostgreSQL is not installed (the test skips; with
/// `CI=true` it fails instead).
async fn stack_on(backend: Backend, edits: &[(&str, &str)]) -> Option<Stack> {
    let stack = Stack::start_on(backend, "session", edits).await?;
    assert_eq!(stack.backend(), backend);
    Some(stack)
}

/// The application's read side, as it would read it: user → (state, outcome, updated_at).
async fn verifications(stack: &Stack) -> BTreeMap<String, (String, Option<String>, String)> {
    stack
        .text_rows("SELECT user_id, state, outcome, updated_at FROM verifications")
        .await
        .into_iter()
        .map(|r| {
            let user = r[0].clone().expect("user_id");
            let state = r[1].clone().expect("state");
            let at = r[3].clone().expect("updated_at");
            (user, (state, r[2].clone(), at))
        })
        .collect()
}

/// SPEC's `updated_at`: UTC ISO 8601 with milliseconds, `2026-03-15T18:30:00.123Z`.
fn assert_spec_time(at: &str) {
    let parsed = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("updated_at {at:?} is not RFC 3339: {e}"));
    assert_eq!(parsed.offset().local_minus_utc(), 0, "{at}");
    assert_eq!(at.len(), "2026-03-15T18:30:00.123Z".len(), "{at}");
    assert!(at.ends_with('Z'), "{at}");
}

on_both!(provisioning_invites_every_user_once_with_their_own_inquiry);
async fn provisioning_invites_every_user_once_with_their_own_inquiry(backend: Backend) {
    const USERS: usize = 20;
    let Some(stack) = stack_on(backend, &[]).await else {
        return;
    };
    stack.add_users(USERS);
    stack.sim.clear_requests();

    let run = stack.run(&["once", "--job", "provision"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("20 mails sent"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );

    let mails = stack.smtp.wait_for_messages(USERS).await;
    assert_eq!(mails.len(), USERS);
    let recipients: HashSet<_> = mails.iter().map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(recipients.len(), USERS, "one mail per user");
    let inquiries = stack.sim.inquiries();
    assert_eq!(inquiries.len(), USERS, "one inquiry per user");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), USERS);

    let (by_user, _) = references(&stack).await;
    for mail in &mails {
        let user = user_of(&mail.rcpt_to);
        let opened = open_link(&link_in(mail)).await;
        assert_eq!(opened.status, 200, "{user}: {}", opened.body);
        let id: InquiryId = opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
        let reference = stack.sim.inquiry(id).unwrap().reference_id.unwrap();
        assert_eq!(
            reference, by_user[&user],
            "{user}'s link opened another inquiry"
        );
    }

    let view = verifications(&stack).await;
    assert_eq!(view.len(), USERS, "{view:?}");
    for (user, (state, outcome, at)) in &view {
        assert_eq!(state, "invited", "{user}");
        assert_eq!(outcome, &None, "{user}");
        assert_spec_time(at);
    }

    // `check` names the engine and its version, and finds the schema current.
    let check = stack.run(&["check"]);
    let engine = match backend {
        Backend::Sqlite => "(SQLite 3.",
        Backend::Postgres => "(PostgreSQL 1",
    };
    assert!(
        check.stdout.contains(engine) && check.stdout.contains("schema up to date"),
        "{}\n{}",
        check.stdout,
        check.stderr
    );

    // Again: nothing to do, no call, no mail.
    stack.sim.clear_requests();
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    assert_eq!(stack.sim.requests().len(), 0);
    assert_eq!(stack.smtp.messages().len(), USERS);
    let status = stack.run(&["status", "--json"]).json();
    assert_eq!(status["users"]["invited"], USERS, "{status}");
    assert_eq!(status["mails"]["sent"], USERS, "{status}");
}

on_both!(refresh_resumes_started_and_recreates_unstarted_inquiries_near_expiry);
async fn refresh_resumes_started_and_recreates_unstarted_inquiries_near_expiry(backend: Backend) {
    const USERS: usize = 10;
    let Some(stack) = stack_on(backend, &[]).await else {
        return;
    };
    let ctx = provisioned(&stack, USERS).await;
    let started: Vec<_> = stack.sim.inquiries().into_iter().take(USERS / 2).collect();
    for inq in &started {
        stack.sim.act(&inq.id, Action::Start).unwrap();
    }

    stack.clock.advance(6 * DAY + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(
        (report.resumed, report.recreated, report.mails_sent),
        (USERS / 2, USERS / 2, USERS),
        "{report}"
    );
    let all = stack.smtp.wait_for_messages(2 * USERS).await;
    assert_eq!(all.len(), 2 * USERS);
    let started_ids: HashSet<String> = started.iter().map(|i| i.id.to_string()).collect();
    for (who, mails) in by_recipient(&all) {
        assert_eq!(mails.len(), 2, "{who}: one invite, one renewed mail");
        let opened = open_link(&link_in(mails[1])).await;
        assert_eq!(opened.status, 200, "{who}: {}", opened.body);
        assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
        let id = opened.body["inquiry-id"].as_str().unwrap();
        if started_ids.contains(id) {
            assert!(
                link_in(mails[1]).contains("session-token="),
                "{who}: resumed without token"
            );
        }
    }
    for (user, held) in inquiries_by_user(&stack).await {
        assert_eq!(live_count(&held), 1, "{user}: {held:?}");
    }

    // Inside min_resend_interval: nothing more.
    stack.sim.clear_requests();
    stack.clock.advance(HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(report.mails_sent, 0, "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
}

on_both!(a_signed_completed_webhook_finishes_the_user_in_the_view);
async fn a_signed_completed_webhook_finishes_the_user_in_the_view(backend: Backend) {
    let port = free_port();
    let listen = listen_on(port);
    let Some(stack) = stack_on(backend, &[(listen.0, &listen.1)]).await else {
        return;
    };
    stack.add_users(2);
    // Rows there at start-up are the start-up run's, on either backend.
    let mut daemon = Daemon::start(&stack, port, &[("PERSONA_WEBHOOK_SECRET", SECRET)]);
    daemon.wait_ready().await;
    wait_for_status(&stack, &[], "both users invited", |s| {
        s["users"]["invited"].as_i64() == Some(2)
    })
    .await;

    let inquiry = inquiry_of(&stack, "usr_0");
    let (_, body) = event_at("inquiry-completed", &inquiry, chrono::Utc::now());
    let signature = sign(SECRET, chrono::Utc::now().timestamp(), &body);
    let results: Vec<String> = [
        daemon.post_webhook(&body, Some(&signature)).await,
        daemon.post_webhook(&body, Some(&signature)).await,
    ]
    .iter()
    .map(result_of)
    .collect();
    assert_eq!(results, ["accepted", "duplicate"]);
    let h = history(&stack, "usr_0");
    assert_eq!(h["user"]["state"], "finished", "{h:#}");
    assert_eq!(h["inquiries"][0]["status"], "completed", "{h:#}");

    let view = verifications(&stack).await;
    assert_eq!(view["usr_0"].0, "finished", "{view:?}");
    assert_eq!(view["usr_0"].1.as_deref(), Some("completed"), "{view:?}");
    assert_eq!(view["usr_1"].0, "invited", "{view:?}");
    assert_eq!(view["usr_1"].1, None, "{view:?}");
    assert_spec_time(&view["usr_0"].2);
    if backend == Backend::Postgres {
        // The new-user watch LISTENs on a session of its own (new_users_on_postgres).
        let listening = stack
            .text_rows(&format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM pg_stat_activity WHERE application_name = \
                 '{FEED_APPLICATION_NAME}' AND datname = current_database()"
            ))
            .await;
        assert_eq!(listening[0][0].as_deref(), Some("1"), "{}", daemon.stderr());
    }
    daemon.stop().await;
}

on_both!(runs_killed_mid_provisioning_lose_nobody_and_resend_only_what_a_kill_caught);
async fn runs_killed_mid_provisioning_lose_nobody_and_resend_only_what_a_kill_caught(
    backend: Backend,
) {
    const USERS: usize = 40;
    let Some(stack) = stack_on(backend, &UNPACED).await else {
        return;
    };
    stack.add_users(USERS);
    // Small hits, so that every run still has work when it dies.
    let kills = [
        "provision.after-create:2",
        "deliver.before-send:2",
        "deliver.after-send:2",
        "provision.before-create:2",
        "deliver.after-send:1",
    ];
    // user → the attempts a kill caught between `sending` and their outcome.
    let mut caught: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (i, point) in kills.iter().enumerate() {
        let log = format!("run-{i}.log");
        let ending = provision_run(&stack, &log, Some(point), None);
        assert!(
            matches!(ending, Ending::Aborted),
            "run {i} ({point}) ended {ending:?}\n{}",
            std::fs::read_to_string(stack.app.path().join(&log)).unwrap_or_default()
        );
        for (user, attempt) in sends_in_flight(&stack).await {
            caught.entry(user).or_default().insert(attempt);
        }
        // The binary runs on the wall clock: a killed run's 30 s leases "pass" here. On
        // PostgreSQL nothing else frees them (no pid check across machines).
        execute(
            &stack,
            "UPDATE user_states SET lease_until = NULL WHERE lease_until IS NOT NULL",
        )
        .await;
    }
    match provision_run(&stack, "final.log", None, None) {
        Ending::Exited(0) => {}
        other => panic!(
            "the clean run ended {other:?}\n{}",
            std::fs::read_to_string(stack.app.path().join("final.log")).unwrap_or_default()
        ),
    }

    let status = stack.run(&["status", "--json"]).json();
    assert_eq!(status["users"]["invited"], USERS, "{status}");
    let (_, user_of_ref) = references(&stack).await;
    let mut live: HashMap<String, usize> = HashMap::new();
    for inq in stack.sim.inquiries() {
        if matches!(inq.status.as_str(), "created" | "pending") {
            let user = user_of_ref[inq.reference_id.as_deref().unwrap()].clone();
            *live.entry(user).or_default() += 1;
        }
    }
    assert_eq!(live.len(), USERS, "every user holds a live inquiry");
    assert!(
        live.values().all(|n| *n == 1),
        "two live inquiries: {live:?}"
    );

    let mails = stack.smtp.wait_for_messages(USERS).await;
    let per_user = mails_per_user(&mails);
    assert_eq!(per_user.len(), USERS, "every user got their invite");
    for (user, n) in &per_user {
        let allowed = 1 + caught.get(user).map_or(0, BTreeSet::len);
        assert!(
            *n <= allowed,
            "{user}: {n} copies, {allowed} allowed ({caught:?})"
        );
    }
}

on_both!(a_started_user_is_not_cut_off_by_a_new_version_and_renewed_once_after_expiry);
async fn a_started_user_is_not_cut_off_by_a_new_version_and_renewed_once_after_expiry(
    backend: Backend,
) {
    let Some(stack) = stack_on(backend, &[]).await else {
        return;
    };
    let ctx = provisioned(&stack, 1).await;
    let (template, _) = stack.sim.templates()[0].clone();
    let first = stack.sim.inquiries()[0].id.clone();
    stack.clock.advance(DAY);
    stack.sim.act(&first, Action::Start).unwrap();
    let expires_at = stack.sim.inquiry(&first).unwrap().expires_at.unwrap();
    stack.sim.publish_template_version(&template).unwrap();

    stack.sim.clear_requests();
    for _ in 0..3 {
        let report = refresh::run(&ctx).await.unwrap();
        assert_eq!((report.recreated, report.resumed), (0, 0), "{report}");
        stack.clock.advance(2 * DAY);
    }
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/expire"),
        0
    );
    let running = stack.sim.inquiry(&first).unwrap();
    assert_eq!(running.status.as_str(), "pending", "{running:?}");
    assert_eq!(stack.smtp.messages().len(), 1, "only the invite so far");

    // Past its expiry: renewed once.
    let now = stack.clock.now();
    stack
        .clock
        .advance((expires_at - now).to_std().unwrap_or_default() + HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.mails_sent), (1, 1), "{report}");
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.mails_sent), (0, 0), "{report}");
    let held = inquiries_by_user(&stack).await.remove("usr_0").unwrap();
    assert_eq!((held.len(), live_count(&held)), (2, 1), "{held:?}");
    let (state, outcome, _) = verifications(&stack).await.remove("usr_0").unwrap();
    assert!(
        matches!(state.as_str(), "invited" | "started"),
        "a renewed user is unfinished: {state}"
    );
    assert_eq!(outcome, None);
}

on_both!(a_user_who_completes_while_refresh_replaces_their_inquiry_is_finished);
async fn a_user_who_completes_while_refresh_replaces_their_inquiry_is_finished(backend: Backend) {
    const USERS: usize = 3;
    let Some(stack) = stack_on(backend, &[]).await else {
        return;
    };
    let ctx = provisioned(&stack, USERS).await;
    let (template, _) = stack.sim.templates()[0].clone();
    stack.clock.advance(DAY + HOUR);
    stack.sim.publish_template_version(&template).unwrap();
    // Each user completes the old inquiry after refresh decided to replace it and before
    // Persona applies the expire (which then answers 409).
    stack.sim.set_faults(Faults {
        extra_latency_ms: 100,
        ..Faults::default()
    });
    for inq in stack.sim.inquiries() {
        stack.sim.before_expire(&inq.id, Action::Complete).unwrap();
    }
    stack.sim.clear_requests();

    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(
        (report.recreated, report.users_finished, report.mails_sent),
        (0, USERS, 0),
        "{report}"
    );
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
    for (user, held) in inquiries_by_user(&stack).await {
        assert_eq!((held.len(), live_count(&held)), (1, 0), "{user}: {held:?}");
    }
    let view = verifications(&stack).await;
    for i in 0..USERS {
        let user = format!("usr_{i}");
        assert_eq!(view[&user].0, "finished", "{view:?}");
        assert_eq!(view[&user].1.as_deref(), Some("completed"), "{view:?}");
    }
    stack.sim.set_faults(Faults::default());
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(report.mails_sent, 0, "{report}");
    let mails = stack.smtp.messages();
    assert_eq!(mails.len(), USERS, "only the invites");
    assert_eq!(by_recipient(&mails)[&recipient_of("usr_0")].len(), 1);
}

on_both!(a_redirect_link_opens_the_users_inquiry_until_they_finish);
async fn a_redirect_link_opens_the_users_inquiry_until_they_finish(backend: Backend) {
    let Some((stack, mut daemon, invites)) = redirect_daemon_on(backend, 1, &[], &[]).await else {
        return;
    };
    let link = link_of(&invites, "usr_0");
    let page = get(&link).await;
    assert_eq!(page.status, 200, "{page:?}");
    let first = post(&link).await;
    assert_eq!(first.status, 303, "{first:?}");
    let opened = open_link(first.location.as_deref().unwrap()).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let inquiry: InquiryId = opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    let (by_user, _) = references(&stack).await;
    assert_eq!(
        stack.sim.inquiry(&inquiry).unwrap().reference_id.as_deref(),
        Some(by_user["usr_0"].as_str())
    );
    stack.sim.act(&inquiry, Action::Complete).unwrap();
    let done = post(&link).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(done.body.contains("verification is done"), "{}", done.body);
    let guessed = format!("{}/{}", link.rsplit_once('/').unwrap().0, "A".repeat(32));
    assert_eq!(post(&guessed).await.status, 404);
    let h = history(&stack, "usr_0");
    assert_eq!(h["user"]["state"], "finished", "{h:#}");
    daemon.stop().await;
}

on_both!(reminders_go_once_at_each_time_of_the_cadence_and_never_to_a_finished_user);
async fn reminders_go_once_at_each_time_of_the_cadence_and_never_to_a_finished_user(
    backend: Backend,
) {
    const USERS: usize = 3;
    let cadence = (SHIPPED_REMINDERS, "after = [\"2d\", \"4d\"]");
    let Some(stack) = stack_on(backend, &[cadence]).await else {
        return;
    };
    let ctx = provisioned(&stack, USERS).await;
    let invite = by_recipient(&stack.smtp.messages())[&recipient_of("usr_0")][0].clone();
    let opened = open_link(&link_in(&invite)).await;
    let finished: InquiryId = opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
    stack.sim.act(&finished, Action::Complete).unwrap();

    let mut received = USERS;
    for (round, wait) in [(1, 2 * DAY), (2, 2 * DAY)] {
        stack.clock.advance(wait + Duration::from_secs(60));
        let sent = refresh::run(&ctx).await.unwrap().reminders.sent;
        assert_eq!(sent, USERS - 1, "reminder {round}");
        let again = refresh::run(&ctx).await.unwrap().reminders.sent;
        assert_eq!(again, 0, "reminder {round} again");
        received += USERS - 1;
        let mails = stack.smtp.wait_for_messages(received).await;
        assert_eq!(mails.len(), received);
        for user in ["usr_1", "usr_2"] {
            let status = history(&stack, user);
            let recorded = status["reminders"]["recorded"].as_array().unwrap();
            assert_eq!(recorded.len(), round, "{status}");
            assert_eq!(recorded[round - 1]["status"], "sent", "{status}");
        }
        let to_finished = by_recipient(&mails)[&recipient_of("usr_0")].len();
        assert_eq!(to_finished, 1, "the finished user got only the invite");
    }
}

/// The store opened straight on `backend` (a file in `dir`, or a fresh PostgreSQL database),
/// migrated; `None` when PostgreSQL is not installed.
pub async fn bare_store(backend: Backend, dir: &std::path::Path) -> Option<Store> {
    let options = match backend {
        Backend::Sqlite => StoreOptions::new(dir.join("store.db")),
        Backend::Postgres => {
            let db = fresh_database().await?;
            StoreOptions::at(Location::Postgres(PostgresUrl::parse(&db.url).unwrap()))
        }
    };
    let store = Store::open(&options).await.expect("store opens");
    assert!(
        !store.pending_migrations().await.unwrap().is_empty(),
        "a fresh database has migrations to apply"
    );
    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.migrate().await.unwrap();
    Some(store)
}

fn raw_user(id: &str, email: &str) -> RawUser {
    RawUser {
        id: id.into(),
        email: email.into(),
        name_first: Some("Sam".into()),
        name_last: None,
        birthdate: None,
        phone_number: None,
        locale: None,
    }
}

fn uid(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

on_both!(every_store_function_reads_back_what_it_wrote);
/// The store functions the pipeline tests above reach rarely (or only on a fault), each
/// called straight, with what it wrote read back: the same answers on both backends.
async fn every_store_function_reads_back_what_it_wrote(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = bare_store(backend, dir.path()).await else {
        return;
    };
    let now = chrono::Utc::now();
    let version = store.server_version().await.unwrap();
    let engine = match backend {
        Backend::Sqlite => "SQLite ",
        Backend::Postgres => "PostgreSQL ",
    };
    assert!(version.starts_with(engine), "{version}");
    store.ping().await.unwrap();

    // users: add, refuse a known id, upsert, read one and many.
    users::add(&store, &raw_user("usr_a", "a@example.com"))
        .await
        .unwrap();
    assert!(matches!(
        users::add(&store, &raw_user("usr_a", "a@example.com")).await,
        Err(StoreError::Exists { .. })
    ));
    let written = users::upsert_many(
        &store,
        &[
            raw_user("usr_a", "a@example.com"),
            raw_user("usr_b", "b@example.com"),
            raw_user("usr_c", "not an address"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        written,
        [
            users::Written::Unchanged,
            users::Written::Added,
            users::Written::Added
        ]
    );
    let many = users::get_many(&store, &["usr_b", "usr_a", "usr_zz"])
        .await
        .unwrap();
    let mut ids: Vec<_> = many.iter().map(|u| u.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["usr_a", "usr_b"]);
    assert_eq!(
        users::get(&store, "usr_b").await.unwrap().unwrap().email,
        "b@example.com"
    );

    // user_states: discover (one skipped), revalidate after an edit, reasons, references.
    let found = user_states::discover(&store, now, None, 10).await.unwrap();
    assert_eq!((found.pending, found.skipped), (2, 1));
    assert_eq!(
        user_states::get_state(&store, &uid("usr_c")).await.unwrap(),
        Some(UserState::Skipped)
    );
    users::upsert_many(&store, &[raw_user("usr_c", "c@example.com")])
        .await
        .unwrap();
    assert_eq!(
        user_states::revalidate_edited(&store, now).await.unwrap(),
        1
    );
    assert!(
        user_states::is_unfinished(&store, &uid("usr_c"))
            .await
            .unwrap()
    );
    user_states::set_reason(&store, &uid("usr_a"), Some("held back"))
        .await
        .unwrap();
    assert_eq!(
        user_states::reason_of(&store, &uid("usr_a"))
            .await
            .unwrap()
            .as_deref(),
        Some("held back")
    );
    let reference = user_states::reference_of(&store, &uid("usr_a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user_states::by_reference(&store, &reference).await.unwrap(),
        Some(uid("usr_a"))
    );

    // Leases: a claim takes each pending user once, a second claim none.
    let claimed = user_states::claim_pending(&store, now, now, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        user_states::claim_pending(&store, now, now, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        user_states::claim_one(&store, &uid("usr_a"), now, LEASE)
            .await
            .unwrap()
            .is_none()
    );
    user_states::release(&store, &uid("usr_a"), None)
        .await
        .unwrap();
    assert!(
        user_states::claim_one(&store, &uid("usr_a"), now, LEASE)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(user_states::release_orphaned(&store, now).await.unwrap(), 0);

    // inquiries: intents for all, answers, keys, rejection, replacement and its undoing.
    let (a, b, c) = (uid("usr_a"), uid("usr_b"), uid("usr_c"));
    let mut rows = inquiries::begin_create_many(&store, &[&a, &b, &c], "itmpl_T", now)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    // In no promised order: by user from here on.
    rows.sort_by(|x, y| x.user_id.as_str().cmp(y.user_id.as_str()));
    assert_eq!(rows[0].user_id, a);
    assert!(
        rows.iter()
            .all(|r| r.generation == 1 && r.status == RowStatus::Creating)
    );
    assert_eq!(
        rows[0].key_created_at,
        inquiries::by_row_id(&store, rows[0].id)
            .await
            .unwrap()
            .unwrap()
            .key_created_at
    );
    let renewed = inquiries::renew_key(&store, &rows[0], reference.as_str(), now)
        .await
        .unwrap();
    assert_ne!(renewed.idempotency_key, rows[0].idempotency_key);
    inquiries::distrust_key(&store, rows[0].id).await.unwrap();
    let distrusted = inquiries::by_row_id(&store, rows[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(distrusted.key_created_at, chrono::DateTime::UNIX_EPOCH);
    let current = inquiries::current_of_users(&store, &[&a, &b])
        .await
        .unwrap();
    assert_eq!(current.len(), 2);

    let mut tx = store.begin_write().await.unwrap();
    let facts = |id: &str| InquiryFacts {
        inquiry_id: InquiryId::parse(id).unwrap(),
        status: InquiryStatus::Created,
        template_version_id: Some("itmplv_1".into()),
        created_at: Some(now),
        expires_at: Some(now + chrono::Duration::days(7)),
    };
    inquiries::record_facts(
        &mut tx,
        rows[0].id,
        &facts("inq_AAAAAAAAAAAAAAAAAAAAAAAAA"),
        now,
    )
    .await
    .unwrap();
    inquiries::record_facts(
        &mut tx,
        rows[1].id,
        &facts("inq_BBBBBBBBBBBBBBBBBBBBBBBBB"),
        now,
    )
    .await
    .unwrap();
    inquiries::mark_rejected(&mut tx, rows[2].id, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let inq_a = InquiryId::parse("inq_AAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let row_a = inquiries::by_inquiry_id(&store, &inq_a)
        .await
        .unwrap()
        .unwrap();
    // Times come back as written, to the millisecond.
    assert_eq!(
        row_a.expires_at.unwrap().timestamp_millis(),
        (now + chrono::Duration::days(7)).timestamp_millis()
    );
    assert_eq!(inquiries::recorded_ids(&store, &a).await.unwrap().len(), 1);
    assert_eq!(
        inquiries::by_row_id(&store, rows[2].id)
            .await
            .unwrap()
            .unwrap()
            .status,
        RowStatus::Rejected
    );

    let mut tx = store.begin_write().await.unwrap();
    inquiries::supersede(&mut tx, row_a.id, "test", now)
        .await
        .unwrap();
    let next = inquiries::begin_create(&mut tx, &a, "itmpl_T", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(next.generation, 2);
    assert_eq!(
        inquiries::superseded_unexpired_of(&store, &a)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        inquiries::superseded_unexpired(&store, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    inquiries::mark_abandoned(&store, next.id, "finished first", now)
        .await
        .unwrap();
    inquiries::restore(&store, row_a.id, now).await.unwrap();
    assert_eq!(
        inquiries::current(&store, &a).await.unwrap().unwrap().id,
        row_a.id
    );
    inquiries::mark_expired_remotely(&store, row_a.id, now)
        .await
        .unwrap();
    assert!(
        inquiries::superseded_unexpired(&store, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        inquiries::followed(&store, now)
            .await
            .unwrap()
            .iter()
            .any(|r| r.user_id == b)
    );

    // mails: queue, send, retry, fail, cancel, reminders once.
    let mut tx = store.begin_write().await.unwrap();
    let invite = mails::enqueue(
        &mut tx,
        &b,
        Some(rows[1].id),
        MailKind::Invite,
        "<m1@test>",
        now,
    )
    .await
    .unwrap();
    let other = mails::enqueue(&mut tx, &c, None, MailKind::Invite, "<m2@test>", now)
        .await
        .unwrap();
    assert_eq!(
        mails::history_in(&mut tx, &b).await.unwrap(),
        mails::MailHistory {
            any: true,
            unsent: true
        }
    );
    user_states::set_state(&mut tx, &b, UserState::Invited, None, None, now)
        .await
        .unwrap();
    user_states::set_state(&mut tx, &c, UserState::Invited, None, None, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(mails::users_with_unsent(&store).await.unwrap().len(), 2);
    assert_eq!(
        mails::due_users_not_pending(&store, now, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    mails::mark_sending(&store, invite.id, None, now)
        .await
        .unwrap();
    mails::unclaim(&store, invite.id).await.unwrap();
    assert_eq!(
        mails::unsent_for_user(&store, &b)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        0
    );
    mails::mark_retry(
        &store,
        invite.id,
        now + chrono::Duration::hours(1),
        "busy",
        now,
    )
    .await
    .unwrap();
    assert!(
        mails::due_users_not_pending(&store, now, 10)
            .await
            .unwrap()
            .iter()
            .all(|u| *u != b)
    );
    let sent = steps::Sent {
        mail_id: invite.id,
        user_id: &b,
        state: UserState::Invited,
        inquiry_id: None,
        detail: "invite sent",
        link_expires_at: None,
        end_lease: true,
    };
    steps::mail_sent(&store, &sent, now).await.unwrap();
    assert_eq!(
        mails::first_sent_at(&store)
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(
        mails::sent_by_kind(&store).await.unwrap(),
        [("invite".to_owned(), 1)]
    );
    let mut tx = store.begin_write().await.unwrap();
    mails::mark_failed(&mut tx, other.id, "refused", now)
        .await
        .unwrap();
    user_states::note_possibly_mailed(&mut tx, &c, now)
        .await
        .unwrap();
    user_states::set_outcome(&mut tx, &c, "approved", now)
        .await
        .unwrap();
    assert_eq!(
        user_states::state_in(&mut tx, &c).await.unwrap(),
        Some(UserState::Invited)
    );
    let first = mails::enqueue_reminder(&mut tx, &b, None, "<r1@test>", 172_800, now)
        .await
        .unwrap();
    let again = mails::enqueue_reminder(&mut tx, &b, None, "<r2@test>", 172_800, now)
        .await
        .unwrap();
    assert!(
        first.is_some() && again.is_none(),
        "a reminder is recorded once"
    );
    tx.commit().await.unwrap();
    let facts = mails::reminder_facts(&store, Some(&b), now).await.unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].recorded, [172_800]);
    assert!(facts[0].unsent);
    let reminder = first.unwrap();
    mails::mark_sending(&store, reminder.id, None, now)
        .await
        .unwrap();
    assert_eq!(mails::interrupted_reminders(&store).await.unwrap().len(), 1);
    let mut tx = store.begin_write().await.unwrap();
    assert!(
        mails::close_interrupted_reminder(&mut tx, reminder.id, "caught", now)
            .await
            .unwrap()
    );
    assert_eq!(mails::cancel_unsent(&mut tx, &b, now).await.unwrap(), 0);
    tx.commit().await.unwrap();
    assert_eq!(
        mails::reminders_of(&store, &b).await.unwrap()[0].status,
        MailStatus::Cancelled
    );
    assert_eq!(
        mails::last_for_user(&store, &b).await.unwrap().unwrap().id,
        reminder.id
    );
    let mailed = user_states::last_mailed_of_unfinished(&store)
        .await
        .unwrap();
    assert_eq!(mailed.len(), 2, "{mailed:?}");

    // redirect tokens, webhook ids, job runs, events, the status views.
    let token = RedirectToken::generate();
    redirect_tokens::insert(&store, &b, &token, now)
        .await
        .unwrap();
    assert_eq!(
        redirect_tokens::user_of(&store, &token).await.unwrap(),
        Some(b.clone())
    );
    redirect_tokens::mark_used(&store, &token, now)
        .await
        .unwrap();
    assert!(
        redirect_tokens::user_of(&store, &RedirectToken::generate())
            .await
            .unwrap()
            .is_none()
    );
    webhook_events::record(&store, "evt_1", "inquiry.completed", None, now)
        .await
        .unwrap();
    webhook_events::record(&store, "evt_1", "inquiry.completed", None, now)
        .await
        .unwrap();
    assert!(webhook_events::seen(&store, "evt_1").await.unwrap());
    let run = job_runs::record_start(&store, "refresh", now)
        .await
        .unwrap();
    job_runs::record_finish(&store, run, now, "ok", "done")
        .await
        .unwrap();
    assert_eq!(
        job_runs::latest(&store, "refresh")
            .await
            .unwrap()
            .unwrap()
            .outcome
            .as_deref(),
        Some("ok")
    );
    job_runs::set_bookmark(&store, "sync", now, now, "page 2")
        .await
        .unwrap();
    job_runs::set_bookmark(&store, "sync", now, now, "page 3")
        .await
        .unwrap();
    assert_eq!(
        job_runs::last_ok_start(&store, "sync")
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert!(events::since(&store, 0).await.unwrap().len() >= 4);
    let counts = status::state_counts(&store).await.unwrap();
    assert_eq!(
        (counts.pending, counts.invited, counts.total()),
        (1, 2, 3),
        "{counts:?}"
    );
    let mail_counts = status::mail_counts(&store).await.unwrap();
    assert_eq!(
        (mail_counts.sent, mail_counts.failed),
        (1, 1),
        "{mail_counts:?}"
    );
    let history = status::user_history(&store, "usr_b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.mails.len(), 2);
    assert_spec_time(&history.mails[0].created_at);
    assert_spec_time(history.user.last_mailed_at.as_deref().unwrap());
    assert_spec_time(&history.inquiries[0].created_at);
    store.close().await;
}

on_both!(migrate_applies_once_then_says_up_to_date_without_server_notices);
async fn migrate_applies_once_then_says_up_to_date_without_server_notices(backend: Backend) {
    let Some(stack) = stack_on(backend, &[]).await else {
        return;
    };
    let first = stack.run(&["migrate"]);
    first.assert_code(0);
    assert!(first.stdout.contains("applied"), "{}", first.stdout);
    let second = stack.run(&["migrate"]);
    second.assert_code(0);
    assert!(second.stdout.contains("up to date"), "{}", second.stdout);
    // sqlx's bookkeeping table is created IF NOT EXISTS; the server's NOTICE that it exists
    // is no news to an operator reading the log at INFO.
    for run in [&first, &second] {
        assert!(
            !run.stderr.contains("already exists"),
            "a server notice reached the log:\n{}",
            run.stderr
        );
    }
}
