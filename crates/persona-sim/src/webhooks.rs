//! Signed webhook delivery: one background worker posts each event, in order, to the configured
//! URL with `Persona-Signature: t=…,v1=…`, and records every attempt. The API never waits on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::{Notify, mpsc};
use url::Url;

use crate::ids::random_alnum;
use crate::time::{SimClock, format_ts};

use super::world::Event;

/// Where the simulator posts webhooks, and the secret it signs them with.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: Url,
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url.as_str())
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// One delivery attempt as the simulator made it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct WebhookDelivery {
    pub event_id: String,
    pub name: String,
    pub inquiry_id: String,
    /// The exact bytes posted (what the signature covers).
    pub body: String,
    pub signature: String,
    /// The receiver's HTTP status, or `None` when the request failed (see `error`).
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Sim time of the attempt.
    pub at: String,
}

/// `v1` of the Persona signature: hex HMAC-SHA256(secret, "{t}.{body}").
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The record of deliveries, shared between the worker and the handle.
#[derive(Default)]
pub struct DeliveryLog {
    pub deliveries: Mutex<Vec<WebhookDelivery>>,
    pub changed: Notify,
}

/// Queue side: cheap, never blocks.
#[derive(Clone)]
pub struct Outbox(Option<mpsc::UnboundedSender<Event>>);

impl Outbox {
    pub fn post(&self, events: Vec<Event>) {
        if let Some(tx) = &self.0 {
            for e in events {
                // The worker only stops at shutdown; events after that have nowhere to go.
                let _ = tx.send(e);
            }
        }
    }
}

/// Starts the worker when a target is configured.
pub fn spawn(
    target: Option<WebhookTarget>,
    clock: Arc<dyn SimClock>,
    log: Arc<DeliveryLog>,
) -> (Outbox, Option<tokio::task::JoinHandle<()>>) {
    let Some(target) = target else {
        return (Outbox(None), None);
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let task = tokio::spawn(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "simulator cannot build its webhook client");
                return;
            }
        };
        while let Some(event) = rx.recv().await {
            let delivery = deliver(&client, &target, &*clock, event).await;
            log.deliveries.lock().expect("delivery log").push(delivery);
            log.changed.notify_waiters();
        }
    });
    (Outbox(Some(tx)), Some(task))
}

async fn deliver(
    client: &reqwest::Client,
    target: &WebhookTarget,
    clock: &dyn SimClock,
    event: Event,
) -> WebhookDelivery {
    let now = clock.now();
    let created_at = format_ts(event.at);
    let event_id = format!("evt_{}", random_alnum(24));
    let inquiry_id = event.inquiry["id"].as_str().unwrap_or_default().to_owned();
    let body = json!({
        "data": {
            "type": "event",
            "id": event_id,
            "attributes": {
                "name": event.name,
                "payload": {"data": event.inquiry, "included": []},
                "created-at": created_at,
            }
        }
    })
    .to_string();
    let t = now.timestamp();
    let signature = format!("t={t},v1={}", sign(&target.secret, t, &body));
    let sent = client
        .post(target.url.clone())
        .header("Content-Type", "application/json")
        .header("Persona-Signature", &signature)
        .header("Persona-Webhook-Attempts-Made", "1")
        .header("Persona-Webhook-Attempts-Left", "7")
        .header("Persona-Webhook-First-Attempted-At", t.to_string())
        .body(body.clone())
        .send()
        .await;
    let (status, error) = match sent {
        Ok(r) => (Some(r.status().as_u16()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    WebhookDelivery {
        event_id,
        name: event.name.to_owned(),
        inquiry_id,
        body,
        signature,
        status,
        error,
        at: format_ts(now),
    }
}
