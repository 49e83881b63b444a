//! The refresh policy (SPEC "The lifecycle rules") as pure functions: what to do with one
//! user's current inquiry, given its row, the clock, the latest version and the config.

use chrono::{DateTime, Utc};

use crate::clock::format_ts;
use crate::domain::{InquiryStatus, LinkKind, TemplateVersionId};
use crate::jobs::fresh_link::MAX_SESSIONS;
use crate::store::inquiries::{InquiryRow, RowStatus};

/// What to do with one user's current inquiry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Resume it: a started inquiry near expiry (which the resume does not end), or an expired one.
    Resume(String),
    /// Replace it: expire it at Persona first, then create the new one.
    Recreate(String),
    /// Due, but a limit says not now; the reason goes on the user.
    Hold(String),
}

/// The facts a decision is made from.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub row: &'a InquiryRow,
    pub now: DateTime<Utc>,
    pub latest_version: Option<&'a TemplateVersionId>,
    pub last_mailed_at: Option<DateTime<Utc>>,
}

/// The refresh policy (SPEC "The lifecycle rules"), as a pure function of the situation and
/// the config. A started inquiry (`pending`, not yet expired) is never replaced: near expiry it
/// is resumed when on the latest version and left alone otherwise; once expired it is renewed
/// (recreated when outdated or too old, else resumed). A `created` one may be replaced early.
pub fn decide(s: &Situation<'_>, cfg: &crate::config::InquiriesConfig, kind: LinkKind) -> Decision {
    let row = s.row;
    if row.status == RowStatus::Creating {
        // A recreate that a crash interrupted: the old inquiry is already replaced, so the user
        // holds no working link until this one exists. Finish it whatever the resend spacing.
        return Decision::Recreate("finishing an interrupted create".into());
    }
    let dur =
        |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let due_at = row.expires_at.map(|t| t - dur(cfg.refresh_before_expiry));
    let expired =
        row.status == InquiryStatus::Expired || row.expires_at.is_some_and(|t| t <= s.now);
    let near_expiry = expired || due_at.is_some_and(|t| t <= s.now);
    let started = row.status == InquiryStatus::Pending && !expired;
    let outdated = cfg.recreate_on_new_template_version
        && s.latest_version.is_some()
        && row.template_version_id.as_deref() != s.latest_version.map(TemplateVersionId::as_str);
    let too_old = s.now - row.born_at() > dur(cfg.max_age);

    let action = if started && (outdated || (too_old && kind != LinkKind::Static)) {
        // Replacing it would cut the user off mid-flow; it is renewed once it has expired.
        return Decision::Nothing;
    } else if outdated {
        Decision::Recreate(format!(
            "pinned to template version {}, latest is {}",
            row.template_version_id.as_deref().unwrap_or("unknown"),
            s.latest_version
                .map(TemplateVersionId::as_str)
                .unwrap_or("unknown")
        ))
    } else if too_old && kind != LinkKind::Static {
        Decision::Recreate(format!(
            "older than max_age ({})",
            humantime::format_duration(cfg.max_age)
        ))
    } else if !near_expiry {
        return Decision::Nothing;
    } else if row.status == InquiryStatus::Created && !expired {
        Decision::Recreate("created and close to expiry (Persona has no way to extend it)".into())
    } else if started
        && (row.resume_count >= i64::from(cfg.max_resumes) || row.session_count + 1 >= MAX_SESSIONS)
    {
        // Out of resumes or sessions, but still running: renewed once it has expired.
        return Decision::Nothing;
    } else if row.resume_count >= i64::from(cfg.max_resumes) {
        Decision::Recreate(format!(
            "near expiry and out of resumes ({} of {})",
            row.resume_count, cfg.max_resumes
        ))
    } else if row.session_count + 1 >= MAX_SESSIONS {
        Decision::Recreate(format!(
            "near expiry and out of sessions ({} of {MAX_SESSIONS})",
            row.session_count
        ))
    } else if expired {
        Decision::Resume(format!(
            "expired; resume {} of {}",
            row.resume_count + 1,
            cfg.max_resumes
        ))
    } else {
        Decision::Resume(format!(
            "expires {}; resume {} of {}",
            row.expires_at.map_or_else(|| "-".to_owned(), format_ts),
            row.resume_count + 1,
            cfg.max_resumes
        ))
    };
    let min_gap = dur(cfg.min_resend_interval);
    if let Some(last) = s.last_mailed_at
        && s.now - last < min_gap
    {
        let why = match &action {
            Decision::Resume(w) | Decision::Recreate(w) => w.clone(),
            _ => String::new(),
        };
        return Decision::Hold(format!(
            "{why}; waiting for min_resend_interval until {}",
            format_ts(last + min_gap)
        ));
    }
    action
}

/// Whether the daemon's own clock makes this current inquiry one that refresh may act on (near
/// or past expiry, too old, out of resumes): such a row is read fresh every run, whatever the
/// search said, so the renewal is decided on what Persona says now.
pub fn due_by_clock(
    row: &InquiryRow,
    now: DateTime<Utc>,
    cfg: &crate::config::InquiriesConfig,
    kind: LinkKind,
) -> bool {
    let s = Situation {
        row,
        now,
        latest_version: None,
        // The resend spacing only holds a due renewal back; the row is due all the same.
        last_mailed_at: None,
    };
    !matches!(decide(&s, cfg, kind), Decision::Nothing)
}

/// A user whose mail waits for a retry is left to `retry_unsent` unless the decision is to
/// replace the inquiry (which drops that mail): resuming again would spend a resume per run
/// of an outage.
pub(super) fn waits_for_its_mail(decision: &Decision, mail_waiting: bool) -> bool {
    mail_waiting && !matches!(decision, Decision::Recreate(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InquiriesConfig;
    use crate::domain::{InquiryId, UserId};
    use std::time::Duration;

    fn cfg() -> InquiriesConfig {
        InquiriesConfig {
            expires_after: Duration::from_secs(7 * 86_400),
            refresh_before_expiry: Duration::from_secs(86_400),
            max_age: Duration::from_secs(30 * 86_400),
            recreate_on_new_template_version: true,
            max_resumes: 5,
            min_resend_interval: Duration::from_secs(86_400),
        }
    }

    fn row(
        status: &str,
        created: DateTime<Utc>,
        expires: Option<DateTime<Utc>>,
        version: &str,
    ) -> InquiryRow {
        InquiryRow {
            id: 1,
            user_id: UserId::parse("usr_1").unwrap(),
            generation: 1,
            idempotency_key: "k".into(),
            key_created_at: created,
            inquiry_id: Some(InquiryId::parse("inq_1").unwrap()),
            status: RowStatus::parse(status),
            template_id: "itmpl_1".into(),
            template_version_id: Some(version.into()),
            persona_created_at: Some(created),
            expires_at: expires,
            resume_count: 0,
            session_count: 0,
            superseded_at: None,
            superseded_reason: None,
            expired_remotely_at: None,
            created_at: created,
            status_observed_at: None,
        }
    }

    #[test]
    fn decisions_follow_the_policy() {
        let t0 = Utc::now();
        let v1 = TemplateVersionId::parse("itmplv_1").unwrap();
        let v2 = TemplateVersionId::parse("itmplv_2").unwrap();
        let day = chrono::Duration::days(1);
        let at = |r: &InquiryRow, now, latest, mailed| {
            decide(
                &Situation {
                    row: r,
                    now,
                    latest_version: latest,
                    last_mailed_at: mailed,
                },
                &cfg(),
                LinkKind::Session,
            )
        };
        let fresh = row("created", t0, Some(t0 + day * 7), "itmplv_1");
        assert_eq!(at(&fresh, t0 + day, Some(&v1), Some(t0)), Decision::Nothing);
        assert!(matches!(
            at(&fresh, t0 + day, Some(&v2), Some(t0 - day * 2)),
            Decision::Recreate(_)
        ));
        assert!(matches!(
            at(
                &fresh,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v1),
                Some(t0)
            ),
            Decision::Recreate(_)
        ));
        let pending = row("pending", t0, Some(t0 + day * 7), "itmplv_1");
        assert!(matches!(
            at(
                &pending,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v1),
                Some(t0)
            ),
            Decision::Resume(_)
        ));
        // Within min_resend_interval of the last mail: held, with the reason.
        match at(
            &pending,
            t0 + day * 6 + chrono::Duration::hours(1),
            Some(&v1),
            Some(t0 + day * 6),
        ) {
            Decision::Hold(why) => assert!(why.contains("min_resend_interval"), "{why}"),
            d => panic!("{d:?}"),
        }
        let mut spent = row("expired", t0, None, "itmplv_1");
        spent.resume_count = 5;
        match at(&spent, t0 + day * 8, Some(&v1), Some(t0)) {
            Decision::Recreate(why) => assert!(why.contains("out of resumes"), "{why}"),
            d => panic!("{d:?}"),
        }
        // Past max_age: a `created` one is replaced; a started one (SPEC release 2: never cut
        // off) is left alone until it expires, then replaced.
        let old_created = row("created", t0, Some(t0 + day * 40), "itmplv_1");
        match at(&old_created, t0 + day * 31, Some(&v1), Some(t0)) {
            Decision::Recreate(why) => assert!(why.contains("max_age"), "{why}"),
            d => panic!("{d:?}"),
        }
        let old = row("pending", t0, Some(t0 + day * 40), "itmplv_1");
        assert_eq!(
            at(&old, t0 + day * 31, Some(&v1), Some(t0)),
            Decision::Nothing
        );
        match at(&old, t0 + day * 41, Some(&v1), Some(t0)) {
            Decision::Recreate(why) => assert!(why.contains("max_age"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_started_inquiry_is_never_replaced_before_it_expires() {
        let t0 = Utc::now();
        let v1 = TemplateVersionId::parse("itmplv_1").unwrap();
        let v2 = TemplateVersionId::parse("itmplv_2").unwrap();
        let day = chrono::Duration::days(1);
        let at = |r: &InquiryRow, now, latest| {
            decide(
                &Situation {
                    row: r,
                    now,
                    latest_version: latest,
                    last_mailed_at: Some(t0),
                },
                &cfg(),
                LinkKind::Session,
            )
        };
        let started = row("pending", t0, Some(t0 + day * 7), "itmplv_1");
        // A new version: left alone, also near expiry (a resume would keep it on the old one).
        assert_eq!(at(&started, t0 + day * 2, Some(&v2)), Decision::Nothing);
        assert_eq!(
            at(
                &started,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v2)
            ),
            Decision::Nothing
        );
        // On the latest version near expiry: resumed, which does not end it.
        assert!(matches!(
            at(
                &started,
                t0 + day * 6 + chrono::Duration::hours(1),
                Some(&v1)
            ),
            Decision::Resume(_)
        ));
        // Out of resumes but still running: left alone, renewed once it expired.
        let mut spent = started.clone();
        spent.resume_count = 5;
        assert_eq!(
            at(&spent, t0 + day * 6 + chrono::Duration::hours(1), Some(&v1)),
            Decision::Nothing
        );
        // Expired: renewed once, onto the latest version when outdated, else resumed.
        let expired = row("expired", t0, None, "itmplv_1");
        assert!(matches!(
            at(&expired, t0 + day * 8, Some(&v2)),
            Decision::Recreate(_)
        ));
        assert!(matches!(
            at(&expired, t0 + day * 8, Some(&v1)),
            Decision::Resume(_)
        ));
    }

    /// `decide` at `now` for a user of `kind` last mailed at `mailed`, with `cfg`.
    fn decide_at(
        r: &InquiryRow,
        now: DateTime<Utc>,
        latest: Option<&TemplateVersionId>,
        mailed: Option<DateTime<Utc>>,
        cfg: &InquiriesConfig,
        kind: LinkKind,
    ) -> Decision {
        decide(
            &Situation {
                row: r,
                now,
                latest_version: latest,
                last_mailed_at: mailed,
            },
            cfg,
            kind,
        )
    }

    /// `decide` for a Session-kind user on the latest version (`itmplv_1`), default config.
    fn on_latest(r: &InquiryRow, now: DateTime<Utc>, mailed: Option<DateTime<Utc>>) -> Decision {
        decide_at(r, now, Some(&v(1)), mailed, &cfg(), LinkKind::Session)
    }

    /// The reason of a decision of the expected kind (`"recreate"`, `"resume"`, `"hold"`).
    fn why(expected: &str, d: Decision) -> String {
        match (expected, d) {
            ("recreate", Decision::Recreate(w))
            | ("resume", Decision::Resume(w))
            | ("hold", Decision::Hold(w)) => w,
            (_, d) => panic!("expected {expected}, got {d:?}"),
        }
    }

    const DAY: chrono::TimeDelta = chrono::Duration::days(1);

    fn v(n: u8) -> TemplateVersionId {
        TemplateVersionId::parse(&format!("itmplv_{n}")).unwrap()
    }

    #[test]
    fn an_interrupted_create_is_finished_whatever_the_resend_spacing() {
        let t0 = Utc::now();
        let creating = row("creating", t0, None, "itmplv_1");
        // Mailed a minute ago: anything else due would be held by min_resend_interval.
        let mailed = Some(t0 - chrono::Duration::minutes(1));
        let d = on_latest(&creating, t0, mailed);
        assert!(why("recreate", d).contains("interrupted create"));
    }

    #[test]
    fn out_of_sessions_a_started_inquiry_waits_for_expiry_and_an_expired_one_is_recreated() {
        let t0 = Utc::now();
        let near = t0 + DAY * 6 + chrono::Duration::hours(1);
        let at = |r: &InquiryRow, now| on_latest(r, now, Some(t0));
        let mut started = row("pending", t0, Some(t0 + DAY * 7), "itmplv_1");
        started.session_count = MAX_SESSIONS - 1;
        assert_eq!(at(&started, near), Decision::Nothing);
        let mut expired = row("expired", t0, None, "itmplv_1");
        expired.session_count = MAX_SESSIONS - 1;
        assert!(why("recreate", at(&expired, t0 + DAY * 8)).contains("out of sessions"));
        // One session short of the limit is still enough for a resume.
        expired.session_count = MAX_SESSIONS - 2;
        why("resume", at(&expired, t0 + DAY * 8));
    }

    #[test]
    fn a_pending_row_past_its_expiry_counts_as_expired_and_is_resumed() {
        let t0 = Utc::now();
        // The sync has not seen the expiry yet; the daemon's clock says it happened.
        let stale = row("pending", t0, Some(t0 + DAY * 7), "itmplv_1");
        let d = on_latest(&stale, t0 + DAY * 8, Some(t0));
        assert!(why("resume", d).starts_with("expired; resume 1 of 5"));
    }

    #[test]
    fn no_version_check_when_it_is_off_or_the_latest_version_is_unknown() {
        let t0 = Utc::now();
        let on_v1 = row("created", t0, Some(t0 + DAY * 7), "itmplv_1");
        let off = InquiriesConfig {
            recreate_on_new_template_version: false,
            ..cfg()
        };
        let at = |latest: Option<&TemplateVersionId>, cfg: &InquiriesConfig| {
            decide_at(
                &on_v1,
                t0 + DAY,
                latest,
                Some(t0 - DAY * 2),
                cfg,
                LinkKind::Session,
            )
        };
        assert_eq!(at(Some(&v(2)), &off), Decision::Nothing);
        assert_eq!(at(None, &cfg()), Decision::Nothing);
        let d = at(Some(&v(2)), &cfg());
        assert!(why("recreate", d).contains("itmplv_1, latest is itmplv_2"));
    }

    #[test]
    fn static_links_are_not_replaced_for_age() {
        let t0 = Utc::now();
        let old = row("created", t0, Some(t0 + DAY * 40), "itmplv_1");
        let at = |kind| decide_at(&old, t0 + DAY * 31, Some(&v(1)), Some(t0), &cfg(), kind);
        assert_eq!(at(LinkKind::Static), Decision::Nothing);
        assert!(why("recreate", at(LinkKind::OneTime)).contains("max_age"));
    }

    #[test]
    fn a_due_replacement_is_held_by_the_resend_spacing_with_its_reason() {
        let t0 = Utc::now();
        let near = t0 + DAY * 6 + chrono::Duration::hours(1);
        let created = row("created", t0, Some(t0 + DAY * 7), "itmplv_1");
        let mailed = Some(near - chrono::Duration::hours(2));
        let held = why(
            "hold",
            decide_at(&created, near, None, mailed, &cfg(), LinkKind::Session),
        );
        assert!(held.starts_with("created and close to expiry"), "{held}");
        assert!(
            held.contains("waiting for min_resend_interval until"),
            "{held}"
        );
    }

    #[test]
    fn a_waiting_mail_stands_for_a_resume_but_not_for_a_replacement() {
        let resume = Decision::Resume("r".into());
        let recreate = Decision::Recreate("r".into());
        assert!(waits_for_its_mail(&resume, true));
        assert!(!waits_for_its_mail(&resume, false));
        assert!(!waits_for_its_mail(&recreate, true));
        assert!(waits_for_its_mail(&Decision::Nothing, true));
    }
}
