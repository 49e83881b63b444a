//! Verifies the `Persona-Signature` header of a webhook request against the configured secrets,
//! and produces such headers (for tests and the simulator's webhook sender).

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::SecretText;

/// The header Persona signs webhook requests with.
pub const HEADER: &str = "Persona-Signature";

/// How far a signature's timestamp may be from now when the config does not say.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a webhook request was refused. The HTTP layer answers 401 without detail for all of them;
/// the variant is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Persona-Signature header")]
    Missing,
    #[error("the Persona-Signature header is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the Persona-Signature timestamp is outside the accepted tolerance")]
    Stale,
    #[error("no Persona-Signature matches a configured webhook secret")]
    Mismatch,
}

impl SignatureError {
    /// A short label for metrics (`webhook_events_total{outcome}`) and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::Stale => "signature_stale",
            Self::Mismatch => "signature_mismatch",
        }
    }
}

/// One `t=…,v1=…` set of the header. During a secret rotation Persona sends several, separated
/// by spaces, and a set may carry more than one `v1`.
#[derive(Debug, PartialEq, Eq)]
struct SignedSet {
    t: i64,
    v1: Vec<Vec<u8>>,
}

/// Accepts the request when any signature in the header is the HMAC of `"{t}.{body}"` under any
/// of `secrets` and its `t` is within `tolerance` of `now` (either side: clocks drift both ways).
///
/// `body` must be the raw request bytes: re-serialized JSON would not match. With no secrets
/// configured nothing can match, so every request is refused as `Mismatch`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretText],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    let sets = parse_header(header)?;
    let mut genuine_but_stale = false;
    for set in &sets {
        let genuine = secrets.iter().any(|secret| {
            set.v1
                .iter()
                .any(|v1| mac(secret.expose(), set.t, body).verify_slice(v1).is_ok())
        });
        if !genuine {
            continue;
        }
        if now.timestamp().abs_diff(set.t) <= tolerance.as_secs() {
            return Ok(());
        }
        genuine_but_stale = true;
    }
    Err(if genuine_but_stale {
        SignatureError::Stale
    } else {
        SignatureError::Mismatch
    })
}

/// The header value Persona would send for `body` signed with `secret` at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let digest = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(digest))
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Splits the header into its sets. Keys other than `t` and `v1` are ignored so that a future
/// scheme (`v2=…`) next to `v1` does not break us; a set without `v1` is skipped for the same
/// reason. A `t` that is not a number or a `v1` that is not hex makes the whole header malformed.
fn parse_header(header: &str) -> Result<Vec<SignedSet>, SignatureError> {
    let mut sets = Vec::new();
    for chunk in header.split_whitespace() {
        let mut t = None;
        let mut v1 = Vec::new();
        for pair in chunk.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or(SignatureError::Malformed)?;
            match key {
                "t" => {
                    let parsed = value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?;
                    if t.replace(parsed).is_some() {
                        return Err(SignatureError::Malformed);
                    }
                }
                "v1" => v1.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?),
                _ => {}
            }
        }
        match (t, v1.is_empty()) {
            (Some(t), false) => sets.push(SignedSet { t, v1 }),
            (None, false) => return Err(SignatureError::Malformed),
            (_, true) => {}
        }
    }
    if sets.is_empty() {
        return Err(SignatureError::Malformed);
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"data":{"type":"event","id":"evt_1"}}"#;

    fn at(t: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(t, 0).expect("valid timestamp")
    }

    fn secrets(s: &[&str]) -> Vec<SecretText> {
        s.iter().map(|s| SecretText::new(*s)).collect()
    }

    #[test]
    fn sign_matches_an_independently_computed_hmac() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'wbhsec_test',
        //   b'1700000000.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            sign("wbhsec_test", 1_700_000_000, b"{}"),
            "t=1700000000,v1=d132a70d733d73ec3162b6327e2c7fc6cdd448a4190ef20379145b7f1d2690a5"
        );
    }

    #[test]
    fn a_fresh_signature_with_the_right_secret_is_accepted() {
        let h = sign("s3cret", 1_000, BODY);
        let r = verify(
            Some(&h),
            BODY,
            &secrets(&["s3cret"]),
            at(1_000),
            DEFAULT_TOLERANCE,
        );
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn the_tolerance_applies_on_both_sides_of_now() {
        let h = sign("s", 1_000, BODY);
        let tol = Duration::from_secs(300);
        let s = secrets(&["s"]);
        assert_eq!(verify(Some(&h), BODY, &s, at(1_300), tol), Ok(()));
        assert_eq!(verify(Some(&h), BODY, &s, at(700), tol), Ok(()));
        assert_eq!(
            verify(Some(&h), BODY, &s, at(1_301), tol),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(&h), BODY, &s, at(699), tol),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn a_forged_signature_is_a_mismatch_even_when_stale() {
        let h = sign("other", 1_000, BODY);
        let r = verify(
            Some(&h),
            BODY,
            &secrets(&["s"]),
            at(9_999),
            DEFAULT_TOLERANCE,
        );
        assert_eq!(r, Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_of_several_configured_secrets_may_match() {
        let h = sign("new", 1_000, BODY);
        let r = verify(
            Some(&h),
            BODY,
            &secrets(&["old", "new"]),
            at(1_000),
            DEFAULT_TOLERANCE,
        );
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn no_configured_secret_refuses_everything() {
        let h = sign("s", 1_000, BODY);
        let r = verify(Some(&h), BODY, &[], at(1_000), DEFAULT_TOLERANCE);
        assert_eq!(r, Err(SignatureError::Mismatch));
    }

    #[test]
    fn missing_and_blank_headers_are_missing() {
        let s = secrets(&["s"]);
        for h in [None, Some(""), Some("   ")] {
            assert_eq!(
                verify(h, BODY, &s, at(0), DEFAULT_TOLERANCE),
                Err(SignatureError::Missing)
            );
        }
    }

    #[test]
    fn header_parsing_refuses_garbage_and_ignores_unknown_keys() {
        for bad in [
            "garbage",
            "t=abc,v1=00",
            "t=1,v1=zz",
            "v1=00",
            "t=1",
            "t=1,t=2,v1=00",
            "t=1,v1",
        ] {
            assert_eq!(parse_header(bad), Err(SignatureError::Malformed), "{bad}");
        }
        assert_eq!(
            parse_header("t=1,v0=xyz,v1=0a t=2,v2=ff").unwrap(),
            vec![SignedSet {
                t: 1,
                v1: vec![vec![0x0a]]
            }]
        );
    }

    #[test]
    fn a_rotation_header_is_accepted_when_one_set_matches() {
        let old = sign("old", 1_000, BODY);
        let new = sign("new", 1_001, BODY);
        let header = format!("{old} {new}");
        let r = verify(
            Some(&header),
            BODY,
            &secrets(&["new"]),
            at(1_001),
            DEFAULT_TOLERANCE,
        );
        assert_eq!(r, Ok(()));
    }
}
