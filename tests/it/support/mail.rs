//! Mail fixtures: a rendered mail for a sample user and transport settings for each backend.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use inquiry_mailer::domain::{Email, EnvironmentId, InquiryId, SessionToken, TemplateId};
use inquiry_mailer::links::{LinkSettings, LinkTarget, MailLink, build_link};
use inquiry_mailer::mail::{
    MailContext, MailKind, MailSettings, OutgoingMail, Templates, TransportKind, new_message_id,
};

pub fn shipped_templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")
}

pub fn link_settings() -> LinkSettings {
    LinkSettings {
        hosted_flow_url: url::Url::parse("https://inquiry.withpersona.com/verify").unwrap(),
        template_id: TemplateId::parse("itmpl_Tmpl123").unwrap(),
        environment_id: EnvironmentId::parse("env_Env123").unwrap(),
        redirect_uri: None,
        public_url: None,
    }
}

pub fn session_link(token: &str) -> MailLink {
    let inquiry_id = InquiryId::parse("inq_Abc123").unwrap();
    let token = SessionToken::new(token);
    build_link(
        &link_settings(),
        LinkTarget::Session {
            inquiry_id: &inquiry_id,
            token: Some(&token),
        },
        None,
    )
    .unwrap()
}

pub fn context(name_first: &str, link: MailLink) -> MailContext {
    MailContext {
        name_first: Some(name_first.to_owned()),
        name_last: Some("Sample".to_owned()),
        link,
        link_expires_at: Some(Utc.with_ymd_and_hms(2026, 11, 29, 14, 0, 0).unwrap()),
        app_name: "Acme Bank".to_owned(),
        support_email: Some("help@acme.example".to_owned()),
        locale: None,
        started: false,
    }
}

/// A ready mail of `kind` to alex@example.com, with a fresh Message-ID.
pub fn outgoing(kind: MailKind, name_first: &str, link: MailLink) -> OutgoingMail {
    let templates = Templates::load(&shipped_templates_dir()).unwrap();
    let rendered = templates.render(kind, &context(name_first, link)).unwrap();
    OutgoingMail {
        message_id: new_message_id("example.com"),
        to: Email::parse("alex@example.com").unwrap(),
        to_name: Some(format!("{name_first} Sample")),
        from: "Verification <verify@example.com>".parse().unwrap(),
        reply_to: Some("Acme Support <help@acme.example>".parse().unwrap()),
        date: Utc.with_ymd_and_hms(2026, 11, 22, 9, 30, 0).unwrap(),
        rendered,
    }
}

pub fn smtp_settings(smtp_url: &str) -> MailSettings {
    MailSettings {
        transport: TransportKind::Smtp,
        smtp_url: smtp_url.to_owned(),
        smtp_password: None,
        file_dir: PathBuf::from("unused"),
        messages_per_minute: NonZeroU32::new(600).unwrap(),
        send_timeout: Duration::from_secs(10),
    }
}

pub fn file_settings(dir: &Path) -> MailSettings {
    MailSettings {
        transport: TransportKind::File,
        smtp_url: String::new(),
        smtp_password: None,
        file_dir: dir.to_owned(),
        messages_per_minute: NonZeroU32::new(600).unwrap(),
        send_timeout: Duration::from_secs(10),
    }
}
