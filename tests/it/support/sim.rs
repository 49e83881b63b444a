//! Helpers for tests that talk to the Persona simulator over real HTTP: a started simulator, a
//! small JSON client for its API, and a webhook receiver that keeps the raw bytes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use inquiry_mailer::clock::Clock;
use persona_sim::{self as sim, SimConfig, SimHandle, WebhookTarget};
use serde_json::Value;
use url::Url;

pub const API_KEY: &str = "sim-test-key-not-a-real-persona-key";

pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client builds")
}

/// Starts a simulator with `SimConfig::new` defaults adjusted by `tune`.
pub async fn start_sim(tune: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut cfg = SimConfig::new(API_KEY, Clock::system());
    tune(&mut cfg);
    sim::start(cfg).await.expect("simulator starts")
}

/// One HTTP answer, body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A thin client for the simulator's `/api/v1`, with a chosen API key.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: Url,
    pub key: String,
}

impl Api {
    pub fn new(sim: &SimHandle) -> Self {
        Self {
            http: http_client(),
            base: sim.api_base(),
            key: API_KEY.to_owned(),
        }
    }

    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    /// `path` is relative to `/api/v1` and may carry a query (`/inquiries?page%5Bsize%5D=5`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut req = self.http.post(self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    pub async fn try_post(
        &self,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.post(self.url(path)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await?;
        Ok(Self::read(r).await)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let r = req
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("simulator answers");
        Self::read(r).await
    }

    async fn read(r: reqwest::Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body arrives");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("simulator answers JSON")
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Creates an inquiry on `template` with the given `meta`; panics unless 201.
    pub async fn create(&self, template: &str, meta: Value) -> Value {
        let body = serde_json::json!({
            "data": {"attributes": {
                "inquiry-template-id": template,
                "fields": {"name-first": "Alex", "name-last": "Sample", "birthdate": "1990-02-03"}
            }},
            "meta": meta,
        });
        let r = self.post("/inquiries", Some(body), None).await;
        assert_eq!(r.status, 201, "create answered {:?}", r.body);
        r.body
    }
}

/// Opens a hosted-flow URL (`/verify?…`) as the end user would.
pub async fn open_link(url: &str) -> Reply {
    let r = http_client()
        .get(url)
        .send()
        .await
        .expect("hosted flow answers");
    Api::read(r).await
}

/// A received webhook: headers and the exact bytes.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A loopback HTTP receiver for the simulator's webhooks.
pub struct WebhookSink {
    pub url: Url,
    pub received: Arc<Mutex<Vec<ReceivedWebhook>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookSink {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<ReceivedWebhook>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/hooks/persona",
                axum::routing::post(
                    |State(store): State<Arc<Mutex<Vec<ReceivedWebhook>>>>,
                     headers: HeaderMap,
                     body: Bytes| async move {
                        store
                            .lock()
                            .unwrap()
                            .push(ReceivedWebhook { headers, body });
                        StatusCode::OK
                    },
                ),
            )
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: Url::parse(&format!("http://{addr}/hooks/persona")).unwrap(),
            received,
            task,
        }
    }

    pub fn target(&self, secret: &str) -> WebhookTarget {
        WebhookTarget {
            url: self.url.clone(),
            secret: secret.to_owned(),
        }
    }

    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
