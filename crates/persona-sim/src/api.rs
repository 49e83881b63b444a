//! The `/api/v1` handlers: parse Persona's request shapes, act on the world, answer in the
//! spec's response shapes. The gate in front of them handles auth, limits and idempotency.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{Json, response::IntoResponse};
use chrono::Duration;
use serde_json::{Map, Value, json};
use url::form_urlencoded;

use super::search::{Query, Sort};
use super::wire::{self, ApiError, kebab_object};
use super::world::{Intervals, NewInquiry, TemplateChoice, World};
use super::{SearchResults, Sim, SimError, Switches, gate};

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/inquiries", get(list_inquiries).post(create_inquiry))
        .route("/inquiries/search", post(search_inquiries))
        .route("/inquiries/{inquiry-id}", get(retrieve_inquiry))
        .route("/inquiries/{inquiry-id}/resume", post(resume_inquiry))
        .route("/inquiries/{inquiry-id}/expire", post(expire_inquiry))
        .route(
            "/inquiries/{inquiry-id}/generate-one-time-link",
            post(generate_one_time_link),
        )
        .route(
            "/inquiry-templates/{inquiry-template-id}",
            get(retrieve_template),
        )
        .route("/rate-limits", get(rate_limits))
        .fallback(|| async { ApiError::not_found(None) })
        .layer(from_fn_with_state(sim.clone(), gate::gate))
        .with_state(sim)
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        match e {
            SimError::UnknownInquiry(_) => ApiError::not_found(None),
            SimError::UnknownTemplate(t) => {
                ApiError::not_found(Some(format!("inquiry template {t} is not found")))
            }
            SimError::Conflict(m) => ApiError::conflict(m),
            SimError::Invalid(m) => ApiError::unprocessable(m, None),
        }
    }
}

fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// What to put in `included` for a single-inquiry response.
#[derive(Default)]
struct Includes {
    template: bool,
    version: bool,
    latest_version: bool,
}

/// Relationships whose `data` the simulator always leaves empty: including them adds nothing.
const EMPTY_RELATIONSHIPS: &[&str] = &[
    "template",
    "transaction",
    "reports",
    "verifications",
    "documents",
    "selfies",
];

/// Reads `include` (and refuses what the simulator cannot answer faithfully).
fn single_resource_params(pairs: &[(String, String)]) -> Result<Includes, ApiError> {
    let mut inc = Includes::default();
    for (k, v) in pairs {
        if k.starts_with("fields[") {
            return Err(ApiError::bad_request(
                "sparse fieldsets (fields[...]) are not simulated",
            ));
        }
        if k != "include" {
            return Err(ApiError::bad_request(format!(
                "{k} is not a permitted parameter"
            )));
        }
        for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "inquiry-template" => inc.template = true,
                "inquiry-template-version" => inc.version = true,
                "inquiry-template.latest-published-version" => {
                    inc.template = true;
                    inc.latest_version = true;
                }
                n if EMPTY_RELATIONSHIPS.contains(&n) => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "include={other} is not simulated"
                    )));
                }
            }
        }
    }
    Ok(inc)
}

/// `{data, included?}` for one inquiry, plus `meta` when given.
fn inquiry_document(w: &World, id: &str, inc: &Includes, meta: Option<Value>) -> Value {
    let inq = w.inquiry(id).expect("caller holds a valid id");
    let mut doc = Map::new();
    doc.insert("data".into(), wire::inquiry_resource(inq));
    if inc.template || inc.version || inc.latest_version {
        let template = w
            .template(&inq.template_id)
            .expect("inquiries point at templates");
        let mut included = Vec::new();
        if inc.template {
            included.push(wire::template_resource(template));
        }
        let mut push_version = |vid: &str| {
            if let Some(v) = template.versions.iter().find(|v| v.id == vid) {
                let res = wire::version_resource(template, v);
                if !included.contains(&res) {
                    included.push(res);
                }
            }
        };
        if inc.version {
            push_version(&inq.template_version_id);
        }
        if inc.latest_version {
            push_version(&template.latest().id);
        }
        doc.insert("included".into(), Value::Array(included));
    }
    if let Some(meta) = meta {
        doc.insert("meta".into(), meta);
    }
    Value::Object(doc)
}

fn parse_body(bytes: &Bytes) -> Result<Option<Map<String, Value>>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    kebab_object(&v)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("request body must be a JSON object"))
}

fn only_keys(obj: &Map<String, Value>, at: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "{at}{k} is not a permitted parameter"
        ))),
        None => Ok(()),
    }
}

fn opt_string(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{at}{key} must be a string"))),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!(
            "meta.{key} must be a boolean"
        ))),
    }
}

fn opt_seconds(obj: &Map<String, Value>, key: &str) -> Result<Option<Duration>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => Ok(Some(Duration::seconds(n))),
            Some(_) => Err(ApiError::unprocessable(
                format!("meta.{key} must be greater than 0"),
                Some(&format!("/meta/{key}")),
            )),
            None => Err(ApiError::bad_request(format!(
                "meta.{key} must be an integer"
            ))),
        },
    }
}

const CREATE_ATTRIBUTES: &[&str] = &[
    "template-id",
    "inquiry-template-id",
    "inquiry-template-version-id",
    "reference-id",
    "account-id",
    "creator-email-address",
    "theme-id",
    "theme-set-id",
    "redirect-uri",
    "note",
    "fields",
    "tags",
    "initial-step-name",
];
const CREATE_META: &[&str] = &[
    "auto-create-account",
    "auto-create-account-type-id",
    "auto-create-account-reference-id",
    "auto-create-inquiry-session",
    "auto-create-one-time-link",
    "expiration-after-create-interval-seconds",
    "expiration-after-start-interval-seconds",
    "expiration-after-resume-interval-seconds",
    "one-time-link-expiration-seconds",
];

fn parse_create(
    body: Option<Map<String, Value>>,
    switches: &Switches,
) -> Result<NewInquiry, ApiError> {
    let body = body.ok_or_else(|| ApiError::bad_request("data is missing"))?;
    only_keys(&body, "", &["data", "meta"])?;
    let data = body
        .get("data")
        .and_then(kebab_object)
        .ok_or_else(|| ApiError::bad_request("data is missing"))?;
    only_keys(&data, "data.", &["type", "attributes"])?;
    let attrs = data
        .get("attributes")
        .and_then(kebab_object)
        .ok_or_else(|| ApiError::bad_request("data.attributes is missing"))?;
    only_keys(&attrs, "data.attributes.", CREATE_ATTRIBUTES)?;
    let meta = match body.get("meta") {
        None | Some(Value::Null) => Map::new(),
        Some(m) => {
            kebab_object(m).ok_or_else(|| ApiError::bad_request("meta must be an object"))?
        }
    };
    only_keys(&meta, "meta.", CREATE_META)?;

    let at = "data.attributes.";
    let template = match (
        opt_string(&attrs, "inquiry-template-id", at)?,
        opt_string(&attrs, "inquiry-template-version-id", at)?,
        opt_string(&attrs, "template-id", at)?,
    ) {
        (Some(t), None, None) => TemplateChoice::Template(t),
        (None, Some(v), None) => TemplateChoice::Version(v),
        (None, None, Some(_)) => {
            return Err(ApiError::unprocessable(
                "Legacy templates (tmpl_) are not simulated",
                Some("/data/attributes/template-id"),
            ));
        }
        (None, None, None) => {
            return Err(ApiError::bad_request(
                "data.attributes.inquiry-template-id is missing",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "pass only one of template-id, inquiry-template-id, inquiry-template-version-id",
            ));
        }
    };

    let auto_account = opt_bool(&meta, "auto-create-account")?.unwrap_or(true);
    let meta_reference = match meta.get("auto-create-account-reference-id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "meta.auto-create-account-reference-id must be a string",
            ));
        }
    };
    if !auto_account && meta_reference.is_some() {
        return Err(ApiError::bad_request(
            "meta.auto-create-account-reference-id cannot be passed when auto-create-account is false",
        ));
    }
    let attribute_reference = opt_string(&attrs, "reference-id", at)?;
    let account_reference_id = meta_reference.or(attribute_reference.clone());
    let reference_id = if switches.copy_reference_ids {
        account_reference_id.clone()
    } else {
        attribute_reference
    };

    let fields = match attrs.get("fields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), wire::typed_field(k, v.clone())))
            .collect(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "data.attributes.fields must be an object",
            ));
        }
    };
    let tags = match attrs.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request("data.attributes.tags must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "data.attributes.tags must be an array",
            ));
        }
    };

    let defaults = Intervals::default();
    let after_create = opt_seconds(&meta, "expiration-after-create-interval-seconds")?
        .unwrap_or(defaults.after_create);
    let intervals = Intervals {
        after_create,
        // DOCS: the start interval defaults to the creation value when blank.
        after_start: opt_seconds(&meta, "expiration-after-start-interval-seconds")?
            .unwrap_or(after_create),
        after_resume: opt_seconds(&meta, "expiration-after-resume-interval-seconds")?
            .unwrap_or(Duration::seconds(switches.default_resume_interval_seconds)),
        one_time_link: opt_seconds(&meta, "one-time-link-expiration-seconds")?
            .unwrap_or(defaults.one_time_link),
    };
    Ok(NewInquiry {
        template,
        reference_id,
        account_reference_id,
        fields,
        redirect_uri: opt_string(&attrs, "redirect-uri", at)?,
        note: opt_string(&attrs, "note", at)?,
        tags,
        intervals,
        create_session: opt_bool(&meta, "auto-create-inquiry-session")?.unwrap_or(false),
        create_one_time_link: opt_bool(&meta, "auto-create-one-time-link")?.unwrap_or(false),
    })
}

fn one_time_link(sim: &Sim, code: &str) -> String {
    let mut url = sim.hosted_flow_url.clone();
    url.query_pairs_mut().append_pair("code", code);
    url.to_string()
}

async fn create_inquiry(State(sim): State<Arc<Sim>>, RawQuery(q): RawQuery, body: Bytes) -> Answer {
    let inc = single_resource_params(&query_pairs(&q))?;
    let req = parse_create(parse_body(&body)?, &sim.switches())?;
    let doc = sim.with_world(|w, now| -> Result<Value, ApiError> {
        let created = w.create(req, now)?;
        let link = created
            .one_time_code
            .as_deref()
            .map(|c| one_time_link(&sim, c));
        let meta = json!({
            "session-token": created.session_token,
            "one-time-link": link,
            "one-time-link-short": link,
        });
        Ok(inquiry_document(w, &created.inquiry_id, &inc, Some(meta)))
    })?;
    Ok((StatusCode::CREATED, Json(doc)))
}

async fn retrieve_inquiry(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let inc = single_resource_params(&query_pairs(&q))?;
    let doc = sim.with_world(|w, _| {
        w.inquiry(&id)
            .map(|_| inquiry_document(w, &id, &inc, None))
            .ok_or(ApiError::not_found(None))
    })?;
    Ok((StatusCode::OK, Json(doc)))
}

async fn resume_inquiry(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Answer {
    let inc = single_resource_params(&query_pairs(&q))?;
    if let Some(b) = parse_body(&body)? {
        only_keys(&b, "", &[])?;
    }
    let doc = sim.with_world(|w, now| -> Result<Value, ApiError> {
        let token = w.resume(&id, now)?;
        Ok(inquiry_document(
            w,
            &id,
            &inc,
            Some(json!({ "session-token": token })),
        ))
    })?;
    Ok((StatusCode::OK, Json(doc)))
}

async fn expire_inquiry(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Answer {
    let inc = single_resource_params(&query_pairs(&q))?;
    if let Some(b) = parse_body(&body)? {
        only_keys(&b, "", &[])?;
    }
    let doc = sim.with_world(|w, now| -> Result<Value, ApiError> {
        w.expire(&id, now)?;
        Ok(inquiry_document(w, &id, &inc, None))
    })?;
    Ok((StatusCode::OK, Json(doc)))
}

async fn generate_one_time_link(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Answer {
    let inc = single_resource_params(&query_pairs(&q))?;
    let expires_in = match parse_body(&body)? {
        None => None,
        Some(b) => {
            only_keys(&b, "", &["meta"])?;
            match b.get("meta") {
                None | Some(Value::Null) => None,
                Some(m) => {
                    let m = kebab_object(m)
                        .ok_or_else(|| ApiError::bad_request("meta must be an object"))?;
                    only_keys(&m, "meta.", &["expires-in-seconds"])?;
                    opt_seconds(&m, "expires-in-seconds")?
                }
            }
        }
    };
    let doc = sim.with_world(|w, now| -> Result<Value, ApiError> {
        let code = w.one_time_link(&id, expires_in, now)?;
        let link = one_time_link(&sim, &code);
        let meta = json!({"one-time-link": link, "one-time-link-short": link});
        Ok(inquiry_document(w, &id, &inc, Some(meta)))
    })?;
    Ok((StatusCode::OK, Json(doc)))
}

async fn retrieve_template(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    if sim.switches().sandbox {
        return Err(ApiError::forbidden(
            "Inquiry templates are only available with a production API key",
        ));
    }
    let mut with_latest = false;
    for (k, v) in query_pairs(&q) {
        match (k.as_str(), v.as_str()) {
            ("include", "") => {}
            ("include", "latest-published-version") => with_latest = true,
            _ => return Err(ApiError::bad_request(format!("{k}={v} is not simulated"))),
        }
    }
    let doc = sim.with_world(|w, _| {
        let t = w.template(&id).ok_or(ApiError::not_found(None))?;
        let mut doc = json!({ "data": wire::template_resource(t) });
        if with_latest {
            doc["included"] = json!([wire::version_resource(t, t.latest())]);
        }
        Ok::<_, ApiError>(doc)
    })?;
    Ok((StatusCode::OK, Json(doc)))
}

async fn rate_limits(State(sim): State<Arc<Sim>>) -> impl IntoResponse {
    let q = sim.traffic().quota(sim.rate_limit, sim.clock.now());
    Json(json!({
        "data": [{
            "type": "rate-limit/api",
            "attributes": {
                "limit": q.limit,
                "remaining": q.remaining,
                "seconds-to-reset": q.reset_seconds,
            }
        }]
    }))
}

const LIST_PARAMS: &[&str] = &[
    "filter[reference-id]",
    "filter[status]",
    "filter[inquiry-template-id]",
    "filter[inquiry-id]",
    "filter[account-id]",
    "filter[created-at-start]",
    "filter[created-at-end]",
    "filter[note]",
    "page[size]",
    "page[after]",
    "page[before]",
];

fn comma_list(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

async fn list_inquiries(State(sim): State<Arc<Sim>>, RawQuery(q): RawQuery) -> Answer {
    let pairs = query_pairs(&q);
    for (k, v) in &pairs {
        if k == "include" {
            if v.is_empty() {
                continue;
            }
            return Err(ApiError::bad_request(
                "include is not allowed on list endpoints",
            ));
        }
        if !LIST_PARAMS.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{k} is not a permitted parameter"
            )));
        }
    }
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let size = match param("page[size]") {
        None => 10,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "page[size] must be between 1 and 100",
                ));
            }
        },
    };
    let created_bound = |name: &str| {
        param(name)
            .map(|s| {
                crate::time::parse_ts(s)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must be a date-time")))
            })
            .transpose()
    };
    let created_start = created_bound("filter[created-at-start]")?;
    let created_end = created_bound("filter[created-at-end]")?;
    let statuses = param("filter[status]").map(comma_list);
    let templates = param("filter[inquiry-template-id]").map(comma_list);
    let ids = param("filter[inquiry-id]").map(comma_list);
    if let (Some(ids), Some(max)) = (&ids, sim.switches().max_ids_per_filter)
        && ids.len() > max
    {
        return Err(ApiError::bad_request(format!(
            "filter[inquiry-id] takes at most {max} ids"
        )));
    }
    let accounts = param("filter[account-id]").map(comma_list);
    let reference = param("filter[reference-id]");
    let note = param("filter[note]");
    if note.is_some()
        && pairs
            .iter()
            .filter(|(k, _)| k.starts_with("filter["))
            .count()
            > 1
    {
        return Err(ApiError::bad_request(
            "filter[note] must be the only filter",
        ));
    }
    let after = param("page[after]");
    let before = param("page[before]");

    let doc = sim.with_world(|w, _| -> Result<Value, ApiError> {
        let cursor = |id: Option<&str>, name: &str| {
            id.map(|id| {
                w.inquiry(id)
                    .map(|i| i.seq)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} is not a known inquiry")))
            })
            .transpose()
        };
        let after_seq = cursor(after, "page[after]")?;
        let before_seq = cursor(before, "page[before]")?;
        let matching: Vec<_> = w
            .newest_first()
            .filter(|i| {
                statuses
                    .as_ref()
                    .is_none_or(|s| s.contains(&i.status.as_str()))
            })
            .filter(|i| {
                templates
                    .as_ref()
                    .is_none_or(|t| t.contains(&i.template_id.as_str()))
            })
            .filter(|i| ids.as_ref().is_none_or(|s| s.contains(&i.id.as_str())))
            .filter(|i| {
                accounts
                    .as_ref()
                    .is_none_or(|s| s.contains(&i.account_id.as_str()))
            })
            .filter(|i| reference.is_none_or(|r| i.reference_id.as_deref() == Some(r)))
            .filter(|i| note.is_none_or(|n| i.note.as_deref() == Some(n)))
            .filter(|i| created_start.is_none_or(|t| i.created_at >= t))
            .filter(|i| created_end.is_none_or(|t| i.created_at <= t))
            .collect();
        // Newest first: "after" walks to older inquiries, "before" back to newer ones.
        let (start, end) = match (after_seq, before_seq) {
            (Some(a), _) => {
                let start = matching
                    .iter()
                    .position(|i| i.seq < a)
                    .unwrap_or(matching.len());
                (start, (start + size).min(matching.len()))
            }
            (None, Some(b)) => {
                let end = matching
                    .iter()
                    .position(|i| i.seq <= b)
                    .unwrap_or(matching.len());
                (end.saturating_sub(size), end)
            }
            (None, None) => (0, size.min(matching.len())),
        };
        let page = &matching[start..end];
        let keep: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k.starts_with("filter[") || k == "page[size]")
            .cloned()
            .collect();
        let link = |cursor_key: &str, id: &str| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &keep {
                ser.append_pair(k, v);
            }
            ser.append_pair(cursor_key, id);
            format!("/api/v1/inquiries?{}", ser.finish())
        };
        let next = match page.last() {
            Some(last) if end < matching.len() => json!(link("page[after]", &last.id)),
            _ => Value::Null,
        };
        let prev = match page.first() {
            Some(first) if start > 0 => json!(link("page[before]", &first.id)),
            _ => Value::Null,
        };
        let data: Vec<Value> = page.iter().map(|i| wire::inquiry_resource(i)).collect();
        Ok(json!({ "data": data, "links": { "prev": prev, "next": next } }))
    })?;
    Ok((StatusCode::OK, Json(doc)))
}

/// Reads `page[size]` (1 to 100).
fn page_size(raw: &Value, at: &str) -> Result<usize, ApiError> {
    let n = match raw {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.filter(|n| (1..=100).contains(n))
        .map(|n| n as usize)
        .ok_or_else(|| ApiError::bad_request(format!("{at} must be between 1 and 100")))
}

/// `page` of a search: in the body, or in the query (where `links.next` puts the cursor;
/// the spec says to re-send the original body with it, so the query's values win).
#[derive(Default)]
struct SearchPage {
    size: Option<usize>,
    after: Option<String>,
    before: Option<String>,
}

fn search_page(body: Option<&Value>, pairs: &[(String, String)]) -> Result<SearchPage, ApiError> {
    let mut page = SearchPage::default();
    if let Some(b) = body.filter(|b| !b.is_null()) {
        let b = b
            .as_object()
            .ok_or_else(|| ApiError::bad_request("page must be an object"))?;
        only_keys(b, "page.", &["size", "after", "before"])?;
        page.size = b
            .get("size")
            .map(|v| page_size(v, "page.size"))
            .transpose()?;
        page.after = opt_string(b, "after", "page.")?;
        page.before = opt_string(b, "before", "page.")?;
    }
    for (k, v) in pairs {
        match k.as_str() {
            "page[size]" => page.size = Some(page_size(&json!(v), "page[size]")?),
            "page[after]" => page.after = Some(v.clone()),
            "page[before]" => page.before = Some(v.clone()),
            k if k.starts_with("fields[") => {
                return Err(ApiError::bad_request(
                    "sparse fieldsets (fields[...]) are not simulated",
                ));
            }
            k => {
                return Err(ApiError::bad_request(format!(
                    "{k} is not a permitted parameter"
                )));
            }
        }
    }
    Ok(page)
}

/// The refusal a test switched on, in the spec's error shape for that status.
fn search_refusal(status: u16) -> ApiError {
    let details = "Inquiry search is not available for this API key";
    match status {
        400 => ApiError::bad_request(details),
        403 => ApiError::forbidden(details),
        404 => ApiError::not_found(Some(details.into())),
        409 => ApiError::conflict(details),
        422 => ApiError::unprocessable(details, None),
        _ => ApiError::server_error(),
    }
}

async fn search_inquiries(
    State(sim): State<Arc<Sim>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Answer {
    let switches = sim.switches();
    if let Some(status) = switches.search_refused_with {
        return Err(search_refusal(status));
    }
    let pairs = query_pairs(&q);
    let body = parse_body(&body)?.unwrap_or_default();
    only_keys(&body, "", &["query", "sort", "page"])?;
    let query = match body.get("query") {
        None | Some(Value::Null) => None,
        Some(v) => Some(Query::parse(v).map_err(ApiError::bad_request)?),
    };
    let sort = match body.get("sort") {
        None | Some(Value::Null) => Sort::DEFAULT,
        Some(v) => Sort::parse(v).map_err(ApiError::bad_request)?,
    };
    let page = search_page(body.get("page"), &pairs)?;
    let size = page.size.unwrap_or(10);
    let lag = Duration::seconds(i64::try_from(switches.search_lag_seconds).unwrap_or(i64::MAX));

    let doc = sim.with_world(|w, now| -> Result<Value, ApiError> {
        let mut found: Vec<_> = w
            .indexed(now, lag)
            .filter(|(_, d)| query.as_ref().is_none_or(|q| q.matches(d)))
            .collect();
        found.sort_by(|a, b| sort.compare((a.1, a.0.seq), (b.1, b.0.seq)));
        // A cursor is an inquiry id; the page continues from where that inquiry sorts now.
        let cursor = |id: &str, name: &str| {
            w.indexed(now, lag)
                .find(|(i, _)| i.id == id)
                .ok_or_else(|| ApiError::bad_request(format!("{name} is not a known inquiry")))
        };
        let (start, end) = if let Some(after) = &page.after {
            let (i, d) = cursor(after, "page[after]")?;
            let start = found.partition_point(|x| {
                sort.compare((x.1, x.0.seq), (d, i.seq)) != std::cmp::Ordering::Greater
            });
            (start, (start + size).min(found.len()))
        } else if let Some(before) = &page.before {
            let (i, d) = cursor(before, "page[before]")?;
            let end = found.partition_point(|x| {
                sort.compare((x.1, x.0.seq), (d, i.seq)) == std::cmp::Ordering::Less
            });
            (end.saturating_sub(size), end)
        } else {
            (0, size.min(found.len()))
        };
        let slice = &found[start..end];
        let link = |key: &str, id: &str| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            ser.append_pair(key, id);
            ser.append_pair("page[size]", &size.to_string());
            format!("/api/v1/inquiries/search?{}", ser.finish())
        };
        let next = match slice.last() {
            Some((last, _)) if end < found.len() => json!(link("page[after]", &last.id)),
            _ => Value::Null,
        };
        let prev = match slice.first() {
            Some((first, _)) if start > 0 => json!(link("page[before]", &first.id)),
            _ => Value::Null,
        };
        let data: Vec<Value> = slice
            .iter()
            .map(|(inq, indexed)| {
                let mut res = wire::inquiry_resource(inq);
                if switches.search_results == SearchResults::Indexed {
                    res["attributes"]["status"] = json!(indexed.status.as_str());
                    res["attributes"]["updated-at"] =
                        json!(crate::time::format_ts(indexed.updated_at));
                }
                res
            })
            .collect();
        Ok(json!({ "data": data, "links": { "prev": prev, "next": next } }))
    })?;
    Ok((StatusCode::OK, Json(doc)))
}
