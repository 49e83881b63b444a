//! A Persona simulator on loopback (axum): the inquiry API of version 2025-12-08 under `/api/v1`,
//! the hosted flow's `/verify` as an end user meets it, and a `/_sim` control surface for tests.
//!
//! Where Persona's docs are silent the simulator picks one behaviour and keeps to it:
//! - `POST /inquiries/{id}/resume` on a `created` inquiry answers 200 with a session token and
//!   changes neither status nor `expires-at`; on a `pending` one it reuses an unused valid session
//!   (or creates one) and does not move `expires-at`; on `expired` it sets `pending` with
//!   `expires-at` = now + resume interval and clears `expired-at`.
//! - The 26th session of an inquiry (resume, one-time link, `auto-create-*`) is refused with 422;
//!   the inquiry is left as it is.
//! - `generate-one-time-link` on an expired inquiry, and expire/resume/links on finished ones, are
//!   409 Conflict. Expiring an already expired inquiry is a 200 no-op.
//! - An expired inquiry shows `expires-at: null` and `expired-at` = the moment it expired, as in
//!   Persona's examples. One-time link codes work exactly once (no grace period).
//! - Idempotency-Key reuse with another method, path, query or body answers 422; a reuse while
//!   the first request is still running answers 409. Stored answers include injected 500s; a
//!   dropped connection happens after the request was processed (and stored), like a response
//!   lost in transit.
//! - The rate-limit window is 60 s of sim time from the first request in it. Without a limit the
//!   headers report a limit of 2147483647.
//! - `filter[note]` must be the only filter of a list (as the spec says); with other filters it
//!   is 400.
//! - Switches (`SimConfig::switches`, `PUT /_sim/switches`): `sandbox` refuses the endpoints
//!   Persona serves to production keys only (`/inquiry-templates/…`) with 403;
//!   `copy-reference-ids = false` attaches the inquiry to the account of
//!   `meta.auto-create-account-reference-id` without copying that id onto the inquiry (the spec
//!   does not promise the copy).
//! - `POST /inquiries/search` answers from an index that trails the inquiries by
//!   `search-lag-seconds` (default 60, Persona's "approximately 1 minute"): a change is found by
//!   its new attributes only once the lag passed, a new inquiry is not found before. Picks where
//!   the spec is silent: without `sort`, newest created first (as the list); ties in any sort
//!   fall back to creation order; a cursor (`page[after]`/`page[before]`, an inquiry id)
//!   continues from where that inquiry sorts *now*; `page` in the query (as `links.next` puts
//!   it) wins over `page` in the body; a date-only value means midnight UTC; `gt`/`lt`/… on a
//!   text attribute, an empty `and`/`or`, more than 2 levels of nesting or 20 clauses, and
//!   unknown attributes are 400. Switches: `search-results` (`live` bodies, default, or the
//!   `indexed` status and updated-at), `search-refused-with` (refuse every search with that
//!   status), `search-lag-seconds`.
//! - `filter[inquiry-id]` takes at most `max-ids-per-filter` ids (default 100, per DOCS); more
//!   is 400; `null` lifts the limit.
//! - Hooks for deterministic races (`SimHandle::before_expire`, `POST
//!   /_sim/inquiries/{id}/before-expire/{action}`): the next expire call for that inquiry first
//!   applies the end-user action (so a `complete` makes the expire answer 409).
//! - Only `Persona-Version: 2025-12-08` (or none) and kebab-case responses are served; other
//!   versions, other `Key-Inflection`s, sparse fieldsets and includes of relationships the
//!   simulator does not model are refused with 400 rather than answered in the wrong shape.

mod api;
mod conn;
mod control;
mod gate;
mod hosted;
mod ids;
mod search;
mod status;
mod time;
mod webhooks;
mod wire;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;
use url::Url;

use crate::ids::random_alnum;

pub use gate::{Faults, RecordedRequest};
pub use hosted::HostedVisit;
pub use status::Status;
pub use time::SimClock;
pub use webhooks::{WebhookDelivery, WebhookTarget, sign as sign_webhook};
pub use world::{Action, MAX_SESSIONS_PER_INQUIRY};

/// Behaviours of the simulated Persona a test may switch, at start or while it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Switches {
    /// A sandbox key: production-only endpoints (the inquiry template) answer 403.
    pub sandbox: bool,
    /// Copy `meta.auto-create-account-reference-id` onto the inquiry's `reference-id`.
    pub copy_reference_ids: bool,
    /// The template's default resume interval (Persona's default is 24 h), used when the create
    /// call does not set `expiration-after-resume-interval-seconds`.
    pub default_resume_interval_seconds: i64,
    /// How long after a change `POST /inquiries/search` sees it (Persona: "approximately 1
    /// minute"); until then search answers from the inquiry's older attributes.
    pub search_lag_seconds: u64,
    /// `Some(status)`: every search is refused with this HTTP status (403 is what the spec
    /// gives for a feature the key may not use), so a client's fallback can be tested. 400,
    /// 403, 404, 409 and 422 answer in the spec's shape for that status; other values, 500.
    pub search_refused_with: Option<u16>,
    /// What a search result shows of each inquiry it found (the spec does not say).
    pub search_results: SearchResults,
    /// Most ids one `filter[inquiry-id]` may carry (DOCS changelog 2025-06-09: 100); more is
    /// 400. `None`: no limit, for the reading that Persona does not enforce it.
    pub max_ids_per_filter: Option<usize>,
}

/// What a search result shows of each inquiry it found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchResults {
    /// The inquiry as it is now, as a retrieve would show it (the index only finds it).
    #[default]
    Live,
    /// `status` and `updated-at` as the index holds them: a stale result, as from a search
    /// engine that stores what it indexed. The other attributes are live.
    Indexed,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            sandbox: false,
            copy_reference_ids: true,
            default_resume_interval_seconds: world::DEFAULT_INTERVAL_SECONDS,
            search_lag_seconds: 60,
            search_refused_with: None,
            search_results: SearchResults::Live,
            max_ids_per_filter: Some(100),
        }
    }
}

/// How to run a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Requests with another Bearer key get 401.
    pub api_key: String,
    /// Each template id (`itmpl_…`) with its first published version (`itmplv_…`).
    pub templates: Vec<(String, String)>,
    /// `env_…`
    pub environment_id: String,
    /// The simulator's time; share it with the daemon in tests and the demo.
    pub clock: Arc<dyn SimClock>,
    /// `None` = unlimited.
    pub rate_limit_per_minute: Option<u32>,
    /// Added to every API call.
    pub latency: Duration,
    /// Serve the `/_sim` control surface.
    pub control: bool,
    pub webhook: Option<WebhookTarget>,
    pub switches: Switches,
}

impl SimConfig {
    /// One template with one published version, a fresh environment, no rate limit, no latency,
    /// control surface on, no webhooks.
    pub fn new(api_key: impl Into<String>, clock: impl SimClock) -> Self {
        let template = format!("itmpl_{}", random_alnum(24));
        let version = format!("itmplv_{}", random_alnum(24));
        Self {
            api_key: api_key.into(),
            templates: vec![(template, version)],
            environment_id: format!("env_{}", random_alnum(24)),
            clock: Arc::new(clock),
            rate_limit_per_minute: None,
            latency: Duration::ZERO,
            control: true,
            webhook: None,
            switches: Switches::default(),
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &"[redacted]")
            .field("templates", &self.templates)
            .field("environment_id", &self.environment_id)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("latency", &self.latency)
            .field("control", &self.control)
            .field("webhook", &self.webhook)
            .field("switches", &self.switches)
            .finish()
    }
}

/// Why an in-process control call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("no inquiry {0}")]
    UnknownInquiry(String),
    #[error("no inquiry template or template version {0}")]
    UnknownTemplate(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

/// What the simulator holds about one inquiry, for assertions.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InquirySnapshot {
    pub id: String,
    pub status: Status,
    pub reference_id: Option<String>,
    pub template_id: String,
    pub template_version_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub redirect_uri: Option<String>,
    pub session_count: usize,
}

impl InquirySnapshot {
    fn of(inq: &world::Inquiry) -> Self {
        Self {
            id: inq.id.clone(),
            status: inq.status,
            reference_id: inq.reference_id.clone(),
            template_id: inq.template_id.clone(),
            template_version_id: inq.template_version_id.clone(),
            created_at: inq.created_at,
            expires_at: inq.expires_at,
            redirect_uri: inq.redirect_uri.clone(),
            session_count: inq.sessions.len(),
        }
    }
}

/// State shared by every handler.
struct Sim {
    api_key: String,
    environment_id: String,
    organization_id: String,
    clock: Arc<dyn SimClock>,
    rate_limit: Option<u32>,
    latency: Duration,
    hosted_flow_url: Url,
    world: Mutex<world::World>,
    traffic: Mutex<gate::Traffic>,
    outbox: webhooks::Outbox,
    deliveries: Arc<webhooks::DeliveryLog>,
    visits: Mutex<Vec<HostedVisit>>,
    switches: Mutex<Switches>,
}

impl Sim {
    fn switches(&self) -> Switches {
        self.switches.lock().expect("switches lock").clone()
    }

    /// Runs `f` on the world at sim "now", after Persona's expirer caught up; status changes
    /// are queued for webhook delivery in the order they happened.
    fn with_world<T>(&self, f: impl FnOnce(&mut world::World, DateTime<Utc>) -> T) -> T {
        let now = self.clock.now();
        let mut w = self.world.lock().expect("world lock");
        w.sweep(now);
        let out = f(&mut w, now);
        self.outbox.post(w.take_events());
        out
    }

    fn traffic(&self) -> std::sync::MutexGuard<'_, gate::Traffic> {
        self.traffic.lock().expect("traffic lock")
    }
}

/// A running simulator. `shutdown` stops it; dropping it aborts its tasks.
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    webhook_worker: Option<tokio::task::JoinHandle<()>>,
}

/// Binds 127.0.0.1:0 and serves until `shutdown`.
pub async fn start(cfg: SimConfig) -> std::io::Result<SimHandle> {
    if cfg.templates.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the simulator needs at least one inquiry template",
        ));
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let hosted_flow_url = Url::parse(&format!("http://{addr}/verify")).expect("valid URL");
    let deliveries = Arc::new(webhooks::DeliveryLog::default());
    let (outbox, webhook_worker) =
        webhooks::spawn(cfg.webhook.clone(), cfg.clock.clone(), deliveries.clone());
    let now = cfg.clock.now();
    let sim = Arc::new(Sim {
        api_key: cfg.api_key,
        environment_id: cfg.environment_id,
        organization_id: format!("org_{}", random_alnum(24)),
        clock: cfg.clock,
        rate_limit: cfg.rate_limit_per_minute,
        latency: cfg.latency,
        hosted_flow_url,
        world: Mutex::new(world::World::new(&cfg.templates, now)),
        traffic: Mutex::new(gate::Traffic::default()),
        outbox,
        deliveries,
        visits: Mutex::new(Vec::new()),
        switches: Mutex::new(cfg.switches),
    });

    let mut app = axum::Router::new()
        .nest("/api/v1", api::router(sim.clone()))
        .merge(hosted::router(sim.clone()));
    if cfg.control {
        app = app.nest("/_sim", control::router(sim.clone()));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let service = app.into_make_service_with_connect_info::<conn::Cutter>();
    let server = tokio::spawn(async move {
        let served = axum::serve(conn::CuttableListener(listener), service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "simulator server stopped with an error");
        }
    });
    Ok(SimHandle {
        sim,
        addr,
        stop: Some(stop),
        server: Some(server),
        webhook_worker,
    })
}

impl SimHandle {
    /// `http://127.0.0.1:PORT/api/v1`
    pub fn api_base(&self) -> Url {
        Url::parse(&format!("http://{}/api/v1", self.addr)).expect("valid URL")
    }

    /// `http://127.0.0.1:PORT/verify`
    pub fn hosted_flow_url(&self) -> Url {
        self.sim.hosted_flow_url.clone()
    }

    /// `http://127.0.0.1:PORT/_sim`
    pub fn control_url(&self) -> Url {
        Url::parse(&format!("http://{}/_sim", self.addr)).expect("valid URL")
    }

    pub fn clock(&self) -> &dyn SimClock {
        &*self.sim.clock
    }

    /// Moves sim time forward and lets the expirer run (webhooks for expiries go out now).
    pub fn advance_clock(&self, by: Duration) {
        self.sim.clock.advance(by);
        self.sim.with_world(|_, _| ());
    }

    /// The templates as configured, with their latest published versions.
    pub fn templates(&self) -> Vec<(String, String)> {
        self.sim.world.lock().expect("world lock").template_ids()
    }

    /// Publishes a new version of a template; new inquiries are pinned to it from now on.
    pub fn publish_template_version(&self, template: impl AsRef<str>) -> Result<String, SimError> {
        self.sim
            .with_world(|w, now| w.publish_version(template.as_ref(), now))
    }

    pub fn latest_template_version(&self, template: impl AsRef<str>) -> Option<String> {
        let w = self.sim.world.lock().expect("world lock");
        w.template(template.as_ref()).map(|t| t.latest().id.clone())
    }

    /// Acts as the end user (start, complete, fail) or a reviewer (approve, decline,
    /// mark-for-review) on one inquiry.
    pub fn act(&self, inquiry: impl AsRef<str>, action: Action) -> Result<Status, SimError> {
        self.sim
            .with_world(|w, now| w.act(inquiry.as_ref(), action, now))
    }

    pub fn inquiry(&self, id: impl AsRef<str>) -> Option<InquirySnapshot> {
        self.sim
            .with_world(|w, _| w.inquiry(id.as_ref()).map(InquirySnapshot::of))
    }

    /// Every inquiry, newest first.
    pub fn inquiries(&self) -> Vec<InquirySnapshot> {
        self.sim
            .with_world(|w, _| w.newest_first().map(InquirySnapshot::of).collect())
    }

    pub fn set_switches(&self, switches: Switches) {
        *self.sim.switches.lock().expect("switches lock") = switches;
    }

    pub fn switches(&self) -> Switches {
        self.sim.switches()
    }

    /// The next `POST /inquiries/{id}/expire` for `inquiry` first applies `action` (as the end
    /// user or a reviewer would have a moment before), then runs: a race made deterministic.
    pub fn before_expire(&self, inquiry: impl AsRef<str>, action: Action) -> Result<(), SimError> {
        self.sim
            .with_world(|w, _| w.before_expire(inquiry.as_ref(), action))
    }

    pub fn set_faults(&self, faults: Faults) {
        self.sim.traffic().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.sim.traffic().faults.clone()
    }

    /// Every API request received since start (or the last `clear_requests`), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.sim.traffic().log.clone()
    }

    pub fn clear_requests(&self) {
        self.sim.traffic().log.clear();
    }

    /// How many API requests matched `method` and the spec path template `route`
    /// (e.g. `("POST", "/inquiries")`, `("GET", "/inquiries/{inquiry-id}")`).
    pub fn count_requests(&self, method: &str, route: &str) -> usize {
        self.sim
            .traffic()
            .log
            .iter()
            .filter(|r| r.method == method && r.route.as_deref() == Some(route))
            .count()
    }

    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.sim
            .deliveries
            .deliveries
            .lock()
            .expect("delivery log")
            .clone()
    }

    /// Waits until at least `n` webhook deliveries were attempted, or `timeout` passed; returns
    /// what was delivered by then.
    pub async fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> Vec<WebhookDelivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.sim.deliveries.changed.notified();
            let now = self.webhook_deliveries();
            if now.len() >= n {
                return now;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.webhook_deliveries();
            }
        }
    }

    /// Hosted-flow visits (`/verify`), oldest first.
    pub fn hosted_visits(&self) -> Vec<HostedVisit> {
        self.sim.visits.lock().expect("visits lock").clone()
    }

    /// Stops the server and the webhook worker; returns when nothing is left running.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            // Graceful first; a client holding a request open must not keep us waiting.
            if tokio::time::timeout(Duration::from_secs(5), &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
        if let Some(worker) = self.webhook_worker.take() {
            worker.abort();
            let _ = worker.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        if let Some(worker) = &self.webhook_worker {
            worker.abort();
        }
    }
}
