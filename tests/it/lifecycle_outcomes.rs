//! Outcomes after completion (SPEC "The lifecycle rules", "The `verifications` view"): a
//! `completed` user keeps being synced, so a later `approved` or `declined` reaches
//! `status --user` and the `verifications` view the application reads.

use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

use crate::support::refresh::{provisioned, user_status};
use crate::support::stack::Stack;

const HOUR: Duration = Duration::from_secs(3600);

/// The `verifications` row of `user`: (state, outcome, reason, updated_at).
async fn verification(
    stack: &Stack,
    user: &str,
) -> (String, Option<String>, Option<String>, String) {
    let db = stack.db().await;
    let row = sqlx::query_as(
        "SELECT state, outcome, reason, updated_at FROM verifications WHERE user_id = ?",
    )
    .bind(user)
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_after_completion_reaches_the_outcome_and_the_verifications_view() {
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, 3).await;
    let (_, by_ref) = crate::support::refresh::references(&stack).await;
    let inquiry_of = |user: &str| {
        stack
            .sim
            .inquiries()
            .into_iter()
            .find(|i| {
                i.reference_id
                    .as_ref()
                    .and_then(|r| by_ref.get(r))
                    .map(String::as_str)
                    == Some(user)
            })
            .unwrap()
            .id
    };
    let (approved, declined) = (inquiry_of("usr_0"), inquiry_of("usr_1"));
    stack.sim.act(&approved, Action::Complete).unwrap();
    stack.sim.act(&declined, Action::Complete).unwrap();
    stack.clock.advance(HOUR);
    let report = refresh::run(&ctx).await.unwrap();
    assert_eq!(report.users_finished, 2, "{report}");
    for user in ["usr_0", "usr_1"] {
        let status = user_status(&stack, user);
        assert_eq!(status["user"]["outcome"], "completed", "{status:#}");
    }

    // Days later a reviewer decides; the next sync carries it to the outcome.
    stack.clock.advance(48 * HOUR);
    stack.sim.act(&approved, Action::Approve).unwrap();
    stack.sim.act(&declined, Action::Decline).unwrap();
    stack.clock.advance(HOUR);
    refresh::run(&ctx).await.unwrap();

    for (user, outcome) in [("usr_0", "approved"), ("usr_1", "declined")] {
        let status = user_status(&stack, user);
        assert_eq!(status["user"]["state"], "finished", "{status:#}");
        assert_eq!(status["user"]["outcome"], outcome, "{status:#}");
        let (state, seen, reason, updated_at) = verification(&stack, user).await;
        assert_eq!(
            (state.as_str(), seen.as_deref(), reason),
            ("finished", Some(outcome), None)
        );
        let at = inquiry_mailer::clock::parse_ts(&updated_at).expect("ISO 8601 UTC");
        assert!(updated_at.ends_with('Z'), "{updated_at}");
        assert!(
            at >= stack.clock.now() - chrono::Duration::hours(2),
            "{updated_at}"
        );
    }
    let (state, outcome, reason, _) = verification(&stack, "usr_2").await;
    assert_eq!((state.as_str(), outcome, reason), ("invited", None, None));

    // Decided inquiries are no longer looked up.
    stack.sim.clear_requests();
    refresh::run(&ctx).await.unwrap();
    for r in stack.sim.requests() {
        let query = r.query.unwrap_or_default();
        assert!(
            !query.contains(approved.as_str()) && !query.contains(declined.as_str()),
            "a decided inquiry is still followed: {} {query}",
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifications_view_has_a_row_per_known_user_and_says_why_one_is_skipped() {
    let stack = Stack::start("session", &[]).await;
    stack.add_users(1);
    // `users import` refuses such a row, so it goes in the way an application would write it.
    crate::support::safety::insert_user(&stack, "usr_bad", "not-an-address", None).await;
    stack.run(&["once", "--job", "provision"]).assert_code(0);
    let db = stack.db().await;
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT user_id, state, outcome, reason FROM verifications ORDER BY user_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "usr_0");
    assert_eq!(
        (rows[0].1.as_str(), &rows[0].2, &rows[0].3),
        ("invited", &None, &None)
    );
    assert_eq!(rows[1].0, "usr_bad");
    assert_eq!(rows[1].1, "skipped");
    assert!(
        rows[1].3.as_deref().is_some_and(|r| !r.is_empty()),
        "{rows:?}"
    );
}
