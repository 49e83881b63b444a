//! Persona's wire format (API version 2025-12-08, kebab-case keys): JSON:API resources for
//! inquiries and templates, error bodies in the spec's per-status shapes, and request key casing.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::time::format_ts;

use super::world::{Inquiry, Template, TemplateVersion};

fn ts(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_ts(t)))
}

fn step_names(inq: &Inquiry) -> (Value, Value) {
    use crate::status::Status as S;
    match inq.status {
        S::Created => (Value::Null, json!("start")),
        S::Pending => (json!("start"), json!("verification_government_id")),
        S::Failed => (json!("verification_government_id"), json!("fail")),
        S::Expired if inq.started_at.is_none() => (Value::Null, json!("start")),
        S::Expired => (json!("start"), json!("verification_government_id")),
        _ => (json!("verification_government_id"), json!("success")),
    }
}

/// The `inquiry` resource object (`components/schemas/inquiry`).
pub fn inquiry_resource(inq: &Inquiry) -> Value {
    let (previous_step, next_step) = step_names(inq);
    let reviewer = inq
        .reviewer
        .as_ref()
        .map_or(Value::Null, |id| json!({"type": "user", "id": id}));
    let sessions: Vec<Value> = inq
        .sessions
        .iter()
        .map(|s| json!({"type": "inquiry-session", "id": s.id}))
        .collect();
    json!({
        "type": "inquiry",
        "id": inq.id,
        "attributes": {
            "status": inq.status.as_str(),
            "reference-id": inq.reference_id,
            "note": inq.note,
            "behaviors": {},
            "tags": inq.tags,
            "creator": "API",
            "reviewer-comment": null,
            "created-at": format_ts(inq.created_at),
            "updated-at": format_ts(inq.updated_at),
            "started-at": ts(inq.started_at),
            "expires-at": ts(inq.expires_at),
            "completed-at": ts(inq.completed_at),
            "failed-at": ts(inq.failed_at),
            "marked-for-review-at": ts(inq.marked_for_review_at),
            "decisioned-at": ts(inq.decisioned_at),
            "expired-at": ts(inq.expired_at),
            "redacted-at": null,
            "previous-step-name": previous_step,
            "next-step-name": next_step,
            "fields": inq.fields,
        },
        "relationships": {
            "account": {"data": {"type": "account", "id": inq.account_id}},
            "template": {"data": null},
            "inquiry-template": {"data": {"type": "inquiry-template", "id": inq.template_id}},
            "inquiry-template-version": {
                "data": {"type": "inquiry-template-version", "id": inq.template_version_id}
            },
            "transaction": {"data": null},
            "reviewer": {"data": reviewer},
            "reports": {"data": []},
            "verifications": {"data": []},
            "sessions": {"data": sessions},
            "documents": {"data": []},
            "selfies": {"data": []},
        }
    })
}

/// The `inquiry-template` resource object (`components/schemas/inquiry-template`).
pub fn template_resource(t: &Template) -> Value {
    json!({
        "type": "inquiry-template",
        "id": t.id,
        "attributes": {
            "name": t.name,
            "status": "active",
            "embedded-flow-domain-allowlist": [],
            "hosted-flow-subdomains": [],
            "hosted-flow-redirect-uri-schemes": [],
        },
        "relationships": {
            "latest-published-version": {
                "data": {"type": "inquiry-template-version", "id": t.latest().id}
            }
        }
    })
}

/// The `inquiry-template-version` resource object.
pub fn version_resource(t: &Template, v: &TemplateVersion) -> Value {
    json!({
        "type": "inquiry-template-version",
        "id": v.id,
        "attributes": {
            "name-display": t.name,
            "description": null,
            "status": "published",
            "live": t.latest().id == v.id,
            "last-updater": null,
            "enabled-locales": ["en-US"],
            "created-at": format_ts(v.published_at),
            "updated-at": format_ts(v.published_at),
            "published-at": format_ts(v.published_at),
        }
    })
}

/// Field values come in plain and go out as `{type, value}`; the type is what Persona's
/// default field schemas use (`birthdate` is a date, everything textual a string).
pub fn typed_field(name: &str, value: Value) -> Value {
    let kind = match &value {
        _ if name == "birthdate" => "date",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::Array(_) => "array",
        Value::Object(_) => "hash",
        _ => "string",
    };
    json!({"type": kind, "value": value})
}

/// An API error, rendered in the exact shape the spec gives for its status code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: &'static str,
    pub details: Option<String>,
    pub pointer: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, title: &'static str, details: Option<String>) -> Self {
        Self {
            status,
            title,
            details,
            pointer: None,
        }
    }

    pub fn bad_request(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", Some(details.into()))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Must be authenticated to access this endpoint",
            None,
        )
    }

    pub fn forbidden(details: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", Some(details.into()))
    }

    pub fn not_found(details: Option<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Record not found", details)
    }

    pub fn conflict(details: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", Some(details.into()))
    }

    pub fn unprocessable(details: impl Into<String>, pointer: Option<&str>) -> Self {
        Self {
            pointer: pointer.map(str::to_owned),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unprocessable entity",
                Some(details.into()),
            )
        }
    }

    pub fn rate_limited(limit: u32) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit exceeded",
            Some(format!(
                "You have hit your rate limit of {limit} requests / min. Please reach out to \
                 support@withpersona.com if you need this changed."
            )),
        )
    }

    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            Some("The simulator injected this failure".into()),
        )
    }

    pub fn body(&self) -> Value {
        let mut e = Map::new();
        e.insert("title".into(), json!(self.title));
        if let Some(d) = &self.details {
            e.insert("details".into(), json!(d));
        }
        if let Some(p) = &self.pointer {
            e.insert("source".into(), json!({ "pointer": p }));
        }
        json!({ "errors": [e] })
    }
}

/// `inquiry_template_id`, `inquiryTemplateId` → `inquiry-template-id`: Persona accepts request
/// keys in all three casings (DOCS `/api-key-inflection`).
pub fn kebab_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c == '_' {
            out.push('-');
        } else if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Re-keys one object level to kebab-case (never applied inside `fields`, whose keys Persona
/// does not inflect).
pub fn kebab_object(v: &Value) -> Option<Map<String, Value>> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (kebab_key(k), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_in_any_casing_become_kebab() {
        assert_eq!(kebab_key("inquiry_template_id"), "inquiry-template-id");
        assert_eq!(kebab_key("inquiryTemplateId"), "inquiry-template-id");
        assert_eq!(kebab_key("inquiry-template-id"), "inquiry-template-id");
    }

    #[test]
    fn error_bodies_carry_only_the_keys_their_status_allows() {
        assert_eq!(
            ApiError::unauthorized().body(),
            json!({"errors": [{"title": "Must be authenticated to access this endpoint"}]})
        );
        let e = ApiError::unprocessable("bad", Some("/meta/expires-in-seconds")).body();
        assert_eq!(
            e["errors"][0]["source"]["pointer"],
            "/meta/expires-in-seconds"
        );
    }
}
