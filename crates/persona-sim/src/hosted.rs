//! `GET /verify`: the end user opening a mailed link at sim time. Answers JSON saying whether the
//! flow opened, for which inquiry, and whether it runs the template's latest published version.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use url::form_urlencoded;

use crate::time::format_ts;

use super::Sim;
use super::world::{Opened, Refused, TemplateChoice};

/// One visit to the hosted flow, as the simulator judged it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostedVisit {
    /// The query string with any session token or code replaced by `[redacted]`.
    pub query: String,
    pub status: u16,
    pub ok: bool,
    pub inquiry_id: Option<String>,
    pub reason: Option<String>,
    pub at: String,
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().route("/verify", get(verify)).with_state(sim)
}

fn redacted_query(pairs: &[(String, String)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        let shown = if k == "session-token" || k == "code" {
            "[redacted]"
        } else {
            v.as_str()
        };
        ser.append_pair(k, shown);
    }
    ser.finish()
}

async fn verify(State(sim): State<Arc<Sim>>, RawQuery(q): RawQuery) -> (StatusCode, Json<Value>) {
    let pairs: Vec<(String, String)> = q
        .as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let outcome = sim.with_world(|w, now| {
        if let Some(code) = param("code") {
            w.open_code(&code, now)
        } else if let Some(id) = param("inquiry-id") {
            w.open_inquiry(&id, param("session-token").as_deref(), now)
        } else if let Some(t) = param("inquiry-template-id") {
            w.open_static(TemplateChoice::Template(t), param("reference-id"), now)
        } else if let Some(v) = param("inquiry-template-version-id") {
            w.open_static(TemplateChoice::Version(v), param("reference-id"), now)
        } else {
            Err(Refused::BadRequest(
                "pass code, inquiry-id or inquiry-template-id".into(),
            ))
        }
    });
    let (status, body, inquiry_id, reason) = match outcome {
        Ok(Opened {
            inquiry_id,
            status,
            template_version_id,
            on_latest_version,
        }) => {
            let body = json!({
                "ok": true,
                "inquiry-id": inquiry_id,
                "status": status.as_str(),
                "template-version-id": template_version_id,
                "latest-version": on_latest_version,
            });
            (StatusCode::OK, body, Some(inquiry_id), None)
        }
        Err(refused) => {
            let (status, reason) = match refused {
                Refused::NotFound(r) => (StatusCode::NOT_FOUND, r),
                Refused::Forbidden(r) => (StatusCode::FORBIDDEN, r),
                Refused::Gone(r) => (StatusCode::GONE, r),
                Refused::Conflict(r) => (StatusCode::CONFLICT, r),
                Refused::BadRequest(r) => (StatusCode::BAD_REQUEST, r),
            };
            let body = json!({"ok": false, "reason": reason});
            (status, body, param("inquiry-id"), Some(reason))
        }
    };
    sim.visits.lock().expect("visits lock").push(HostedVisit {
        query: redacted_query(&pairs),
        status: status.as_u16(),
        ok: status == StatusCode::OK,
        inquiry_id,
        reason,
        at: format_ts(sim.clock.now()),
    });
    (status, Json(body))
}
