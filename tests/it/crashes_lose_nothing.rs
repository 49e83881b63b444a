//! Crash safety: a 200-user provisioning run is killed again and again — at each dangerous
//! instant (crash points) and at random moments (SIGKILL) — and restarted until done. Nobody
//! gets two live inquiries, nobody is forgotten, and a user gets a second copy of the invite only
//! for a kill that caught their send in flight (the outcome of that send is unknown, so it is
//! sent again, with the same Message-ID).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use inquiry_mailer::domain::InquiryId;
use persona_sim::Faults;
use rand::{Rng, SeedableRng};

use crate::provisioning::{link_in, reference_ids};
use crate::support::safety::{
    Ending, UNPACED, execute, mails_per_user, provision_run, received_count, sends_in_flight,
    user_of,
};
use crate::support::sim::open_link;
use crate::support::stack::Stack;

const USERS: usize = 200;

/// Each crash point at several hits, interleaved so that each kind of crash lands on what the
/// others left behind; hits stay small so every run in the plan still has work when it dies.
const HOOK_KILLS: [(&str, u64); 16] = [
    ("provision.before-create", 1),
    ("deliver.after-send", 2),
    ("provision.after-create", 2),
    ("deliver.before-send", 1),
    ("provision.before-create", 6),
    ("deliver.after-send", 5),
    ("provision.after-create", 8),
    ("deliver.before-send", 4),
    ("provision.before-create", 12),
    ("deliver.after-send", 8),
    ("provision.after-create", 14),
    ("deliver.before-send", 9),
    ("provision.before-create", 18),
    ("deliver.after-send", 11),
    ("provision.after-create", 20),
    ("deliver.before-send", 14),
];

/// How a run in the plan dies.
#[derive(Debug)]
enum Kill {
    /// Aborts itself at the n-th hit of a crash point (`point:n`).
    At(String),
    /// SIGKILLed by the test after this long.
    After(Duration),
}

/// SIGKILLs at a random moment while Persona answers slowly, so runs die mid-request too.
const TIMED_KILLS: usize = 6;
const TIMED_LATENCY_MS: u64 = 200;

/// The daemon leases the users it works on for 30 s (renewed while in hand) and a crashed run's leases simply run
/// out. The binary runs on the wall clock, so the test lets that time "pass" by ending them.
async fn let_leases_lapse(stack: &Stack) {
    execute(
        stack,
        "UPDATE user_states SET lease_until = NULL WHERE lease_until IS NOT NULL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_leave_no_double_inquiry_no_forgotten_user_and_resend_only_what_a_kill_caught()
{
    let began = Instant::now();
    let stack = Stack::start("session", &UNPACED).await;
    stack.add_users(USERS);

    let seed: u64 = rand::rng().random();
    eprintln!("crash test: timed-kill seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut plan: Vec<Kill> = HOOK_KILLS
        .iter()
        .map(|&(point, n)| Kill::At(format!("{point}:{n}")))
        .collect();
    // Random moments, spread through the plan.
    for i in 0..TIMED_KILLS {
        let delay = Duration::from_millis(rng.random_range(60..320));
        plan.insert(1 + i * 3, Kill::After(delay));
    }

    let (mut aborted, mut killed) = (0, 0);
    // user → the attempts that a kill caught between `sending` and their outcome.
    let mut caught: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (i, kill) in plan.iter().enumerate() {
        let (crash_at, delay) = match kill {
            Kill::At(point) => (Some(point.as_str()), None),
            Kill::After(delay) => (None, Some(*delay)),
        };
        stack.sim.set_faults(Faults {
            extra_latency_ms: if delay.is_some() { TIMED_LATENCY_MS } else { 0 },
            ..Default::default()
        });
        let log = format!("run-{i}.log");
        let ending = provision_run(&stack, &log, crash_at, delay);
        match ending {
            Ending::Aborted => aborted += 1,
            Ending::Killed => killed += 1,
            Ending::Exited(code) => panic!(
                "run {i} ({kill:?}) exited {code} before it was killed: the plan \
                 leaves too little work\n{}",
                std::fs::read_to_string(stack.app.path().join(&log)).unwrap_or_default()
            ),
        }
        let mid_send = sends_in_flight(&stack).await;
        for (user, attempt) in &mid_send {
            caught.entry(user.clone()).or_default().insert(*attempt);
        }
        let_leases_lapse(&stack).await;
        eprintln!(
            "crash test: run {i:>2} {:<32} {ending:?}; {} sends in flight, {} mails received, {} users pending",
            format!("{kill:?}"),
            mid_send.len(),
            received_count(&stack.smtp),
            stack.run(&["status", "--json"]).json()["users"]["pending"]
        );
    }
    stack.sim.set_faults(Faults::default());

    // Restart until everything is done (one clean run should do; allow a second).
    for i in 0..2 {
        let ending = provision_run(&stack, &format!("final-{i}.log"), None, None);
        assert_eq!(ending, Ending::Exited(0), "final run {i}");
        if stack.run(&["status", "--json"]).json()["users"]["pending"] == 0 {
            break;
        }
    }

    // Nobody forgotten, nobody skipped.
    let counts = stack.run(&["status", "--json"]).json();
    assert_eq!(counts["users"]["invited"], USERS, "{counts}");
    assert_eq!(counts["mails"]["sent"], USERS, "{counts}");
    assert_eq!(counts["mails"]["queued"], 0, "{counts}");

    // One inquiry per user at Persona: never two live ones, never one created twice.
    let refs = reference_ids(&stack).await;
    let mut per_reference: HashMap<String, Vec<persona_sim::Status>> = HashMap::new();
    for inq in stack.sim.inquiries() {
        per_reference
            .entry(inq.reference_id.clone().expect("reference id"))
            .or_default()
            .push(inq.status);
    }
    let live = |s: &persona_sim::Status| s.is_open();
    let doubled: Vec<_> = per_reference
        .iter()
        .filter(|(_, statuses)| statuses.iter().filter(|s| live(s)).count() > 1)
        .collect();
    assert!(doubled.is_empty(), "two live inquiries: {doubled:?}");
    assert_eq!(per_reference.len(), USERS);
    for (user, reference) in &refs {
        assert_eq!(
            per_reference.get(reference).map(Vec::len),
            Some(1),
            "{user} has exactly one inquiry"
        );
    }
    let creates = stack.sim.requests();
    let creates: Vec<_> = creates
        .iter()
        .filter(|r| r.method == "POST" && r.route.as_deref() == Some("/inquiries"))
        .collect();
    let replays = creates.iter().filter(|r| r.replayed).count();

    // Every user mailed, none more than twice; copies carry the same Message-ID and link.
    let mails = stack.smtp.wait_for_messages(USERS).await;
    let per_user = mails_per_user(&mails);
    assert_eq!(per_user.len(), USERS, "every user got the invite");
    let most = per_user.values().copied().max().unwrap();
    let duplicates = mails.len() - USERS;
    let caught_twice = caught.values().filter(|a| a.len() > 1).count();
    eprintln!(
        "crash test: {} kills ({aborted} at crash points, {killed} SIGKILL), {} mails for {USERS} users \
         ({duplicates} duplicates, at most {most} per user; {} users caught mid-send, {caught_twice} \
         of them more than once), {} create calls ({replays} replayed), {:.1?}",
        aborted + killed,
        mails.len(),
        caught.len(),
        creates.len(),
        began.elapsed()
    );
    assert!(aborted + killed >= 20, "at least 20 kills");
    // One copy, plus at most one per send a kill interrupted: so a user caught once gets at most
    // two, and no copy comes from anything but a crash.
    for (user, &n) in &per_user {
        let kills = caught.get(user).map_or(0, BTreeSet::len);
        assert!(
            n <= 1 + kills,
            "{user} got {n} copies but kills interrupted only {kills} of their sends"
        );
    }
    let mut spread: BTreeMap<usize, usize> = BTreeMap::new();
    for &n in per_user.values() {
        *spread.entry(n).or_default() += 1;
    }
    eprintln!("crash test: users by copies received {spread:?}");
    let mut copies: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for m in &mails {
        copies
            .entry(user_of(&m.rcpt_to))
            .or_default()
            .push((m.message_id.as_str(), link_in(m)));
    }
    for (user, sent) in &copies {
        assert!(
            sent.windows(2).all(|w| w[0] == w[1]),
            "{user}'s copies differ: {sent:?}"
        );
    }

    // And each link opens the user's own inquiry.
    let user_of_ref: HashMap<&str, &str> =
        refs.iter().map(|(u, r)| (r.as_str(), u.as_str())).collect();
    for (user, sent) in &copies {
        let opened = open_link(&sent[0].1).await;
        assert_eq!(opened.status, 200, "{user}: {}", opened.body);
        let inquiry: InquiryId = opened.body["inquiry-id"].as_str().unwrap().parse().unwrap();
        let reference = stack.sim.inquiry(&inquiry).unwrap().reference_id.unwrap();
        assert_eq!(user_of_ref[reference.as_str()], user);
    }
}
