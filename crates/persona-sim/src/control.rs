//! `/_sim`: the test and demo control surface over HTTP (clock, template versions, end-user and
//! reviewer actions, faults, request log, webhook deliveries). No auth: loopback only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::time::format_ts;

use super::world::Action;
use super::{Faults, InquirySnapshot, Sim, SimError, Switches};

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/templates", get(templates))
        .route("/templates/{template-id}/versions", post(publish))
        .route("/inquiries", get(inquiries))
        .route("/inquiries/{inquiry-id}", get(inquiry))
        .route("/inquiries/{inquiry-id}/{action}", post(act))
        .route(
            "/inquiries/{inquiry-id}/before-expire/{action}",
            post(before_expire),
        )
        .route("/switches", get(switches).put(set_switches))
        .route("/faults", get(faults).put(set_faults).delete(clear_faults))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/webhooks", get(webhooks))
        .route("/visits", get(visits))
        .with_state(sim)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

fn from_sim_error(e: SimError) -> (StatusCode, Json<Value>) {
    let status = match e {
        SimError::UnknownInquiry(_) | SimError::UnknownTemplate(_) => StatusCode::NOT_FOUND,
        SimError::Conflict(_) => StatusCode::CONFLICT,
        SimError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    refuse(status, e.to_string())
}

fn to_json(v: impl serde::Serialize) -> Json<Value> {
    Json(serde_json::to_value(v).expect("control payloads serialize"))
}

async fn clock(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({ "now": format_ts(sim.clock.now()) }))
}

#[derive(Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance(State(sim): State<Arc<Sim>>, Json(a): Json<Advance>) -> Json<Value> {
    sim.clock.advance(Duration::from_secs(a.seconds));
    // Let the expirer run now, so expiry webhooks do not wait for the next API call.
    sim.with_world(|_, _| ());
    Json(json!({ "now": format_ts(sim.clock.now()) }))
}

async fn templates(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let list = sim.with_world(|w, _| w.template_ids());
    let list: Vec<Value> = list
        .into_iter()
        .map(|(t, v)| json!({"template-id": t, "latest-published-version-id": v}))
        .collect();
    Json(Value::Array(list))
}

async fn publish(State(sim): State<Arc<Sim>>, Path(template): Path<String>) -> Reply {
    let version = sim
        .with_world(|w, now| w.publish_version(&template, now))
        .map_err(from_sim_error)?;
    Ok(Json(
        json!({"template-id": template, "version-id": version}),
    ))
}

async fn inquiries(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let all: Vec<InquirySnapshot> =
        sim.with_world(|w, _| w.newest_first().map(InquirySnapshot::of).collect());
    to_json(all)
}

async fn inquiry(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Reply {
    sim.with_world(|w, _| w.inquiry(&id).map(InquirySnapshot::of))
        .map(to_json)
        .ok_or_else(|| from_sim_error(SimError::UnknownInquiry(id)))
}

async fn act(State(sim): State<Arc<Sim>>, Path((id, action)): Path<(String, String)>) -> Reply {
    let parsed = parse_action(&action)?;
    let status = sim
        .with_world(|w, now| w.act(&id, parsed, now))
        .map_err(from_sim_error)?;
    Ok(Json(json!({"inquiry-id": id, "status": status.as_str()})))
}

fn parse_action(action: &str) -> Result<Action, (StatusCode, Json<Value>)> {
    Action::parse(action).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            format!(
                "unknown action {action}: use start, complete, fail, approve, decline or mark-for-review"
            ),
        )
    })
}

async fn before_expire(
    State(sim): State<Arc<Sim>>,
    Path((id, action)): Path<(String, String)>,
) -> Reply {
    let parsed = parse_action(&action)?;
    sim.with_world(|w, _| w.before_expire(&id, parsed))
        .map_err(from_sim_error)?;
    Ok(Json(json!({"inquiry-id": id, "before-expire": action})))
}

async fn switches(State(sim): State<Arc<Sim>>) -> Json<Value> {
    to_json(sim.switches())
}

async fn set_switches(State(sim): State<Arc<Sim>>, Json(s): Json<Switches>) -> Json<Value> {
    *sim.switches.lock().expect("switches lock") = s.clone();
    to_json(s)
}

async fn faults(State(sim): State<Arc<Sim>>) -> Json<Value> {
    to_json(sim.traffic().faults.clone())
}

async fn set_faults(State(sim): State<Arc<Sim>>, Json(f): Json<Faults>) -> Reply {
    let shares = [f.server_error_share, f.rate_limited_share, f.drop_share];
    if shares.iter().any(|s| !(0.0..=1.0).contains(s)) {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "shares are probabilities between 0 and 1",
        ));
    }
    sim.traffic().faults = f.clone();
    Ok(to_json(f))
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> Json<Value> {
    sim.traffic().faults = Faults::default();
    to_json(Faults::default())
}

async fn requests(State(sim): State<Arc<Sim>>) -> Json<Value> {
    to_json(sim.traffic().log.clone())
}

async fn clear_requests(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.traffic().log.clear();
    StatusCode::NO_CONTENT
}

async fn webhooks(State(sim): State<Arc<Sim>>) -> Json<Value> {
    to_json(
        sim.deliveries
            .deliveries
            .lock()
            .expect("delivery log")
            .clone(),
    )
}

async fn visits(State(sim): State<Arc<Sim>>) -> Json<Value> {
    to_json(sim.visits.lock().expect("visits lock").clone())
}
