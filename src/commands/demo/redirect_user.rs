//! The demo's one user on `[links] kind = "redirect"`: her own database and mail folder, the
//! daemon's real redirect endpoint on loopback, and her clicks on the link from her invite.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::{Links, build_context};
use crate::clock::Clock;
use crate::daemon::redirect::{self, RedirectState};
use crate::domain::RawUser;
use crate::jobs::{JobContext, provision};
use persona_sim::SimHandle;

const GRACE: &str = "usr_GRA901";

pub struct RedirectUser<'a> {
    sim: &'a SimHandle,
    ctx: JobContext,
    outbox: PathBuf,
    http: reqwest::Client,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl<'a> RedirectUser<'a> {
    /// Her pipeline; its mail goes to `outbox/redirect/`.
    pub async fn start(
        sim: &'a SimHandle,
        environment: &str,
        dir: &Path,
        outbox: &Path,
        clock: Clock,
    ) -> anyhow::Result<RedirectUser<'a>> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen on 127.0.0.1 for the redirect endpoint")?;
        let public_url = format!("http://{}", listener.local_addr()?);
        let outbox = outbox.join("redirect");
        std::fs::create_dir_all(&outbox)?;
        let links = Links {
            kind: "redirect",
            database: "demo-redirect.db",
            public_url: Some(&public_url),
        };
        let ctx = build_context(sim, environment, dir, &outbox, clock, &links).await?;
        let shared = Arc::new(RwLock::new(Arc::new(ctx.clone())));
        let per = std::num::NonZeroU32::new(60).expect("not zero");
        let app = redirect::router(RedirectState::new(shared, per, per));
        let stop = CancellationToken::new();
        let done = stop.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(done.cancelled_owned())
            .await;
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(RedirectUser {
            sim,
            ctx,
            outbox,
            http,
            stop,
            server,
        })
    }

    /// Grace signs up and provisioning mails her a redirect link (no Persona call).
    pub async fn invite(&self) -> anyhow::Result<String> {
        crate::store::users::add(
            &self.ctx.store,
            &RawUser {
                id: GRACE.into(),
                email: "grace.hopper@example.com".into(),
                name_first: Some("Grace".into()),
                name_last: Some("Hopper".into()),
                birthdate: Some("1986-12-09".into()),
                phone_number: None,
                locale: None,
            },
        )
        .await?;
        let before = self.sim.requests().len();
        let report = provision::run(&self.ctx).await?;
        Ok(format!(
            "provision: {report}; {} Persona calls",
            self.sim.requests().len() - before
        ))
    }

    /// Grace presses Continue on her link's page: what the endpoint answered, what it cost at
    /// Persona, and what the hosted flow opened.
    pub async fn click(&self) -> anyhow::Result<String> {
        let link = self.mailed_link()?;
        let page = self.http.get(&link).send().await?.status();
        let before = self.sim.requests().len();
        let answer = self.http.post(&link).send().await?;
        let calls: Vec<String> = self.sim.requests()[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.route.as_deref().unwrap_or(&r.path)))
            .collect();
        let Some(location) = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(format!("GET {page}, POST {}: no redirect", answer.status()));
        };
        let opened: serde_json::Value = self.http.get(location).send().await?.json().await?;
        Ok(format!(
            "GET of her link {page} (no Persona call); Continue → {} to a one-time link that opens {} ({}); Persona calls: {}",
            answer.status(),
            opened["inquiry-id"].as_str().unwrap_or("nothing"),
            opened["status"].as_str().unwrap_or("-"),
            calls.join(", ")
        ))
    }

    /// The link in her invite, read back from the `.eml` file as she would click it.
    fn mailed_link(&self) -> anyhow::Result<String> {
        for entry in std::fs::read_dir(&self.outbox)? {
            let text = std::fs::read_to_string(entry?.path())?;
            if let Some(at) = text.find("/link/") {
                let start = text[..at].rfind("http://").context("a link in the mail")?;
                let end = text[at..]
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                    .map_or(text.len(), |e| at + e);
                return Ok(text[start..end].to_owned());
            }
        }
        anyhow::bail!("no redirect link in {}", self.outbox.display())
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
        self.ctx.store.close().await;
    }
}
