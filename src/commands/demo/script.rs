//! What happens to whom over the demo's five simulated days: who signs up, who finishes, whose
//! inquiry is left to expire, Grace's clicks, the new template version. Data only: `mod.rs` plays
//! it, `story.rs` tells it.

use persona_sim::Action;

/// The sample users: (id, e-mail, first name, last name, birthdate, phone).
pub const USERS: [(&str, &str, &str, &str, &str, &str); 6] = [
    (
        "usr_ABC123",
        "alexander.sample@example.com",
        "Alexander",
        "Sample",
        "1977-08-31",
        "+1 415 555 0134",
    ),
    (
        "usr_BEA456",
        "beatriz.oliveira@example.com",
        "Beatriz",
        "Oliveira",
        "1990-03-14",
        "+351 21 555 0187",
    ),
    (
        "usr_CHI789",
        "chidi.okafor@example.org",
        "Chidi",
        "Okafor",
        "1985-11-02",
        "",
    ),
    (
        "usr_DAN012",
        "dana.whitfield@example.net",
        "Dana",
        "Whitfield",
        "2001-06-21",
        "+1 212 555 0199",
    ),
    (
        "usr_EMI345",
        "emi.tanaka@example.com",
        "Emi",
        "Tanaka",
        "1995-01-09",
        "",
    ),
    (
        "usr_FEL678",
        "felix.brandt(at)example.com",
        "Felix",
        "Brandt",
        "1969-04-27",
        "",
    ),
];

const ALEXANDER: &str = "usr_ABC123";
const BEATRIZ: &str = "usr_BEA456";
const CHIDI: &str = "usr_CHI789";
const DANA: &str = "usr_DAN012";
const EMI: &str = "usr_EMI345";
const FELIX: &str = "usr_FEL678";

/// The one sample user with a locale: their mails come from `templates/de/` and their link
/// opens Persona's flow in German.
pub const GERMAN: (&str, &str) = (ALEXANDER, "de");

/// One thing that happens during a day, in the order the day lists them.
pub enum Step {
    /// These sample users get their row in `users`.
    SignUp(&'static [&'static str]),
    /// The provisioning job runs once.
    Provision,
    /// The refresh job runs once.
    Refresh,
    /// The shared clock moves on to this many hours after the start.
    At(u32),
    /// The user does this at Persona on their current inquiry (opens the link and completes…).
    Act(&'static str, Action),
    /// A new version of the inquiry template is published; new inquiries are pinned to it.
    PublishTemplateVersion,
    /// Grace, on redirect links, signs up and provisioning mails her.
    GraceSignsUp,
    /// Grace presses Continue on the link from her invite.
    GraceClicks,
}

/// One simulated day: when it starts, what happens, and how the account tells it.
pub struct Day {
    /// Hours after the start; the day's heading shows this time.
    pub starts_at: u32,
    /// The progress line while the day plays.
    pub progress: &'static str,
    pub steps: &'static [Step],
    /// What the world did, above the jobs' account; `{version}` stands for the template version
    /// a `PublishTemplateVersion` step published that day.
    pub told: &'static str,
    /// A user whose invite the account shows whole after the day.
    pub show_invite: Option<&'static str>,
}

/// Five days in the life of the daemon. Refresh runs once a simulated day here (every 15
/// minutes in production), so an inquiry can expire between two runs; expiry is 2 days.
pub const DAYS: [Day; 5] = [
    Day {
        starts_at: 0,
        progress: "day 0: users arrive, provisioning runs",
        steps: &[
            Step::SignUp(&[ALEXANDER, BEATRIZ, FELIX]),
            Step::Provision,
            Step::GraceSignsUp,
            Step::GraceClicks,
        ],
        told: "Alexander, Beatriz and Felix sign up (rows in `users`). Provisioning runs. Grace, \
               on redirect links, signs up too and clicks her link at once.",
        show_invite: Some(GERMAN.0),
    },
    Day {
        starts_at: 24,
        progress: "day 1: more users, one finishes",
        steps: &[
            Step::SignUp(&[CHIDI, DANA, EMI]),
            Step::Provision,
            Step::At(25),
            Step::Act(ALEXANDER, Action::Complete),
            Step::At(26),
            Step::Refresh,
        ],
        told: "Chidi, Dana and Emi sign up; provisioning runs. An hour later Alexander opens his \
               link and completes verification. Refresh runs.",
        show_invite: None,
    },
    Day {
        starts_at: 50,
        progress: "day 2: an expired inquiry",
        steps: &[Step::Refresh, Step::GraceClicks],
        told: "Beatriz never opened her invite: her inquiry expired this morning, 2 days after it \
               was made, between two refresh runs. Refresh runs. Grace's inquiry expired too, and \
               she clicks the same link from her invite again.",
        show_invite: None,
    },
    Day {
        starts_at: 71,
        progress: "day 3: a new template version",
        steps: &[Step::PublishTemplateVersion, Step::Refresh],
        told: "A new version of the inquiry template is published ({version}). Refresh runs: \
               each inquiry nobody opened is expired and replaced by one on the new version; \
               Beatriz's is running (resumed, so pending) and is never cut off: it is left \
               alone until it expires.",
        show_invite: None,
    },
    Day {
        starts_at: 95,
        progress: "day 4: one more finishes",
        steps: &[
            Step::Act(CHIDI, Action::Complete),
            Step::At(96),
            Step::Refresh,
        ],
        told: "Chidi completes verification through his renewed link. Refresh runs.",
        show_invite: None,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    // The player moves the clock forward only (a step placed earlier than the clock is a no-op),
    // so an edit that puts a step before an earlier one would silently tell the wrong story.
    #[test]
    fn the_clock_only_moves_forward_through_the_days() {
        let mut hour = 0;
        for (n, day) in DAYS.iter().enumerate() {
            assert!(day.starts_at >= hour, "day {n} starts before hour {hour}");
            hour = day.starts_at;
            for step in day.steps {
                if let Step::At(at) = step {
                    assert!(*at >= hour, "day {n}: At({at}) before hour {hour}");
                    hour = *at;
                }
            }
        }
    }

    #[test]
    fn every_user_the_days_name_is_a_sample_user_who_signed_up_first() {
        let mut signed_up: Vec<&str> = Vec::new();
        for (n, day) in DAYS.iter().enumerate() {
            for step in day.steps {
                match step {
                    Step::SignUp(ids) => {
                        for id in *ids {
                            assert!(USERS.iter().any(|u| u.0 == *id), "day {n}: {id}");
                            signed_up.push(id);
                        }
                    }
                    Step::Act(id, _) => assert!(signed_up.contains(id), "day {n}: {id}"),
                    _ => {}
                }
            }
            if let Some(id) = day.show_invite {
                assert!(signed_up.contains(&id), "day {n}: {id}");
            }
        }
        assert!(USERS.iter().any(|u| u.0 == GERMAN.0));
    }

    #[test]
    fn a_day_that_names_the_version_publishes_one() {
        for (n, day) in DAYS.iter().enumerate() {
            let publishes = day
                .steps
                .iter()
                .any(|s| matches!(s, Step::PublishTemplateVersion));
            assert_eq!(day.told.contains("{version}"), publishes, "day {n}");
        }
    }
}
