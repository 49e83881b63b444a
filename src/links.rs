//! The links the daemon mails, one builder for the kinds of SPEC.md, and which hosts a redirect
//! link may send a browser on to.
//! A link that carries a session token or a one-time code is a secret and never prints itself.

use std::fmt;

use url::Url;

use crate::domain::{
    EnvironmentId, InquiryId, LinkKind, Locale, OneTimeLink, RedirectToken, ReferenceId,
    SessionToken, TemplateId,
};

/// The path of the redirect endpoint under `[links] public_url`: links are `…/link/<token>`.
pub const REDIRECT_PATH: &str = "/link/";

/// Where Persona's one-time links point (`withpersona.com/verify?code=…`, `perso.na/…`): a
/// redirect may go there, or to the configured hosted flow, and nowhere else.
const PERSONA_LINK_HOSTS: [&str; 2] = ["withpersona.com", "perso.na"];

/// What every link needs from config (`[links]` and `[persona]`).
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub hosted_flow_url: Url,
    pub template_id: TemplateId,
    pub environment_id: EnvironmentId,
    /// `[links] redirect_uri`: where the hosted flow sends the user when done.
    pub redirect_uri: Option<Url>,
    /// `[links] public_url`: where users reach the daemon (kind = "redirect").
    pub public_url: Option<Url>,
}

/// Which link to build.
#[derive(Debug, Clone, Copy)]
pub enum LinkTarget<'a> {
    /// A new inquiry per visit, tied to the user by the opaque reference id.
    Static { reference_id: &'a ReferenceId },
    /// The pre-created inquiry; the token is needed once the inquiry is `pending` or resumed.
    Session {
        inquiry_id: &'a InquiryId,
        token: Option<&'a SessionToken>,
    },
    /// Persona's single-use link, mailed as Persona made it.
    OneTime { link: &'a OneTimeLink },
    /// The daemon's own endpoint, which obtains a Persona link when the user clicks.
    Redirect { token: &'a RedirectToken },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("[links] hosted_flow_url {0:?} is not an http(s) URL")]
    HostedFlowUrl(String),
    /// The one-time link itself is a secret, so the error only says what is wrong with it.
    #[error("Persona's one-time link is not an http(s) URL ({0})")]
    OneTimeLink(&'static str),
    #[error("[links] public_url is not set, and kind = \"redirect\" links are built on it")]
    NoPublicUrl,
}

/// A link ready to be put in a mail. Debug and Display show only [`MailLink::describe`].
#[derive(Clone, PartialEq, Eq)]
pub struct MailLink {
    url: String,
    kind: LinkKind,
    summary: String,
    secret: bool,
}

impl MailLink {
    /// The URL itself: only for rendering the mail.
    pub fn expose(&self) -> &str {
        &self.url
    }

    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// Whether the URL grants access on its own (session token or one-time code).
    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// A summary that is safe to log: `session inq_… with token`, `static ref_…`, `one-time link`.
    pub fn describe(&self) -> &str {
        &self.summary
    }
}

impl fmt::Debug for MailLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailLink({})", self.summary)
    }
}

impl fmt::Display for MailLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// The link for `target`; with a `language`, Persona's hosted flow opens in it (`language=de-AT`,
/// replacing any `language` already on `hosted_flow_url`), and without one the link names none.
pub fn build_link(
    settings: &LinkSettings,
    target: LinkTarget,
    language: Option<&Locale>,
) -> Result<MailLink, LinkError> {
    match target {
        LinkTarget::Static { reference_id } => {
            let url = hosted_flow_url(
                settings,
                &[
                    ("inquiry-template-id", settings.template_id.as_str()),
                    ("reference-id", reference_id.as_str()),
                    ("environment-id", settings.environment_id.as_str()),
                ],
                language,
            )?;
            Ok(MailLink {
                url,
                kind: LinkKind::Static,
                summary: format!("static {reference_id}"),
                secret: false,
            })
        }
        LinkTarget::Session { inquiry_id, token } => {
            let mut pairs = vec![("inquiry-id", inquiry_id.as_str())];
            if let Some(token) = token {
                pairs.push(("session-token", token.expose()));
            }
            let url = hosted_flow_url(settings, &pairs, language)?;
            let with = if token.is_some() { "with" } else { "without" };
            Ok(MailLink {
                url,
                kind: LinkKind::Session,
                summary: format!("session {inquiry_id} {with} token"),
                secret: token.is_some(),
            })
        }
        LinkTarget::OneTime { link } => {
            let parsed = Url::parse(link.expose())
                .map_err(|_| LinkError::OneTimeLink("it does not parse"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(LinkError::OneTimeLink("wrong scheme or no host"));
            }
            let host = parsed.host_str().unwrap_or_default().to_owned();
            // Persona's one-time link opens the same hosted flow, which takes `language` too.
            let url = match language {
                Some(l) => with_language(parsed, l).into(),
                None => link.expose().to_owned(),
            };
            Ok(MailLink {
                url,
                kind: LinkKind::OneTime,
                summary: format!("one-time link on {host}"),
                secret: true,
            })
        }
        LinkTarget::Redirect { token } => {
            let base = settings.public_url.as_ref().ok_or(LinkError::NoPublicUrl)?;
            let url = format!(
                "{}{REDIRECT_PATH}{}",
                base.as_str().trim_end_matches('/'),
                token.expose()
            );
            Ok(MailLink {
                url,
                kind: LinkKind::Redirect,
                summary: format!("redirect link on {}", base.host_str().unwrap_or_default()),
                secret: true,
            })
        }
    }
}

/// The origins a redirect may send the browser to, as Content-Security-Policy sources (the
/// page's `form-action` also governs the redirect that answers its POST).
pub fn redirect_sources(settings: &LinkSettings) -> Vec<String> {
    let mut sources = vec![settings.hosted_flow_url.origin().ascii_serialization()];
    for host in PERSONA_LINK_HOSTS {
        sources.push(format!("https://{host}"));
        sources.push(format!("https://*.{host}"));
    }
    sources
}

/// Whether a redirect may send the browser to `link`: https (or the configured hosted flow's
/// own scheme) on the hosted flow's host or one of Persona's one-time-link hosts.
pub fn may_redirect_to(settings: &LinkSettings, link: &MailLink) -> bool {
    let Ok(url) = Url::parse(link.expose()) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let flow = &settings.hosted_flow_url;
    let on_flow_host = flow.host_str() == Some(host)
        && flow.port_or_known_default() == url.port_or_known_default()
        && flow.scheme() == url.scheme();
    let on_persona_host = url.scheme() == "https"
        && PERSONA_LINK_HOSTS
            .iter()
            .any(|p| host == *p || host.ends_with(&format!(".{p}")));
    on_flow_host || on_persona_host
}

/// `hosted_flow_url` with `pairs` (then `language` and `redirect-uri`) appended after any
/// query it already has.
fn hosted_flow_url(
    settings: &LinkSettings,
    pairs: &[(&str, &str)],
    language: Option<&Locale>,
) -> Result<String, LinkError> {
    let mut url = settings.hosted_flow_url.clone();
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(LinkError::HostedFlowUrl(url.to_string()));
    }
    if language.is_some() {
        url = without_language(url);
    }
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(l) = language {
            query.append_pair("language", l.as_str());
        }
        if let Some(redirect) = &settings.redirect_uri {
            query.append_pair("redirect-uri", redirect.as_str());
        }
    }
    Ok(url.into())
}

/// `url` with `language=<locale>` appended and no other `language` left.
fn with_language(url: Url, locale: &Locale) -> Url {
    let mut url = without_language(url);
    url.query_pairs_mut()
        .append_pair("language", locale.as_str());
    url
}

/// `url` without any `language` parameter (the user's locale replaces one set in config).
fn without_language(mut url: Url) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "language")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base: &str) -> LinkSettings {
        LinkSettings {
            hosted_flow_url: Url::parse(base).unwrap(),
            template_id: TemplateId::parse("itmpl_ABC").unwrap(),
            environment_id: EnvironmentId::parse("env_XYZ").unwrap(),
            redirect_uri: None,
            public_url: Some(Url::parse("https://verify.example.com").unwrap()),
        }
    }

    fn query(link: &MailLink) -> Vec<(String, String)> {
        Url::parse(link.expose())
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn static_link_names_template_reference_and_environment() {
        let reference_id = ReferenceId::parse("ref_abc123").unwrap();
        let link = build_link(
            &settings("https://inquiry.withpersona.com/verify"),
            LinkTarget::Static {
                reference_id: &reference_id,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            link.expose(),
            "https://inquiry.withpersona.com/verify?inquiry-template-id=itmpl_ABC&reference-id=ref_abc123&environment-id=env_XYZ"
        );
        assert_eq!(link.kind(), LinkKind::Static);
        assert!(!link.is_secret());
    }

    #[test]
    fn session_link_carries_the_token_only_when_given() {
        let s = settings("https://inquiry.withpersona.com/verify");
        let inquiry_id = InquiryId::parse("inq_123").unwrap();
        let bare = build_link(
            &s,
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            bare.expose(),
            "https://inquiry.withpersona.com/verify?inquiry-id=inq_123"
        );
        assert!(!bare.is_secret());

        let token = SessionToken::new("eyJ.a+b/c=.sig");
        let with = build_link(
            &s,
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: Some(&token),
            },
            None,
        )
        .unwrap();
        assert_eq!(
            query(&with),
            [
                ("inquiry-id".into(), "inq_123".into()),
                ("session-token".into(), "eyJ.a+b/c=.sig".into())
            ]
        );
        assert!(with.is_secret());
    }

    #[test]
    fn odd_characters_are_encoded() {
        let mut s = settings("https://inquiry.withpersona.com/verify");
        s.redirect_uri = Some(Url::parse("https://app.example.com/done?a=1&b=2").unwrap());
        let inquiry_id = InquiryId::parse("inq_1").unwrap();
        let token = SessionToken::new("a+b&c=d e/f");
        let link = build_link(
            &s,
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: Some(&token),
            },
            None,
        )
        .unwrap();
        let raw = link.expose();
        assert!(raw.contains("session-token=a%2Bb%26c%3Dd+e%2Ff"), "{raw}");
        assert!(
            raw.contains("redirect-uri=https%3A%2F%2Fapp.example.com%2Fdone%3Fa%3D1%26b%3D2"),
            "{raw}"
        );
        // And it round-trips to the same values.
        let q = query(&link);
        assert_eq!(q[1].1, "a+b&c=d e/f");
        assert_eq!(q[2].1, "https://app.example.com/done?a=1&b=2");
    }

    #[test]
    fn a_query_already_on_the_hosted_flow_url_is_kept() {
        let reference_id = ReferenceId::parse("ref_1").unwrap();
        let link = build_link(
            &settings("https://acme.withpersona.com/verify?language=de&style-variant=dark"),
            LinkTarget::Static {
                reference_id: &reference_id,
            },
            None,
        )
        .unwrap();
        let q = query(&link);
        assert_eq!(q[0], ("language".into(), "de".into()));
        assert_eq!(q[1], ("style-variant".into(), "dark".into()));
        assert_eq!(q[3], ("reference-id".into(), "ref_1".into()));
    }

    #[test]
    fn a_locale_puts_language_on_every_kind_and_replaces_a_configured_one() {
        let de_at = Locale::parse("de-at").unwrap();
        let reference_id = ReferenceId::parse("ref_1").unwrap();
        let inquiry_id = InquiryId::parse("inq_1").unwrap();
        let otl = OneTimeLink::new("https://withpersona.com/verify?code=SECRETCODE");
        let base = settings("https://acme.withpersona.com/verify?language=en&style-variant=dark");
        let targets = [
            LinkTarget::Static {
                reference_id: &reference_id,
            },
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: None,
            },
            LinkTarget::OneTime { link: &otl },
        ];
        for target in targets {
            let link = build_link(&base, target, Some(&de_at)).unwrap();
            let languages: Vec<String> = query(&link)
                .into_iter()
                .filter(|(k, _)| k == "language")
                .map(|(_, v)| v)
                .collect();
            assert_eq!(languages, ["de-AT"], "{}", link.expose());
            let without =
                build_link(&settings("https://x.withpersona.com/verify"), target, None).unwrap();
            assert!(
                !without.expose().contains("language"),
                "{}",
                without.expose()
            );
        }
        let link = build_link(&base, targets[1], Some(&de_at)).unwrap();
        assert_eq!(
            link.expose(),
            "https://acme.withpersona.com/verify?style-variant=dark&inquiry-id=inq_1&language=de-AT"
        );
    }

    #[test]
    fn one_time_links_are_kept_as_is_and_checked() {
        let s = settings("https://inquiry.withpersona.com/verify");
        let otl = OneTimeLink::new("https://withpersona.com/verify?code=SECRETCODE");
        let link = build_link(&s, LinkTarget::OneTime { link: &otl }, None).unwrap();
        assert_eq!(
            link.expose(),
            "https://withpersona.com/verify?code=SECRETCODE"
        );
        assert!(link.is_secret());

        for bad in [
            "javascript:alert(1)",
            "not a url",
            "ftp://withpersona.com/x",
        ] {
            let otl = OneTimeLink::new(bad);
            let err = build_link(&s, LinkTarget::OneTime { link: &otl }, None).unwrap_err();
            assert!(
                !err.to_string().contains(bad),
                "error leaks the link: {err}"
            );
        }
    }

    #[test]
    fn a_non_http_hosted_flow_url_is_refused() {
        let reference_id = ReferenceId::parse("ref_1").unwrap();
        let err = build_link(
            &settings("mailto:a@example.com"),
            LinkTarget::Static {
                reference_id: &reference_id,
            },
            None,
        )
        .unwrap_err();
        assert!(matches!(err, LinkError::HostedFlowUrl(_)));
    }

    #[test]
    fn redirect_links_are_the_public_url_and_the_token() {
        let token = RedirectToken::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap();
        for base in ["https://verify.example.com", "https://verify.example.com/"] {
            let mut s = settings("https://inquiry.withpersona.com/verify");
            s.public_url = Some(Url::parse(base).unwrap());
            let link = build_link(&s, LinkTarget::Redirect { token: &token }, None).unwrap();
            assert_eq!(
                link.expose(),
                "https://verify.example.com/link/abcdefghijklmnopqrstuvwxyz012345"
            );
            assert!(link.is_secret());
            assert!(!format!("{link:?} {link}").contains("abcdefgh"));
        }
        let mut s = settings("https://inquiry.withpersona.com/verify");
        s.public_url = None;
        let err = build_link(&s, LinkTarget::Redirect { token: &token }, None).unwrap_err();
        assert_eq!(err, LinkError::NoPublicUrl);
    }

    #[test]
    fn redirects_go_only_to_the_hosted_flow_or_persona() {
        let s = settings("https://acme.example.com/verify");
        let to = |url: &str| {
            let otl = OneTimeLink::new(url);
            let link = build_link(&s, LinkTarget::OneTime { link: &otl }, None).unwrap();
            may_redirect_to(&s, &link)
        };
        assert!(to("https://withpersona.com/verify?code=A"));
        assert!(to("https://inquiry.withpersona.com/verify?code=A"));
        assert!(to("https://go.perso.na/A"));
        assert!(to("https://acme.example.com/verify?code=A"));
        assert!(!to("http://withpersona.com/verify?code=A"));
        assert!(!to("https://withpersona.com.evil.example/verify?code=A"));
        assert!(!to("https://evilwithpersona.com/verify?code=A"));
        assert!(!to("https://acme.example.com:8443/verify?code=A"));
        assert!(!to("https://example.com/verify?code=A"));
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let s = settings("https://inquiry.withpersona.com/verify");
        let inquiry_id = InquiryId::parse("inq_123").unwrap();
        let token = SessionToken::new("TOKENVALUE");
        let link = build_link(
            &s,
            LinkTarget::Session {
                inquiry_id: &inquiry_id,
                token: Some(&token),
            },
            None,
        )
        .unwrap();
        let shown = format!("{link:?} {link} {}", link.describe());
        assert!(!shown.contains("TOKENVALUE"), "{shown}");
        assert!(!shown.contains("https://"), "{shown}");
        assert_eq!(format!("{link:?}"), "MailLink(session inq_123 with token)");

        let otl = OneTimeLink::new("https://withpersona.com/verify?code=SECRETCODE");
        let link = build_link(&s, LinkTarget::OneTime { link: &otl }, None).unwrap();
        let shown = format!("{link:?} {link}");
        assert!(!shown.contains("SECRETCODE"), "{shown}");
    }
}
