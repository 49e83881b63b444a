//! The shipped templates load and render; a broken template set is refused at load, naming the file.

use inquiry_mailer::domain::{Locale, ReferenceId};
use inquiry_mailer::links::{LinkTarget, build_link};
use inquiry_mailer::mail::{MailContext, MailKind, TemplateError, Templates};

use crate::support::mail::{context, link_settings, session_link, shipped_templates_dir};

/// A copy of the shipped templates in a temp dir, to break on purpose.
fn copy_of_templates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::support::app::copy_dir(&shipped_templates_dir(), dir.path());
    dir
}

#[test]
fn invite_says_who_asks_links_and_when_it_expires() {
    let templates = Templates::load(&shipped_templates_dir()).unwrap();
    let link = session_link("tok-1");
    let mail = templates
        .render(MailKind::Invite, &context("Alex", link.clone()))
        .unwrap();

    assert_eq!(mail.subject, "Acme Bank: please verify your identity");
    assert!(mail.text.contains("Hello Alex,"), "{}", mail.text);
    assert!(mail.text.contains(link.expose()), "{}", mail.text);
    assert!(
        mail.text.contains("Sunday 29 November 2026 at 14:00 UTC"),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("help@acme.example"));
    assert!(mail.text.contains("If you did not expect this e-mail"));
    assert!(
        mail.html.contains("<!DOCTYPE html>"),
        "the HTML part extends the base layout"
    );
    assert!(
        mail.html.contains(&tera::escape_html(link.expose())),
        "{}",
        mail.html
    );
    assert!(mail.html.contains("Sunday 29 November 2026 at 14:00 UTC"));
}

#[test]
fn renewed_without_name_expiry_or_support_address_still_reads_well() {
    let templates = Templates::load(&shipped_templates_dir()).unwrap();
    let reference_id = ReferenceId::parse("ref_Xyz").unwrap();
    let link = build_link(
        &link_settings(),
        LinkTarget::Static {
            reference_id: &reference_id,
        },
        None,
    )
    .unwrap();
    let ctx = MailContext {
        name_first: None,
        name_last: None,
        link,
        link_expires_at: None,
        app_name: "Acme Bank".to_owned(),
        support_email: None,
        locale: None,
        started: false,
    };
    let mail = templates.render(MailKind::Renewed, &ctx).unwrap();
    assert_eq!(mail.subject, "Acme Bank: your new verification link");
    assert!(mail.text.starts_with("Hello,"), "{}", mail.text);
    assert!(mail.text.contains("does not expire"), "{}", mail.text);
    assert!(mail.text.contains("Reply to this e-mail"), "{}", mail.text);
    assert!(mail.html.contains("does not expire"));
}

#[test]
fn html_is_escaped_and_text_is_left_plain() {
    let templates = Templates::load(&shipped_templates_dir()).unwrap();
    let mail = templates
        .render(
            MailKind::Invite,
            &context("<script>alert(1)</script>", session_link("t")),
        )
        .unwrap();
    assert!(!mail.html.contains("<script>"), "{}", mail.html);
    assert!(mail.html.contains("&lt;script&gt;"), "{}", mail.html);
    assert!(
        mail.text.contains("Hello <script>alert(1)</script>,"),
        "{}",
        mail.text
    );
}

#[test]
fn a_multi_line_subject_is_folded_into_one_line() {
    let dir = copy_of_templates();
    std::fs::write(
        dir.path().join("invite.subject.tera"),
        "\n  {{ app_name }}:\n  verify\n\n",
    )
    .unwrap();
    let templates = Templates::load(dir.path()).unwrap();
    let mail = templates
        .render(MailKind::Invite, &context("A", session_link("t")))
        .unwrap();
    assert_eq!(mail.subject, "Acme Bank: verify");
}

#[test]
fn a_missing_template_is_named() {
    let dir = copy_of_templates();
    std::fs::remove_file(dir.path().join("renewed.html.tera")).unwrap();
    let err = Templates::load(dir.path()).unwrap_err();
    assert!(matches!(err, TemplateError::Missing(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: missing",
            dir.path().join("renewed.html.tera").display()
        )
    );
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let dir = copy_of_templates();
    std::fs::write(
        dir.path().join("renewed.txt.tera"),
        "Hello,\n\n{{ link }} {% if %}\n{{ app_name }}\n",
    )
    .unwrap();
    let err = Templates::load(dir.path()).unwrap_err();
    let shown = err.to_string();
    let file = dir.path().join("renewed.txt.tera").display().to_string();
    assert!(shown.starts_with(&format!("{file} line 3: ")), "{shown}");
}

#[test]
fn an_unknown_variable_is_caught_at_load_not_at_send() {
    let dir = copy_of_templates();
    std::fs::write(
        dir.path().join("invite.html.tera"),
        "{% extends \"base.html.tera\" %}{% block content %}{{ lnk }}{% endblock content %}",
    )
    .unwrap();
    let err = Templates::load(dir.path()).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("invite.html.tera"), "{shown}");
    assert!(shown.contains("lnk"), "{shown}");
}

#[test]
fn a_missing_layout_is_refused() {
    let dir = copy_of_templates();
    std::fs::remove_file(dir.path().join("base.html.tera")).unwrap();
    let err = Templates::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("base.html.tera"), "{err}");
}

#[test]
fn mail_kinds_round_trip_their_database_names() {
    for kind in MailKind::ALL {
        assert_eq!(MailKind::parse(kind.as_str()).unwrap(), kind);
    }
    assert_eq!(MailKind::Invite.as_str(), "invite");
    assert_eq!(MailKind::Renewed.as_str(), "renewed");
    assert_eq!(MailKind::Reminder.as_str(), "reminder");
    assert!(MailKind::parse("nudge").is_err());
}

#[test]
fn a_locale_folder_may_translate_some_mails_and_the_rest_come_from_the_default() {
    let dir = copy_of_templates();
    let fr = dir.path().join("fr");
    std::fs::create_dir(&fr).unwrap();
    std::fs::write(
        fr.join("invite.subject.tera"),
        "{{ app_name }} : vérifiez votre identité\n",
    )
    .unwrap();
    std::fs::write(
        fr.join("invite.txt.tera"),
        "Bonjour, {{ link }} ({{ link_expires_at }})\n",
    )
    .unwrap();
    std::fs::write(
        fr.join("invite.html.tera"),
        "{% extends \"base.html.tera\" %}{% block content %}Bonjour{% endblock content %}",
    )
    .unwrap();
    let templates = Templates::load(dir.path()).unwrap();
    let mut ctx = context("Alex", session_link("t"));
    ctx.locale = Some(Locale::parse("fr-CA").unwrap());
    let invite = templates.render(MailKind::Invite, &ctx).unwrap();
    assert_eq!(invite.subject, "Acme Bank : vérifiez votre identité");
    // The French weekday and Canada's date order, from the locale data.
    assert!(
        invite.text.contains("(dimanche, 2026-11-29, 14:00 UTC)"),
        "{}",
        invite.text
    );
    // The layout it extends is the default one (fr/ has none of its own).
    assert!(invite.html.contains("<!DOCTYPE html>"));
    let renewed = templates.render(MailKind::Renewed, &ctx).unwrap();
    assert_eq!(renewed.subject, "Acme Bank: your new verification link");
    assert!(
        renewed
            .text
            .contains("Sunday 29 November 2026 at 14:00 UTC"),
        "English mail, English date: {}",
        renewed.text
    );
    assert_eq!(
        templates.folder_for(MailKind::Invite, ctx.locale.as_ref()),
        fr.as_path()
    );
    assert_eq!(
        templates.folder_for(MailKind::Reminder, ctx.locale.as_ref()),
        dir.path()
    );
}

#[test]
fn a_started_session_user_is_told_to_finish_in_one_sitting_in_every_mail_that_can_reach_them() {
    let templates = Templates::load(&shipped_templates_dir()).unwrap();
    for locale in [None, Some("de")] {
        for kind in [MailKind::Renewed, MailKind::Reminder] {
            let mut ctx = context("Alex", session_link("t"));
            ctx.locale = locale.map(|l| Locale::parse(l).unwrap());
            let fresh = templates.render(kind, &ctx).unwrap();
            ctx.started = true;
            let started = templates.render(kind, &ctx).unwrap();
            let sentence = match locale {
                None => "you will need to wait for our next e-mail",
                Some(_) => "müssen Sie auf unsere nächste E-Mail warten",
            };
            for (part, text) in [("text", &started.text), ("html", &started.html)] {
                assert!(
                    text.replace('\n', " ").contains(sentence),
                    "{kind} {locale:?} {part}: {text}"
                );
            }
            assert!(!fresh.text.replace('\n', " ").contains(sentence));
            // A session link whose expiry is unknown claims none.
            ctx.link_expires_at = None;
            let unknown = templates.render(kind, &ctx).unwrap();
            for claim in [
                "does not expire",
                "läuft nicht ab",
                "works until",
                "gültig bis",
            ] {
                assert!(!unknown.text.contains(claim), "{kind}: {}", unknown.text);
            }
        }
    }
}
