//! PostgreSQL over TLS: a server of the test's own with TLS on, its certificate for 127.0.0.1
//! signed by a CA the test makes. `sslmode` in the URL means what it means to libpq:
//! `verify-full` with `sslrootcert` checks the certificate and the host, and without a root
//! that vouches for it fails, saying why; `require` encrypts without checking; `disable` does
//! not encrypt. `check` says which, from the server's side of the connection, and `run`'s pool
//! and its LISTEN session both go over TLS.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use inquiry_mailer::store::changes::FEED_APPLICATION_NAME;

use crate::support::daemon::{Daemon, PATIENCE, free_port, listen_on};
use crate::support::postgres::own_server;
use crate::support::stack::Stack;

/// A CA's certificate (PEM), and a server certificate and key it signed for 127.0.0.1.
fn certificates() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    (ca_cert.pem(), server_cert.pem(), server_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_in_the_url_encrypts_and_verifies_as_libpq_means_it() {
    let (ca, cert, key) = certificates();
    let Some(server) = own_server(Some((cert, key))).await else {
        return;
    };
    let database = server.create_database().await;
    let port = free_port();
    let listen = listen_on(port);
    let stack = Stack::start_on_database(
        database.clone(),
        "session",
        &[(listen.0, listen.1.as_str())],
    )
    .await;
    let ca_file = stack.app.write("ca.pem", &ca);
    let config = std::fs::read_to_string(&stack.app.config).unwrap();
    assert!(config.contains(&format!("url = \"{}\"", database.url)));
    let with_url = |query: &str| {
        let text = config.replace(
            &format!("url = \"{}\"", database.url),
            &format!("url = \"{}?{query}\"", database.url),
        );
        std::fs::write(&stack.app.config, text).unwrap();
    };

    // A root that does not vouch for the server (the system's): refused, and check says why.
    with_url("sslmode=verify-full");
    let unverified = stack.run(&["check"]);
    unverified.assert_code(1);
    let line = unverified.check_line("database");
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains(&database.name), "names the database: {line}");
    assert!(
        line.to_lowercase().contains("certificate"),
        "says the certificate is the trouble: {line}"
    );

    // Not encrypted when asked so, encrypted unchecked with `require`.
    with_url("sslmode=disable");
    stack.run(&["migrate"]).assert_code(0);
    let plain = stack.run(&["check"]);
    plain.assert_code(0);
    assert!(
        plain.check_line("database").contains("not encrypted"),
        "{}",
        plain.stdout
    );
    with_url("sslmode=require");
    let required = stack.run(&["check"]);
    required.assert_code(0);
    assert!(
        required.check_line("database").contains(", over TLSv1."),
        "{}",
        required.stdout
    );

    // Checked against the CA the certificate is from, for 127.0.0.1: `run` works over it.
    with_url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));
    let verified = stack.run(&["check"]);
    verified.assert_code(0);
    let line = verified.check_line("database");
    assert!(line.contains(", over TLSv1."), "{line}");
    assert!(line.contains("schema up to date"), "{line}");
    let mut daemon = Daemon::start(&stack, port, &[]);
    daemon.wait_ready().await;
    let admin = database.pool().await;
    sqlx::query(
        "INSERT INTO users (id, email, name_first) VALUES ('usr_tls', 'tls@example.com', 'Sam')",
    )
    .execute(&admin)
    .await
    .unwrap();
    stack
        .smtp
        .wait_for_mail_to("tls@example.com", PATIENCE, || daemon.stderr())
        .await;
    // Every session of the daemon's on the database, the pool's and the LISTEN one, as the
    // server sees it.
    let sessions: Vec<(String, bool)> = sqlx::query_as(
        "SELECT a.application_name::text, s.ssl FROM pg_stat_activity a \
         JOIN pg_stat_ssl s ON s.pid = a.pid \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
           AND a.application_name IN ('inquiry-mailer', $1)",
    )
    .bind(FEED_APPLICATION_NAME)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(
        sessions
            .iter()
            .any(|(name, _)| name == FEED_APPLICATION_NAME),
        "the LISTEN session is there: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|(_, ssl)| *ssl),
        "every session of the daemon is encrypted: {sessions:?}"
    );
    assert!(daemon.stop().await.success(), "{}", daemon.stderr());
    admin.close().await;
    server.stop();
}
