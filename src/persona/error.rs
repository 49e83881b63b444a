//! What can go wrong talking to Persona, classified the way callers act on it:
//! transient (retry later, same idempotency key) or permanent (fix something first).

use std::fmt;

/// One entry of Persona's `errors[]` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiErrorDetail {
    pub title: String,
    pub details: Option<String>,
    /// `source.pointer`, e.g. `/data/attributes/fields/birthdate`.
    pub pointer: Option<String>,
}

impl fmt::Display for ApiErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.title)?;
        if let Some(details) = &self.details {
            write!(f, ": {details}")?;
        }
        if let Some(pointer) = &self.pointer {
            write!(f, " (pointer {pointer})")?;
        }
        Ok(())
    }
}

/// Every failure of a Persona call. `method` and `path` name the call (path relative to the
/// API base, without the query), so an operator can tell which request failed.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    /// Persona answered with a non-2xx status.
    #[error("Persona {method} {path} answered {status} {}", describe(*status, errors))]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        errors: Vec<ApiErrorDetail>,
        /// Persona's `Request-Id` header (`req_…`), for support tickets.
        request_id: Option<String>,
    },
    /// No answer: connection refused or dropped, DNS, TLS, or the per-request timeout.
    #[error("Persona {method} {path} got no answer: {reason}")]
    Unreachable {
        method: &'static str,
        path: String,
        reason: String,
        timed_out: bool,
    },
    /// A 2xx answer whose body the client cannot use.
    #[error("Persona {method} {path} answered {status} with an unusable body: {what}")]
    Malformed {
        method: &'static str,
        path: String,
        status: u16,
        what: String,
    },
    /// The client could not be built from its configuration.
    #[error("Persona client configuration: {0}")]
    Config(String),
}

fn describe(status: u16, errors: &[ApiErrorDetail]) -> String {
    if errors.is_empty() {
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("(no error details)");
        return reason.to_owned();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PersonaError {
    /// Worth retrying later with the same idempotency key: 408, 429, 5xx and no answer at all.
    /// Every other 4xx means the request itself must change; a malformed body will not fix
    /// itself by asking again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => is_transient_status(*status),
            Self::Unreachable { .. } => true,
            Self::Malformed { .. } | Self::Config(_) => false,
        }
    }

    /// The HTTP status Persona answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Malformed { status, .. } => Some(*status),
            Self::Unreachable { .. } | Self::Config(_) => None,
        }
    }

    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429)
    }

    /// Persona refused a request because its Idempotency-Key was used before with other
    /// parameters (DOCS `/idempotence`: "a reuse with different parameters errors"; the status
    /// is not documented, so any 4xx naming the key counts).
    pub fn is_key_reuse_refused(&self) -> bool {
        self.status()
            .is_some_and(|s| (400..500).contains(&s) && s != 429)
            && self.details().iter().any(|d| {
                let text = format!("{} {}", d.title, d.details.as_deref().unwrap_or_default());
                text.to_ascii_lowercase().contains("idempotency")
            })
    }

    /// Persona's error entries (empty unless Persona answered with an error status).
    pub fn details(&self) -> &[ApiErrorDetail] {
        match self {
            Self::Api { errors, .. } => errors,
            _ => &[],
        }
    }
}

pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// Reads Persona's `{"errors":[{title, details, source:{pointer}}]}`; anything else in an
/// error body (an HTML page from a load balancer, say) yields no details.
pub(crate) fn parse_error_details(body: &[u8]) -> Vec<ApiErrorDetail> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let Some(entries) = value.get("errors").and_then(|e| e.as_array()) else {
        return Vec::new();
    };
    let text =
        |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).map(str::to_owned);
    entries
        .iter()
        .map(|e| ApiErrorDetail {
            title: text(e, "title").unwrap_or_else(|| "(untitled error)".to_owned()),
            details: text(e, "details").or_else(|| text(e, "detail")),
            pointer: e.get("source").and_then(|s| text(s, "pointer")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, errors: Vec<ApiErrorDetail>) -> PersonaError {
        PersonaError::Api {
            method: "POST",
            path: "/inquiries".to_owned(),
            status,
            errors,
            request_id: None,
        }
    }

    #[test]
    fn classifies_statuses_as_callers_act_on_them() {
        for transient in [408, 429, 500, 502, 503, 504] {
            assert!(api(transient, vec![]).is_transient(), "{transient}");
        }
        for permanent in [400, 401, 403, 404, 409, 422] {
            let e = api(permanent, vec![]);
            assert!(!e.is_transient(), "{permanent}");
            assert_eq!(e.status(), Some(permanent));
        }
        let unreachable = PersonaError::Unreachable {
            method: "GET",
            path: "/inquiries".to_owned(),
            reason: "connection refused".to_owned(),
            timed_out: false,
        };
        assert!(unreachable.is_transient());
        assert_eq!(unreachable.status(), None);
        let malformed = PersonaError::Malformed {
            method: "GET",
            path: "/inquiries".to_owned(),
            status: 200,
            what: "data is missing".to_owned(),
        };
        assert!(!malformed.is_transient());
    }

    #[test]
    fn display_names_the_call_the_status_and_the_pointer() {
        let body = br#"{"errors":[{"title":"Record invalid","details":"Birthdate is not a date","source":{"pointer":"/data/attributes/fields/birthdate"}}]}"#;
        let e = api(422, parse_error_details(body));
        assert_eq!(
            e.to_string(),
            "Persona POST /inquiries answered 422 Record invalid: Birthdate is not a date \
             (pointer /data/attributes/fields/birthdate)"
        );
    }

    #[test]
    fn error_bodies_that_are_not_persona_json_still_display_the_status() {
        assert!(parse_error_details(b"<html>bad gateway</html>").is_empty());
        assert_eq!(
            api(502, vec![]).to_string(),
            "Persona POST /inquiries answered 502 Bad Gateway"
        );
        let only_title = parse_error_details(br#"{"errors":[{"title":"Token is invalid"}]}"#);
        assert_eq!(
            api(401, only_title).to_string(),
            "Persona POST /inquiries answered 401 Token is invalid"
        );
    }
}
