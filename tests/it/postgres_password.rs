//! The daemon on PostgreSQL as a role that must give its password: the test server asks
//! scram-sha-256 of the members of `password_logins` (support/pg_server.rs). With the password
//! in `DATABASE_PASSWORD` it migrates and passes `check`; with it in the `database-password`
//! credential, `run` mails a user it heard through LISTEN, on a connection of its own that
//! needs the password too. Without it, or with a wrong one, `check` fails on the database part
//! and exits 1. The password is in nothing the daemon prints, at debug level included.

use inquiry_mailer::store::changes::FEED_APPLICATION_NAME;

use crate::support::app::Run;
use crate::support::daemon::{Daemon, PATIENCE, free_port, listen_on};
use crate::support::pg_server::PASSWORD_GROUP;
use crate::support::postgres::daemon_table_owners;
use crate::support::stack::{Backend, Stack};

const PASSWORD: &str = "pg-role-password-never-printed-7f3a";
const WRONG: &str = "pg-wrong-password-never-printed-91c2";

fn assert_not_printed(what: &str, text: &str, secret: &str) {
    assert!(!text.contains(secret), "{what} shows the password:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_a_password_connects_with_it_and_only_with_it_and_it_is_never_printed() {
    let port = free_port();
    let listen = listen_on(port);
    let Some(stack) = Stack::start_on(
        Backend::Postgres,
        "session",
        &[(listen.0, listen.1.as_str())],
    )
    .await
    else {
        return;
    };
    let database = stack.database.clone().expect("a PostgreSQL stack");
    let admin = database.pool().await;
    let role = database
        .owning_role(&admin, "app", PASSWORD_GROUP, Some(PASSWORD))
        .await;
    let as_role = database.url_as(&role);
    let config = std::fs::read_to_string(&stack.app.config).unwrap();
    assert!(config.contains(&database.url));
    std::fs::write(&stack.app.config, config.replace(&database.url, &as_role)).unwrap();

    let run_with = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = stack.command(args);
        command.env_remove("DATABASE_PASSWORD");
        command.env("RUST_LOG", "debug");
        for (k, v) in env {
            command.env(k, v);
        }
        Run::from(command.output().expect("run binary"))
    };

    // Without a password, and with a wrong one, the server refuses the role.
    let none = run_with(&["check"], &[]);
    none.assert_code(1);
    let wrong = run_with(&["check"], &[("DATABASE_PASSWORD", WRONG)]);
    wrong.assert_code(1);
    for (what, run) in [("no password", &none), ("a wrong password", &wrong)] {
        let line = run.check_line("database");
        assert!(line.starts_with("FAIL"), "{what}: {line}");
        assert!(line.contains(&database.name), "names the database: {line}");
        assert!(
            line.contains("password authentication failed"),
            "{what}: says why: {line}"
        );
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert_not_printed(&format!("{what}: {stream}"), text, WRONG);
            assert_not_printed(&format!("{what}: {stream}"), text, PASSWORD);
        }
    }

    // From the environment: the schema applies as the role, and `check` passes.
    let env = [("DATABASE_PASSWORD", PASSWORD)];
    let migrate = run_with(&["migrate"], &env);
    migrate.assert_code(0);
    let check = run_with(&["check"], &env);
    let line = check.check_line("database");
    assert!(line.starts_with("ok"), "{line}\n{}", check.stderr);
    assert!(line.contains("schema up to date"), "{line}");
    for run in [&migrate, &check] {
        assert_not_printed("stdout", &run.stdout, PASSWORD);
        assert_not_printed("stderr", &run.stderr, PASSWORD);
    }
    assert_eq!(
        daemon_table_owners(&admin).await,
        [role.as_str()],
        "the role made the daemon's tables"
    );

    // From the credential file (systemd's LoadCredential=): `run` hears a new row at once.
    let credentials = stack.app.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("database-password"),
        format!("{PASSWORD}\n"),
    )
    .unwrap();
    let credentials = credentials.display().to_string();
    let mut daemon = Daemon::start(
        &stack,
        port,
        &[
            ("CREDENTIALS_DIRECTORY", credentials.as_str()),
            ("RUST_LOG", "debug"),
        ],
    );
    daemon.wait_ready().await;
    sqlx::query(
        "INSERT INTO users (id, email, name_first) VALUES ('usr_pw', 'pw@example.com', 'Sam')",
    )
    .execute(&admin)
    .await
    .unwrap();
    stack
        .smtp
        .wait_for_mail_to("pw@example.com", PATIENCE, || daemon.stderr())
        .await;
    let listening: Vec<(String,)> = sqlx::query_as(
        "SELECT usename::text FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(FEED_APPLICATION_NAME)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(
        listening,
        [(role.clone(),)],
        "the LISTEN session logged in as the role"
    );
    assert!(daemon.stop().await.success(), "{}", daemon.stderr());
    assert_not_printed("run's log", &daemon.stderr(), PASSWORD);
    admin.close().await;
}
