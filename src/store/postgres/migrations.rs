//! The PostgreSQL migrations, embedded in the binary. As on SQLite, a file's bytes never change
//! once released: sqlx checks each applied migration's checksum at start.

use sqlx::migrate::Migrator;

use crate::store::migrations::{Embedded, migrator};

/// The migrations of `migrations/postgres/`: (version, description, SQL). A new file there
/// must be listed here too (a unit test compares the two).
const MIGRATIONS: [Embedded; 4] = [
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
    (
        4,
        "job terms",
        include_str!("../../../migrations/postgres/0004_job_terms.sql"),
    ),
];

/// The migrator over [`MIGRATIONS`].
pub(super) static MIGRATOR: std::sync::LazyLock<Migrator> =
    std::sync::LazyLock::new(|| migrator(&MIGRATIONS));

#[cfg(test)]
mod migration_list {
    use super::MIGRATIONS;

    #[test]
    fn every_file_in_migrations_postgres_is_embedded_with_its_version_and_description() {
        crate::store::migrations::assert_lists_every_file("postgres", &MIGRATIONS);
    }
}
