//! A scripted stand-in for Persona's HTTP API: answers each request with the next scripted
//! reply and records what it received, so tests can assert on headers, bodies and retries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use inquiry_mailer::domain::ApiKey;
use inquiry_mailer::persona::{ClientConfig, PersonaClient};
use serde_json::{Value, json};
use tokio::time::Instant;

pub const API_KEY: &str = "persona_sandbox_TEST-KEY-must-never-be-logged";
pub const API_VERSION: &str = "2025-12-08";

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Value,
    },
    /// Sends the status and headers, then breaks the connection in the middle of the body:
    /// the request reached Persona, the answer never reached the client.
    CutOff,
    /// Answers with the inner reply only after this long (longer than the client's timeout, say).
    Slow(Duration, Box<Reply>),
    /// Holds the request until this many requests are in flight at once (or 5 s passed), then
    /// answers with the inner reply: proves the client really overlaps its calls.
    WhenInFlight(usize, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply::Json {
            status,
            headers: rate_headers(300, 299, 42),
            body,
        }
    }

    pub fn with_headers(status: u16, headers: Vec<(&'static str, String)>, body: Value) -> Self {
        Reply::Json {
            status,
            headers,
            body,
        }
    }
}

pub fn rate_headers(limit: u64, remaining: u64, reset: u64) -> Vec<(&'static str, String)> {
    vec![
        ("RateLimit-Limit", limit.to_string()),
        ("RateLimit-Remaining", remaining.to_string()),
        ("RateLimit-Reset", reset.to_string()),
        ("Request-Id", "req_TEST".to_owned()),
    ]
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Option<Value>,
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running fake. Dropping it stops the server.
pub struct FakePersona {
    pub api_base: url::Url,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakePersona {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakePersona {
    pub async fn start(script: impl IntoIterator<Item = Reply>) -> Self {
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().extend(script);
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            api_base: url::Url::parse(&format!("http://{addr}/api/v1")).unwrap(),
            shared,
            server,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn unanswered(&self) -> usize {
        self.shared.script.lock().unwrap().len()
    }

    /// The most requests the fake was handling at one moment.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Client settings for tests: generous rate, short timeout, quick retries.
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            api_base: self.api_base.clone(),
            api_version: API_VERSION.to_owned(),
            api_key: ApiKey::new(API_KEY),
            requests_per_minute: std::num::NonZeroU32::new(6000).unwrap(),
            timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(20),
        }
    }

    pub fn client(&self) -> PersonaClient {
        PersonaClient::new(self.config()).unwrap()
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    shared.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        query,
        headers,
        body: serde_json::from_slice(&body).ok(),
        at: Instant::now(),
    });
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = shared.script.lock().unwrap().pop_front();
    let response = match reply {
        Some(reply) => render(&shared, reply).await,
        None => (
            StatusCode::IM_A_TEAPOT,
            axum::Json(json!({"errors": [{"title": "the test did not script this request"}]})),
        )
            .into_response(),
    };
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn render(shared: &Shared, reply: Reply) -> Response {
    match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut response =
                (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            response
        }
        Reply::CutOff => {
            // Promise more bytes than are sent: the server closes the connection after the
            // short body, and the client sees the answer break off.
            let mut response = (StatusCode::CREATED, "{\"data\":").into_response();
            response
                .headers_mut()
                .insert("content-length", HeaderValue::from_static("4096"));
            response
        }
        Reply::Slow(delay, then) => {
            tokio::time::sleep(delay).await;
            Box::pin(render(shared, *then)).await
        }
        Reply::WhenInFlight(wanted, then) => {
            let give_up = Instant::now() + Duration::from_secs(5);
            while shared.max_in_flight.load(Ordering::SeqCst) < wanted && Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Box::pin(render(shared, *then)).await
        }
    }
}

/// A minimal inquiry resource in Persona's 2025-12-08 shape.
pub fn inquiry(id: &str, status: &str) -> Value {
    json!({
        "type": "inquiry",
        "id": id,
        "attributes": {
            "status": status,
            "reference-id": "ref_TEST",
            "created-at": "2026-01-01T10:00:00.000Z",
            "expires-at": "2026-01-02T10:00:00.000Z",
            "fields": {"name-first": {"type": "string", "value": "Alex"}}
        },
        "relationships": {
            "inquiry-template": {"data": {"type": "inquiry-template", "id": "itmpl_TEST"}},
            "inquiry-template-version": {"data": {"type": "inquiry-template-version", "id": "itmplv_OLD"}},
            "sessions": {"data": []}
        }
    })
}

/// Everything logged (at TRACE, all targets) on this thread while the guard lives.
///
/// The subscriber is process-global and installed once, capturing only on threads that asked
/// for it: a thread-scoped subscriber (`set_default`) races with other test threads that hit a
/// callsite first and can cache it as disabled for everyone, which lost events now and then.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURING: std::cell::RefCell<Option<CapturedLogs>> = const { std::cell::RefCell::new(None) };
}

/// Stops this thread's capture when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURING.with(|c| c.borrow_mut().take());
    }
}

/// Writes to the capture of the thread the event is logged on (nothing when it has none).
struct ThreadCapture;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadCapture {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        CAPTURING.with(|c| c.borrow().clone()).unwrap_or_default()
    }
}

impl CapturedLogs {
    pub fn start() -> (Self, CaptureGuard) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::{Layer as _, filter};
            let capture = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(ThreadCapture)
                // Dynamic, so it is asked per event: a plain `filter_fn` caches its first
                // answer per callsite, and a callsite first hit on a thread that captures
                // nothing would then never be captured on any thread.
                .with_filter(filter::dynamic_filter_fn(|_, _| {
                    CAPTURING.with(|c| c.borrow().is_some())
                }));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture))
                .expect("no other global subscriber in the test binary");
        });
        let logs = Self::default();
        CAPTURING.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, CaptureGuard(()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
