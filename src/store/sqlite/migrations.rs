//! The SQLite migrations, embedded in the binary. The files' bytes must never change once
//! released: sqlx checks each applied migration's checksum at start.

use sqlx::migrate::Migrator;

use crate::store::migrations::{Embedded, migrator};

/// The migrations of `migrations/sqlite/`, embedded in the binary: (version, description, SQL).
/// A new file there must be listed here too (a unit test compares the two).
const MIGRATIONS: [Embedded; 11] = [
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
    (
        11,
        "job terms",
        include_str!("../../../migrations/sqlite/0011_job_terms.sql"),
    ),
];

/// The migrator over [`MIGRATIONS`].
pub(super) static MIGRATOR: std::sync::LazyLock<Migrator> =
    std::sync::LazyLock::new(|| migrator(&MIGRATIONS));

#[cfg(test)]
mod migration_list {
    use super::MIGRATIONS;

    #[test]
    fn every_file_in_migrations_is_embedded_with_its_version_and_description() {
        crate::store::migrations::assert_lists_every_file("sqlite", &MIGRATIONS);
    }
}
