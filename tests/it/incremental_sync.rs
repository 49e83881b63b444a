//! Refresh costs what changed, not what exists (issue 18): between full reconciliations a run
//! searches for what changed since the last one and reads those (and the rows due) fresh by id.
//! Changes are all handled once the search lag has passed, a change younger than the lag by the
//! run after, a stale search result misleads nothing, what the search never shows is healed by
//! the next full run, a refused search falls back to the list, and a run with nothing changed
//! costs the same few calls however many inquiries are live.

use std::collections::BTreeMap;
use std::time::Duration;

use inquiry_mailer::daemon::metrics::Metrics;
use inquiry_mailer::jobs::refresh::{self, FullBecause, SyncMode};
use inquiry_mailer::jobs::{JobContext, provision};
use inquiry_mailer::mail::Transport;
use persona_sim::{Action, Faults, SearchResults};
use tokio_util::sync::CancellationToken;

use crate::support::refresh::{by_recipient, inquiries_by_user, provisioned, recipient_of};
use crate::support::sim::Api;
use crate::support::stack::Stack;

const MINUTE: Duration = Duration::from_secs(60);
/// The shipped `[schedule] refresh`.
const REFRESH_TICKS: &str = "0 */15 * * * *";
/// Renewed mails may follow the invite at once (the tests are about what the sync sees).
const RESEND_AT_ONCE: (&str, &str) = (
    "min_resend_interval = \"24h\"",
    "min_resend_interval = \"1m\"",
);

/// Moves the shared clock to a second past the next refresh tick, at least three minutes on
/// (so the invites' creations are older than a search of the next run looks back): the test's
/// runs, a few minutes apart, then miss no tick and stay incremental.
fn just_after_a_tick(stack: &Stack) {
    stack.clock.advance(3 * MINUTE);
    let now = stack.clock.now();
    let ticks = inquiry_mailer::config::parse_cron(REFRESH_TICKS).unwrap();
    let tick = ticks.find_next_occurrence(&now, false).unwrap();
    stack
        .clock
        .advance((tick - now).to_std().unwrap() + Duration::from_secs(1));
}

/// Each user's (only) inquiry at the simulator.
async fn inquiry_of(stack: &Stack) -> BTreeMap<String, String> {
    inquiries_by_user(stack)
        .await
        .into_iter()
        .map(|(user, inquiries)| {
            assert_eq!(inquiries.len(), 1, "{user}: {inquiries:?}");
            (user, inquiries[0].id.clone())
        })
        .collect()
}

/// The user's state as `status --user --json` shows it.
fn state_of(stack: &Stack, user: &str) -> String {
    crate::support::refresh::user_status(stack, user)["user"]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Expires an inquiry at Persona the way anyone with the key may (the dashboard, a script): a
/// change the daemon's own clock cannot foresee.
async fn expire_at_persona(stack: &Stack, inquiry: &str) {
    let r = Api::new(&stack.sim)
        .post(&format!("/inquiries/{inquiry}/expire"), None, None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// Persona calls in the simulator's log, by method and route.
fn calls(stack: &Stack) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for r in stack.sim.requests() {
        let route = r.route.clone().unwrap_or_else(|| r.path.clone());
        *calls.entry(format!("{} {route}", r.method)).or_default() += 1;
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_starts_and_expiries_between_runs_are_all_handled_by_the_next_run() {
    let stack = Stack::start("session", &[RESEND_AT_ONCE]).await;
    let ctx = provisioned(&stack, 4).await;
    just_after_a_tick(&stack);
    let first = refresh::run(&ctx).await.unwrap();
    assert_eq!(first.sync, SyncMode::Full(FullBecause::FirstRun), "{first}");
    assert_eq!(first.live_inquiries, 4, "{first}");

    let inquiry = inquiry_of(&stack).await;
    stack.sim.act(&inquiry["usr_0"], Action::Complete).unwrap();
    stack.sim.act(&inquiry["usr_1"], Action::Start).unwrap();
    expire_at_persona(&stack, &inquiry["usr_2"]).await;
    // The search lag (60 s) passes before the next run.
    stack.clock.advance(5 * MINUTE);
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();

    assert_eq!(report.sync, SyncMode::Incremental, "{report}");
    assert_eq!(
        (
            report.statuses_changed,
            report.users_finished,
            report.resumed
        ),
        (3, 1, 1),
        "{report}"
    );
    assert_eq!(state_of(&stack, "usr_0"), "finished");
    assert_eq!(state_of(&stack, "usr_1"), "started");
    assert_eq!(state_of(&stack, "usr_3"), "invited");
    // The expired one was renewed: resumed at Persona, and its user mailed a working link.
    let renewed = stack.sim.inquiry(&inquiry["usr_2"]).unwrap();
    assert_eq!(renewed.status.as_str(), "pending", "{renewed:?}");
    let mails = stack.smtp.wait_for_messages(5).await;
    let to = by_recipient(&mails);
    assert_eq!(to[&recipient_of("usr_2")].len(), 2, "invite and renewal");
    assert_eq!(
        to[&recipient_of("usr_0")].len(),
        1,
        "no mail after finishing"
    );
    // One search page, one lookup of the three it named, the template, the resume.
    assert_eq!(report.sync_calls, 2, "{report}");
    assert_eq!(report.sync_reads, 3, "{report}");
    let calls = calls(&stack);
    assert_eq!(calls.get("POST /inquiries/search"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("GET /inquiries"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("POST /inquiries/{inquiry-id}/resume"),
        Some(&1),
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_younger_than_the_lag_is_handled_by_the_run_after() {
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, 2).await;
    just_after_a_tick(&stack);
    refresh::run(&ctx).await.unwrap();
    let inquiry = inquiry_of(&stack).await;

    stack.clock.advance(3 * MINUTE);
    stack.sim.act(&inquiry["usr_0"], Action::Complete).unwrap();
    stack.clock.advance(Duration::from_secs(30));
    let during_the_lag = refresh::run(&ctx).await.unwrap();
    assert_eq!(
        during_the_lag.sync,
        SyncMode::Incremental,
        "{during_the_lag}"
    );
    assert_eq!(during_the_lag.users_finished, 0, "{during_the_lag}");
    assert_eq!(
        state_of(&stack, "usr_0"),
        "invited",
        "30 s old: not in the search index yet"
    );

    stack.clock.advance(5 * MINUTE);
    let after = refresh::run(&ctx).await.unwrap();
    assert_eq!(after.sync, SyncMode::Incremental, "{after}");
    assert_eq!(after.users_finished, 1, "{after}");
    assert_eq!(state_of(&stack, "usr_0"), "finished");
    assert_eq!(state_of(&stack, "usr_1"), "invited");
    assert_eq!(stack.smtp.messages().len(), 2, "the invites only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_search_result_cannot_mislead_a_decision() {
    let stack = Stack::start_with("session", &[RESEND_AT_ONCE], |c| {
        c.switches.search_results = SearchResults::Indexed;
    })
    .await;
    let ctx = provisioned(&stack, 2).await;
    just_after_a_tick(&stack);
    refresh::run(&ctx).await.unwrap();
    let inquiry = inquiry_of(&stack).await;
    let id = inquiry["usr_0"].clone();

    // Expired at Persona, indexed so; then resumed and completed within the lag, so the index
    // still says "expired" when the next run searches. Deciding on that would resume the
    // inquiry and mail a finished user.
    stack.clock.advance(MINUTE);
    expire_at_persona(&stack, &id).await;
    stack.clock.advance(Duration::from_secs(80));
    let resumed = Api::new(&stack.sim)
        .post(&format!("/inquiries/{id}/resume"), None, None)
        .await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    stack.sim.act(&id, Action::Complete).unwrap();
    stack.clock.advance(Duration::from_secs(10));
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();

    let search = stack
        .sim
        .requests()
        .into_iter()
        .find(|r| r.route.as_deref() == Some("/inquiries/search"))
        .expect("the run searched");
    let stale = search.response.as_ref().unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .expect("the search found the changed inquiry")["attributes"]["status"]
        .clone();
    assert_eq!(stale, "expired", "the search result was stale");
    assert_eq!(report.sync, SyncMode::Incremental, "{report}");
    assert_eq!((report.resumed, report.recreated), (0, 0), "{report}");
    assert_eq!(report.users_finished, 1, "{report}");
    assert_eq!(state_of(&stack, "usr_0"), "finished");
    assert_eq!(
        stack
            .sim
            .count_requests("POST", "/inquiries/{inquiry-id}/resume"),
        0
    );
    assert_eq!(stack.smtp.messages().len(), 2, "the invites only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_search_missed_is_healed_by_the_next_full_run_without_webhooks_and_with_loss() {
    let full_every = 30 * MINUTE;
    let step = 5 * MINUTE;
    let stack = Stack::start(
        "session",
        &[
            ("full_every = \"24h\"", "full_every = \"30m\""),
            ("retry_base_delay = \"1s\"", "retry_base_delay = \"10ms\""),
        ],
    )
    .await;
    // No webhook target: every webhook is lost, so only the sync can learn anything.
    let ctx = provisioned(&stack, 5).await;
    just_after_a_tick(&stack);
    let first = refresh::run(&ctx).await.unwrap();
    assert_eq!(first.sync, SyncMode::Full(FullBecause::FirstRun), "{first}");
    let full_at = stack.clock.now();
    let inquiry = inquiry_of(&stack).await;
    // A fifth of the answers are lost on the way back (the client asks again).
    stack.sim.set_faults(Faults {
        drop_share: 0.2,
        ..Faults::default()
    });

    // Persona's index stalls for a while (a lag far beyond the overlap): usr_0's completion in
    // that time never shows in a search that looks back only the overlap.
    let mut switches = stack.sim.switches();
    switches.search_lag_seconds = 3600;
    stack.sim.set_switches(switches.clone());
    stack.clock.advance(MINUTE);
    stack.sim.act(&inquiry["usr_0"], Action::Complete).unwrap();
    let mut changes = vec![("usr_0", stack.clock.now())];
    stack.clock.advance(step - MINUTE);
    let mut handled: BTreeMap<&str, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    let mut first_full = None;
    for i in 1..=8 {
        let ran_at = stack.clock.now();
        // A run that lost one call six times over fails; the next one takes over.
        if let Ok(report) = refresh::run(&ctx).await {
            if matches!(report.sync, SyncMode::Full(_)) && first_full.is_none() {
                first_full = Some((ran_at, report.sync.clone()));
            }
            if first_full.is_none() {
                assert_eq!(report.sync, SyncMode::Incremental, "{report}");
            }
        }
        for (user, _) in &changes {
            if !handled.contains_key(user) && state_of(&stack, user) == "finished" {
                handled.insert(user, ran_at);
            }
        }
        if first_full.is_none() {
            assert!(
                !handled.contains_key("usr_0"),
                "no search showed usr_0's change, yet run {i} handled it"
            );
        }
        if i == 3 {
            // The index catches up; a change from now on is searchable after the usual lag.
            switches.search_lag_seconds = 60;
            stack.sim.set_switches(switches.clone());
            stack.sim.act(&inquiry["usr_1"], Action::Complete).unwrap();
            changes.push(("usr_1", stack.clock.now()));
        }
        stack.clock.advance(step);
    }
    // The reconciliation period: full_every plus this install's offset (at most an eighth).
    let period = chrono::Duration::from_std(full_every + full_every / 8).unwrap();
    let (full_ran, mode) = first_full.expect("a full reconciliation ran");
    eprintln!(
        "full run ({mode}) {} after the first; handled: {:?}",
        full_ran - full_at,
        handled
            .iter()
            .map(|(u, t)| (*u, *t - full_at))
            .collect::<Vec<_>>()
    );
    assert!(
        full_ran - full_at <= period + chrono::Duration::from_std(step).unwrap(),
        "the full run ({mode}) came {} after the last one",
        full_ran - full_at
    );
    for (user, changed_at) in &changes {
        let at = handled
            .get(user)
            .unwrap_or_else(|| panic!("{user} was never handled"));
        assert!(
            *at - *changed_at <= period + chrono::Duration::from_std(step).unwrap(),
            "{user} was handled {} after the change",
            *at - *changed_at
        );
    }
    // usr_1 changed while the index worked: the next run handled it, full or not.
    assert!(
        handled["usr_1"] - changes[1].1 < chrono::Duration::from_std(step + MINUTE).unwrap(),
        "usr_1 handled {} after the change",
        handled["usr_1"] - changes[1].1
    );
    for user in ["usr_2", "usr_3", "usr_4"] {
        assert_eq!(state_of(&stack, user), "invited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_search_falls_back_to_the_full_list_and_the_run_says_so() {
    let metrics = Metrics::install().expect("metrics recorder");
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, 2).await;
    just_after_a_tick(&stack);
    refresh::run(&ctx).await.unwrap();
    let inquiry = inquiry_of(&stack).await;

    let mut switches = stack.sim.switches();
    switches.search_refused_with = Some(403);
    stack.sim.set_switches(switches.clone());
    stack.sim.act(&inquiry["usr_0"], Action::Complete).unwrap();
    stack.clock.advance(5 * MINUTE);
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(
        report.sync,
        SyncMode::Full(FullBecause::SearchRefused),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("status sync full (search refused)"),
        "{report}"
    );
    assert_eq!(report.live_inquiries, 1, "{report}");
    assert_eq!(report.users_finished, 1, "{report}");
    assert_eq!(state_of(&stack, "usr_0"), "finished");
    let calls = calls(&stack);
    assert_eq!(calls.get("POST /inquiries/search"), Some(&1), "{calls:?}");
    // The list of the live one, then the lookup of the one that left it.
    assert_eq!(calls.get("GET /inquiries"), Some(&2), "{calls:?}");
    assert_eq!(report.sync_calls, 3, "{report}");

    let text = stack.run(&["status"]).assert_code(0).stdout.clone();
    assert!(
        text.contains("last status sync: full (search refused) at ")
            && text.contains(", 3 Persona calls"),
        "{text}"
    );
    let json = stack.run(&["status", "--json"]).assert_code(0).json();
    assert_eq!(json["last_sync"]["mode"], "full", "{json}");
    assert_eq!(
        json["last_sync"]["full_because"], "search refused",
        "{json}"
    );
    assert_eq!(json["last_sync"]["persona_calls"], 3, "{json}");
    let exported = metrics.render();
    assert!(
        exported.contains(r#"refresh_syncs_total{mode="full",reason="search refused"}"#),
        "{exported}"
    );

    // Search is back: the cursor the full run left is good, the next run is incremental.
    switches.search_refused_with = None;
    stack.sim.set_switches(switches);
    stack.clock.advance(5 * MINUTE);
    let back = refresh::run(&ctx).await.unwrap();
    assert_eq!(back.sync, SyncMode::Incremental, "{back}");
    let json = stack.run(&["status", "--json"]).assert_code(0).json();
    assert_eq!(json["last_sync"]["mode"], "incremental", "{json}");
}

/// Persona calls of a run with nothing changed, after a full first run over `n` inquiries.
async fn quiet_run_calls(n: usize) -> (BTreeMap<String, usize>, usize) {
    let stack = Stack::start(
        "session",
        &[("requests_per_minute = 240", "requests_per_minute = 100000")],
    )
    .await;
    stack.add_users(n);
    let outbox = Transport::memory();
    let config = stack.config();
    let parts = inquiry_mailer::app::build(&config, Some(outbox))
        .await
        .unwrap();
    let ctx = JobContext::new(
        &config,
        parts.store,
        parts.persona,
        parts.mailer,
        stack.clock.clone(),
        CancellationToken::new(),
    );
    let provisioned = provision::run(&ctx).await.unwrap();
    assert_eq!(provisioned.inquiries_created, n, "{provisioned}");
    just_after_a_tick(&stack);
    let full = refresh::run(&ctx).await.unwrap();
    assert_eq!(full.live_inquiries, n, "{full}");
    stack.clock.advance(5 * MINUTE);
    stack.sim.clear_requests();
    let quiet = refresh::run(&ctx).await.unwrap();
    assert_eq!(quiet.sync, SyncMode::Incremental, "{quiet}");
    assert_eq!(quiet.statuses_changed, 0, "{quiet}");
    (calls(&stack), full.sync_calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_nothing_changed_costs_the_same_few_calls_for_250_or_2500_inquiries() {
    let (small, small_full) = quiet_run_calls(250).await;
    let (large, large_full) = quiet_run_calls(2500).await;
    eprintln!(
        "quiet run: {small:?} (250), {large:?} (2,500); full runs {small_full}, {large_full} sync calls"
    );
    let expected: BTreeMap<String, usize> = [
        ("POST /inquiries/search".to_owned(), 1),
        ("GET /inquiry-templates/{inquiry-template-id}".to_owned(), 1),
    ]
    .into();
    assert_eq!(small, expected);
    assert_eq!(large, expected);
    // What the full runs cost, for contrast: a list page per 100 live inquiries.
    assert_eq!((small_full, large_full), (3, 25));
}
