//! The Persona API client: typed calls for the inquiry endpoints the daemon uses. Nothing
//! else in the crate talks HTTP to Persona; rate limiting, retries and redaction live here.

mod error;
mod list;
mod model;
mod redact;
mod search;
mod throttle;
mod transport;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::json;
use url::Url;

use crate::domain::{ApiKey, InquiryId, OneTimeLink, SessionToken, TemplateId};

pub use error::{ApiErrorDetail, PersonaError};
pub use list::{InquiryPages, ListFilter};
pub use model::{
    CreateInquiry, CreatedInquiry, FieldValue, IdempotencyKey, Inquiry, InquiryFields,
    InquiryTemplate, RateLimitInfo, RetrievedInquiry,
};
pub use search::{SearchError, SearchPages};
pub use throttle::{BudgetFuture, SharedBudget};

use throttle::Throttle;
use transport::{Call, Transport, Verb};

/// Installs rustls' ring crypto provider for the process. reqwest is built without a
/// provider, so this must run before any HTTPS client is built; calling it again is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How to reach Persona and how hard to push it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://api.withpersona.com/api/v1`.
    pub api_base: Url,
    /// Sent as `Persona-Version`, e.g. `2025-12-08`; pins the payload shapes this client reads.
    pub api_version: String,
    pub api_key: ApiKey,
    /// Across all clones of the client.
    pub requests_per_minute: NonZeroU32,
    /// Per request, connection to last byte.
    pub timeout: Duration,
    /// Retries of a transient failure (408, 429, 5xx, no answer); 0 means none.
    pub max_retries: u32,
    /// First backoff delay; it doubles per retry (with jitter) up to a minute.
    pub retry_base_delay: Duration,
}

impl ClientConfig {
    /// Persona's own advice for backoff starts around a second.
    pub const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_secs(1);
}

/// A Persona API client. Cheap to clone; clones share one connection pool and one rate budget.
#[derive(Clone)]
pub struct PersonaClient {
    inner: Arc<Transport>,
}

impl std::fmt::Debug for PersonaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonaClient")
            .field("api_base", &self.inner.api_base.as_str())
            .finish_non_exhaustive()
    }
}

impl PersonaClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, PersonaError> {
        if !matches!(cfg.api_base.scheme(), "http" | "https") || cfg.api_base.host().is_none() {
            return Err(PersonaError::Config(format!(
                "api_base {} is not an http(s) URL with a host",
                cfg.api_base
            )));
        }
        let mut auth =
            HeaderValue::try_from(format!("Bearer {}", cfg.api_key.expose())).map_err(|_| {
                PersonaError::Config(
                    "the API key contains characters that cannot go in an HTTP header".into(),
                )
            })?;
        // Marked sensitive so no Debug print of the headers can show it.
        auth.set_sensitive(true);
        let version = HeaderValue::try_from(cfg.api_version.as_str()).map_err(|_| {
            PersonaError::Config(format!(
                "api_version {:?} cannot go in an HTTP header",
                cfg.api_version
            ))
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert("Persona-Version", version);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        // Kebab is Persona's default; saying so keeps a dashboard setting from changing keys.
        headers.insert("Key-Inflection", HeaderValue::from_static("kebab"));

        install_crypto_provider();
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("inquiry-mailer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PersonaError::Config(format!("cannot build the HTTP client: {e}")))?;

        Ok(Self {
            inner: Arc::new(Transport {
                http,
                api_base: cfg.api_base,
                throttle: Throttle::new(cfg.requests_per_minute),
                timeout: cfg.timeout,
                max_retries: cfg.max_retries,
                retry_base_delay: cfg.retry_base_delay,
            }),
        })
    }

    /// Shares the request budget with other replicas through `budget`: every clone of this
    /// client takes a slot of it before each request, beside its own quota. Set once; `false`
    /// when a budget was set already.
    pub fn share_budget(&self, budget: std::sync::Arc<dyn SharedBudget>) -> bool {
        self.inner.throttle.share(budget)
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner
    }

    fn post<'a>(
        &self,
        endpoint: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
        key: &'a IdempotencyKey,
    ) -> Call<'a> {
        Call {
            endpoint,
            verb: Verb::Post,
            url: self.inner.url(path),
            body,
            idempotency_key: Some(key),
        }
    }

    fn get(&self, endpoint: &'static str, url: Url) -> Call<'static> {
        Call {
            endpoint,
            verb: Verb::Get,
            url,
            body: None,
            idempotency_key: None,
        }
    }

    /// `POST /inquiries`.
    pub async fn create_inquiry(
        &self,
        req: &CreateInquiry,
        key: &IdempotencyKey,
    ) -> Result<CreatedInquiry, PersonaError> {
        let call = self.post("create_inquiry", "/inquiries", Some(req.to_body()), key);
        self.inner.send(&call, model::read_created).await
    }

    /// `POST /inquiries/{id}/resume`: a session token; an `expired` inquiry becomes `pending`.
    pub async fn resume_inquiry(
        &self,
        id: &InquiryId,
        key: &IdempotencyKey,
    ) -> Result<(Inquiry, SessionToken), PersonaError> {
        let path = format!("/inquiries/{id}/resume");
        let call = self.post("resume_inquiry", &path, None, key);
        self.inner.send(&call, model::read_resumed).await
    }

    /// `GET /inquiries/{id}`, with `?include=inquiry-template` when the template's latest
    /// published version is wanted.
    pub async fn retrieve_inquiry(
        &self,
        id: &InquiryId,
        include_template: bool,
    ) -> Result<RetrievedInquiry, PersonaError> {
        let mut url = self.inner.url(&format!("/inquiries/{id}"));
        if include_template {
            url.query_pairs_mut()
                .append_pair("include", "inquiry-template");
        }
        let call = self.get("retrieve_inquiry", url);
        self.inner.send(&call, model::read_retrieved).await
    }

    /// Every inquiry matching `filter`, all pages read. See [`Self::inquiry_pages`] to take
    /// them a page at a time.
    pub async fn list_inquiries(&self, filter: &ListFilter) -> Result<Vec<Inquiry>, PersonaError> {
        let mut pages = self.inquiry_pages(filter);
        let mut all = Vec::new();
        while let Some(page) = pages.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }

    /// A cursor over the pages of `GET /inquiries` (100 per page).
    pub fn inquiry_pages(&self, filter: &ListFilter) -> InquiryPages {
        InquiryPages::new(self.clone(), filter)
    }

    /// `POST /inquiries/{id}/expire`: expires it and its sessions (it can still be resumed).
    pub async fn expire_inquiry(
        &self,
        id: &InquiryId,
        key: &IdempotencyKey,
    ) -> Result<Inquiry, PersonaError> {
        let path = format!("/inquiries/{id}/expire");
        let call = self.post("expire_inquiry", &path, None, key);
        self.inner.send(&call, model::read_data_inquiry).await
    }

    /// `POST /inquiries/{id}/generate-one-time-link`. The lifetime is always sent, since
    /// Persona's documented default is contradictory (1 h or 24 h).
    pub async fn generate_one_time_link(
        &self,
        id: &InquiryId,
        expires_in: Duration,
        key: &IdempotencyKey,
    ) -> Result<(Inquiry, OneTimeLink), PersonaError> {
        let path = format!("/inquiries/{id}/generate-one-time-link");
        let body = json!({ "meta": { "expires-in-seconds": model::whole_seconds(expires_in) } });
        let call = self.post("generate_one_time_link", &path, Some(body), key);
        self.inner.send(&call, model::read_one_time_link).await
    }

    /// `GET /inquiry-templates/{id}` (production keys only, per Persona).
    pub async fn retrieve_template(
        &self,
        id: &TemplateId,
    ) -> Result<InquiryTemplate, PersonaError> {
        let url = self.inner.url(&format!("/inquiry-templates/{id}"));
        let call = self.get("retrieve_template", url);
        self.inner.send(&call, model::read_template).await
    }

    /// `GET /rate-limits`: Persona's view of this key's budget.
    pub async fn rate_limits(&self) -> Result<Vec<RateLimitInfo>, PersonaError> {
        let call = self.get("rate_limits", self.inner.url("/rate-limits"));
        self.inner.send(&call, model::read_rate_limits).await
    }
}
