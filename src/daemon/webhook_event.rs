//! Reads a Persona webhook body into the few facts the daemon acts on: the event's id (for
//! de-duplication), its name, when it happened, and the inquiry it is about.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clock::parse_ts;
use crate::domain::{InquiryId, InquiryStatus};

/// One delivered event (`data` of the body, `type: event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `evt_…`, the same on every retry of a delivery: the de-duplication key.
    pub id: String,
    /// `inquiry.completed`, `inquiry.expired`, `inquiry-session.started`, …
    pub name: String,
    /// When Persona created the event; deliveries are not ordered, this is.
    pub created_at: Option<DateTime<Utc>>,
    /// The inquiry in the payload. Present for every `inquiry.*` event; absent for other events
    /// (`inquiry-session.*` carry a session, not an inquiry).
    pub inquiry: Option<WebhookInquiry>,
}

/// The inquiry as the event saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookInquiry {
    pub id: InquiryId,
    pub status: InquiryStatus,
    pub reference_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a body is not a usable webhook event. Field paths are written the way Persona documents
/// them (`data.attributes.name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookBodyError {
    #[error("webhook body is not JSON: {0}")]
    NotJson(String),
    #[error("webhook body has no {0}")]
    Missing(&'static str),
    #[error("webhook body's {field} {why}")]
    Invalid { field: &'static str, why: String },
}

impl WebhookEvent {
    /// Parses the raw body. Unknown members are ignored, and member names are found whichever key
    /// inflection the webhook is set to (`created-at`, `created_at` or `createdAt`).
    pub fn parse(body: &[u8]) -> Result<WebhookEvent, WebhookBodyError> {
        let root: Value =
            serde_json::from_slice(body).map_err(|e| WebhookBodyError::NotJson(e.to_string()))?;
        let data = member(&root, "data").ok_or(WebhookBodyError::Missing("data"))?;
        let id = required_str(data, "id", "data.id")?;
        if !id.starts_with("evt_") || id.len() == 4 {
            return Err(invalid(
                "data.id",
                format!("{id:?} does not start with \"evt_\""),
            ));
        }
        let attributes =
            member(data, "attributes").ok_or(WebhookBodyError::Missing("data.attributes"))?;
        let name = required_str(attributes, "name", "data.attributes.name")?;
        let created_at = optional_ts(attributes, "created-at", "data.attributes.created-at")?;
        let inquiry = if name.starts_with("inquiry.") {
            Some(parse_inquiry(attributes)?)
        } else {
            None
        };
        Ok(WebhookEvent {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at,
            inquiry,
        })
    }
}

fn parse_inquiry(attributes: &Value) -> Result<WebhookInquiry, WebhookBodyError> {
    let data = member(attributes, "payload")
        .and_then(|p| member(p, "data"))
        .ok_or(WebhookBodyError::Missing("data.attributes.payload.data"))?;
    let kind = required_str(data, "type", "data.attributes.payload.data.type")?;
    if kind != "inquiry" {
        return Err(invalid(
            "data.attributes.payload.data.type",
            format!("is {kind:?} where an inquiry event needs \"inquiry\""),
        ));
    }
    let id = required_str(data, "id", "data.attributes.payload.data.id")?;
    let id = InquiryId::parse(id).map_err(|e| invalid("data.attributes.payload.data.id", e.0))?;
    let attrs = member(data, "attributes").ok_or(WebhookBodyError::Missing(
        "data.attributes.payload.data.attributes",
    ))?;
    let status = required_str(
        attrs,
        "status",
        "data.attributes.payload.data.attributes.status",
    )?;
    if status.is_empty() {
        return Err(invalid(
            "data.attributes.payload.data.attributes.status",
            "is empty".into(),
        ));
    }
    let reference_id = match member(attrs, "reference-id") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(invalid(
                "data.attributes.payload.data.attributes.reference-id",
                format!("is {} where text was expected", kind_of(other)),
            ));
        }
    };
    let expires_at = optional_ts(
        attrs,
        "expires-at",
        "data.attributes.payload.data.attributes.expires-at",
    )?;
    Ok(WebhookInquiry {
        id,
        status: InquiryStatus::parse(status),
        reference_id,
        expires_at,
    })
}

/// A member by its kebab-case name, or its snake_case or camelCase spelling; `null` is absent.
fn member<'a>(object: &'a Value, kebab: &str) -> Option<&'a Value> {
    let object = object.as_object()?;
    let found = object
        .get(kebab)
        .or_else(|| object.get(&kebab.replace('-', "_")))
        .or_else(|| object.get(&camel_case(kebab)))?;
    (!found.is_null()).then_some(found)
}

fn camel_case(kebab: &str) -> String {
    let mut parts = kebab.split('-');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

fn required_str<'a>(
    object: &'a Value,
    key: &str,
    path: &'static str,
) -> Result<&'a str, WebhookBodyError> {
    match member(object, key) {
        None => Err(WebhookBodyError::Missing(path)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(invalid(
            path,
            format!("is {} where text was expected", kind_of(other)),
        )),
    }
}

fn optional_ts(
    object: &Value,
    key: &str,
    path: &'static str,
) -> Result<Option<DateTime<Utc>>, WebhookBodyError> {
    match member(object, key) {
        None => Ok(None),
        Some(Value::String(s)) => parse_ts(s)
            .map(Some)
            .ok_or_else(|| invalid(path, format!("{s:?} is not an RFC 3339 timestamp"))),
        Some(other) => Err(invalid(
            path,
            format!("is {} where a timestamp was expected", kind_of(other)),
        )),
    }
}

fn invalid(field: &'static str, why: String) -> WebhookBodyError {
    WebhookBodyError::Invalid { field, why }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/webhooks")
            .join(format!("{name}.json"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn ts(s: &str) -> DateTime<Utc> {
        parse_ts(s).expect("test timestamp")
    }

    #[test]
    fn every_inquiry_example_of_the_spec_parses_with_its_status() {
        let cases = [
            ("inquiry-created", "inquiry.created", InquiryStatus::Created),
            ("inquiry-started", "inquiry.started", InquiryStatus::Pending),
            (
                "inquiry-transitioned",
                "inquiry.transitioned",
                InquiryStatus::Pending,
            ),
            (
                "inquiry-completed",
                "inquiry.completed",
                InquiryStatus::Completed,
            ),
            ("inquiry-failed", "inquiry.failed", InquiryStatus::Failed),
            ("inquiry-expired", "inquiry.expired", InquiryStatus::Expired),
            (
                "inquiry-approved",
                "inquiry.approved",
                InquiryStatus::Approved,
            ),
            (
                "inquiry-declined",
                "inquiry.declined",
                InquiryStatus::Declined,
            ),
            (
                "inquiry-marked-for-review",
                "inquiry.marked-for-review",
                InquiryStatus::NeedsReview,
            ),
            (
                "inquiry-redacted",
                "inquiry.redacted",
                InquiryStatus::Approved,
            ),
            (
                "inquiry-updated-tags",
                "inquiry.updated-tags",
                InquiryStatus::Approved,
            ),
            (
                "inquiry-reusable-persona-created",
                "inquiry.reusable-persona-created",
                InquiryStatus::Approved,
            ),
            (
                "inquiry-reusable-persona-used",
                "inquiry.reusable-persona-used",
                InquiryStatus::Approved,
            ),
        ];
        for (file, name, status) in cases {
            let event =
                WebhookEvent::parse(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(event.name, name, "{file}");
            assert!(event.id.starts_with("evt_"), "{file}");
            assert!(event.created_at.is_some(), "{file}");
            let inquiry = event
                .inquiry
                .unwrap_or_else(|| panic!("{file}: no inquiry"));
            assert_eq!(inquiry.status, status, "{file}");
            assert!(inquiry.id.as_str().starts_with("inq_"), "{file}");
        }
    }

    #[test]
    fn the_created_example_yields_every_field() {
        let event = WebhookEvent::parse(&fixture("inquiry-created")).unwrap();
        assert_eq!(
            event,
            WebhookEvent {
                id: "evt_aBcDeFgHiJkLmNoPqRsTuVwX".into(),
                name: "inquiry.created".into(),
                created_at: Some(ts("2024-03-15T18:30:00.000Z")),
                inquiry: Some(WebhookInquiry {
                    id: InquiryId::parse("inq_kT4xVnR2bPmYwL9sTgD3cExZ").unwrap(),
                    status: InquiryStatus::Created,
                    reference_id: None,
                    expires_at: Some(ts("2024-03-16T18:30:00.000Z")),
                }),
            }
        );
    }

    #[test]
    fn session_events_parse_without_an_inquiry() {
        for file in [
            "inquiry-session-started",
            "inquiry-session-expired",
            "inquiry-session-canceled",
        ] {
            let event =
                WebhookEvent::parse(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(event.name.starts_with("inquiry-session."), "{file}");
            assert_eq!(event.inquiry, None, "{file}");
        }
    }

    #[test]
    fn snake_case_keys_and_unknown_members_are_accepted() {
        let body = br#"{"data":{"type":"event","id":"evt_1","extra":[1],
            "attributes":{"name":"inquiry.expired","created_at":"2024-03-16T18:30:00.100Z",
            "payload":{"data":{"type":"inquiry","id":"inq_9","attributes":{
              "status":"expired","reference_id":"ref_abc","expires_at":"2024-03-16T18:30:00Z",
              "brand_new_thing":{"x":1}}}}}}}"#;
        let event = WebhookEvent::parse(body).unwrap();
        assert_eq!(event.created_at, Some(ts("2024-03-16T18:30:00.100Z")));
        let inquiry = event.inquiry.unwrap();
        assert_eq!(inquiry.reference_id.as_deref(), Some("ref_abc"));
        assert_eq!(inquiry.status, InquiryStatus::Expired);
        assert_eq!(inquiry.expires_at, Some(ts("2024-03-16T18:30:00Z")));
    }

    #[test]
    fn camel_case_keys_are_accepted() {
        let body = br#"{"data":{"id":"evt_1","attributes":{"name":"inquiry.started",
            "createdAt":"2024-03-16T18:30:00Z","payload":{"data":{"type":"inquiry","id":"inq_9",
            "attributes":{"status":"pending","referenceId":"ref_x","expiresAt":null}}}}}}"#;
        let inquiry = WebhookEvent::parse(body).unwrap().inquiry.unwrap();
        assert_eq!(inquiry.reference_id.as_deref(), Some("ref_x"));
        assert_eq!(inquiry.expires_at, None);
    }

    #[test]
    fn unknown_statuses_are_kept() {
        let body = br#"{"data":{"id":"evt_1","attributes":{"name":"inquiry.updated",
            "payload":{"data":{"type":"inquiry","id":"inq_9","attributes":{"status":"paused"}}}}}}"#;
        let inquiry = WebhookEvent::parse(body).unwrap().inquiry.unwrap();
        assert_eq!(inquiry.status, InquiryStatus::Other("paused".into()));
    }

    #[test]
    fn malformed_bodies_name_what_is_wrong() {
        use WebhookBodyError::*;
        let missing = |body: &str| match WebhookEvent::parse(body.as_bytes()) {
            Err(Missing(path)) => path,
            other => panic!("{body}: {other:?}"),
        };
        let invalid = |body: &str| match WebhookEvent::parse(body.as_bytes()) {
            Err(Invalid { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        };
        assert!(matches!(WebhookEvent::parse(b"{not json"), Err(NotJson(_))));
        assert_eq!(missing("{}"), "data");
        assert_eq!(missing(r#"{"data":{"attributes":{}}}"#), "data.id");
        assert_eq!(missing(r#"{"data":{"id":"evt_1"}}"#), "data.attributes");
        assert_eq!(
            missing(r#"{"data":{"id":"evt_1","attributes":{}}}"#),
            "data.attributes.name"
        );
        assert_eq!(
            missing(r#"{"data":{"id":"evt_1","attributes":{"name":"inquiry.completed"}}}"#),
            "data.attributes.payload.data"
        );
        assert_eq!(
            missing(
                r#"{"data":{"id":"evt_1","attributes":{"name":"inquiry.completed",
                "payload":{"data":{"type":"inquiry","id":"inq_1","attributes":{}}}}}}"#
            ),
            "data.attributes.payload.data.attributes.status"
        );
        assert_eq!(invalid(r#"{"data":{"id":"x","attributes":{}}}"#), "data.id");
        assert_eq!(
            invalid(r#"{"data":{"id":"evt_1","attributes":{"name":7}}}"#),
            "data.attributes.name"
        );
        assert_eq!(
            invalid(
                r#"{"data":{"id":"evt_1","attributes":{"name":"x","created-at":"yesterday"}}}"#
            ),
            "data.attributes.created-at"
        );
        assert_eq!(
            invalid(
                r#"{"data":{"id":"evt_1","attributes":{"name":"inquiry.completed",
                "payload":{"data":{"type":"inquiry","id":"act_1","attributes":{"status":"x"}}}}}}"#
            ),
            "data.attributes.payload.data.id"
        );
        assert_eq!(
            invalid(
                r#"{"data":{"id":"evt_1","attributes":{"name":"inquiry.completed",
                "payload":{"data":{"type":"account","id":"act_1"}}}}}"#
            ),
            "data.attributes.payload.data.type"
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = WebhookEvent::parse(br#"{"data":{"id":"evt_1"}}"#).unwrap_err();
        assert_eq!(e.to_string(), "webhook body has no data.attributes");
    }
}
