//! `check`: every part the daemon needs, tried for real, in one readable report.

use std::process::ExitCode;

use super::Reported;
use crate::config::Config;
use crate::domain::LinkKind;
use crate::store::{Store, StoreOptions};

/// One line of the report.
pub struct CheckLine {
    pub part: &'static str,
    pub ok: bool,
    /// Passes, but an operator should look (printed as `warn`).
    pub warn: bool,
    pub detail: String,
}

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let mut lines = vec![CheckLine {
        part: "config",
        ok: true,
        warn: false,
        detail: config.source.display().to_string(),
    }];
    lines.push(check_templates(config));
    lines.push(check_database(config).await);
    lines.push(check_persona(config).await);
    lines.push(check_mail(config).await);
    if config.links.kind == LinkKind::Redirect {
        lines.push(check_public_url(config));
    }
    print_report(&lines);
    println!("effective configuration:");
    for (key, value) in config.redacted_summary() {
        println!("  {key}: {value}");
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    if failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Reported(format!("check: {failed} of {} parts failed", lines.len())).into())
    }
}

pub fn print_report(lines: &[CheckLine]) {
    for l in lines {
        println!(
            "{:<4} {:<10} {}",
            match (l.ok, l.warn) {
                (false, _) => "FAIL",
                (true, true) => "warn",
                (true, false) => "ok",
            },
            l.part,
            l.detail
        );
    }
}

/// Redirect links: where users reach the listener. Config loading already refused a missing
/// `public_url`; plain http is allowed for loopback (tests, a proxy on this machine) only.
fn check_public_url(config: &Config) -> CheckLine {
    let Some(url) = &config.links.public_url else {
        return CheckLine {
            part: "links",
            ok: false,
            warn: false,
            detail: "kind = \"redirect\" needs [links] public_url".into(),
        };
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let https = url.scheme() == "https";
    let detail = if https || loopback {
        format!(
            "redirect links on {url}; put only {}… and /webhooks/persona of [server] listen = \"{}\" behind your TLS proxy",
            crate::links::REDIRECT_PATH,
            config.server.listen
        )
    } else {
        format!(
            "[links] public_url = \"{url}\" is not https://: mailed links and the one-time links they lead to would cross the network in clear text"
        )
    };
    CheckLine {
        part: "links",
        ok: true,
        warn: !(https || loopback),
        detail,
    }
}

fn check_templates(config: &Config) -> CheckLine {
    let dir = &config.templates.dir;
    let (ok, detail) = match crate::mail::Templates::load(dir) {
        Ok(templates) => (true, templates_detail(dir, &templates)),
        Err(e) => (false, e.to_string()),
    };
    CheckLine {
        part: "templates",
        ok,
        warn: false,
        detail,
    }
}

/// What loaded: the mail kinds, and each locale folder with the kinds it translates (every
/// folder was rendered with sample data like the default one).
fn templates_detail(dir: &std::path::Path, templates: &crate::mail::Templates) -> String {
    let kinds =
        |ks: &[crate::mail::MailKind]| ks.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    let mut detail = format!(
        "{}: {} render",
        dir.display(),
        kinds(&crate::mail::MailKind::ALL)
    );
    let folders = templates.locale_folders();
    if folders.is_empty() {
        detail.push_str("; no locale folders");
    } else {
        let listed: Vec<String> = folders
            .iter()
            .map(|(tag, ks)| format!("{tag}/ ({})", kinds(ks)))
            .collect();
        detail.push_str(&format!("; locale folders {}", listed.join(", ")));
    }
    detail
}

async fn check_persona(config: &Config) -> CheckLine {
    let (ok, detail) = match crate::app::persona_client(config, Some(0)) {
        Err(e) => (false, format!("{e:#}")),
        Ok(client) => match client.rate_limits().await {
            Ok(limits) => {
                let budget = limits
                    .iter()
                    .map(|l| format!("{} {}/{} left", l.kind, l.remaining, l.limit))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    true,
                    format!("{}: the API key works ({budget})", config.persona.api_base),
                )
            }
            Err(e) => (false, format!("{}: {e}", config.persona.api_base)),
        },
    };
    CheckLine {
        part: "persona",
        ok,
        warn: false,
        detail,
    }
}

async fn check_mail(config: &Config) -> CheckLine {
    let settings = crate::app::mail_settings(config);
    let (ok, detail) = match crate::mail::Transport::from_settings(&settings) {
        Err(e) => (false, e.to_string()),
        Ok(t) => match t.check().await {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        },
    };
    CheckLine {
        part: "mail",
        ok,
        warn: false,
        detail,
    }
}

async fn check_database(config: &Config) -> CheckLine {
    let opened = Store::open(&StoreOptions {
        read_connections: 1,
        ..crate::app::store_options(config)
    })
    .await;
    let (ok, detail) = match opened {
        Err(e) => (false, e.to_string()),
        Ok(store) => {
            let at = store.location();
            let r = match (
                store.server_version().await,
                store.pending_migrations().await,
            ) {
                (Err(e), _) | (_, Err(e)) => (false, e.to_string()),
                (Ok(v), Ok(p)) if p.is_empty() => (true, format!("{at} ({v}): schema up to date")),
                (Ok(v), Ok(p)) => (
                    true,
                    format!(
                        "{at} ({v}): {} migrations to apply at start ({})",
                        p.len(),
                        p.join(", ")
                    ),
                ),
            };
            store.close().await;
            r
        }
    };
    CheckLine {
        part: "database",
        ok,
        warn: false,
        detail,
    }
}
