//! A refresh that crashed in the middle of a recreate (old inquiry replaced in the store, new
//! one not recorded yet) is finished by the next run, with never a second live inquiry.

use std::time::Duration;

use inquiry_mailer::domain::{User, UserId};
use inquiry_mailer::jobs::{JobContext, LEASE, provision, refresh};
use inquiry_mailer::persona::IdempotencyKey;
use inquiry_mailer::store::inquiries::{self, InquiryRow};
use inquiry_mailer::store::{mails, user_states, users};

use crate::provisioning::link_in;
use crate::support::refresh::{
    by_recipient, inquiries_by_user, live_count, provisioned, recipient_of, user_status,
};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// What a refresh commits before its create call: the current inquiry replaced, unsent mail
/// dropped, the next generation's `creating` row with its idempotency key. Then it "crashes".
pub(crate) async fn crash_after_supersede(ctx: &JobContext, user_id: &str) -> InquiryRow {
    let user_id = &UserId::parse(user_id).unwrap();
    let now = ctx.clock.now();
    // Leased, as the crashed worker held the user.
    let leased = user_states::claim_one(&ctx.store, user_id, now, LEASE)
        .await
        .unwrap();
    assert!(leased.is_some(), "user free");
    let current = inquiries::current(&ctx.store, user_id)
        .await
        .unwrap()
        .unwrap();
    let mut tx = ctx.store.begin_write().await.unwrap();
    inquiries::supersede(&mut tx, current.id, "test: about to crash", now)
        .await
        .unwrap();
    mails::cancel_unsent(&mut tx, user_id, now).await.unwrap();
    let row = inquiries::begin_create(&mut tx, user_id, ctx.settings.template_id.as_str(), now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The crashed worker's lease runs out; a fresh process does not wait for it.
    user_states::release(&ctx.store, user_id, None)
        .await
        .unwrap();
    row
}

/// …and this time Persona had created the inquiry before the crash (the answer was lost).
async fn persona_created_before_the_crash(ctx: &JobContext, user_id: &str, row: &InquiryRow) {
    let raw_id = user_id;
    let user_id = &UserId::parse(user_id).unwrap();
    let now = ctx.clock.now();
    let claimed = user_states::claim_one(&ctx.store, user_id, now, LEASE)
        .await
        .unwrap()
        .unwrap();
    let raw = users::get(&ctx.store, raw_id).await.unwrap().unwrap();
    let user = User::parse(&raw, now.date_naive()).unwrap();
    let key = IdempotencyKey::parse(&row.idempotency_key).unwrap();
    ctx.persona
        .create_inquiry(&provision::create_request(ctx, &claimed, &user), &key)
        .await
        .unwrap();
    user_states::release(&ctx.store, user_id, None)
        .await
        .unwrap();
}

/// Each user holds exactly one live inquiry at Persona, on the latest version, and their last
/// mail opens it.
async fn every_user_has_one_working_inquiry(stack: &Stack, users: usize) {
    let mails = stack.smtp.messages();
    let per_user = by_recipient(&mails);
    let held = inquiries_by_user(stack).await;
    for i in 0..users {
        let user = format!("usr_{i}");
        let inquiries = &held[&user];
        assert_eq!(live_count(inquiries), 1, "{user}: {inquiries:?}");
        let link = link_in(per_user[&recipient_of(&user)].last().unwrap());
        let opened = open_link(&link).await;
        assert_eq!(opened.status, 200, "{user}: {link}: {}", opened.body);
        assert_eq!(opened.body["latest-version"], true, "{}", opened.body);
        let live = inquiries
            .iter()
            .find(|i| matches!(i.status.as_str(), "created" | "pending"))
            .unwrap();
        assert_eq!(opened.body["inquiry-id"], live.id.as_str(), "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreate_cut_short_before_or_after_the_create_call_is_finished_next_run() {
    const USERS: usize = 4;
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, USERS).await;

    // Every inquiry is due for a recreate (created and near expiry).
    stack.clock.advance(6 * DAY + HOUR);
    crash_after_supersede(&ctx, "usr_0").await;
    let row = crash_after_supersede(&ctx, "usr_1").await;
    persona_created_before_the_crash(&ctx, "usr_1", &row).await;

    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.recreated, USERS, "{report}");
    assert_eq!(report.mails_sent, USERS, "{report}");
    // usr_1's create is answered from Persona's idempotency store, not made twice.
    let creates = stack.sim.requests();
    let replayed = creates
        .iter()
        .filter(|r| r.method == "POST" && r.route.as_deref() == Some("/inquiries"))
        .filter(|r| r.replayed)
        .count();
    assert_eq!(replayed, 1);
    assert_eq!(
        stack.smtp.wait_for_messages(2 * USERS).await.len(),
        2 * USERS
    );
    every_user_has_one_working_inquiry(&stack, USERS).await;
    for user in ["usr_0", "usr_1"] {
        let status = user_status(&stack, user);
        assert_eq!(status["user"]["state"], "invited", "{status}");
        assert_eq!(status["inquiries"].as_array().unwrap().len(), 2, "{status}");
    }

    // And nothing more: the next run has nothing to finish.
    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!((report.recreated, report.mails_sent), (0, 0), "{report}");
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreate_cut_short_and_resumed_a_day_later_does_not_adopt_the_replaced_inquiry() {
    const USERS: usize = 3;
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, USERS).await;
    let (template, _) = stack.sim.templates()[0].clone();

    // A new version makes every inquiry due; the refresh crashes mid-recreate for usr_0 (before
    // the create call) and usr_1 (after it), and the daemon stays down longer than Persona
    // keeps idempotency keys, so the keys cannot be trusted any more.
    stack.clock.advance(DAY + HOUR);
    stack.sim.publish_template_version(&template).unwrap();
    crash_after_supersede(&ctx, "usr_0").await;
    let row = crash_after_supersede(&ctx, "usr_1").await;
    persona_created_before_the_crash(&ctx, "usr_1", &row).await;
    stack.clock.advance(DAY);

    stack.sim.clear_requests();
    let report = refresh::run(&ctx).await.unwrap();
    eprintln!("refresh: {report}");
    assert_eq!(report.recreated, USERS, "{report}");
    // usr_1's inquiry is found at Persona and kept; usr_0 and usr_2 get new ones.
    assert_eq!(stack.sim.count_requests("POST", "/inquiries"), 2);
    assert_eq!(
        stack.smtp.wait_for_messages(2 * USERS).await.len(),
        2 * USERS
    );
    every_user_has_one_working_inquiry(&stack, USERS).await;
    let held = inquiries_by_user(&stack).await;
    for user in ["usr_0", "usr_1", "usr_2"] {
        assert_eq!(held[user].len(), 2, "{user}: {:?}", held[user]);
    }
}
