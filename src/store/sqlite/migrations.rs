//! The SQLite migrations, embedded in the binary. The files' bytes must never change once
//! released: sqlx checks each applied migration's checksum at start.

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The migrations of `migrations/sqlite/`, embedded in the binary: (version, description, SQL).
/// A new file there must be listed here too (a unit test compares the two).
const MIGRATIONS: [(i64, &str, &str); 10] = [
    (
        1,
        "users",
        include_str!("../../../migrations/sqlite/0001_users.sql"),
    ),
    (
        2,
        "daemon state",
        include_str!("../../../migrations/sqlite/0002_daemon_state.sql"),
    ),
    (
        3,
        "lease owner",
        include_str!("../../../migrations/sqlite/0003_lease_owner.sql"),
    ),
    (
        4,
        "pending order",
        include_str!("../../../migrations/sqlite/0004_pending_order.sql"),
    ),
    (
        5,
        "drop redundant indexes",
        include_str!("../../../migrations/sqlite/0005_drop_redundant_indexes.sql"),
    ),
    (
        6,
        "verifications",
        include_str!("../../../migrations/sqlite/0006_verifications.sql"),
    ),
    (
        7,
        "user locale",
        include_str!("../../../migrations/sqlite/0007_user_locale.sql"),
    ),
    (
        8,
        "reminder mails",
        include_str!("../../../migrations/sqlite/0008_reminder_mails.sql"),
    ),
    (
        9,
        "redirect tokens",
        include_str!("../../../migrations/sqlite/0009_redirect_tokens.sql"),
    ),
    (
        10,
        "replicas",
        include_str!("../../../migrations/sqlite/0010_replicas.sql"),
    ),
];

/// The migrator over [`MIGRATIONS`]; checksums are those `sqlx::migrate!` would compute, so
/// databases migrated by earlier builds stay valid.
pub(super) static MIGRATOR: std::sync::LazyLock<Migrator> = std::sync::LazyLock::new(|| {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
});

#[cfg(test)]
mod migration_list {
    use super::MIGRATIONS;

    #[test]
    fn every_file_in_migrations_is_embedded_with_its_version_and_description() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join("sqlite");
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
                let (version, name) = stem.split_once('_').unwrap();
                (
                    version.parse().unwrap(),
                    name.replace('_', " "),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        let embedded: Vec<(i64, String, String)> = MIGRATIONS
            .iter()
            .map(|&(v, d, sql)| (v, d.to_owned(), sql.to_owned()))
            .collect();
        assert_eq!(embedded, files);
    }
}
