//! Sends one Persona request the careful way: through the rate gate, with a timeout, retried
//! with backoff while the failure is transient, logged without secrets, and counted.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::error::{PersonaError, is_transient_status, parse_error_details};
use super::model::IdempotencyKey;
use super::redact;
use super::throttle::{RateLimitHeaders, Throttle};

/// Backoff between transient failures never grows past this.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
        }
    }

    fn method(self) -> reqwest::Method {
        match self {
            Verb::Get => reqwest::Method::GET,
            Verb::Post => reqwest::Method::POST,
        }
    }
}

/// One logical call; retries re-send it unchanged, idempotency key included.
pub(crate) struct Call<'a> {
    /// Metric label, e.g. `create_inquiry`.
    pub endpoint: &'static str,
    pub verb: Verb,
    pub url: Url,
    pub body: Option<Value>,
    pub idempotency_key: Option<&'a IdempotencyKey>,
}

pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub api_base: Url,
    pub throttle: Throttle,
    pub timeout: Duration,
    pub max_retries: u32,
    pub retry_base_delay: Duration,
}

impl Transport {
    /// `path` below the API base, e.g. `/inquiries/inq_…/resume`.
    pub fn url(&self, path: &str) -> Url {
        let base = self.api_base.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{path}")).expect("API base plus a plain path is a URL")
    }

    /// The path an operator reads in logs and errors: below the API base, without the query.
    fn display_path(&self, url: &Url) -> String {
        let base = self.api_base.path().trim_end_matches('/');
        url.path()
            .strip_prefix(base)
            .filter(|p| p.starts_with('/'))
            .unwrap_or(url.path())
            .to_owned()
    }

    /// Sends `call` (retrying transient failures) and reads the 2xx body with `read`.
    pub async fn send<T>(
        &self,
        call: &Call<'_>,
        read: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<T, PersonaError> {
        let (status, body) = self.send_with_retries(call).await?;
        read(&body).map_err(|what| PersonaError::Malformed {
            method: call.verb.as_str(),
            path: self.display_path(&call.url),
            status,
            what,
        })
    }

    async fn send_with_retries(&self, call: &Call<'_>) -> Result<(u16, Value), PersonaError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry_base_delay)
            .with_max_delay(MAX_RETRY_DELAY)
            .with_max_times(self.max_retries as usize)
            .with_jitter();
        (|| self.attempt(call))
            .retry(backoff)
            .when(PersonaError::is_transient)
            // After a 429 the gate already holds every caller until Persona's reset; adding
            // the backoff on top would only waste the fresh window.
            .adjust(|err, next| {
                let gated = err.is_rate_limited()
                    && self.throttle.blocked_until(Instant::now()).is_some();
                next.map(|delay| if gated { Duration::ZERO } else { delay })
            })
            .notify(|err, delay| {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "Persona call failed; retrying");
            })
            .await
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<(u16, Value), PersonaError> {
        self.throttle.acquire().await;
        let method = call.verb.as_str();
        let path = self.display_path(&call.url);
        let count = |outcome: &'static str| {
            metrics::counter!("persona_requests_total", "endpoint" => call.endpoint, "outcome" => outcome)
                .increment(1);
        };

        let mut request = self.http.request(call.verb.method(), call.url.clone());
        if let Some(key) = call.idempotency_key {
            request = request.header("Idempotency-Key", key.as_str());
        }
        if let Some(body) = &call.body {
            let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
            tracing::trace!(method, %path, body = %redact::for_log(&bytes), "Persona request body");
            request = request.header(CONTENT_TYPE, "application/json").body(bytes);
        }

        let started = Instant::now();
        let answer = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;

        let (status, headers, bytes) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let reason = self.describe_transport_error(&e);
                tracing::debug!(method, %path, elapsed_ms, error = %reason, "Persona got no answer");
                count("transient");
                return Err(PersonaError::Unreachable {
                    method,
                    path,
                    reason,
                    timed_out: e.is_timeout(),
                });
            }
        };

        if let Some(limits) = rate_limit_headers(&headers) {
            self.throttle.observe(limits);
        }
        let request_id = header_text(&headers, "Request-Id");
        tracing::debug!(method, %path, status, elapsed_ms, request_id, "Persona answered");
        tracing::trace!(method, %path, body = %redact::for_log(&bytes), "Persona response body");

        if (200..300).contains(&status) {
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                match serde_json::from_slice(&bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        count("permanent");
                        return Err(PersonaError::Malformed {
                            method,
                            path,
                            status,
                            what: format!("the body is not JSON ({e})"),
                        });
                    }
                }
            };
            count("ok");
            return Ok((status, body));
        }

        if status == 429 {
            count("rate_limited");
            metrics::counter!("persona_rate_limited_total", "endpoint" => call.endpoint)
                .increment(1);
            // Persona sends no Retry-After; RateLimit-Reset is when its window starts over.
            // Jitter keeps a fleet of clients from hitting the fresh window at one instant.
            if let Some(reset) = header_number(&headers, "RateLimit-Reset") {
                let jitter = Duration::from_millis(rand::rng().random_range(50..=1000));
                self.throttle
                    .block_until(Instant::now() + Duration::from_secs(reset) + jitter);
            }
        } else if is_transient_status(status) {
            count("transient");
        } else {
            count("permanent");
        }
        Err(PersonaError::Api {
            method,
            path,
            status,
            errors: parse_error_details(&bytes),
            request_id,
        })
    }

    /// What happened and its causes in one line (reqwest's own text repeats the whole URL,
    /// which the error already names as its path).
    fn describe_transport_error(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {:?}", self.timeout);
        }
        let mut reason = if e.is_connect() {
            "could not connect".to_owned()
        } else if e.is_body() || e.is_decode() {
            "the answer broke off".to_owned()
        } else {
            "the request failed".to_owned()
        };
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        reason
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_text(headers, name).and_then(|s| s.parse().ok())
}

fn rate_limit_headers(headers: &HeaderMap) -> Option<RateLimitHeaders> {
    Some(RateLimitHeaders {
        limit: header_number(headers, "RateLimit-Limit")?,
        remaining: header_number(headers, "RateLimit-Remaining")?,
        reset: Duration::from_secs(header_number(headers, "RateLimit-Reset")?),
    })
}
