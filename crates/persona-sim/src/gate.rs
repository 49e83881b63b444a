//! Everything between the socket and an API handler, in Persona's order: latency, auth (401),
//! rate limit (429), idempotency replay, injected faults; then headers and the request log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::random_alnum;
use crate::time::format_ts;

use super::Sim;
use super::conn::Cutter;
use super::wire::ApiError;

/// Persona keeps idempotency keys at least 24 hours (DOCS `/idempotence`).
const IDEMPOTENCY_TTL_HOURS: i64 = 24;
/// What `RateLimit-Limit` says when the simulator has no limit configured.
const UNLIMITED: u32 = i32::MAX as u32;
const BODY_LIMIT: usize = 1 << 20;

/// Faults to inject into API calls. `*_next` counts are used up first, then the shares apply
/// (each a probability in 0..=1 per request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Faults {
    pub server_errors_next: u32,
    pub server_error_share: f64,
    pub rate_limited_next: u32,
    pub rate_limited_share: f64,
    /// Close the TCP connection without a response (after the request was processed).
    pub drops_next: u32,
    pub drop_share: f64,
    /// Added to the configured latency of every API call.
    pub extra_latency_ms: u64,
    /// Added on top for calls whose path names the inquiry (`inq_…` → milliseconds): one
    /// inquiry's calls made slow, so a test can order two workers deterministically.
    pub inquiry_latency_ms: std::collections::BTreeMap<String, u64>,
}

fn take(next: &mut u32, share: f64) -> bool {
    if *next > 0 {
        *next -= 1;
        return true;
    }
    share > 0.0 && rand::rng().random_bool(share.min(1.0))
}

/// One API request as received and answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RecordedRequest {
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// The spec's path template (`/inquiries/{inquiry-id}`), `None` for unknown paths.
    pub route: Option<String>,
    pub query: Option<String>,
    /// Request headers, without `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The JSON body, or the raw text when it was not JSON; `None` when empty.
    pub body: Option<Value>,
    /// The status answered; `None` when the connection was dropped instead.
    pub status: Option<u16>,
    pub response: Option<Value>,
    /// Answered from the idempotency store.
    pub replayed: bool,
    /// Sim time when the request arrived.
    pub at: String,
}

enum Stored {
    Running,
    Done { status: StatusCode, body: Bytes },
}

struct IdempotencyEntry {
    fingerprint: String,
    stored_at: DateTime<Utc>,
    answer: Stored,
}

struct Window {
    started: DateTime<Utc>,
    used: u32,
}

/// The gate's own state: rate window, faults, idempotency store and the request log.
#[derive(Default)]
pub struct Traffic {
    pub faults: Faults,
    pub log: Vec<RecordedRequest>,
    seq: u64,
    window: Option<Window>,
    idempotency: HashMap<String, IdempotencyEntry>,
    /// When the stored keys were last swept for expired ones.
    swept_at: Option<DateTime<Utc>>,
}

/// The rate-limit numbers for one response.
#[derive(Clone, Copy)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: i64,
}

impl Traffic {
    /// Counts one request against the minute window; `Err` when the window is used up.
    fn admit(&mut self, limit: Option<u32>, now: DateTime<Utc>) -> Result<Quota, Quota> {
        let window = match &mut self.window {
            Some(w) if now < w.started + Duration::seconds(60) => w,
            slot => slot.insert(Window {
                started: now,
                used: 0,
            }),
        };
        let reset_ms = (window.started + Duration::seconds(60) - now).num_milliseconds();
        let reset_seconds = (reset_ms + 999) / 1000;
        let limit_value = limit.unwrap_or(UNLIMITED);
        if limit.is_some_and(|l| window.used >= l) {
            return Err(Quota {
                limit: limit_value,
                remaining: 0,
                reset_seconds,
            });
        }
        window.used += 1;
        Ok(Quota {
            limit: limit_value,
            remaining: limit_value.saturating_sub(window.used),
            reset_seconds,
        })
    }

    /// The numbers `GET /rate-limits` reports: the window as it stands.
    pub fn quota(&self, limit: Option<u32>, now: DateTime<Utc>) -> Quota {
        let limit_value = limit.unwrap_or(UNLIMITED);
        match &self.window {
            Some(w) if now < w.started + Duration::seconds(60) => Quota {
                limit: limit_value,
                remaining: limit_value.saturating_sub(w.used),
                reset_seconds: ((w.started + Duration::seconds(60) - now).num_milliseconds() + 999)
                    / 1000,
            },
            _ => Quota {
                limit: limit_value,
                remaining: limit_value,
                reset_seconds: 60,
            },
        }
    }

    /// Forgets expired keys: the one asked about at once, the rest in a sweep at most once a
    /// simulated minute (a sweep per request made big runs quadratic: 20,000 creates cost the
    /// simulator 0.7 ms each instead of 0.3).
    fn prune_idempotency(&mut self, key: &str, now: DateTime<Utc>) {
        let ttl = Duration::hours(IDEMPOTENCY_TTL_HOURS);
        let expired =
            |e: &IdempotencyEntry| !matches!(e.answer, Stored::Running) && e.stored_at + ttl <= now;
        if self.idempotency.get(key).is_some_and(expired) {
            self.idempotency.remove(key);
        }
        if self
            .swept_at
            .is_none_or(|at| now - at >= Duration::minutes(1) || now < at)
        {
            self.idempotency.retain(|_, e| !expired(e));
            self.swept_at = Some(now);
        }
    }
}

enum Replay {
    Fresh,
    Answer(StatusCode, Bytes),
    Refuse(ApiError),
}

fn check_idempotency(t: &mut Traffic, key: &str, fingerprint: &str, now: DateTime<Utc>) -> Replay {
    t.prune_idempotency(key, now);
    match t.idempotency.get(key) {
        None => {
            t.idempotency.insert(
                key.to_owned(),
                IdempotencyEntry {
                    fingerprint: fingerprint.to_owned(),
                    stored_at: now,
                    answer: Stored::Running,
                },
            );
            Replay::Fresh
        }
        Some(e) if e.fingerprint != fingerprint => Replay::Refuse(ApiError::unprocessable(
            "Idempotency-Key was already used with different request parameters",
            None,
        )),
        Some(IdempotencyEntry {
            answer: Stored::Running,
            ..
        }) => Replay::Refuse(ApiError::conflict(
            "A request with this Idempotency-Key is still being processed",
        )),
        Some(IdempotencyEntry {
            answer: Stored::Done { status, body },
            ..
        }) => Replay::Answer(*status, body.clone()),
    }
}

/// A key marked "running" by this request. If the request is abandoned before it stores an
/// answer (the client went away mid-flight), dropping the claim frees the key again, so a retry
/// is not refused as concurrent forever.
struct KeyClaim {
    sim: Arc<Sim>,
    key: String,
}

impl KeyClaim {
    fn store(self, status: StatusCode, body: Bytes, now: DateTime<Utc>) {
        if let Some(entry) = self.sim.traffic().idempotency.get_mut(&self.key) {
            entry.answer = Stored::Done { status, body };
            entry.stored_at = now;
        }
    }
}

impl Drop for KeyClaim {
    fn drop(&mut self) {
        // Never panic in drop: a poisoned lock just leaves the key as it is.
        let Ok(mut t) = self.sim.traffic.lock() else {
            return;
        };
        if matches!(
            t.idempotency.get(&self.key),
            Some(IdempotencyEntry {
                answer: Stored::Running,
                ..
            })
        ) {
            t.idempotency.remove(&self.key);
        }
    }
}

fn authorized(sim: &Sim, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(key) = value.strip_prefix("Bearer ") else {
        return false;
    };
    subtle::ConstantTimeEq::ct_eq(key.trim().as_bytes(), sim.api_key.as_bytes()).into()
}

/// Refuses request headers asking for a shape the simulator does not produce.
fn check_version_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(v) = headers.get("persona-version")
        && v.as_bytes() != b"2025-12-08"
    {
        return Err(ApiError::bad_request(format!(
            "Persona-Version {} is not simulated; the simulator speaks 2025-12-08",
            String::from_utf8_lossy(v.as_bytes())
        )));
    }
    if let Some(v) = headers.get("key-inflection")
        && v.as_bytes() != b"kebab"
    {
        return Err(ApiError::bad_request(
            "Key-Inflection other than kebab is not simulated",
        ));
    }
    Ok(())
}

fn json_or_text(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    Some(
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    )
}

fn set_header(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub async fn gate(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(cutter): ConnectInfo<Cutter>,
    req: Request,
    next: Next,
) -> Response {
    let extra_latency = {
        let t = sim.traffic();
        let named = req
            .uri()
            .path()
            .split('/')
            .find_map(|segment| t.faults.inquiry_latency_ms.get(segment))
            .copied()
            .unwrap_or(0);
        t.faults.extra_latency_ms + named
    };
    let delay = sim.latency + std::time::Duration::from_millis(extra_latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let (parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().trim_start_matches("/api/v1").to_owned());
    let bytes = to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
    let now = sim.clock.now();
    let mut record = RecordedRequest {
        seq: 0,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        route,
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| *name != axum::http::header::AUTHORIZATION)
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: json_or_text(&bytes),
        status: None,
        response: None,
        replayed: false,
        at: format_ts(now),
    };

    // 401 and 429 come before the idempotency layer and are never stored (DOCS `/errors`).
    if !authorized(&sim, &parts.headers) {
        let e = ApiError::unauthorized();
        let mut response = json_response(e.status, Bytes::from(e.body().to_string()));
        set_header(response.headers_mut(), "request-id", request_id());
        return finish(&sim, record, response, &cutter, false).await;
    }

    let admitted = {
        let mut t = sim.traffic();
        let admitted = t.admit(sim.rate_limit, now);
        let forced = {
            let f = &mut t.faults;
            take(&mut f.rate_limited_next, f.rate_limited_share)
        };
        match admitted {
            Ok(q) if forced => Err(Quota { remaining: 0, ..q }),
            other => other,
        }
    };
    let quota = match admitted {
        Ok(q) => q,
        Err(q) => {
            let e = ApiError::rate_limited(q.limit.min(UNLIMITED));
            let mut response = json_response(e.status, Bytes::from(e.body().to_string()));
            add_headers(&sim, response.headers_mut(), q);
            return finish(&sim, record, response, &cutter, false).await;
        }
    };

    let idempotency_key = (parts.method == Method::POST)
        .then(|| parts.headers.get("idempotency-key"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fingerprint = format!(
        "{} {}?{} {}",
        parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        record
            .body
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
    );
    let mut claim = None;
    if let Some(key) = &idempotency_key {
        let verdict = check_idempotency(&mut sim.traffic(), key, &fingerprint, now);
        match verdict {
            Replay::Fresh => {
                claim = Some(KeyClaim {
                    sim: sim.clone(),
                    key: key.clone(),
                });
            }
            Replay::Answer(status, body) => {
                record.replayed = true;
                let mut response = json_response(status, body);
                add_headers(&sim, response.headers_mut(), quota);
                return finish(&sim, record, response, &cutter, true).await;
            }
            Replay::Refuse(e) => {
                let mut response = json_response(e.status, Bytes::from(e.body().to_string()));
                add_headers(&sim, response.headers_mut(), quota);
                return finish(&sim, record, response, &cutter, true).await;
            }
        }
    }

    let injected_500 = {
        let mut t = sim.traffic();
        let f = &mut t.faults;
        take(&mut f.server_errors_next, f.server_error_share)
    };
    let response = if injected_500 {
        let e = ApiError::server_error();
        json_response(e.status, Bytes::from(e.body().to_string()))
    } else if let Err(e) = check_version_headers(&parts.headers) {
        e.into_response()
    } else {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    let (mut head, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Some(claim) = claim {
        claim.store(head.status, body.clone(), now);
    }
    add_headers(&sim, &mut head.headers, quota);
    let response = Response::from_parts(head, Body::from(body));
    finish(&sim, record, response, &cutter, true).await
}

fn request_id() -> String {
    format!("req_{}", random_alnum(24))
}

fn add_headers(sim: &Sim, h: &mut HeaderMap, q: Quota) {
    set_header(h, "ratelimit-limit", q.limit.to_string());
    set_header(h, "ratelimit-remaining", q.remaining.to_string());
    set_header(h, "ratelimit-reset", q.reset_seconds.max(0).to_string());
    set_header(h, "request-id", request_id());
    set_header(h, "persona-environment-id", sim.environment_id.clone());
    set_header(h, "persona-organization-id", sim.organization_id.clone());
}

/// Logs the exchange and, when a drop fault fires, cuts the connection instead of answering.
async fn finish(
    sim: &Sim,
    mut record: RecordedRequest,
    response: Response,
    cutter: &Cutter,
    may_drop: bool,
) -> Response {
    let (head, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut t = sim.traffic();
    let dropped = may_drop && {
        let f = &mut t.faults;
        take(&mut f.drops_next, f.drop_share)
    };
    if dropped {
        cutter.cut();
    } else {
        record.status = Some(head.status.as_u16());
        record.response = json_or_text(&body);
    }
    t.seq += 1;
    record.seq = t.seq;
    t.log.push(record);
    Response::from_parts(head, Body::from(body))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, Bytes::from(self.body().to_string()))
    }
}
