//! The application's `users` table: the daemon reads it; the `users` commands write it for
//! operators who have no application yet.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Result, Store, StoreError, WriteTx};
use crate::domain::RawUser;

/// What writing one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Added,
    Updated,
    Unchanged,
}

/// The application's columns, all text on both backends.
fn raw_from_row<R: Row>(row: &R) -> RawUser
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    RawUser {
        id: row.get("id"),
        email: row.get("email"),
        name_first: row.get("name_first"),
        name_last: row.get("name_last"),
        birthdate: row.get("birthdate"),
        phone_number: row.get("phone_number"),
        locale: row.get("locale"),
    }
}

const COLUMNS: &str = "id, email, name_first, name_last, birthdate, phone_number, locale";

static SELECT_ONE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM users WHERE id = $1"));

/// Inserts one user; an id that exists already is refused.
pub async fn add(store: &Store, user: &RawUser) -> Result<()> {
    let mut tx = store.begin_write().await?;
    let exists: Option<String> = on_tx!(tx, |c| sqlx::query_scalar(
        "SELECT id FROM users WHERE id = $1"
    )
    .bind(&user.id)
    .fetch_optional(c)
    .await?);
    if exists.is_some() {
        return Err(exists_error(&user.id));
    }
    if let Err(refused) = insert(&mut tx, user).await? {
        // Dropped, the aborted transaction is rolled back; the id is looked up after it.
        drop(tx);
        return Err(refused.outcome(store).await);
    }
    tx.commit().await?;
    Ok(())
}

/// What `add` of an id that is there already returns.
fn exists_error(id: &str) -> StoreError {
    StoreError::Exists {
        table: "user",
        key: id.to_owned(),
    }
}

/// An insert the database refused as a unique violation. On PostgreSQL (READ COMMITTED) two
/// writers can both find an id missing and both insert it: the second insert waits for the
/// first writer's commit, then fails with SQLSTATE 23505 and aborts its transaction. SQLite's
/// writers hold the write lock from `BEGIN IMMEDIATE`, so there the check before the insert
/// always sees the other writer's row.
#[derive(Debug)]
struct Refused {
    id: String,
    error: sqlx::Error,
}

impl Refused {
    /// Whether the refused id is there now, outside the aborted transaction. The violation may
    /// also be of another unique key an application put on its own `users` table: then the id
    /// is still missing and the driver's error stands.
    async fn id_exists(&self, store: &Store) -> Result<bool> {
        Ok(get(store, &self.id).await?.is_some())
    }

    /// What `add` reports: [`StoreError::Exists`] when the race was over this id, as when the
    /// check before the insert finds it.
    async fn outcome(self, store: &Store) -> StoreError {
        match self.id_exists(store).await {
            Ok(true) => exists_error(&self.id),
            Ok(false) => self.error.into(),
            Err(e) => e,
        }
    }
}

/// Inserts one row; `Ok(Err(_))` when the database refused it as a duplicate key (read through
/// sqlx's `DatabaseError::is_unique_violation`), which the callers resolve as [`Refused`] says.
async fn insert(tx: &mut WriteTx, user: &RawUser) -> Result<Result<(), Refused>> {
    let done = on_tx!(tx, |c| sqlx::query(
        "INSERT INTO users (id, email, name_first, name_last, birthdate, phone_number, locale) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name_first)
    .bind(&user.name_last)
    .bind(&user.birthdate)
    .bind(&user.phone_number)
    .bind(&user.locale)
    .execute(c)
    .await
    .map(drop));
    match done {
        Ok(_) => Ok(Ok(())),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Err(Refused {
            id: user.id.clone(),
            error: sqlx::Error::Database(e),
        })),
        Err(e) => Err(e.into()),
    }
}

/// Writes many rows in one transaction: new ids are added, changed rows updated, identical rows
/// left alone (so importing the same file twice changes nothing). A row another writer added
/// meanwhile is written as if it had been there from the start: the transaction is begun again,
/// and reads it this time.
pub async fn upsert_many(store: &Store, users: &[RawUser]) -> Result<Vec<Written>> {
    // Each retry follows an id of `users` that another writer committed during the attempt
    // before, so the ids left to race shrink with each one: no more retries than rows (unless
    // rows are deleted meanwhile, which the daemon never does).
    let mut retries = 0;
    loop {
        match upsert_once(store, users).await? {
            Ok(written) => return Ok(written),
            Err(refused) if retries < users.len() && refused.id_exists(store).await? => {
                retries += 1;
            }
            Err(refused) => return Err(refused.error.into()),
        }
    }
}

/// One attempt at [`upsert_many`]; `Ok(Err(_))` when an insert lost a race (the transaction is
/// rolled back then). The rows are written in id order whatever their order in `users`, so two
/// writers sharing ids lock them in the same order: on PostgreSQL one waits for the other
/// instead of both waiting on each other (a deadlock, which the server breaks by failing one).
async fn upsert_once(store: &Store, users: &[RawUser]) -> Result<Result<Vec<Written>, Refused>> {
    // Stable: rows of one id keep their order.
    let mut by_id: Vec<usize> = (0..users.len()).collect();
    by_id.sort_by(|&a, &b| users[a].id.cmp(&users[b].id));
    let mut tx = store.begin_write().await?;
    let mut out = Vec::with_capacity(users.len());
    for at in by_id {
        let user = &users[at];
        let existing = on_tx!(tx, |c| sqlx::query(SELECT_ONE.as_str())
            .bind(&user.id)
            .fetch_optional(c)
            .await?
            .map(|r| raw_from_row(&r)));
        let written = match existing {
            None => {
                if let Err(refused) = insert(&mut tx, user).await? {
                    return Ok(Err(refused));
                }
                Written::Added
            }
            Some(old) if old == *user => Written::Unchanged,
            Some(_) => {
                on_tx!(tx, |c| sqlx::query(
                    "UPDATE users SET email = $1, name_first = $2, name_last = $3, birthdate = $4, \
                     phone_number = $5, locale = $6 WHERE id = $7",
                )
                .bind(&user.email)
                .bind(&user.name_first)
                .bind(&user.name_last)
                .bind(&user.birthdate)
                .bind(&user.phone_number)
                .bind(&user.locale)
                .bind(&user.id)
                .execute(c)
                .await?
                .rows_affected());
                Written::Updated
            }
        };
        out.push((at, written));
    }
    tx.commit().await?;
    out.sort_by_key(|&(at, _)| at);
    Ok(Ok(out.into_iter().map(|(_, written)| written).collect()))
}

/// The rows of `ids` that exist, in one statement whatever their number: the ids travel as
/// one JSON array on SQLite, as one text[] on PostgreSQL (dialects differ).
pub async fn get_many(store: &Store, ids: &[&str]) -> Result<Vec<RawUser>> {
    static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {COLUMNS} FROM users WHERE id IN (SELECT value FROM json_each($1))")
    });
    static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {COLUMNS} FROM users WHERE id = ANY($1::text[])")
    });
    Ok(on_read!(
        store,
        sqlite
            | c
            | sqlx::query(SQLITE.as_str())
                .bind(serde_json::to_string(ids).expect("strings serialize"))
                .fetch_all(c)
                .await?
                .iter()
                .map(raw_from_row)
                .collect(),
        postgres
            | c
            | sqlx::query(POSTGRES.as_str())
                .bind(ids)
                .fetch_all(c)
                .await?
                .iter()
                .map(raw_from_row)
                .collect()
    ))
}

pub async fn get(store: &Store, id: &str) -> Result<Option<RawUser>> {
    Ok(on_read!(store, |c| sqlx::query(SELECT_ONE.as_str())
        .bind(id)
        .fetch_optional(c)
        .await?
        .map(|r| raw_from_row(&r))))
}

/// Rows the daemon has not seen yet (no `user_states` row), in id order after `after`, at most
/// `limit`. Walks the primary key, so a run that pages through a million rows with the last id
/// as `after` reads each row once instead of sorting the whole table per page.
pub async fn unseen(store: &Store, after: Option<&str>, limit: u32) -> Result<Vec<RawUser>> {
    // `u.id > $1` only when paging on: with a bound of its own, the first page would miss an
    // id that sorts before any bound we could pick (the empty string is a valid TEXT key).
    let from = if after.is_some() {
        "u.id > $1"
    } else {
        "$1 IS NULL"
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM users u WHERE {from} \
         AND NOT EXISTS (SELECT 1 FROM user_states s WHERE s.user_id = u.id) \
         ORDER BY u.id LIMIT $2"
    );
    Ok(on_read!(store, |c| sqlx::query(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?
    .iter()
    .map(raw_from_row)
    .collect()))
}
