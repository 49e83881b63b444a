//! Where the store's database is: a SQLite file, or a PostgreSQL database named by a URL that
//! holds no password (the URL is printed and logged; the password comes from a secret).

use std::fmt;
use std::path::PathBuf;

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => url.fmt(f),
        }
    }
}

/// A `postgres://USER@HOST:PORT/DB` URL without a password (neither before the host nor as a
/// `password=` parameter), so it can be shown anywhere. Its parameters (`sslmode`,
/// `sslrootcert`, …) mean what they mean to libpq, as far as sqlx reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresUrl(Url);

impl PostgresUrl {
    /// Accepts `postgres://` and `postgresql://` URLs naming a host and a database; refuses a
    /// password in them (it would end up in logs, `check` output and error messages).
    pub fn parse(text: &str) -> Result<PostgresUrl, String> {
        let url = Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err("must start with postgres:// or postgresql://".into());
        }
        if url.password().is_some() || url.query_pairs().any(|(key, _)| key == "password") {
            return Err(
                "must not hold a password (it would be printed in logs and `check`): set DATABASE_PASSWORD or the database-password credential instead"
                    .into(),
            );
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host (postgres://USER@HOST:PORT/DB)".into());
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err("must name a database (postgres://USER@HOST:PORT/DB)".into());
        }
        Ok(PostgresUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod postgres_url {
    use super::PostgresUrl;

    #[test]
    fn a_url_with_a_password_is_refused_and_one_without_is_kept_as_written() {
        let err = PostgresUrl::parse("postgres://app:hunter2@db.internal:5432/app").unwrap_err();
        assert!(err.contains("password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err =
            PostgresUrl::parse("postgres://app@db.internal/app?sslmode=require&password=hunter2")
                .unwrap_err();
        assert!(err.contains("password"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let ok = PostgresUrl::parse("postgresql://app@db.internal:5432/app").unwrap();
        assert_eq!(ok.to_string(), "postgresql://app@db.internal:5432/app");
        assert!(PostgresUrl::parse("postgres://db.internal:5432/").is_err());
        assert!(PostgresUrl::parse("mysql://app@db/app").is_err());
    }
}
