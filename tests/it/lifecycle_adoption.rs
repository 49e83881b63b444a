//! Adoption rests on a mark the daemon controls: every inquiry carries a note made from the
//! user's opaque reference id, found again with `filter[note]`, so a create whose answer was
//! lost is recovered even when Persona does not copy the account's reference id onto the
//! inquiry; and a retry Persona refuses because the row was edited adopts the first inquiry
//! instead of skipping the user.

use std::time::Duration;

use inquiry_mailer::jobs::provision;
use persona_sim::{Faults, Switches};

use crate::provisioning::link_in;
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);

/// A stack whose simulator does not copy reference ids and whose client does not retry, so a
/// dropped connection loses the create's answer.
async fn stack_without_reference_copies() -> Stack {
    Stack::start_with("session", &[("max_retries = 5", "max_retries = 0")], |c| {
        c.switches = Switches {
            copy_reference_ids: false,
            ..Switches::default()
        };
    })
    .await
}

/// Provisioning with the create's answer lost in transit: the inquiry exists, the store does
/// not know its id.
async fn create_with_the_answer_lost(stack: &Stack) -> inquiry_mailer::jobs::JobContext {
    stack.add_users(1);
    let ctx = stack.context().await;
    stack.sim.set_faults(Faults {
        drops_next: 1,
        ..Faults::default()
    });
    let report = provision::run(&ctx).await.unwrap();
    assert_eq!(
        (report.inquiries_created, report.mails_sent),
        (0, 0),
        "{report}"
    );
    stack.sim.set_faults(Faults::default());
    let made = stack.sim.inquiries();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(
        made[0].reference_id, None,
        "the simulator copied the reference id"
    );
    ctx
}

/// After provisioning: the user holds exactly the inquiry made first, and their invite opens it.
async fn the_first_inquiry_was_kept(stack: &Stack, report: &provision::ProvisionReport) {
    assert_eq!(
        (
            report.inquiries_adopted,
            report.inquiries_created,
            report.skipped
        ),
        (1, 0, 0),
        "{report}"
    );
    let all = stack.sim.inquiries();
    assert_eq!(all.len(), 1, "a second inquiry was created: {all:?}");
    let mails = stack.smtp.wait_for_messages(1).await;
    assert_eq!(mails.len(), 1);
    let link = link_in(&mails[0]);
    assert!(link.contains(all[0].id.as_str()), "{link}");
    let opened = open_link(&link).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let status = crate::support::refresh::user_status(stack, "usr_0");
    assert_eq!(status["user"]["state"], "invited", "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_is_adopted_by_its_note_when_persona_does_not_copy_reference_ids() {
    let stack = stack_without_reference_copies().await;
    let ctx = create_with_the_answer_lost(&stack).await;
    // Past the time Persona keeps idempotency keys: the daemon looks before creating again.
    stack.clock.advance(25 * HOUR);
    stack.sim.clear_requests();
    let report = provision::run(&ctx).await.unwrap();
    the_first_inquiry_was_kept(&stack, &report).await;
    let looked_up = stack.sim.requests().into_iter().any(|r| {
        r.query
            .as_deref()
            .is_some_and(|q| q.contains("filter%5Bnote%5D"))
    });
    assert!(looked_up, "found by filter[note]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_refused_because_the_row_was_edited_adopts_the_first_inquiry() {
    let stack = stack_without_reference_copies().await;
    let ctx = create_with_the_answer_lost(&stack).await;
    // The application edits the row before the retry: the same key now comes with another body,
    // which Persona refuses.
    let db = stack.db().await;
    sqlx::query("UPDATE users SET name_first = 'Edited' WHERE id = 'usr_0'")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let report = provision::run(&ctx).await.unwrap();
    the_first_inquiry_was_kept(&stack, &report).await;
}
