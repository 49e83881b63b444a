//! Users whose inquiry finished (completed, failed, approved, declined, marked for review) are
//! never mailed again, even long past expiry; `status` shows them finished with the outcome.

use std::collections::HashMap;
use std::time::Duration;

use inquiry_mailer::jobs::refresh;
use persona_sim::Action;

use crate::support::refresh::{by_recipient, provisioned, recipient_of, references, user_status};
use crate::support::stack::Stack;

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_users_get_nothing_more_and_keep_their_outcome() {
    const USERS: usize = 10;
    let stack = Stack::start("session", &[]).await;
    let ctx = provisioned(&stack, USERS).await;
    let (_, user_of) = references(&stack).await;

    let endings: [(&[Action], &str); 6] = [
        (&[Action::Complete], "completed"),
        (&[Action::Fail], "failed"),
        (&[Action::Complete, Action::Approve], "approved"),
        (&[Action::Complete, Action::Decline], "declined"),
        (&[Action::Complete, Action::MarkForReview], "needs_review"),
        (
            &[Action::Fail, Action::MarkForReview, Action::Decline],
            "declined",
        ),
    ];
    let mut outcome_of: HashMap<String, &str> = HashMap::new();
    for (inq, (actions, outcome)) in stack.sim.inquiries().iter().zip(endings) {
        for action in actions {
            stack.sim.act(&inq.id, *action).unwrap();
        }
        let user = user_of[inq.reference_id.as_ref().unwrap()].clone();
        outcome_of.insert(user, outcome);
    }
    let finished = outcome_of.len();

    // Well past every expiry, twice.
    for round in 1..=2 {
        stack.clock.advance(8 * DAY);
        let report = refresh::run(&ctx).await.unwrap();
        eprintln!("refresh {round}: {report}");
        assert_eq!(report.mails_sent, USERS - finished, "{report}");
        if round == 1 {
            assert_eq!(report.users_finished, finished, "{report}");
        }
    }

    let mails = stack
        .smtp
        .wait_for_messages(USERS + 2 * (USERS - finished))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails_now = stack.smtp.messages();
    assert_eq!(mails_now.len(), mails.len(), "no mail arrived late");
    let per_user = by_recipient(&mails_now);
    for (user, outcome) in &outcome_of {
        let got = &per_user[&recipient_of(user)];
        assert_eq!(
            got.len(),
            1,
            "{user} finished ({outcome}) and was mailed again"
        );
        let status = user_status(&stack, user);
        assert_eq!(status["user"]["state"], "finished", "{status}");
        assert_eq!(status["user"]["outcome"], *outcome, "{status}");
    }
    let unfinished = per_user.values().filter(|m| m.len() == 3).count();
    assert_eq!(
        unfinished,
        USERS - finished,
        "the others got two renewed mails"
    );

    let counts = stack.run(&["status", "--json"]).assert_code(0).json();
    assert_eq!(counts["users"]["finished"], finished, "{counts}");
    assert_eq!(
        counts["users"]["started"].as_i64().unwrap() + counts["users"]["invited"].as_i64().unwrap(),
        (USERS - finished) as i64,
        "{counts}"
    );
}
