//! What both backends' migration lists share: the migrator over an embedded list, and the
//! check that the list matches the files of its folder.

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One embedded migration: (version, description, SQL).
pub(super) type Embedded = (i64, &'static str, &'static str);

/// The migrator over `list`, with the checksums `sqlx::migrate!` would compute, so databases
/// migrated by earlier builds stay valid.
pub(super) fn migrator(list: &[Embedded]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
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
}

/// Asserts that `list` holds every `.sql` file of `migrations/<folder>/`, with the version and
/// description its name gives (`0003_new_thing.sql` → 3, "new thing") and its bytes.
#[cfg(test)]
pub(super) fn assert_lists_every_file(folder: &str, list: &[Embedded]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder);
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
    let embedded: Vec<(i64, String, String)> = list
        .iter()
        .map(|&(v, d, sql)| (v, d.to_owned(), sql.to_owned()))
        .collect();
    assert_eq!(embedded, files);
}
