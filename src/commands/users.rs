//! `users add` and `users import FILE.csv`: how an operator without an application fills `users`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Reported, UsageError};
use crate::app::open_store;
use crate::cli::{AddUser, UsersCommand};
use crate::config::Config;
use crate::domain::{Locale, RawUser, User};
use crate::store::users::{self, Written};
use crate::store::{Store, StoreError};

pub async fn run(config: &Config, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(config).await?;
    let result = match cmd {
        UsersCommand::Add(add) => add_one(&store, add).await,
        UsersCommand::Import { file } => import(&store, &file).await,
    };
    store.close().await;
    result
}

fn empty_to_none(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

async fn add_one(store: &Store, add: AddUser) -> anyhow::Result<ExitCode> {
    let mut raw = RawUser {
        id: add.id.trim().to_owned(),
        email: add.email.trim().to_owned(),
        name_first: empty_to_none(add.name_first),
        name_last: empty_to_none(add.name_last),
        birthdate: empty_to_none(add.birthdate),
        phone_number: empty_to_none(add.phone_number),
        locale: empty_to_none(add.locale),
    };
    canonical_locale(&mut raw).map_err(|e| UsageError(format!("user {}: {e}", raw.id)))?;
    User::parse(&raw, chrono::Utc::now().date_naive())
        .map_err(|e| UsageError(format!("user {}: {e}", raw.id)))?;
    match users::add(store, &raw).await {
        Ok(()) => {
            println!("added user {} <{}>", raw.id, raw.email);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ StoreError::Exists { .. }) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// An operator's locale is checked here, where it can be corrected, and stored in its canonical
/// spelling (the daemon only warns about a bad one the application wrote).
fn canonical_locale(raw: &mut RawUser) -> Result<(), crate::domain::ParseError> {
    if let Some(value) = raw.locale.as_deref() {
        raw.locale = Some(Locale::parse(value)?.as_str().to_owned());
    }
    Ok(())
}

/// Columns a CSV header may name; `id` and `email` are required.
const CSV_COLUMNS: [&str; 7] = [
    "id",
    "email",
    "name_first",
    "name_last",
    "birthdate",
    "phone_number",
    "locale",
];

/// Rows written per transaction: large enough to be fast, small enough to let the daemon in.
const CHUNK: usize = 1000;

#[derive(Debug, Default)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// (line, reason) of every row that was not written.
    pub rejected: Vec<(u64, String)>,
}

async fn import(store: &Store, file: &Path) -> anyhow::Result<ExitCode> {
    let report = import_file(store, file).await?;
    for (line, why) in &report.rejected {
        eprintln!("{} line {line}: {why}", file.display());
    }
    println!(
        "{}: {} added, {} updated, {} unchanged, {} rejected",
        file.display(),
        report.added,
        report.updated,
        report.unchanged,
        report.rejected.len()
    );
    if report.rejected.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Reported(format!(
            "{}: {} rows rejected (the other rows were imported)",
            file.display(),
            report.rejected.len()
        ))
        .into())
    }
}

/// Reads the CSV, validates every row like provisioning will, and writes the good ones in chunks.
pub async fn import_file(store: &Store, file: &Path) -> anyhow::Result<ImportReport> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("{}: cannot be read", file.display()))?
        .len();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("{}: cannot be read", file.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{} line 1: the header row cannot be read", file.display()))?
        .clone();
    let mut index = [None; CSV_COLUMNS.len()];
    for (i, name) in headers.iter().enumerate() {
        match CSV_COLUMNS.iter().position(|c| *c == name) {
            Some(col) => index[col] = Some(i),
            None => {
                let hint = CSV_COLUMNS
                    .iter()
                    .min_by_key(|c| strsim::damerau_levenshtein(name, c))
                    .filter(|c| strsim::damerau_levenshtein(name, c) <= 3)
                    .map(|c| format!(" (did you mean {c:?}?)"))
                    .unwrap_or_default();
                return Err(UsageError(format!(
                    "{} line 1: {name:?} is not a users column{hint}; columns are {}",
                    file.display(),
                    CSV_COLUMNS.join(", ")
                ))
                .into());
            }
        }
    }
    for required in ["id", "email"] {
        let col = CSV_COLUMNS
            .iter()
            .position(|c| *c == required)
            .expect("listed");
        if index[col].is_none() {
            return Err(UsageError(format!(
                "{} line 1: the header has no {required:?} column",
                file.display()
            ))
            .into());
        }
    }

    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .expect("static template"),
    );
    let today = chrono::Utc::now().date_naive();
    let mut report = ImportReport::default();
    let mut chunk: Vec<RawUser> = Vec::with_capacity(CHUNK);
    let mut seen = std::collections::HashSet::new();
    let width = headers.len();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                report.rejected.push((line, format!("cannot be read: {e}")));
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        bar.set_position(record.position().map(|p| p.byte()).unwrap_or(0));
        if record.len() != width {
            report.rejected.push((
                line,
                format!("has {} fields, the header has {width}", record.len()),
            ));
            continue;
        }
        let field = |col: usize| -> Option<String> {
            index[col]
                .and_then(|i| record.get(i))
                .map(str::to_owned)
                .filter(|s| !s.is_empty())
        };
        let mut raw = RawUser {
            id: field(0).unwrap_or_default(),
            email: field(1).unwrap_or_default(),
            name_first: field(2),
            name_last: field(3),
            birthdate: field(4),
            phone_number: field(5),
            locale: field(6),
        };
        if let Err(e) = canonical_locale(&mut raw).and_then(|()| User::parse(&raw, today).map(drop))
        {
            report
                .rejected
                .push((line, format!("user {:?}: {e}", raw.id)));
            continue;
        }
        if !seen.insert(raw.id.clone()) {
            report.rejected.push((
                line,
                format!("user {:?} appears earlier in the file", raw.id),
            ));
            continue;
        }
        chunk.push(raw);
        if chunk.len() == CHUNK {
            write_chunk(store, &mut chunk, &mut report).await?;
        }
    }
    write_chunk(store, &mut chunk, &mut report).await?;
    bar.finish_and_clear();
    Ok(report)
}

async fn write_chunk(
    store: &Store,
    chunk: &mut Vec<RawUser>,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    for w in users::upsert_many(store, chunk).await? {
        match w {
            Written::Added => report.added += 1,
            Written::Updated => report.updated += 1,
            Written::Unchanged => report.unchanged += 1,
        }
    }
    chunk.clear();
    Ok(())
}
