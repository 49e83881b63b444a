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
        return Err(StoreError::Exists {
            table: "user",
            key: user.id.clone(),
        });
    }
    insert(&mut tx, user).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert(tx: &mut WriteTx, user: &RawUser) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
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
    .await?
    .rows_affected());
    Ok(())
}

/// Writes many rows in one transaction: new ids are added, changed rows updated, identical rows
/// left alone (so importing the same file twice changes nothing).
pub async fn upsert_many(store: &Store, users: &[RawUser]) -> Result<Vec<Written>> {
    let mut tx = store.begin_write().await?;
    let mut out = Vec::with_capacity(users.len());
    for user in users {
        let existing = on_tx!(tx, |c| sqlx::query(SELECT_ONE.as_str())
            .bind(&user.id)
            .fetch_optional(c)
            .await?
            .map(|r| raw_from_row(&r)));
        let written = match existing {
            None => {
                insert(&mut tx, user).await?;
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
        out.push(written);
    }
    tx.commit().await?;
    Ok(out)
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
