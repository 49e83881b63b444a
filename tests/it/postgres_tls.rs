//! PostgreSQL over TLS: a server of the test's own with TLS on, its certificate for 127.0.0.1
//! signed by a CA the test makes. `sslmode` in the URL means what it means to libpq:
//! `verify-full` with `sslrootcert` checks the certificate and the host, and without a root
//! that vouches for it fails, saying why; `require` encrypts without checking; `disable` does
//! not encrypt. `check` says which, from the server's side of the connection, and `run`'s pool
//! and its LISTEN session both go over TLS.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use inquiry_mailer::store::changes::FEED_APPLICATION_NAME;

use crate::support::daemon::{Daemon, PATIENCE, free_port, listen_on};
use crate::support::pg_server::CERTIFICATE_GROUP;
use crate::support::postgres::{Server, daemon_table_owners, own_server_with_tls};
use crate::support::stack::Stack;

/// A CA the test makes, and certificates it signs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate and its key (PEM) for `name`: the subject's alternative name (a host or
    /// an address) and its common name (what PostgreSQL's `cert` login reads as the role).
    fn issue(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A server of the test's own with TLS on, its certificate for 127.0.0.1 from this CA,
    /// which also vouches for its clients' certificates.
    async fn server(&self) -> Option<Server> {
        let (cert, key) = self.issue("127.0.0.1");
        own_server_with_tls(cert, key, self.pem.clone()).await
    }
}

/// Points the stack's `[database] url` at `url`.
fn use_url(stack: &Stack, url: &str) {
    let config = std::fs::read_to_string(&stack.app.config).unwrap();
    let current = config
        .lines()
        .find(|l| l.starts_with("url = \"postgres://"))
        .expect("a PostgreSQL url line");
    std::fs::write(
        &stack.app.config,
        config.replace(current, &format!("url = \"{url}\"")),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_in_the_url_encrypts_and_verifies_as_libpq_means_it() {
    let ca = Ca::new();
    let Some(server) = ca.server().await else {
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
    let ca_file = stack.app.write("ca.pem", &ca.pem);
    let with_url = |query: &str| use_url(&stack, &format!("{}?{query}", database.url));

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

/// A role that must log in with a client certificate (`cert` in pg_hba.conf for the members of
/// `certificate_logins`): `sslcert` and `sslkey` in the URL log it in; no certificate, or one
/// for another name, is refused and `check` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_in_the_url_logs_in_a_role_that_needs_one() {
    let ca = Ca::new();
    let Some(server) = ca.server().await else {
        return;
    };
    let database = server.create_database().await;
    let stack = Stack::start_on_database(database.clone(), "session", &[]).await;
    let admin = database.pool().await;
    let role = database
        .owning_role(&admin, "cert", CERTIFICATE_GROUP, None)
        .await;
    let write_pair = |stem: &str, (cert, key): (String, String)| {
        (
            stack.app.write(&format!("{stem}.crt"), &cert),
            stack.app.write(&format!("{stem}.key"), &key),
        )
    };
    let (own_cert, own_key) = write_pair("client", ca.issue(&role));
    let (other_cert, other_key) = write_pair("other", ca.issue("someone_else"));
    let ca_file = stack.app.write("ca.pem", &ca.pem);
    let as_role = database.url_as(&role);
    let verified = format!(
        "{as_role}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    );
    let with_certificate = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "{verified}&sslcert={}&sslkey={}",
            cert.display(),
            key.display()
        )
    };

    use_url(&stack, &verified);
    let none = stack.run(&["check"]);
    none.assert_code(1);
    let line = none.check_line("database");
    assert!(
        line.starts_with("FAIL") && line.contains("certificate"),
        "{line}"
    );
    // The server's own words and SQLSTATE (invalid_authorization_specification), not the line
    // of its C source that sqlx would add.
    assert!(line.contains("(SQLSTATE 28000)"), "{line}");
    assert!(!line.contains(" at line "), "{line}");

    use_url(&stack, &with_certificate(&other_cert, &other_key));
    let other = stack.run(&["check"]);
    other.assert_code(1);
    let line = other.check_line("database");
    assert!(
        line.starts_with("FAIL") && line.contains("certificate authentication failed"),
        "{line}"
    );

    use_url(&stack, &with_certificate(&own_cert, &own_key));
    stack.run(&["migrate"]).assert_code(0);
    let own = stack.run(&["check"]);
    own.assert_code(0);
    let line = own.check_line("database");
    assert!(line.contains(", over TLSv1."), "{line}");
    assert!(line.contains("schema up to date"), "{line}");
    assert_eq!(
        daemon_table_owners(&admin).await,
        [role.as_str()],
        "the role made the daemon's tables"
    );
    admin.close().await;
    server.stop();
}
