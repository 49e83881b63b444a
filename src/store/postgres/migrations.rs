//! The PostgreSQL migrations, embedded in the binary. As on SQLite, a file's bytes never change
//! once released: sqlx checks each applied migration's checksum at start.

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The migrations of `migrations/postgres/`: (version, description, SQL). A new file there
/// must be listed here too (a unit test compares the two).
const MIGRATIONS: [(i64, &str, &str); 3] = [
    (
        1,
        "schema",
        include_str!("../../../migrations/postgres/0001_schema.sql"),
    ),
    (
        2,
        "new user notify",
        include_str!("../../../migrations/postgres/0002_new_user_notify.sql"),
    ),
    (
        3,
        "replicas",
        include_str!("../../../migrations/postgres/0003_replicas.sql"),
    ),
];

/// The migrator over [`MIGRATIONS`], with the checksums `sqlx::migrate!` would compute.
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
    fn every_file_in_migrations_postgres_is_embedded_with_its_version_and_description() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join("postgres");
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
