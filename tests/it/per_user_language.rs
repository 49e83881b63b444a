//! Per-user language: `users.locale` picks the template folder (`<locale>/`, else
//! `<language>/`, else the default), the date format, and `language=` on the Persona link; a
//! value that is not BCP 47 warns, naming the user, and the default is used. `check` validates
//! every locale folder, `preview` renders in the user's language, and `migrate` adds the
//! column to a database from before, keeping every row.

use chrono::{DateTime, Datelike, Utc};
use url::Url;

use crate::provisioning::link_in;
use crate::support::app::TestApp;
use crate::support::refresh::{by_recipient, user_status};
use crate::support::safety::execute;
use crate::support::sim::open_link;
use crate::support::stack::Stack;

/// The test's own oracle for German weekday names (Sunday first, like chrono's numbering).
const WOCHENTAGE: [&str; 7] = [
    "Sonntag",
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Samstag",
];

/// The link's `language` parameter; a link with two fails the test.
fn language_of(link: &str) -> Option<String> {
    let languages: Vec<String> = Url::parse(link)
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "language")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert!(languages.len() <= 1, "two language parameters: {link}");
    languages.into_iter().next()
}

/// How a mail writes an instant.
type DateForm = fn(DateTime<Utc>) -> String;

fn expiry_of(stack: &Stack, user: &str) -> DateTime<Utc> {
    let status = user_status(stack, user);
    status["inquiries"][0]["expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("{status}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_mail_and_persona_flow_in_their_language() {
    let stack = Stack::start("session", &[]).await;
    let csv = "id,email,name_first,locale\n\
               usr_de,de@example.com,Lena,de\n\
               usr_at,at@example.com,Anton,de-at\n\
               usr_br,br@example.com,Bruna,pt-BR\n\
               usr_none,none@example.com,Nora,\n\
               usr_bad,bad@example.com,Bert,\n";
    let file = stack.app.write("users.csv", csv);
    stack
        .run(&["users", "import", file.to_str().unwrap()])
        .assert_code(0);
    // The application, not the operator, wrote a value that is no language tag.
    execute(
        &stack,
        "UPDATE users SET locale = 'english please' WHERE id = 'usr_bad'",
    )
    .await;

    // A fresh session user's preview states the expiry their inquiry will get, in German.
    let preview = stack.run(&["preview", "--user", "usr_de"]);
    preview.assert_code(0);
    assert!(
        preview
            .stdout
            .contains("Bitte bestätigen Sie Ihre Identität")
            && preview.stdout.contains("Der Link ist gültig bis")
            && preview.stdout.contains("language=de"),
        "{}",
        preview.stdout
    );
    let preview = stack.run(&["preview", "--user", "usr_none"]);
    assert!(
        preview.stdout.contains("The link works until")
            && !preview.stdout.contains("does not expire")
            && !preview.stdout.contains("language="),
        "{}",
        preview.stdout
    );

    let once = stack.run(&["once", "--job", "provision"]);
    once.assert_code(0);
    let warning = once
        .stderr
        .lines()
        .find(|l| l.contains("english please"))
        .unwrap_or_else(|| panic!("no warning about the bad locale:\n{}", once.stderr));
    assert!(
        warning.contains("WARN") && warning.contains("usr_bad"),
        "{warning}"
    );

    let mails = stack.smtp.wait_for_messages(5).await;
    let per_user = by_recipient(&mails);
    let mail_of = |user: &str| per_user[&format!("{}@example.com", &user[4..])][0];
    // (user, subject start, language on the link, how the expiry date is written)
    let expected: [(&str, &str, Option<&str>, DateForm); 5] = [
        (
            "usr_de",
            "Example App: Bitte bestätigen",
            Some("de"),
            |t| {
                format!(
                    "{}, {}, {} UTC",
                    WOCHENTAGE[t.weekday().num_days_from_sunday() as usize],
                    t.format("%d.%m.%Y"),
                    t.format("%H:%M")
                )
            },
        ),
        // de-AT has no folder: de/ is used, and the date is Austrian (ISO order).
        (
            "usr_at",
            "Example App: Bitte bestätigen",
            Some("de-AT"),
            |t| {
                format!(
                    "{}, {}, {} UTC",
                    WOCHENTAGE[t.weekday().num_days_from_sunday() as usize],
                    t.format("%Y-%m-%d"),
                    t.format("%H:%M")
                )
            },
        ),
        // pt-BR has no folder: the default templates, in their own (English) date form.
        ("usr_br", "Example App: please verify", Some("pt-BR"), |t| {
            t.format("%A %-d %B %Y at %H:%M UTC").to_string()
        }),
        ("usr_none", "Example App: please verify", None, |t| {
            t.format("%A %-d %B %Y at %H:%M UTC").to_string()
        }),
        ("usr_bad", "Example App: please verify", None, |t| {
            t.format("%A %-d %B %Y at %H:%M UTC").to_string()
        }),
    ];
    for (user, subject, language, date) in expected {
        let mail = mail_of(user);
        assert!(
            mail.subject.starts_with(subject),
            "{user}: {}",
            mail.subject
        );
        let link = link_in(mail);
        assert_eq!(language_of(&link).as_deref(), language, "{user}: {link}");
        let html = mail.html_part.as_deref().unwrap();
        assert!(
            html.contains(&format!("language={}", language.unwrap_or(""))) == language.is_some(),
            "{user}: the HTML part's link"
        );
        let text = mail.text_part.as_deref().unwrap().replace('\n', " ");
        let when = date(expiry_of(&stack, user));
        assert!(text.contains(&when), "{user}: {when:?} not in:\n{text}");
        let opened = open_link(&link).await;
        assert_eq!(opened.status, 200, "{user}: {link}: {}", opened.body);
    }
    let html = mail_of("usr_de").html_part.clone().unwrap();
    assert!(html.contains("<html lang=\"de\">"), "{html}");
    assert!(html.contains("Fragen? Schreiben Sie") || html.contains("Fragen? Antworten"));
}

#[test]
fn users_add_takes_a_locale_in_canonical_spelling_and_refuses_a_bad_one() {
    let app = TestApp::new();
    app.run(&["migrate"]).assert_code(0);
    app.run(&[
        "users",
        "add",
        "--id",
        "usr_1",
        "--email",
        "a@example.com",
        "--locale",
        "pt-br",
    ])
    .assert_code(0);
    let bad = app.run(&[
        "users",
        "add",
        "--id",
        "usr_2",
        "--email",
        "b@example.com",
        "--locale",
        "not a tag",
    ]);
    bad.assert_code(2);
    assert!(
        bad.stderr.contains("usr_2") && bad.stderr.contains("\"not a tag\""),
        "{}",
        bad.stderr
    );
    let csv = app.write(
        "u.csv",
        "id,email,locale\nusr_3,c@example.com,de\nusr_4,d@example.com,12\n",
    );
    let import = app.run(&["users", "import", csv.to_str().unwrap()]);
    import.assert_code(1);
    assert!(
        import.stderr.contains("line 3") && import.stderr.contains("usr_4"),
        "{}",
        import.stderr
    );
    let rows = locales_of(&app);
    assert_eq!(
        rows,
        [
            ("usr_1".to_owned(), Some("pt-BR".to_owned())),
            ("usr_3".to_owned(), Some("de".to_owned()))
        ]
    );
}

/// (id, locale) of every users row.
fn locales_of(app: &TestApp) -> Vec<(String, Option<String>)> {
    let db = app.db_path();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = crate::support::safety::connect(&db).await;
        sqlx::query_as("SELECT id, locale FROM users ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    })
}

#[test]
fn check_validates_every_locale_folder() {
    let app = TestApp::new();
    let de = app.path().join("templates/de");
    let check = app.run(&["check"]);
    assert!(
        check
            .stdout
            .contains("locale folders de/ (invite, renewed, reminder)"),
        "{}",
        check.stdout
    );

    std::fs::write(de.join("invite.txt.tera"), "Hallo {{ name_first }\n").unwrap();
    let check = app.run(&["check"]);
    assert!(
        check.stdout.contains("FAIL templates")
            && check.stdout.contains("de/invite.txt.tera line 1"),
        "{}",
        check.stdout
    );

    // A folder translating a mail only in part, and a folder that names no locale.
    std::fs::write(de.join("invite.txt.tera"), "Hallo\n").unwrap();
    std::fs::remove_file(de.join("reminder.html.tera")).unwrap();
    let check = app.run(&["check"]);
    assert!(
        check.stdout.contains("de/reminder.html.tera: missing"),
        "{}",
        check.stdout
    );
    std::fs::remove_dir_all(&de).unwrap();
    std::fs::create_dir(app.path().join("templates/english please")).unwrap();
    let check = app.run(&["check"]);
    assert!(
        check.stdout.contains("english please") && check.stdout.contains("BCP 47"),
        "{}",
        check.stdout
    );
}

#[test]
fn migrate_adds_locale_to_a_database_from_before_and_keeps_every_row() {
    let app = TestApp::new();
    let db = app.db_path();
    let tables = ["users", "user_states", "inquiries", "mails", "events"];
    let before = tokio::runtime::Runtime::new().unwrap().block_on(async {
        // The database as release 1 left it: migrations 1 to 5, with a user in every state
        // of the outbox.
        let old = tempfile::tempdir().unwrap();
        let repo = crate::support::app::repo_root().join("migrations").join("sqlite");
        for entry in std::fs::read_dir(&repo).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0006" {
                std::fs::copy(&path, old.path().join(&name)).unwrap();
            }
        }
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        std::fs::File::create(&db).unwrap();
        let mut conn = crate::support::safety::connect(&db).await;
        migrator.run(&mut conn).await.unwrap();
        for statement in [
            "INSERT INTO users (id, email, name_first) VALUES ('usr_1', 'a@example.com', 'Ana'), \
             ('usr_2', 'b@example.com', NULL)",
            "INSERT INTO user_states (user_id, reference_id, state, row_fingerprint, generation, \
             last_mailed_at, created_at, updated_at) VALUES \
             ('usr_1', 'ref_1', 'invited', 'fp1', 1, '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z'), \
             ('usr_2', 'ref_2', 'pending', 'fp2', 1, NULL, '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z')",
            "INSERT INTO inquiries (id, user_id, generation, idempotency_key, key_created_at, inquiry_id, \
             status, template_id, created_at, updated_at) VALUES \
             (7, 'usr_1', 1, 'key-1', '2026-11-01T00:00:00.000Z', 'inq_1', 'created', 'itmpl_1', \
              '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z')",
            "INSERT INTO mails (user_id, inquiry_row, kind, status, message_id, attempts, next_attempt_at, \
             sent_at, created_at, updated_at) VALUES \
             ('usr_1', 7, 'invite', 'sent', '<m1@x>', 1, '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z', \
              '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:00.000Z'), \
             ('usr_1', 7, 'renewed', 'queued', '<m2@x>', 2, '2026-11-02T00:00:00.000Z', NULL, \
              '2026-11-02T00:00:00.000Z', '2026-11-02T00:00:00.000Z')",
            "INSERT INTO events (user_id, kind, detail, at) VALUES ('usr_1', 'mail.sent', 'invite', '2026-11-01T00:00:00.000Z')",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        dump(&mut conn, &tables).await
    });

    let migrate = app.run(&["migrate"]);
    migrate.assert_code(0);

    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut conn = crate::support::safety::connect(&db).await;
        assert_eq!(dump(&mut conn, &tables).await, before, "every row is kept as it was");
        let locales: Vec<Option<String>> = sqlx::query_scalar("SELECT locale FROM users ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(locales, [None, None]);
        // The outbox takes reminders now, once per user and entry.
        let remind = "INSERT INTO mails (user_id, kind, status, message_id, next_attempt_at, created_at, \
                      updated_at, reminder_after) VALUES ('usr_1', 'reminder', 'queued', ?, \
                      '2026-11-03T00:00:00.000Z', '2026-11-03T00:00:00.000Z', '2026-11-03T00:00:00.000Z', 172800)";
        sqlx::query(remind).bind("<r1@x>").execute(&mut conn).await.unwrap();
        assert!(sqlx::query(remind).bind("<r2@x>").execute(&mut conn).await.is_err());
    });
    let status = app.run(&["status", "--user", "usr_1", "--json"]);
    status.assert_code(0);
    assert_eq!(status.json()["mails"].as_array().unwrap().len(), 3);
}

/// Every row of `tables` as text, columns in a fixed order, so two dumps compare equal exactly
/// when nothing in them changed (columns added since do not show).
async fn dump(conn: &mut sqlx::SqliteConnection, tables: &[&str]) -> Vec<String> {
    let columns = [
        (
            "users",
            "id, email, name_first, name_last, birthdate, phone_number, created_at",
        ),
        (
            "user_states",
            "user_id, reference_id, state, reason, outcome, row_fingerprint, generation, last_mailed_at, lease_until, lease_owner, created_at, updated_at",
        ),
        (
            "inquiries",
            "id, user_id, generation, idempotency_key, inquiry_id, status, template_id, expires_at, created_at, updated_at",
        ),
        (
            "mails",
            "id, user_id, inquiry_row, kind, status, message_id, attempts, next_attempt_at, link_expires_at, sent_at, last_error, created_at, updated_at",
        ),
        ("events", "id, user_id, inquiry_id, kind, detail, at"),
    ];
    let mut out = Vec::new();
    for table in tables {
        let (_, cols) = columns.iter().find(|(t, _)| t == table).unwrap();
        let sql = format!("SELECT json_array({cols}) FROM {table} ORDER BY 1");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} has rows to keep");
        out.extend(rows.into_iter().map(|r| format!("{table} {r}")));
    }
    out
}
