//! A provisioning step is one `BEGIN IMMEDIATE` transaction: all of it lands or none of it does,
//! and a step that fails half-way, or whose caller gives up, leaves the write connection usable.

use chrono::Utc;
use inquiry_mailer::domain::{InquiryId, InquiryStatus, RawUser, UserId};
use inquiry_mailer::jobs::LEASE;
use inquiry_mailer::jobs::provision::mail_to_queue;
use inquiry_mailer::mail::MailKind;
use inquiry_mailer::store::inquiries::{self, InquiryFacts, RowStatus};
use inquiry_mailer::store::mails::MailStatus;
use inquiry_mailer::store::steps::{self, Answer, Sent, WantedMail};
use inquiry_mailer::store::user_states::UserState;
use inquiry_mailer::store::{Store, StoreError, StoreOptions, events, mails, user_states, users};

fn raw(id: &str) -> RawUser {
    RawUser {
        id: id.into(),
        email: format!("{id}@example.com"),
        name_first: Some("Sam".into()),
        name_last: Some("Sample".into()),
        birthdate: None,
        phone_number: None,
        locale: None,
    }
}

fn uid(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn facts(inquiry_id: &str) -> InquiryFacts {
    InquiryFacts {
        inquiry_id: InquiryId::parse(inquiry_id).unwrap(),
        status: InquiryStatus::Created,
        template_version_id: None,
        created_at: None,
        expires_at: None,
    }
}

/// A migrated store in `dir` whose `users` have been discovered.
async fn store_with_users(dir: &tempfile::TempDir, ids: &[&str]) -> Store {
    let store = Store::open(&StoreOptions::new(dir.path().join("steps.db")))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    for id in ids {
        users::add(&store, &raw(id)).await.unwrap();
    }
    user_states::discover(&store, Utc::now(), None, 10)
        .await
        .unwrap();
    store
}

async fn event_kinds(store: &Store, user: &str) -> Vec<String> {
    events::for_user(store, user)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Records `inquiry_id` as created on `row_id`, asking for a `kind` mail with `message_id`
/// (stored as being sent when `sending`) under provisioning's own mail policy.
async fn answer(
    store: &Store,
    row_id: i64,
    user: &str,
    inquiry_id: &str,
    (kind, message_id, sending): (&str, &str, bool),
) -> inquiry_mailer::store::Result<steps::Recorded> {
    steps::record_answer(
        store,
        &Answer {
            row_id,
            user_id: &uid(user),
            facts: &facts(inquiry_id),
            event_kind: "inquiry.created",
            detail: &format!("created {inquiry_id}"),
        },
        &WantedMail {
            choose: &|history| mail_to_queue(MailKind::parse(kind).unwrap(), history),
            message_id,
            sending,
        },
        Utc::now(),
    )
    .await
}

#[tokio::test]
async fn a_step_lands_whole_or_not_at_all_and_the_writer_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(&dir, &["usr_one", "usr_two"]).await;
    let now = Utc::now();

    // The intents of a batch: next generation and a `creating` row with its own key per user,
    // in one trip.
    let intents =
        inquiries::begin_create_many(&store, &[&uid("usr_one"), &uid("usr_two")], "itmpl_x", now)
            .await
            .unwrap();
    assert_eq!(intents.len(), 2);
    for row in &intents {
        let reference = user_states::reference_of(&store, &row.user_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, RowStatus::Creating);
        assert_eq!(row.generation, 1);
        assert!(
            row.idempotency_key
                .starts_with(&format!("im-{reference}-g1-")),
            "{}",
            row.idempotency_key
        );
    }
    assert_ne!(intents[0].idempotency_key, intents[1].idempotency_key);
    let one = intents
        .iter()
        .find(|r| r.user_id.as_str() == "usr_one")
        .unwrap()
        .clone();
    let two = intents
        .iter()
        .find(|r| r.user_id.as_str() == "usr_two")
        .unwrap()
        .clone();

    // The answer with the first mail: the row, its event, the queued invite and its event.
    let recorded = answer(
        &store,
        one.id,
        "usr_one",
        "inq_one",
        ("renewed", "<m1@example.com>", false),
    )
    .await
    .unwrap();
    assert_eq!(
        recorded.inquiry.inquiry_id.as_ref().map(InquiryId::as_str),
        Some("inq_one")
    );
    let mail = recorded.mail.expect("a first mail is queued");
    assert_eq!(
        mail.kind,
        MailKind::Invite,
        "a user's first mail is the invite"
    );
    assert_eq!(
        event_kinds(&store, "usr_one").await,
        ["user.discovered", "inquiry.created", "mail.queued"]
    );
    assert_eq!(
        events::for_user(&store, "usr_one").await.unwrap()[2].detail,
        "invite queued"
    );

    // A second user's answer that breaks half-way: its mail reuses a Message-ID (unique), so
    // the insert fails after the row was updated and an event written. None of it may stay.
    let broken = answer(
        &store,
        two.id,
        "usr_two",
        "inq_two",
        ("invite", "<m1@example.com>", false),
    )
    .await;
    let err = broken
        .expect_err("a duplicate Message-ID is refused")
        .to_string();
    assert!(err.contains("UNIQUE"), "{err}");
    let row = inquiries::current(&store, &uid("usr_two"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.status,
        RowStatus::Creating,
        "the update was rolled back"
    );
    assert_eq!(row.inquiry_id, None);
    assert_eq!(event_kinds(&store, "usr_two").await, ["user.discovered"]);
    assert!(
        mails::last_for_user(&store, &uid("usr_two"))
            .await
            .unwrap()
            .is_none()
    );

    // The writer is not left inside the failed transaction: the same step goes through now.
    let retried = answer(
        &store,
        two.id,
        "usr_two",
        "inq_two",
        ("invite", "<m2@example.com>", true),
    )
    .await
    .unwrap();
    let queued = retried.mail.expect("queued this time");
    // Asked for as being sent at once: its first attempt is counted in the same step.
    assert_eq!((queued.status, queued.attempts), (MailStatus::Sending, 1));

    // An answer recorded again (a retry after a lost reply) queues no second unsent mail.
    let again = answer(
        &store,
        two.id,
        "usr_two",
        "inq_two",
        ("renewed", "<m3@example.com>", false),
    )
    .await
    .unwrap();
    assert!(again.mail.is_none(), "one unsent mail at a time");

    // Sent: the mail (with its link's expiry), the user's state and lease, and the event, together.
    let link_expiry: chrono::DateTime<Utc> = "2030-01-01T12:00:00Z".parse().unwrap();
    let lease = std::time::Duration::from_secs(300);
    assert!(
        user_states::claim_one(&store, &uid("usr_two"), now, lease)
            .await
            .unwrap()
            .is_some()
    );
    steps::mail_sent(
        &store,
        &Sent {
            mail_id: queued.id,
            user_id: &uid("usr_two"),
            state: UserState::Invited,
            inquiry_id: Some(&InquiryId::parse("inq_two").unwrap()),
            detail: "invite mail sent",
            link_expires_at: Some(link_expiry),
            end_lease: true,
        },
        now,
    )
    .await
    .unwrap();
    assert!(
        user_states::claim_one(&store, &uid("usr_two"), now, lease)
            .await
            .unwrap()
            .is_some(),
        "the lease ended with the sent mail"
    );
    let sent = mails::last_for_user(&store, &uid("usr_two"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.status, MailStatus::Sent);
    assert_eq!(sent.link_expires_at, Some(link_expiry));
    assert_eq!(
        user_states::get_state(&store, &uid("usr_two"))
            .await
            .unwrap(),
        Some(UserState::Invited)
    );
    assert_eq!(
        event_kinds(&store, "usr_two").await,
        [
            "user.discovered",
            "inquiry.created",
            "mail.queued",
            "inquiry.created",
            "mail.sent"
        ]
    );
}

#[tokio::test]
async fn a_caller_dropped_during_its_step_leaves_the_step_whole_and_the_writer_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(&dir, &["usr_gone"]).await;
    let now = Utc::now();
    let row = inquiries::begin_create_many(&store, &[&uid("usr_gone")], "itmpl_x", now)
        .await
        .unwrap()
        .remove(0);

    // Another writer holds the database, so the step, once started, waits on its `BEGIN
    // IMMEDIATE` (busy timeout 5 s): still running when its caller gives up after 300 ms,
    // whatever the machine's speed.
    let mut other = {
        use sqlx::ConnectOptions as _;
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("steps.db"))
            .connect()
            .await
            .unwrap()
    };
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let dropped = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        answer(
            &store,
            row.id,
            "usr_gone",
            "inq_gone",
            ("invite", "<gone@example.com>", true),
        ),
    )
    .await;
    assert!(dropped.is_err(), "the step should still have been running");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();

    // No transaction was left open: the writer takes a new one at once.
    let tx = tokio::time::timeout(std::time::Duration::from_secs(5), store.begin_write())
        .await
        .expect("the writer is free")
        .unwrap();
    tx.commit().await.unwrap();
    // And the dropped step left nothing half-done: it rolled back whole.
    assert_eq!(event_kinds(&store, "usr_gone").await, ["user.discovered"]);
    assert!(
        mails::last_for_user(&store, &uid("usr_gone"))
            .await
            .unwrap()
            .is_none()
    );
    let still = inquiries::current(&store, &uid("usr_gone"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (still.status, still.inquiry_id),
        (RowStatus::Creating, None)
    );

    // The step run again (what the next provisioning run does with a `creating` row) lands
    // whole.
    answer(
        &store,
        row.id,
        "usr_gone",
        "inq_gone",
        ("invite", "<gone@example.com>", true),
    )
    .await
    .unwrap();
    assert_eq!(
        event_kinds(&store, "usr_gone").await,
        ["user.discovered", "inquiry.created", "mail.queued"]
    );
    let mail = mails::last_for_user(&store, &uid("usr_gone"))
        .await
        .unwrap()
        .expect("the mail of the step run again");
    assert_eq!((mail.status, mail.attempts), (MailStatus::Sending, 1));
}

/// The store's own pool on the file, for what a hand edit (or an older build) leaves behind.
async fn raw_pool(dir: &tempfile::TempDir) -> sqlx::SqlitePool {
    crate::support::stack::pool(&dir.path().join("steps.db")).await
}

#[tokio::test]
async fn times_are_stored_as_rfc3339_millisecond_text_and_read_back_typed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(&dir, &["usr_time"]).await;
    let now: chrono::DateTime<Utc> = "2026-11-05T10:20:30.456Z".parse().unwrap();
    let row = inquiries::begin_create_many(&store, &[&uid("usr_time")], "itmpl_x", now)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((row.key_created_at, row.created_at), (now, now));
    // At rest, the text of `clock::format_ts`: SQL compares times as text in time order.
    let stored: (String, String) =
        sqlx::query_as("SELECT key_created_at, created_at FROM inquiries WHERE id = $1")
            .bind(row.id)
            .fetch_one(&raw_pool(&dir).await)
            .await
            .unwrap();
    assert_eq!(
        stored,
        (
            "2026-11-05T10:20:30.456Z".to_owned(),
            "2026-11-05T10:20:30.456Z".to_owned()
        )
    );
}

#[tokio::test]
async fn a_stored_value_that_does_not_parse_names_its_table_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(&dir, &["usr_bad"]).await;
    let row = inquiries::begin_create_many(&store, &[&uid("usr_bad")], "itmpl_x", Utc::now())
        .await
        .unwrap()
        .remove(0);
    let db = raw_pool(&dir).await;
    sqlx::query("UPDATE inquiries SET key_created_at = 'last tuesday' WHERE id = $1")
        .bind(row.id)
        .execute(&db)
        .await
        .unwrap();
    let err = inquiries::current(&store, &uid("usr_bad"))
        .await
        .expect_err("the time does not parse");
    match &err {
        StoreError::BadValue {
            table,
            row: key,
            column,
            ..
        } => assert_eq!(
            (*table, key.as_str(), *column),
            ("inquiries", row.id.to_string().as_str(), "key_created_at")
        ),
        other => panic!("not a BadValue: {other:?}"),
    }
    assert!(err.to_string().contains("last tuesday"), "{err}");

    // An id the daemon wrote that no longer parses is refused the same way.
    sqlx::query(
        "UPDATE user_states SET reference_id = 'not-a-reference' WHERE user_id = 'usr_bad'",
    )
    .execute(&db)
    .await
    .unwrap();
    let err = user_states::claim_one(&store, &uid("usr_bad"), Utc::now(), LEASE)
        .await
        .expect_err("the reference id does not parse");
    assert!(
        matches!(
            &err,
            StoreError::BadValue {
                table: "user_states",
                column: "reference_id",
                row,
                ..
            } if row == "usr_bad"
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_mail_sent_to_a_user_who_finished_meanwhile_stamps_the_time_but_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(&dir, &["usr_done"]).await;
    let now = Utc::now();
    let row = inquiries::begin_create_many(&store, &[&uid("usr_done")], "itmpl_x", now)
        .await
        .unwrap()
        .remove(0);
    let recorded = answer(
        &store,
        row.id,
        "usr_done",
        "inq_done",
        ("invite", "<done@example.com>", true),
    )
    .await
    .unwrap();
    // A webhook finished the user while the mail was on its way.
    let mut tx = store.begin_write().await.unwrap();
    user_states::set_state(
        &mut tx,
        &uid("usr_done"),
        UserState::Finished,
        Some("kept"),
        Some("completed"),
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let sent_at = now + chrono::Duration::seconds(5);
    steps::mail_sent(
        &store,
        &Sent {
            mail_id: recorded.mail.unwrap().id,
            user_id: &uid("usr_done"),
            state: UserState::Invited,
            inquiry_id: None,
            detail: "invite mail sent",
            link_expires_at: None,
            end_lease: false,
        },
        sent_at,
    )
    .await
    .unwrap();
    assert_eq!(
        user_states::get_state(&store, &uid("usr_done"))
            .await
            .unwrap(),
        Some(UserState::Finished),
        "finishing wins over a mail that was on its way"
    );
    assert_eq!(
        user_states::reason_of(&store, &uid("usr_done"))
            .await
            .unwrap(),
        Some("kept".to_owned())
    );
    let last: Option<String> =
        sqlx::query_scalar("SELECT last_mailed_at FROM user_states WHERE user_id = 'usr_done'")
            .fetch_one(&raw_pool(&dir).await)
            .await
            .unwrap();
    assert_eq!(
        last,
        Some(inquiry_mailer::clock::format_ts(sent_at)),
        "the mail still counts toward min_resend_interval"
    );
}
