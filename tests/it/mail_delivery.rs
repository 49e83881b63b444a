//! Mails go out through each transport as the recipient's client will see them: through a real
//! SMTP server (aiosmtpd), into `.eml` files, or into memory; failures say whether to retry.

use std::num::NonZeroU32;
use std::time::Duration;

use inquiry_mailer::domain::{Email, SecretText};
use inquiry_mailer::mail::{MailKind, SendError, Transport};

use crate::support::mail::{file_settings, outgoing, session_link, smtp_settings};
use crate::support::relay::CountingRelay;
use crate::support::smtp::{SmtpServer, Tls, eml_files, parse_eml_files};

/// What the HTML part must contain for a link: Tera's escaping of it.
fn in_html(link: &str) -> String {
    tera::escape_html(link)
}

#[tokio::test]
async fn invite_and_renewed_arrive_as_multipart_alternative_with_our_headers() {
    let server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let invite_link = session_link("first-token");
    let renewed_link = session_link("second-token");
    let invite = outgoing(MailKind::Invite, "Alex", invite_link.clone());
    let renewed = outgoing(MailKind::Renewed, "Alex", renewed_link.clone());

    transport.send(&invite).await.unwrap();
    transport.send(&renewed).await.unwrap();

    let mails = server.wait_for_messages(2).await;
    assert_eq!(mails.len(), 2);
    for (got, (sent, link)) in mails
        .iter()
        .zip([(&invite, &invite_link), (&renewed, &renewed_link)])
    {
        assert_eq!(got.content_type, "multipart/alternative");
        assert_eq!(got.part_types, ["text/plain", "text/html"]);
        let text = got.text_part.as_deref().unwrap();
        let html = got.html_part.as_deref().unwrap();
        assert!(text.contains(link.expose()), "{text}");
        assert!(html.contains(&in_html(link.expose())), "{html}");
        assert_eq!(got.message_id, sent.message_id);
        assert_eq!(got.subject, sent.rendered.subject);
        assert_eq!(got.from, "Verification <verify@example.com>");
        assert_eq!(
            got.reply_to.as_deref(),
            Some("Acme Support <help@acme.example>")
        );
        assert_eq!(got.to, "Alex Sample <alex@example.com>");
        assert_eq!(got.rcpt_to, "alex@example.com");
        let date = chrono::DateTime::parse_from_rfc2822(got.date.as_deref().unwrap()).unwrap();
        assert_eq!(date, sent.date);
        assert!(got.raw.contains("Auto-Submitted: auto-generated"));
    }
    assert_eq!(mails[0].subject, "Acme Bank: please verify your identity");
    assert_eq!(mails[1].subject, "Acme Bank: your new verification link");
}

#[tokio::test]
async fn a_hostile_name_is_escaped_in_html_and_plain_in_text() {
    let server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let mail = outgoing(
        MailKind::Invite,
        "<script>alert(1)</script>",
        session_link("t"),
    );

    transport.send(&mail).await.unwrap();

    let got = &server.wait_for_messages(1).await[0];
    let html = got.html_part.as_deref().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
        "{html}"
    );
    assert!(
        got.text_part
            .as_deref()
            .unwrap()
            .contains("Hello <script>alert(1)</script>,")
    );
}

#[tokio::test]
async fn sending_the_same_mail_twice_keeps_its_message_id() {
    let server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let mail = outgoing(MailKind::Invite, "Alex", session_link("t"));

    transport.send(&mail).await.unwrap();
    transport.send(&mail).await.unwrap();

    let mails = server.wait_for_messages(2).await;
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].message_id, mail.message_id);
    assert_eq!(mails[1].message_id, mail.message_id);
}

#[tokio::test]
async fn a_server_that_is_down_is_a_transient_failure() {
    let mut server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    server.stop();

    let err = transport
        .send(&outgoing(MailKind::Invite, "Alex", session_link("t")))
        .await
        .unwrap_err();

    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    assert!(
        err.to_string().contains(&server.addr().to_string()),
        "{err}"
    );
    assert!(transport.check().await.is_err());
}

#[tokio::test]
async fn a_retried_send_gets_through_once_the_server_is_back() {
    let mut server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    // A first mail puts a connection in the pool; the outage kills it.
    transport
        .send(&outgoing(MailKind::Invite, "Alex", session_link("a")))
        .await
        .unwrap();
    server.stop();
    let mail = outgoing(MailKind::Renewed, "Alex", session_link("b"));
    let sending = tokio::spawn({
        let transport = transport.clone();
        let mail = mail.clone();
        async move { transport.send_with_retry(&mail, 8).await }
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();

    let result = tokio::time::timeout(Duration::from_secs(60), sending)
        .await
        .unwrap()
        .unwrap();
    result.unwrap();
    let mails = server.wait_for_messages(2).await;
    assert_eq!(mails.last().unwrap().message_id, mail.message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sends_share_a_few_connections() {
    let server = SmtpServer::start();
    let relay = CountingRelay::start(server.addr()).await;
    let transport = Transport::from_settings(&smtp_settings(&relay.smtp_url())).unwrap();
    let mails: Vec<_> = (0..24)
        .map(|i| {
            outgoing(
                MailKind::Invite,
                "Alex",
                session_link(&format!("token-{i}")),
            )
        })
        .collect();

    let mut sends = tokio::task::JoinSet::new();
    for mail in mails.clone() {
        let transport = transport.clone();
        sends.spawn(async move { transport.send(&mail).await });
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }

    let received = server.wait_for_messages(mails.len()).await;
    assert_eq!(received.len(), mails.len());
    let opened = relay.connections();
    assert!(
        (1..=4).contains(&opened),
        "{} concurrent mails opened {opened} connections (the pool keeps 4)",
        mails.len()
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_within_the_same_send() {
    let mut server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let first = outgoing(MailKind::Invite, "Alex", session_link("a"));
    let second = outgoing(MailKind::Renewed, "Alex", session_link("b"));
    transport.send(&first).await.unwrap();

    // The pooled connection dies with the old server process.
    server.restart();
    transport
        .send(&second)
        .await
        .expect("one attempt: the dead pooled connection is replaced, not reported");

    let mails = server.wait_for_messages(2).await;
    let ids: Vec<_> = mails.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids, [first.message_id, second.message_id]);
}

#[tokio::test]
async fn a_message_the_server_refuses_is_a_permanent_failure_and_is_not_retried() {
    // aiosmtpd answers 552 to a message over its size limit.
    let server = SmtpServer::start_with_size_limit(1000);
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let mail = outgoing(MailKind::Invite, "Alex", session_link("t"));

    let err = transport.send(&mail).await.unwrap_err();
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("552"), "{err}");

    // With retries allowed, a permanent failure still returns after one attempt, at once.
    let err = tokio::time::timeout(Duration::from_secs(5), transport.send_with_retry(&mail, 5))
        .await
        .expect("no retry for a permanent failure")
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent(_)));
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn check_reports_a_reachable_smtp_server() {
    let server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let report = transport.check().await.unwrap();
    assert!(report.contains(&server.addr().to_string()), "{report}");
}

#[tokio::test]
async fn the_file_transport_writes_one_eml_per_message_and_overwrites_on_resend() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("outbox").join("nested");
    let transport = Transport::from_settings(&file_settings(&dir)).unwrap();
    let first = outgoing(MailKind::Invite, "Alex", session_link("one"));
    let second = outgoing(MailKind::Invite, "Sam", session_link("two"));

    transport.send(&first).await.unwrap();
    transport.send(&second).await.unwrap();
    let files = eml_files(&dir);
    assert_eq!(
        files.len(),
        2,
        "the missing directory was created: {files:?}"
    );
    assert!(transport.check().await.unwrap().contains("writable"));

    let mut resent = first.clone();
    resent.date += chrono::Duration::hours(1);
    transport.send(&resent).await.unwrap();

    let files = eml_files(&dir);
    assert_eq!(files.len(), 2, "a resend overwrites: {files:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".eml"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    let mails = parse_eml_files(&files);
    let got_first = mails
        .iter()
        .find(|m| m.message_id == first.message_id)
        .unwrap();
    let date = chrono::DateTime::parse_from_rfc2822(got_first.date.as_deref().unwrap()).unwrap();
    assert_eq!(date, resent.date, "the file holds the latest send");
    assert_eq!(got_first.content_type, "multipart/alternative");
    assert!(
        got_first
            .text_part
            .as_deref()
            .unwrap()
            .contains("session-token=one")
    );
    let got_second = mails
        .iter()
        .find(|m| m.message_id == second.message_id)
        .unwrap();
    assert!(
        got_second
            .text_part
            .as_deref()
            .unwrap()
            .contains("Hello Sam,")
    );
}

#[tokio::test]
async fn the_memory_transport_records_what_it_sent_and_can_be_told_to_fail() {
    let transport = Transport::memory();
    let outbox = transport.outbox().unwrap().clone();
    let mail = outgoing(MailKind::Invite, "Alex", session_link("secret-token"));

    outbox.fail_next([SendError::Transient("try later".into())]);
    let err = transport.send(&mail).await.unwrap_err();
    assert!(err.is_transient());
    assert!(outbox.is_empty());

    transport.send(&mail).await.unwrap();
    let sent = outbox.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mail.message_id, mail.message_id);
    assert!(sent[0].raw.contains("multipart/alternative"));
    assert!(sent[0].raw.contains("secret-token"));
    let shown = format!("{sent:?} {mail:?}");
    assert!(
        !shown.contains("secret-token"),
        "Debug leaks the link: {shown}"
    );
}

#[tokio::test]
async fn messages_per_minute_holds_back_the_send_over_the_limit_across_clones() {
    let transport = Transport::memory().with_messages_per_minute(NonZeroU32::new(2).unwrap());
    let clone = transport.clone();
    let outbox = transport.outbox().unwrap().clone();
    let mail = outgoing(MailKind::Invite, "Alex", session_link("t"));

    transport.send(&mail).await.unwrap();
    clone.send(&mail).await.unwrap();
    // The third send needs a slot that frees up only 30 s later: it must still be waiting.
    let third = tokio::time::timeout(Duration::from_millis(300), transport.send(&mail)).await;

    assert!(third.is_err(), "the third send went through at once");
    assert_eq!(outbox.len(), 2);
}
#[tokio::test]
async fn a_non_ascii_recipient_the_server_cannot_take_is_permanent() {
    // aiosmtpd does not offer SMTPUTF8 unless asked to, so lettre refuses this envelope.
    let server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let mut mail = outgoing(MailKind::Invite, "Jöran", session_link("t"));
    mail.to = Email::parse("jöran@example.com").unwrap();

    let err = transport.send(&mail).await.unwrap_err();

    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
}

#[tokio::test]
async fn non_ascii_names_arrive_intact() {
    let server = SmtpServer::start();
    let transport = Transport::from_settings(&smtp_settings(&server.url())).unwrap();
    let mail = outgoing(MailKind::Invite, "Zoë", session_link("t"));

    transport.send(&mail).await.unwrap();

    let got = &server.wait_for_messages(1).await[0];
    assert_eq!(got.to, "Zoë Sample <alex@example.com>");
    assert!(got.text_part.as_deref().unwrap().contains("Hello Zoë,"));
    assert!(got.html_part.as_deref().unwrap().contains("Hello Zoë,"));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_transient() {
    // Accepts the connection, then says nothing: no greeting ever comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = smtp_settings(&format!("smtp://{}", silent.local_addr().unwrap()));
    settings.send_timeout = Duration::from_millis(300);
    let transport = Transport::from_settings(&settings).unwrap();

    let result = tokio::time::timeout(
        Duration::from_secs(20),
        transport.send(&outgoing(MailKind::Invite, "Alex", session_link("t"))),
    )
    .await
    .expect("the send timeout bounds the send");

    assert!(matches!(result, Err(SendError::Transient(_))), "{result:?}");
    drop(silent);
}

#[tokio::test]
async fn starttls_required_against_a_server_without_it_is_a_transient_server_problem() {
    let server = SmtpServer::start();
    let url = format!("{}?tls=required", server.url());
    let transport = Transport::from_settings(&smtp_settings(&url)).unwrap();

    let err = transport
        .send(&outgoing(MailKind::Invite, "Alex", session_link("t")))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    assert!(err.to_string().contains("STARTTLS"), "{err}");

    let check = transport.check().await.unwrap_err().to_string();
    assert!(check.contains("STARTTLS"), "{check}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn smtps_speaks_tls_from_the_first_byte_and_refuses_an_untrusted_certificate() {
    let server = SmtpServer::start_with_tls(Tls::Implicit);
    let endpoint = format!("smtps://localhost:{}", server.addr().port());
    let transport = Transport::from_settings(&smtp_settings(&endpoint)).unwrap();

    let err = transport
        .send(&outgoing(MailKind::Invite, "Alex", session_link("t")))
        .await
        .unwrap_err();

    // Had the client waited for a plain greeting, this would be a timeout, not the certificate.
    assert!(matches!(err, SendError::Transient(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&endpoint), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    let check = transport.check().await.unwrap_err().to_string();
    assert!(check.to_lowercase().contains("certificate"), "{check}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn starttls_when_offered_refuses_an_untrusted_certificate_instead_of_sending_in_clear() {
    let server = SmtpServer::start_with_tls(Tls::StartTls);
    for tls in ["required", "opportunistic"] {
        let url = format!("smtp://localhost:{}?tls={tls}", server.addr().port());
        let transport = Transport::from_settings(&smtp_settings(&url)).unwrap();

        let err = transport
            .send(&outgoing(MailKind::Invite, "Alex", session_link("t")))
            .await
            .unwrap_err();

        assert!(matches!(err, SendError::Transient(_)), "tls={tls}: {err:?}");
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "tls={tls}: {err}"
        );
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_server_that_requires_login_takes_mail_with_the_right_password_only() {
    let server = SmtpServer::start_with_login("bob@example.com", "right-password");
    let url = format!("smtp://bob%40example.com@{}", server.addr());
    let with_password = |password: Option<&str>| {
        let mut settings = smtp_settings(&url);
        if password.is_none() {
            settings.smtp_url = server.url();
        }
        settings.smtp_password = password.map(SecretText::new);
        Transport::from_settings(&settings).unwrap()
    };
    let mail = outgoing(MailKind::Invite, "Alex", session_link("t"));

    with_password(Some("right-password"))
        .send(&mail)
        .await
        .expect("logged in, the mail is taken");

    let wrong = with_password(Some("wrong-password"))
        .send(&mail)
        .await
        .unwrap_err();
    assert!(matches!(wrong, SendError::Transient(_)), "{wrong:?}");
    let text = wrong.to_string();
    assert!(text.contains("refused our login"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");

    // Without a login the server refuses MAIL with 530: about us, not the mail.
    let anonymous = with_password(None).send(&mail).await.unwrap_err();
    assert!(
        matches!(anonymous, SendError::Transient(_)),
        "{anonymous:?}"
    );
    assert!(anonymous.to_string().contains("530"), "{anonymous}");

    assert_eq!(server.wait_for_messages(1).await.len(), 1);
}
