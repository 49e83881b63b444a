//! The typed requests and answers of the Persona calls, and their JSON:API wire form.
//! Answers are read tolerantly: unknown attributes are ignored, unknown statuses kept.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::clock::parse_ts;
use crate::domain::{
    Birthdate, Email, InquiryId, InquiryStatus, OneTimeLink, ParseError, PersonName, PhoneNumber,
    ReferenceId, SessionToken, TemplateId, TemplateVersionId, random_alnum,
};

/// The `Idempotency-Key` of one state-changing POST. The caller creates it and stores it
/// before the call, so a retry after a crash re-sends the same key and Persona replays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Printable ASCII without spaces, 1 to 255 characters: safe in an HTTP header.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 255 {
            return Err(ParseError(format!(
                "idempotency key must be 1 to 255 characters, got {}",
                s.len()
            )));
        }
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ParseError(format!(
                "idempotency key {s:?} contains {c:?}, which is not printable ASCII"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh random key (`idem_` + 32 letters and digits).
    pub fn generate() -> Self {
        Self(format!("idem_{}", random_alnum(32)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

/// The user data Persona pre-fills; only the present ones are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InquiryFields {
    pub name_first: Option<PersonName>,
    pub name_last: Option<PersonName>,
    pub birthdate: Option<Birthdate>,
    pub phone_number: Option<PhoneNumber>,
    pub email_address: Option<Email>,
}

/// `POST /inquiries`: one inquiry attached to the account with `reference_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateInquiry {
    pub template_id: TemplateId,
    pub reference_id: ReferenceId,
    pub fields: InquiryFields,
    pub redirect_uri: Option<url::Url>,
    /// Ask for `meta.session-token` in the answer.
    pub auto_create_session: bool,
    /// Ask for `meta.one-time-link` in the answer.
    pub auto_create_one_time_link: bool,
    pub one_time_link_expires_in: Option<Duration>,
    /// Overrides the template's expiry intervals: after creation, after the user starts, and
    /// after a resume (`expiration-after-{create,start,resume}-interval-seconds`), so a link lives
    /// as long as configured whatever the template's defaults are.
    pub expires_after: Option<Duration>,
    /// `attributes.note`: a mark of ours that `filter[note]` finds again, so a lost answer can
    /// be recovered whether or not Persona copies the account's reference id onto the inquiry.
    pub note: Option<String>,
}

impl CreateInquiry {
    /// The request body: kebab-case JSON:API, only the settings that are present.
    pub(crate) fn to_body(&self) -> Value {
        let f = &self.fields;
        let mut fields = Map::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                fields.insert(key.to_owned(), Value::String(v));
            }
        };
        put(
            "name-first",
            f.name_first.as_ref().map(|n| n.as_str().to_owned()),
        );
        put(
            "name-last",
            f.name_last.as_ref().map(|n| n.as_str().to_owned()),
        );
        put("birthdate", f.birthdate.map(|b| b.to_string()));
        put(
            "phone-number",
            f.phone_number.as_ref().map(|p| p.as_str().to_owned()),
        );
        put(
            "email-address",
            f.email_address.as_ref().map(|e| e.as_str().to_owned()),
        );

        let mut attributes = Map::new();
        attributes.insert(
            "inquiry-template-id".into(),
            json!(self.template_id.as_str()),
        );
        if !fields.is_empty() {
            attributes.insert("fields".into(), Value::Object(fields));
        }
        if let Some(uri) = &self.redirect_uri {
            attributes.insert("redirect-uri".into(), json!(uri.as_str()));
        }
        if let Some(note) = &self.note {
            attributes.insert("note".into(), json!(note));
        }

        let mut meta = Map::new();
        meta.insert(
            "auto-create-account-reference-id".into(),
            json!(self.reference_id.as_str()),
        );
        if self.auto_create_session {
            meta.insert("auto-create-inquiry-session".into(), json!(true));
        }
        if self.auto_create_one_time_link {
            meta.insert("auto-create-one-time-link".into(), json!(true));
        }
        if let Some(d) = self.one_time_link_expires_in {
            meta.insert(
                "one-time-link-expiration-seconds".into(),
                json!(whole_seconds(d)),
            );
        }
        if let Some(d) = self.expires_after {
            for key in [
                "expiration-after-create-interval-seconds",
                "expiration-after-start-interval-seconds",
                "expiration-after-resume-interval-seconds",
            ] {
                meta.insert(key.into(), json!(whole_seconds(d)));
            }
        }
        json!({ "data": { "attributes": attributes }, "meta": meta })
    }
}

/// Persona takes whole seconds greater than zero; round up so a sub-second remainder never
/// shortens a lifetime, and never send 0.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// One value of `attributes.fields`, as Persona types it (`string`, `date`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    pub kind: String,
    pub value: Value,
}

/// An inquiry as Persona answers it (`Persona-Version: 2025-12-08` shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Inquiry {
    pub id: InquiryId,
    pub status: InquiryStatus,
    pub reference_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub redacted_at: Option<DateTime<Utc>>,
    pub template_id: Option<TemplateId>,
    pub template_version_id: Option<TemplateVersionId>,
    pub fields: BTreeMap<String, FieldValue>,
    /// Length of `relationships.sessions.data`, when Persona sent it.
    pub session_count: Option<usize>,
}

/// The answer to create: the inquiry plus whatever `meta` secrets were asked for.
#[derive(Debug, Clone)]
pub struct CreatedInquiry {
    pub inquiry: Inquiry,
    pub session_token: Option<SessionToken>,
    pub one_time_link: Option<OneTimeLink>,
}

/// The answer to retrieve, with the template's latest published version when it was included.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievedInquiry {
    pub inquiry: Inquiry,
    pub latest_published_version: Option<TemplateVersionId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InquiryTemplate {
    pub id: TemplateId,
    pub name: Option<String>,
    /// `active` / `inactive` (kept as text: Persona may add values).
    pub status: Option<String>,
    pub latest_published_version: Option<TemplateVersionId>,
}

/// One entry of `GET /rate-limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub kind: String,
    pub limit: u64,
    pub remaining: u64,
    pub seconds_to_reset: u64,
}

/// One page of `GET /inquiries`.
#[derive(Debug)]
pub(crate) struct InquiryPage {
    pub inquiries: Vec<Inquiry>,
    /// `links.next`: a path relative to the API origin, or none on the last page.
    pub next: Option<String>,
}

// ---- reading answers -------------------------------------------------------------------------
// Each reader returns a sentence naming what was wrong; the transport adds method and path.

type Read<T> = Result<T, String>;

fn object<'a>(v: &'a Value, at: &str) -> Read<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| format!("{at} is not an object"))
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Read<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{at}.{key} is not a string")),
    }
}

fn opt_ts(obj: &Map<String, Value>, key: &str, at: &str) -> Read<Option<DateTime<Utc>>> {
    match opt_str(obj, key, at)? {
        None => Ok(None),
        Some(s) => parse_ts(s)
            .map(Some)
            .ok_or_else(|| format!("{at}.{key} {s:?} is not an RFC 3339 timestamp")),
    }
}

fn parse_id<T>(raw: &str, at: &str, parse: fn(&str) -> Result<T, ParseError>) -> Read<T> {
    parse(raw).map_err(|e| format!("{at}: {e}"))
}

/// `relationships.<name>.data.id`; `data` may be absent, null or `{}` (Persona sends all three).
fn related_id<'a>(resource: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    resource
        .get("relationships")?
        .get(name)?
        .get("data")?
        .get("id")?
        .as_str()
}

fn data(body: &Value) -> Read<&Value> {
    body.get("data").ok_or_else(|| "data is missing".to_owned())
}

fn meta_secret(body: &Value, key: &str) -> Read<Option<String>> {
    match body.get("meta").and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("meta.{key} is not a non-empty string")),
    }
}

pub(crate) fn read_inquiry(resource: &Value, at: &str) -> Read<Inquiry> {
    let res = object(resource, at)?;
    if let Some(kind) = opt_str(res, "type", at)?
        && kind != "inquiry"
    {
        return Err(format!("{at}.type is {kind:?}, expected \"inquiry\""));
    }
    let id = opt_str(res, "id", at)?.ok_or_else(|| format!("{at}.id is missing"))?;
    let id = parse_id(id, &format!("{at}.id"), InquiryId::parse)?;
    let attrs_at = format!("{at}.attributes");
    let attrs = object(
        res.get("attributes")
            .ok_or_else(|| format!("{attrs_at} is missing"))?,
        &attrs_at,
    )?;
    let status = opt_str(attrs, "status", &attrs_at)?
        .map(InquiryStatus::parse)
        .ok_or_else(|| format!("{attrs_at}.status is missing"))?;

    let mut fields = BTreeMap::new();
    if let Some(raw) = attrs.get("fields").filter(|f| !f.is_null()) {
        for (name, field) in object(raw, &format!("{attrs_at}.fields"))? {
            fields.insert(name.clone(), read_field(field));
        }
    }

    let template_id = related_id(res, "inquiry-template")
        .map(|raw| parse_id(raw, &format!("{at} inquiry-template"), TemplateId::parse))
        .transpose()?;
    let template_version_id = related_id(res, "inquiry-template-version")
        .map(|raw| {
            parse_id(
                raw,
                &format!("{at} inquiry-template-version"),
                TemplateVersionId::parse,
            )
        })
        .transpose()?;
    let session_count = res
        .get("relationships")
        .and_then(|r| r.get("sessions"))
        .and_then(|s| s.get("data"))
        .and_then(Value::as_array)
        .map(Vec::len);

    Ok(Inquiry {
        id,
        status,
        reference_id: opt_str(attrs, "reference-id", &attrs_at)?.map(str::to_owned),
        created_at: opt_ts(attrs, "created-at", &attrs_at)?,
        updated_at: opt_ts(attrs, "updated-at", &attrs_at)?,
        started_at: opt_ts(attrs, "started-at", &attrs_at)?,
        expires_at: opt_ts(attrs, "expires-at", &attrs_at)?,
        completed_at: opt_ts(attrs, "completed-at", &attrs_at)?,
        failed_at: opt_ts(attrs, "failed-at", &attrs_at)?,
        expired_at: opt_ts(attrs, "expired-at", &attrs_at)?,
        redacted_at: opt_ts(attrs, "redacted-at", &attrs_at)?,
        template_id,
        template_version_id,
        fields,
        session_count,
    })
}

/// Fields come as `{type, value}`; a bare value (older API versions) is kept with kind "".
fn read_field(field: &Value) -> FieldValue {
    match field {
        Value::Object(o) if o.contains_key("value") || o.contains_key("type") => FieldValue {
            kind: o
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            value: o.get("value").cloned().unwrap_or(Value::Null),
        },
        other => FieldValue {
            kind: String::new(),
            value: other.clone(),
        },
    }
}

/// An answer whose `data` is one inquiry and whose `meta` holds nothing the caller needs.
pub(crate) fn read_data_inquiry(body: &Value) -> Read<Inquiry> {
    read_inquiry(data(body)?, "data")
}

pub(crate) fn read_created(body: &Value) -> Read<CreatedInquiry> {
    Ok(CreatedInquiry {
        inquiry: read_inquiry(data(body)?, "data")?,
        session_token: meta_secret(body, "session-token")?.map(SessionToken::new),
        one_time_link: meta_secret(body, "one-time-link")?.map(OneTimeLink::new),
    })
}

pub(crate) fn read_resumed(body: &Value) -> Read<(Inquiry, SessionToken)> {
    let inquiry = read_inquiry(data(body)?, "data")?;
    let token = meta_secret(body, "session-token")?
        .ok_or_else(|| "meta.session-token is missing".to_owned())?;
    Ok((inquiry, SessionToken::new(token)))
}

pub(crate) fn read_one_time_link(body: &Value) -> Read<(Inquiry, OneTimeLink)> {
    let inquiry = read_inquiry(data(body)?, "data")?;
    let link = meta_secret(body, "one-time-link")?
        .ok_or_else(|| "meta.one-time-link is missing".to_owned())?;
    Ok((inquiry, OneTimeLink::new(link)))
}

pub(crate) fn read_retrieved(body: &Value) -> Read<RetrievedInquiry> {
    let inquiry = read_inquiry(data(body)?, "data")?;
    let included = body.get("included").and_then(Value::as_array);
    // Prefer the included template that is the inquiry's own; fall back to any template.
    let template = included.and_then(|list| {
        let templates = || {
            list.iter()
                .filter(|r| r.get("type").and_then(Value::as_str) == Some("inquiry-template"))
        };
        let own = inquiry.template_id.as_ref().and_then(|t| {
            templates().find(|r| r.get("id").and_then(Value::as_str) == Some(t.as_str()))
        });
        own.or_else(|| templates().next())
    });
    let latest_published_version = template
        .and_then(Value::as_object)
        .and_then(|t| related_id(t, "latest-published-version"))
        .map(|raw| {
            parse_id(
                raw,
                "included inquiry-template latest-published-version",
                TemplateVersionId::parse,
            )
        })
        .transpose()?;
    Ok(RetrievedInquiry {
        inquiry,
        latest_published_version,
    })
}

pub(crate) fn read_page(body: &Value) -> Read<InquiryPage> {
    let list = data(body)?
        .as_array()
        .ok_or_else(|| "data is not an array".to_owned())?;
    let inquiries = list
        .iter()
        .enumerate()
        .map(|(i, r)| read_inquiry(r, &format!("data[{i}]")))
        .collect::<Read<Vec<_>>>()?;
    let next = match body.get("links").and_then(|l| l.get("next")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("links.next is not a string".to_owned()),
    };
    Ok(InquiryPage { inquiries, next })
}

pub(crate) fn read_template(body: &Value) -> Read<InquiryTemplate> {
    let res = object(data(body)?, "data")?;
    let id = opt_str(res, "id", "data")?.ok_or_else(|| "data.id is missing".to_owned())?;
    let id = parse_id(id, "data.id", TemplateId::parse)?;
    let attrs = res.get("attributes").and_then(Value::as_object);
    let text = |key: &str| {
        attrs
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let latest_published_version = related_id(res, "latest-published-version")
        .map(|raw| {
            parse_id(
                raw,
                "data latest-published-version",
                TemplateVersionId::parse,
            )
        })
        .transpose()?;
    Ok(InquiryTemplate {
        id,
        name: text("name"),
        status: text("status"),
        latest_published_version,
    })
}

pub(crate) fn read_rate_limits(body: &Value) -> Read<Vec<RateLimitInfo>> {
    let list = data(body)?
        .as_array()
        .ok_or_else(|| "data is not an array".to_owned())?;
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("data[{i}]");
            let number = |key: &str| {
                r.get("attributes")
                    .and_then(|a| a.get(key))
                    .and_then(Value::as_u64)
                    .ok_or_else(|| format!("{at}.attributes.{key} is not a whole number"))
            };
            Ok(RateLimitInfo {
                kind: r
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                limit: number("limit")?,
                remaining: number("remaining")?,
                seconds_to_reset: number("seconds-to-reset")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let text = match name {
            "created" => include_str!("../../tests/fixtures/persona/inquiry-created.json"),
            "retrieve" => include_str!("../../tests/fixtures/persona/inquiry-retrieve.json"),
            "list" => include_str!("../../tests/fixtures/persona/inquiry-list.json"),
            "resume" => include_str!("../../tests/fixtures/persona/inquiry-resume.json"),
            "otl" => include_str!("../../tests/fixtures/persona/inquiry-one-time-link.json"),
            "template" => include_str!("../../tests/fixtures/persona/inquiry-template.json"),
            other => panic!("no fixture {other}"),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_persona_created_example() {
        let created = read_created(&fixture("created")).unwrap();
        let inq = &created.inquiry;
        assert_eq!(inq.id.as_str(), "inq_zEx4jL84ShbUyuwX6AzPSqt6");
        assert_eq!(inq.status, InquiryStatus::Pending);
        assert_eq!(inq.reference_id.as_deref(), Some("abc-123"));
        assert_eq!(
            inq.expires_at,
            Some(parse_ts("2023-03-31T19:07:01.000Z").unwrap())
        );
        assert_eq!(inq.completed_at, None);
        assert_eq!(
            inq.template_id.as_ref().unwrap().as_str(),
            "itmpl_p8ANAJy9iqadm2buF2xcVgqH"
        );
        assert_eq!(
            inq.template_version_id.as_ref().unwrap().as_str(),
            "itmplv_iXhqfNWqwYLAWs9G8Fm8hPfo"
        );
        assert_eq!(inq.session_count, Some(0));
        let birthdate = &inq.fields["birthdate"];
        assert_eq!(birthdate.kind, "date");
        assert_eq!(birthdate.value, json!("1995-09-08"));
        assert_eq!(inq.fields["phone-number"].value, Value::Null);
        assert_eq!(
            created.session_token.unwrap().expose(),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.example"
        );
        assert_eq!(
            created.one_time_link.unwrap().expose(),
            "https://withpersona.com/verify?code=ABC123"
        );
    }

    #[test]
    fn reads_the_latest_published_version_from_the_included_template() {
        let r = read_retrieved(&fixture("retrieve")).unwrap();
        assert_eq!(
            r.latest_published_version.unwrap().as_str(),
            "itmplv_ABC123"
        );
        assert_eq!(r.inquiry.session_count, Some(0));
        // Without `included`, there is simply no answer to the question.
        let mut body = fixture("retrieve");
        body.as_object_mut().unwrap().remove("included");
        assert_eq!(
            read_retrieved(&body).unwrap().latest_published_version,
            None
        );
    }

    #[test]
    fn reads_resume_one_time_link_list_and_template_examples() {
        let (inq, token) = read_resumed(&fixture("resume")).unwrap();
        assert!(inq.id.as_str().starts_with("inq_"));
        assert!(token.expose().starts_with("eyJ"));
        let (_, link) = read_one_time_link(&fixture("otl")).unwrap();
        assert_eq!(
            link.expose(),
            "https://withpersona.com/verify?code=us1-asdf"
        );
        let page = read_page(&fixture("list")).unwrap();
        assert_eq!(page.inquiries.len(), 1);
        assert_eq!(
            page.next.as_deref(),
            Some("/api/v1/inquiries?page%5Bafter%5D=inq_ByBdXDqUrguLAHjGZMuDZLCx")
        );
        let t = read_template(&fixture("template")).unwrap();
        assert_eq!(t.id.as_str(), "itmpl_ABC123");
        assert_eq!(t.status.as_deref(), Some("active"));
        assert_eq!(
            t.latest_published_version.unwrap().as_str(),
            "itmplv_XYZ789"
        );
    }

    #[test]
    fn tolerates_unknown_statuses_attributes_and_missing_optionals() {
        let body = json!({
            "data": {
                "type": "inquiry", "id": "inq_min",
                "attributes": { "status": "transmogrified", "brand-new-attribute": {"x": 1} }
            }
        });
        let inq = read_data_inquiry(&body).unwrap();
        assert_eq!(inq.status, InquiryStatus::Other("transmogrified".into()));
        assert_eq!(inq.expires_at, None);
        assert_eq!(inq.template_id, None);
        assert_eq!(inq.session_count, None);
        assert!(inq.fields.is_empty());
    }

    #[test]
    fn malformed_answers_name_what_is_wrong() {
        let no_status = json!({"data": {"type": "inquiry", "id": "inq_1", "attributes": {}}});
        assert_eq!(
            read_data_inquiry(&no_status).unwrap_err(),
            "data.attributes.status is missing"
        );
        let bad_ts = json!({"data": {"id": "inq_1", "attributes": {"status": "created", "expires-at": "tomorrow"}}});
        assert!(
            read_data_inquiry(&bad_ts)
                .unwrap_err()
                .contains("expires-at")
        );
        let bad_id = json!({"data": {"id": "act_1", "attributes": {"status": "created"}}});
        assert!(
            read_data_inquiry(&bad_id)
                .unwrap_err()
                .starts_with("data.id")
        );
        let resume_without_token =
            json!({"data": {"id": "inq_1", "attributes": {"status": "pending"}}, "meta": {}});
        assert_eq!(
            read_resumed(&resume_without_token).unwrap_err(),
            "meta.session-token is missing"
        );
        assert_eq!(
            read_page(&json!({"data": {}})).unwrap_err(),
            "data is not an array"
        );
    }

    #[test]
    fn create_body_is_kebab_case_with_only_present_settings() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let req = CreateInquiry {
            template_id: TemplateId::parse("itmpl_T").unwrap(),
            reference_id: ReferenceId::parse("ref_R").unwrap(),
            fields: InquiryFields {
                name_first: Some(PersonName::parse("first name", "Alex").unwrap()),
                name_last: None,
                birthdate: Some(Birthdate::parse_at("1980-02-29", today).unwrap()),
                phone_number: None,
                email_address: Some(Email::parse("alex@example.com").unwrap()),
            },
            redirect_uri: None,
            auto_create_session: false,
            auto_create_one_time_link: true,
            one_time_link_expires_in: Some(Duration::from_millis(3_600_500)),
            expires_after: Some(Duration::from_secs(7 * 86_400)),
            note: Some("inquiry-mailer ref_R".into()),
        };
        assert_eq!(
            req.to_body(),
            json!({
                "data": {"attributes": {
                    "inquiry-template-id": "itmpl_T",
                    "fields": {"name-first": "Alex", "birthdate": "1980-02-29", "email-address": "alex@example.com"},
                    "note": "inquiry-mailer ref_R"
                }},
                "meta": {
                    "auto-create-account-reference-id": "ref_R",
                    "auto-create-one-time-link": true,
                    "one-time-link-expiration-seconds": 3601,
                    "expiration-after-create-interval-seconds": 604800,
                    "expiration-after-start-interval-seconds": 604800,
                    "expiration-after-resume-interval-seconds": 604800
                }
            })
        );
    }

    #[test]
    fn idempotency_keys_are_header_safe() {
        assert!(IdempotencyKey::parse("create:usr_1:gen-2").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("new\nline").is_err());
        let a = IdempotencyKey::generate();
        assert_ne!(a, IdempotencyKey::generate());
        assert!(IdempotencyKey::parse(a.as_str()).is_ok());
    }
}
