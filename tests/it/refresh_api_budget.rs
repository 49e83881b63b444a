//! The API cost of a refresh with nothing due: one listing of the live inquiries (100 a page)
//! and one template look-up, however many users there are, and nothing else.
//!
//! The 10,000 inquiries are made by the real provisioning job (mail to memory). That takes most
//! of this test's time (~50 s in debug on a quiet machine): each user costs about 22 statements
//! on the store's single write connection, each a hop to sqlx's connection thread.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use inquiry_mailer::domain::RawUser;
use inquiry_mailer::jobs::{JobContext, provision, refresh};
use inquiry_mailer::mail::Transport;
use inquiry_mailer::store::users;
use tokio_util::sync::CancellationToken;

use crate::support::stack::Stack;

const USERS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_live_inquiries_cost_one_listing_and_one_template_call() {
    let stack = Stack::start(
        "session",
        &[("requests_per_minute = 240", "requests_per_minute = 100000")],
    )
    .await;
    stack.run(&["migrate"]).assert_code(0);
    let config = stack.config();
    let outbox = Transport::memory();
    let sent = outbox.outbox().expect("memory transport").clone();
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

    let started = Instant::now();
    let rows: Vec<RawUser> = (0..USERS)
        .map(|i| RawUser {
            id: format!("usr_{i}"),
            email: format!("user{i}@example.com"),
            name_first: Some(format!("First{i}")),
            name_last: Some(format!("Last{i}")),
            birthdate: Some("1980-02-03".into()),
            phone_number: None,
            locale: None,
        })
        .collect();
    users::upsert_many(&ctx.store, &rows).await.unwrap();
    eprintln!("seeded {USERS} users in {:?}", started.elapsed());

    let started = Instant::now();
    let report = provision::run(&ctx).await.unwrap();
    eprintln!("provisioned in {:?}: {report}", started.elapsed());
    assert_eq!(report.inquiries_created, USERS, "{report}");
    assert_eq!(sent.len(), USERS);

    // An hour later nothing is due.
    stack.clock.advance(Duration::from_secs(3600));
    stack.sim.clear_requests();
    let started = Instant::now();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh in {:?}: {report}", started.elapsed());
    assert_eq!(report.live_inquiries, USERS, "{report}");
    assert_eq!(
        (report.resumed, report.recreated, report.mails_sent),
        (0, 0, 0),
        "{report}"
    );

    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for r in stack.sim.requests() {
        let route = r.route.clone().unwrap_or_else(|| r.path.clone());
        *calls.entry(format!("{} {route}", r.method)).or_default() += 1;
    }
    eprintln!("Persona calls of one refresh over {USERS} live inquiries: {calls:?}");
    let lists = calls.remove("GET /inquiries").unwrap_or_default();
    let templates = calls
        .remove("GET /inquiry-templates/{inquiry-template-id}")
        .unwrap_or_default();
    assert!(lists <= USERS / 100 + 1, "{lists} list calls");
    assert!(templates <= 1, "{templates} template calls");
    assert!(calls.is_empty(), "no other call: {calls:?}");
    assert_eq!(sent.len(), USERS, "no mail");
}
