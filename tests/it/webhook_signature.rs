//! A Persona webhook is accepted only with a fresh signature of its exact bytes under a
//! configured secret; during a secret rotation, one good signature among several is enough.

use std::time::Duration;

use chrono::{DateTime, Utc};
use inquiry_mailer::daemon::signature::{SignatureError, sign, verify};
use inquiry_mailer::domain::SecretText;

const TOLERANCE: Duration = Duration::from_secs(300);

fn body() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhooks/inquiry-completed.json");
    std::fs::read(path).expect("fixture")
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_710_527_700, 0).expect("valid")
}

fn secret(s: &str) -> Vec<SecretText> {
    vec![SecretText::new(s)]
}

#[test]
fn a_valid_signature_is_accepted() {
    let header = sign("wbhsec_current", now().timestamp(), &body());
    assert_eq!(
        verify(
            Some(&header),
            &body(),
            &secret("wbhsec_current"),
            now(),
            TOLERANCE
        ),
        Ok(())
    );
}

#[test]
fn a_signature_made_with_another_secret_is_refused() {
    let header = sign("wbhsec_attacker", now().timestamp(), &body());
    assert_eq!(
        verify(
            Some(&header),
            &body(),
            &secret("wbhsec_current"),
            now(),
            TOLERANCE
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_replayed_old_delivery_is_refused_as_stale() {
    let signed_at = now().timestamp() - 301;
    let header = sign("wbhsec_current", signed_at, &body());
    assert_eq!(
        verify(
            Some(&header),
            &body(),
            &secret("wbhsec_current"),
            now(),
            TOLERANCE
        ),
        Err(SignatureError::Stale)
    );
}

#[test]
fn a_request_without_the_header_is_refused() {
    assert_eq!(
        verify(None, &body(), &secret("wbhsec_current"), now(), TOLERANCE),
        Err(SignatureError::Missing)
    );
}

#[test]
fn a_body_altered_after_signing_is_refused() {
    let header = sign("wbhsec_current", now().timestamp(), &body());
    let altered = String::from_utf8(body())
        .unwrap()
        .replace("\"completed\"", "\"approved\"")
        .into_bytes();
    assert_ne!(altered, body(), "the fixture has a status to alter");
    assert_eq!(
        verify(
            Some(&header),
            &altered,
            &secret("wbhsec_current"),
            now(),
            TOLERANCE
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn during_rotation_an_invalid_old_and_a_valid_new_signature_are_accepted() {
    let t = now().timestamp();
    // The old secret is no longer configured, so its signature cannot be checked; the new one can.
    let header = format!(
        "{} {}",
        sign("wbhsec_retired", t, &body()),
        sign("wbhsec_current", t, &body())
    );
    assert_eq!(
        verify(
            Some(&header),
            &body(),
            &secret("wbhsec_current"),
            now(),
            TOLERANCE
        ),
        Ok(())
    );
}

#[test]
fn old_and_new_secrets_can_both_be_configured() {
    let both = vec![SecretText::new("wbhsec_old"), SecretText::new("wbhsec_new")];
    for s in ["wbhsec_old", "wbhsec_new"] {
        let header = sign(s, now().timestamp(), &body());
        assert_eq!(
            verify(Some(&header), &body(), &both, now(), TOLERANCE),
            Ok(()),
            "{s}"
        );
    }
}

#[test]
fn a_garbage_header_is_malformed() {
    for garbage in [
        "sha256=deadbeef",
        "t=yesterday,v1=00",
        "t=1710527700,v1=not-hex",
        "v1=00",
    ] {
        assert_eq!(
            verify(
                Some(garbage),
                &body(),
                &secret("wbhsec_current"),
                now(),
                TOLERANCE
            ),
            Err(SignatureError::Malformed),
            "{garbage}"
        );
    }
}
