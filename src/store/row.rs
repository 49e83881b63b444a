//! Reading typed values out of a row of either backend, with the place of a value that does
//! not decode.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{FromRow, Result, StoreError};

/// A row of one of the backends: how a [`FromRow`] type is decoded from it.
pub(super) trait AnyRow: Row {
    fn decode<T: FromRow>(&self) -> Result<T>;
    /// The value of the key column as text, for an error message.
    fn key_text(&self, key: &'static str) -> String;
}

impl AnyRow for sqlx::sqlite::SqliteRow {
    fn decode<T: FromRow>(&self) -> Result<T> {
        T::from_sqlite(self)
    }

    fn key_text(&self, key: &'static str) -> String {
        self.try_get::<i64, _>(key)
            .map(|k| k.to_string())
            .or_else(|_| self.try_get::<String, _>(key))
            .unwrap_or_else(|_| "?".to_owned())
    }
}

impl AnyRow for sqlx::postgres::PgRow {
    fn decode<T: FromRow>(&self) -> Result<T> {
        T::from_postgres(self)
    }

    fn key_text(&self, key: &'static str) -> String {
        self.try_get::<i64, _>(key)
            .map(|k| k.to_string())
            .or_else(|_| self.try_get::<String, _>(key))
            .unwrap_or_else(|_| "?".to_owned())
    }
}

/// Where a column is read, so a value that does not decode is reported with its place.
pub(super) struct Place<'r, R> {
    pub row: &'r R,
    pub table: &'static str,
    /// The column that names the row in the error (its primary key).
    pub key: &'static str,
}

impl<'r, R: AnyRow> Place<'r, R>
where
    &'static str: ColumnIndex<R>,
{
    pub fn get<T>(&self, column: &'static str) -> Result<T>
    where
        T: Decode<'r, R::Database> + Type<R::Database>,
    {
        self.row.try_get(column).map_err(|e| match e {
            sqlx::Error::ColumnDecode { source, .. } => StoreError::BadValue {
                table: self.table,
                row: self.row.key_text(self.key),
                column,
                why: source.to_string(),
            },
            other => other.into(),
        })
    }
}

/// The one column `column` of `row` (a row of `table` named by its `key` column in an error):
/// what most single-value reads need, without spelling out a [`Place`].
pub(super) fn value_of<'r, R: AnyRow, T>(
    row: &'r R,
    table: &'static str,
    key: &'static str,
    column: &'static str,
) -> Result<T>
where
    &'static str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    Place { row, table, key }.get(column)
}

/// Decodes each row fetched; the first that does not decode fails the lot.
pub(super) fn rows<T: FromRow, R: AnyRow>(rows: &[R]) -> Result<Vec<T>> {
    rows.iter().map(R::decode).collect()
}

pub(super) fn row<T: FromRow, R: AnyRow>(row: Option<R>) -> Result<Option<T>> {
    row.as_ref().map(R::decode).transpose()
}
