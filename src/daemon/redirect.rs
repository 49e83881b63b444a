//! `GET|POST /link/<token>`, the endpoint of mailed redirect links: GET shows a page with one
//! "Continue" button and calls nothing (mail scanners prefetch links); POST is the click.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::Digest as _;

use super::scheduler::SharedContext;
use crate::domain::RedirectToken;
use crate::jobs::JobContext;
use crate::jobs::click::{self, ClickGuard, ClickOutcome};
use crate::links::{self, REDIRECT_PATH};

#[derive(Clone)]
pub struct RedirectState {
    context: SharedContext,
    guard: Arc<ClickGuard>,
    clients: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl RedirectState {
    /// `requests_per_minute` per client address, `calls_per_hour` Persona calls per user
    /// (`[links] redirect_requests_per_minute`, `redirect_persona_calls_per_hour`).
    pub fn new(
        context: SharedContext,
        requests_per_minute: NonZeroU32,
        calls_per_hour: NonZeroU32,
    ) -> RedirectState {
        RedirectState {
            context,
            guard: Arc::new(ClickGuard::new(calls_per_hour)),
            clients: Arc::new(RateLimiter::keyed(Quota::per_minute(requests_per_minute))),
        }
    }
}

pub fn router(state: RedirectState) -> Router {
    let path = format!("{REDIRECT_PATH}{{token}}");
    Router::new()
        .route(&path, get(show).post(continue_click))
        .with_state(state)
}

/// Keyed limiters keep one entry per client seen; past this many, idle ones are dropped.
const CLIENTS_KEPT: usize = 10_000;

/// The client a request counts against: the peer, or, when the peer is a proxy on this machine,
/// the address it put last in `X-Forwarded-For` (the one it saw; anything before is the
/// client's own say).
fn client_of(peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if peer.ip().is_loopback()
        && let Some(forwarded) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return forwarded;
    }
    peer.ip()
}

/// What both methods check first: the client's rate, then that the path can be a token at all
/// (a malformed one is never looked up).
fn admit(
    state: &RedirectState,
    peer: SocketAddr,
    headers: &HeaderMap,
    raw: &str,
) -> Result<RedirectToken, Page> {
    if over_limit(state, peer, headers) {
        return Err(Page::TooMany);
    }
    RedirectToken::parse(raw).ok_or(Page::Unknown)
}

fn over_limit(state: &RedirectState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if state.clients.len() > CLIENTS_KEPT {
        state.clients.retain_recent();
    }
    state.clients.check_key(&client_of(peer, headers)).is_err()
}

async fn show(
    State(state): State<RedirectState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let ctx = state.context.read().await.clone();
    let token = match admit(&state, peer, &headers, &raw) {
        Ok(token) => token,
        Err(refused) => return page(&ctx, refused),
    };
    let known = match click::user_of(&ctx, &token).await {
        Ok(Some(user)) => click::settled(&ctx, &user).await.map(|s| (user, s)),
        Ok(None) => return page(&ctx, Page::Unknown),
        Err(e) => Err(e),
    };
    match known {
        Ok((_, Some(ClickOutcome::Finished))) => page(&ctx, Page::Done),
        Ok((_, Some(_))) => page(&ctx, Page::Unknown),
        Ok((user, None)) => {
            tracing::info!(user = %user, "redirect link shown");
            page(&ctx, Page::Continue)
        }
        Err(e) => {
            tracing::error!(error = %e, "redirect link not shown");
            page(&ctx, Page::Trouble)
        }
    }
}

async fn continue_click(
    State(state): State<RedirectState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let ctx = state.context.read().await.clone();
    let token = match admit(&state, peer, &headers, &raw) {
        Ok(token) => token,
        Err(refused) => return page(&ctx, refused),
    };
    match click::open(&ctx, &state.guard, &token).await {
        Ok(ClickOutcome::Continue(link)) if links::may_redirect_to(&ctx.settings.links, &link) => {
            metrics::counter!("redirect_clicks_total", "outcome" => "continue").increment(1);
            let mut r = StatusCode::SEE_OTHER.into_response();
            match HeaderValue::from_str(link.expose()) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    secure_headers(&ctx, r.headers_mut());
                    r
                }
                Err(_) => page(&ctx, Page::Trouble),
            }
        }
        Ok(ClickOutcome::Continue(link)) => {
            tracing::error!(link = %link, "refused to redirect outside the hosted flow and Persona's hosts");
            page(&ctx, Page::Trouble)
        }
        Ok(ClickOutcome::Finished) => {
            metrics::counter!("redirect_clicks_total", "outcome" => "finished").increment(1);
            page(&ctx, Page::Done)
        }
        Ok(ClickOutcome::Unknown) => page(&ctx, Page::Unknown),
        Ok(ClickOutcome::TooManyClicks) => {
            metrics::counter!("redirect_clicks_total", "outcome" => "capped").increment(1);
            tracing::warn!("a user's clicks reached [links] redirect_persona_calls_per_hour");
            page(&ctx, Page::TooMany)
        }
        Ok(ClickOutcome::Later(why)) => {
            metrics::counter!("redirect_clicks_total", "outcome" => "later").increment(1);
            tracing::warn!(reason = %why, "redirect click not continued now");
            page(&ctx, Page::Trouble)
        }
        Err(e) => {
            metrics::counter!("redirect_clicks_total", "outcome" => "failed").increment(1);
            tracing::error!(error = %e, "redirect click failed");
            page(&ctx, Page::Trouble)
        }
    }
}

/// The pages the endpoint answers with.
#[derive(Debug, Clone, Copy)]
enum Page {
    Continue,
    Done,
    Unknown,
    TooMany,
    Trouble,
}

impl Page {
    fn status(self) -> StatusCode {
        match self {
            Page::Continue | Page::Done => StatusCode::OK,
            Page::Unknown => StatusCode::NOT_FOUND,
            Page::TooMany => StatusCode::TOO_MANY_REQUESTS,
            Page::Trouble => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Title and body, HTML with `app` (escaped) in it.
    fn content(self, app: &str) -> (String, String) {
        match self {
            Page::Continue => (
                format!("{app}: verify your identity"),
                format!(
                    "<h1>{app}</h1>\
                     <p>Continue to your identity verification. It takes a few minutes and is \
                     handled by our verification partner, Persona.</p>\
                     <form method=\"post\"><button type=\"submit\">Continue</button></form>"
                ),
            ),
            Page::Done => (
                format!("{app}: verification done"),
                format!(
                    "<h1>{app}</h1><p>Your identity verification is done. There is nothing \
                     more to do here; you can close this page.</p>"
                ),
            ),
            Page::Unknown => (
                "Link not found".into(),
                "<h1>Link not found</h1><p>This link does not work. Please use the link in \
                 the most recent e-mail you received.</p>"
                    .into(),
            ),
            Page::TooMany => (
                "Please wait".into(),
                "<h1>Please wait a moment</h1><p>This link was opened many times in a short \
                 while. Please wait a few minutes, then try again.</p>"
                    .into(),
            ),
            Page::Trouble => (
                format!("{app}: please try again"),
                format!(
                    "<h1>{app}</h1><p>Your verification cannot be continued right now. Please \
                     try again in a minute.</p><form method=\"post\"><button type=\"submit\">\
                     Try again</button></form>"
                ),
            ),
        }
    }
}

/// The only style on the pages; the CSP allows exactly this text, by its hash.
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:0;padding:2rem 1.25rem;background:#f5f6f8;color:#1f2330;line-height:1.5}\
main{max-width:28rem;margin:0 auto;background:#fff;border-radius:12px;padding:1.75rem 1.5rem;\
box-shadow:0 1px 3px rgba(0,0,0,.08)}h1{font-size:1.35rem;margin:0 0 1rem}\
p{margin:0 0 1.5rem}button{display:block;width:100%;font-size:1.1rem;font-weight:600;\
padding:.9rem 1rem;border:0;font-family:inherit;border-radius:8px;background:#2b59c3;color:#fff;cursor:pointer}\
button:focus{outline:3px solid #9db4ea;outline-offset:2px}";

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    let digest = sha2::Sha256::digest(STYLE.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
});

fn page(ctx: &JobContext, which: Page) -> Response {
    let app = tera::escape_html(ctx.mailer.app_name());
    let (title, body) = which.content(&app);
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><main>{body}</main></body></html>"
    );
    let mut r = (which.status(), html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if matches!(which, Page::TooMany | Page::Trouble) {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    secure_headers(ctx, h);
    r
}

/// No script, no external anything; the form may post only here, and its answer may redirect
/// only to the hosted flow or Persona. Nothing is cached, nothing leaks a referrer.
fn secure_headers(ctx: &JobContext, h: &mut HeaderMap) {
    let csp = format!(
        "default-src 'none'; style-src {}; form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH,
        links::redirect_sources(&ctx.settings.links).join(" ")
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_proxy_names_the_client_and_others_cannot() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        let proxy: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let direct: SocketAddr = "198.51.100.7:50000".parse().unwrap();
        assert_eq!(
            client_of(proxy, &headers),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_of(direct, &headers), direct.ip());
        assert_eq!(client_of(proxy, &HeaderMap::new()), proxy.ip());
    }
}
