//! A broken config stops every command with exit 78 and a message that names the key.

use crate::support::app::TestApp;

#[track_caller]
fn assert_config_error(edits: &[(&str, &str)], expected: &str) {
    let app = TestApp::with_config(edits);
    let run = app.run(&["migrate"]);
    run.assert_code(78);
    assert!(
        run.stderr.contains(expected),
        "stderr should contain {expected:?}:\n{}",
        run.stderr
    );
    assert!(
        !app.db_path().exists(),
        "nothing may be done with a bad config"
    );
}

#[test]
fn a_misspelt_key_fails_with_78_and_a_suggestion() {
    assert_config_error(
        &[("min_resend_interval =", "min_resend_intervall =")],
        "[inquiries] min_resend_intervall is not a known key (did you mean \"min_resend_interval\"?)",
    );
}

#[test]
fn a_bad_duration_fails_with_78_naming_the_key() {
    assert_config_error(
        &[("\nexpires_after = \"7d\"", "\nexpires_after = \"a week\"")],
        "[inquiries] expires_after = \"a week\" is not a duration",
    );
}

#[test]
fn a_bad_link_kind_fails_with_78_naming_the_key() {
    assert_config_error(
        &[("kind = \"session\"", "kind = \"sesion\"")],
        "[links] kind = \"sesion\" is not one of session, one-time, static",
    );
}

#[test]
fn a_missing_required_value_fails_with_78_naming_the_key() {
    assert_config_error(
        &[("inquiry_template_id = \"itmpl_XXXXXXXXXXXXX\"", "")],
        "[persona] inquiry_template_id is required but missing",
    );
}

#[test]
fn a_wrong_type_fails_with_78_naming_the_key() {
    assert_config_error(
        &[("max_resumes = 5", "max_resumes = \"five\"")],
        "[inquiries] max_resumes = \"five\" must be a whole number",
    );
}

#[test]
fn a_missing_file_fails_with_78_naming_it() {
    let run = std::process::Command::new(crate::support::app::BIN)
        .args(["--config", "/nonexistent/inquiry.toml", "migrate"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/inquiry.toml"));
}

#[test]
fn env_overrides_and_credentials_are_applied_and_secrets_stay_hidden() {
    let app = TestApp::new();
    let creds = app.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("persona-api-key"), "sim-key-SECRET-4242\n").unwrap();
    std::fs::write(creds.join("persona-webhook-secret"), "wbhsec_SECRET-7777").unwrap();
    let run = app
        .command(&["check"])
        .env("INQUIRY_MAILER__DATABASE__URL", "sqlite://elsewhere.db")
        .env("INQUIRY_MAILER__LINKS__KIND", "one-time")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        app.path().join("elsewhere.db").exists(),
        "database override ignored:\n{out}"
    );
    assert!(out.contains("links.kind: one-time"), "{out}");
    assert!(out.contains("persona.api key: set"), "{out}");
    assert!(out.contains("server.webhook secret: set"), "{out}");
    assert!(!out.contains("SECRET"), "a secret was printed:\n{out}");
}

#[test]
fn a_loaded_config_never_shows_its_secrets_in_debug_output() {
    let app = TestApp::new();
    let creds = app.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("smtp-password"), "smtp-SECRET-pw").unwrap();
    struct Env(Vec<(String, String)>);
    impl inquiry_mailer::config::Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
        fn vars(&self) -> Vec<(String, String)> {
            self.0.clone()
        }
    }
    let env = Env(vec![
        ("PERSONA_API_KEY".into(), "api-SECRET-key".into()),
        ("PERSONA_WEBHOOK_SECRET".into(), "hook-SECRET".into()),
        ("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()),
    ]);
    let config = inquiry_mailer::config::Config::load_with(&app.config, &env).unwrap();
    assert_eq!(
        config.mail.smtp_password.as_ref().unwrap().expose(),
        "smtp-SECRET-pw"
    );
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("SECRET"), "{debug}");
}
