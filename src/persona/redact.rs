//! Makes request and response bodies safe for trace logs: session tokens and one-time links
//! (which carry the one-time code) are replaced, wherever they appear and however cased.

use serde_json::Value;

const REDACTED: &str = "[redacted]";

/// Keys whose values are secrets, compared after dropping `-`/`_` and lowercasing, so
/// `session-token`, `session_token` and `sessionToken` all match.
const SECRET_KEYS: [&str; 3] = ["sessiontoken", "onetimelink", "onetimelinkshort"];

fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SECRET_KEYS.contains(&folded.as_str())
}

fn redact_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if is_secret_key(key) && !inner.is_null() {
                    *inner = Value::String(REDACTED.to_owned());
                } else {
                    redact_value(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// The body as it may appear in a log. Bodies that are not JSON are not shown at all: there is
/// no telling what they hold.
pub(crate) fn for_log(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty)".to_owned();
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact_value(&mut v);
            v.to_string()
        }
        Err(_) => format!("({} bytes, not JSON)", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_meta_are_replaced_and_the_rest_kept() {
        let body = br#"{"data":{"id":"inq_1","attributes":{"status":"created"}},
            "meta":{"session-token":"eyJ.secret.jwt","one-time-link":"https://withpersona.com/verify?code=SECRETCODE",
                    "one-time-link-short":"https://go.perso.na/SECRETCODE"}}"#;
        let logged = for_log(body);
        assert!(!logged.contains("secret"), "{logged}");
        assert!(!logged.contains("SECRETCODE"), "{logged}");
        assert!(logged.contains("inq_1"));
        assert_eq!(logged.matches(REDACTED).count(), 3);
    }

    #[test]
    fn other_casings_and_nested_places_are_redacted_too() {
        let body =
            br#"{"included":[{"meta":{"sessionToken":"tok1"}}],"x":{"one_time_link":"lnk"}}"#;
        let logged = for_log(body);
        assert!(
            !logged.contains("tok1") && !logged.contains("lnk"),
            "{logged}"
        );
    }

    #[test]
    fn null_secrets_stay_null_and_non_json_is_not_echoed() {
        let logged = for_log(br#"{"meta":{"session-token":null}}"#);
        assert_eq!(logged, r#"{"meta":{"session-token":null}}"#);
        let logged = for_log(b"code=SECRETCODE");
        assert!(!logged.contains("SECRETCODE"));
    }
}
