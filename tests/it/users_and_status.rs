//! Operators fill `users` from the command line and read back where everyone stands.

use crate::support::app::TestApp;

const CSV: &str = "id,email,name_first,name_last,birthdate,phone_number
usr_ABC123,alex@example.com,Alexander,Sample,1977-08-31,+1 415 555 0100
usr_2,bea@example.com,Bea,Second,,
usr_3,not-an-email,Cy,Third,1990-01-01,
usr_4,dee@example.com,Dee,Fourth,1990-02-30,
usr_5,eve@example.com,,,,
";

#[test]
fn import_lands_good_rows_reports_bad_ones_by_line_and_is_idempotent() {
    let app = TestApp::new();
    let csv = app.write("users.csv", CSV);
    let csv = csv.to_str().unwrap();

    let run = app.run(&["users", "import", csv]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("3 added, 0 updated, 0 unchanged, 2 rejected"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("users.csv line 4: user \"usr_3\": e-mail \"not-an-email\" is not valid"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "users.csv line 5: user \"usr_4\": birthdate \"1990-02-30\" is not a real date"
        ),
        "{}",
        run.stderr
    );

    let status = app.run(&["status", "--json"]);
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["users"]["pending"], 3, "{json}");
    for state in ["invited", "started", "finished", "skipped"] {
        assert_eq!(json["users"][state], 0, "{json}");
    }

    let again = app.run(&["users", "import", csv]);
    assert!(
        again
            .stdout
            .contains("0 added, 0 updated, 3 unchanged, 2 rejected"),
        "{}",
        again.stdout
    );
    assert_eq!(app.run(&["status", "--json"]).json()["users"]["pending"], 3);
}

#[test]
fn a_csv_with_an_unknown_column_names_it_and_lands_nothing() {
    let app = TestApp::new();
    let csv = app.write("users.csv", "id,emial\nusr_1,a@example.com\n");
    let run = app.run(&["users", "import", csv.to_str().unwrap()]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("line 1: \"emial\" is not a users column (did you mean \"email\"?)"),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_lines_are_reported_and_the_rest_lands() {
    let app = TestApp::new();
    let csv = app.write(
        "users.csv",
        "id,email\nusr_1,a@example.com\nusr_2,b@example.com,extra\n\"usr_3,c@example.com\nusr_4,d@example.com\n",
    );
    let run = app.run(&["users", "import", csv.to_str().unwrap()]);
    assert!(
        run.stderr
            .contains("line 3: has 3 fields, the header has 2"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("1 added"), "{}", run.stdout);
}

#[test]
fn users_add_then_status_for_one_user() {
    let app = TestApp::new();
    app.run(&[
        "users",
        "add",
        "--id",
        "usr_ABC123",
        "--email",
        "alex@example.com",
        "--name-first",
        "Alexander",
        "--name-last",
        "Sample",
        "--birthdate",
        "1977-08-31",
    ])
    .assert_code(0);
    let dup = app.run(&[
        "users",
        "add",
        "--id",
        "usr_ABC123",
        "--email",
        "alex@example.com",
    ]);
    dup.assert_code(2);
    assert!(
        dup.stderr.contains("user usr_ABC123 already exists"),
        "{}",
        dup.stderr
    );
    let bad = app.run(&["users", "add", "--id", "usr_9", "--email", "nope"]);
    bad.assert_code(2);
    assert!(
        bad.stderr
            .contains("user usr_9: e-mail \"nope\" is not valid"),
        "{}",
        bad.stderr
    );

    let one = app.run(&["status", "--json", "--user", "usr_ABC123"]);
    one.assert_code(0);
    let json = one.json();
    assert_eq!(json["user"]["id"], "usr_ABC123");
    assert_eq!(json["user"]["state"], "pending");
    assert!(json["inquiries"].as_array().unwrap().is_empty());

    let missing = app.run(&["status", "--user", "usr_nobody"]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("usr_nobody"), "{}", missing.stderr);
}

#[test]
fn migrations_run_twice_are_a_no_op() {
    let app = TestApp::new();
    let first = app.run(&["migrate"]);
    first.assert_code(0);
    assert!(first.stdout.contains("applied"), "{}", first.stdout);
    let tables_before = table_list(&app);
    let second = app.run(&["migrate"]);
    second.assert_code(0);
    assert!(second.stdout.contains("up to date"), "{}", second.stdout);
    assert_eq!(tables_before, table_list(&app));
    assert!(tables_before.contains("users") && tables_before.contains("mails"));
}

fn table_list(app: &TestApp) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(sorted(r[0] for r in c.execute(\"select name from sqlite_master where type='table'\")))")
        .arg(app.db_path())
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
