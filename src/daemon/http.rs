//! The daemon's HTTP side: `POST /webhooks/persona`, `GET /healthz`, `GET /metrics`.
//! Small and fast: a webhook is answered well inside Persona's 5 seconds.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Mutex, RwLock};

use super::health;
use super::metrics::Metrics;
use super::scheduler::{JobKind, SharedContext};
use super::signature::{self, SignatureError};
use super::webhook_event::WebhookEvent;
use crate::domain::SecretText;
use crate::jobs::status;
use crate::store::{inquiries, status as store_status, webhook_events};

/// What the HTTP side reads from config; swapped on reload.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub webhook_secrets: Vec<SecretText>,
    pub tolerance: Duration,
    pub schedules: Vec<(JobKind, String)>,
}

#[derive(Clone)]
pub struct HttpState {
    pub context: SharedContext,
    pub settings: Arc<RwLock<HttpSettings>>,
    pub metrics: Option<Metrics>,
    pub started: DateTime<Utc>,
    /// Held while one event is checked, applied and recorded: Persona's redeliveries can
    /// arrive together, and without it each would find the event unseen and apply it.
    applying: Arc<Mutex<()>>,
}

impl HttpState {
    pub fn new(
        context: SharedContext,
        settings: Arc<RwLock<HttpSettings>>,
        metrics: Option<Metrics>,
        started: DateTime<Utc>,
    ) -> HttpState {
        HttpState {
            context,
            settings,
            metrics,
            started,
            applying: Arc::default(),
        }
    }
}

pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/webhooks/persona",
            post(webhook).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn count(outcome: &'static str) {
    metrics::counter!("webhook_events_total", "outcome" => outcome).increment(1);
}

async fn webhook(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = state.context.read().await.clone();
    let settings = state.settings.read().await.clone();
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    let now = ctx.clock.now();
    if let Err(e) = signature::verify(
        header,
        &body,
        &settings.webhook_secrets,
        now,
        settings.tolerance,
    ) {
        if e == SignatureError::Mismatch && settings.webhook_secrets.is_empty() {
            tracing::warn!(
                "webhook refused: no webhook secret is configured (PERSONA_WEBHOOK_SECRET)"
            );
        } else {
            tracing::warn!(reason = e.as_str(), "webhook refused");
        }
        count("rejected");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let event = match WebhookEvent::parse(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body malformed");
            count("malformed");
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": e.to_string() })),
            )
                .into_response();
        }
    };
    let applied = {
        let _one_at_a_time = state.applying.lock().await;
        apply_event(&ctx, &event, now).await
    };
    match applied {
        Ok(outcome) => {
            count(outcome);
            (
                StatusCode::OK,
                Json(json!({ "event": event.id, "result": outcome })),
            )
                .into_response()
        }
        Err(e) => {
            // Not recorded as seen: Persona retries it later.
            tracing::error!(event = %event.id, error = %e, "webhook not applied");
            count("failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Applies an `inquiry.*` event once; callers hold `HttpState::applying`. The event id is
/// recorded only after the change commits, so a crash in between means a redelivery applies it
/// (applying is idempotent).
async fn apply_event(
    ctx: &crate::jobs::JobContext,
    event: &WebhookEvent,
    now: DateTime<Utc>,
) -> crate::store::Result<&'static str> {
    if webhook_events::seen(&ctx.store, &event.id).await? {
        return Ok("duplicate");
    }
    let mut outcome = "ignored";
    if let Some(inquiry) = &event.inquiry
        && event.name.starts_with("inquiry.")
        && let Some(row) = inquiries::by_inquiry_id(&ctx.store, &inquiry.id).await?
    {
        let source = format!("webhook {} {}", event.name, event.id);
        // Applied in the order Persona created the events, not the order they arrived.
        let seen = status::Observation {
            status: &inquiry.status,
            expires_at: inquiry.expires_at,
            observed_at: event.created_at.unwrap_or(now),
            source: &source,
        };
        status::apply(&ctx.store, &row, &seen, now).await?;
        outcome = "accepted";
    }
    let inquiry_id = event.inquiry.as_ref().map(|i| i.id.to_string());
    webhook_events::record(
        &ctx.store,
        &event.id,
        &event.name,
        inquiry_id.as_deref(),
        now,
    )
    .await?;
    Ok(outcome)
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let ctx = state.context.read().await.clone();
    let schedules = state.settings.read().await.schedules.clone();
    let h = health::check(&ctx.store, &schedules, state.started, ctx.clock.now()).await;
    let code = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let Some(m) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response();
    };
    let ctx = state.context.read().await.clone();
    if let Ok(counts) = store_status::state_counts(&ctx.store).await {
        for s in store_status::STATES {
            metrics::gauge!("users", "state" => s).set(counts.get(s) as f64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
