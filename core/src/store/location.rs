//! Where the case store lives: an SQLite file (the embedded default) or a PostgreSQL database
//! that a fleet of gateways and the trainer share. Shown with its password hidden, so it can be
//! logged.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// A case store's location, parsed from a path or a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file (`sqlite://PATH`, `sqlite:PATH` or a bare path).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`), kept as given: it may
    /// carry a password, which [`fmt::Display`] and [`fmt::Debug`] hide.
    Postgres(String),
}

impl StoreLocation {
    /// Parses `postgres://...`, `postgresql://...`, `sqlite://PATH`, `sqlite:PATH` or a path.
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StoreError::Invalid("the store location is empty".into()));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        if let Some(path) = s.strip_prefix("sqlite://").or(s.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err(StoreError::Invalid("the SQLite store path is empty".into()));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(StoreError::Invalid(format!(
                "unknown store scheme `{scheme}` (expected postgres://, postgresql:// or sqlite://)"
            )));
        }
        Ok(Self::Sqlite(PathBuf::from(s)))
    }

    /// Which backend, for logs and metrics labels.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> Self {
        Self::Sqlite(path)
    }
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> Self {
        Self::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for StoreLocation {
    fn from(path: &PathBuf) -> Self {
        Self::Sqlite(path.clone())
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&hide_password(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// The URL with the password of its user info (`user:password@`) and any `password=` query
/// parameter replaced by `***`. The user info is read as the PostgreSQL client reads it: up to
/// the first `@` anywhere in the URL, so a password holding `/`, `?` or `#` (common in base64)
/// is hidden too. A URL whose path or query holds an `@` is masked more than needed, never less.
fn hide_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (user_info, host_and_tail) = match rest.split_once('@') {
        Some((info, after)) => match info.split_once(':') {
            Some((user, _)) => (format!("{user}:***@"), after),
            None => (format!("{info}@"), after),
        },
        None => (String::new(), rest),
    };
    let tail = match host_and_tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => host_and_tail.to_owned(),
    };
    format!("{scheme}://{user_info}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_never_show_a_password() {
        let pg = StoreLocation::parse("postgres://cada:s3cr:et@db.internal:5432/cada").unwrap();
        assert_eq!(pg.backend(), "postgres");
        assert_eq!(pg.to_string(), "postgres://cada:***@db.internal:5432/cada");
        assert!(!format!("{pg:?}").contains("s3cr"));
        let query =
            StoreLocation::parse("postgresql://db/cada?user=cada&password=hunter2&sslmode=disable")
                .unwrap();
        assert_eq!(
            query.to_string(),
            "postgresql://db/cada?user=cada&password=***&sslmode=disable"
        );
        let no_password = StoreLocation::parse("postgres://cada@db/cada").unwrap();
        assert_eq!(
            StoreLocation::parse("postgres://db:5432/cada?sslmode=disable")
                .unwrap()
                .to_string(),
            "postgres://db:5432/cada?sslmode=disable"
        );
        assert_eq!(no_password.to_string(), "postgres://cada@db/cada");
        for (s, path) in [
            ("data/cases.sqlite", "data/cases.sqlite"),
            ("sqlite://data/cases.sqlite", "data/cases.sqlite"),
            (
                "sqlite:/var/lib/cada/cases.sqlite",
                "/var/lib/cada/cases.sqlite",
            ),
        ] {
            assert_eq!(
                StoreLocation::parse(s).unwrap(),
                StoreLocation::Sqlite(path.into())
            );
        }
        for bad in ["", "  ", "mysql://db/cada", "sqlite://"] {
            assert_eq!(
                StoreLocation::parse(bad).unwrap_err().code(),
                "invalid_input",
                "{bad}"
            );
        }
    }

    /// Whatever password the PostgreSQL client would send, the shown URL does not contain it.
    #[test]
    fn the_password_the_client_reads_is_never_shown() {
        for url in [
            "postgres://cada:ab/cd+ef==@db.internal:5432/cada",
            "postgres://cada:q?x=1&y@db/cada",
            "postgresql://cada:a#b/c@db/cada?sslmode=disable",
            "postgres://cada:plain@db/cada",
            "postgres://cada:a%40b%2Fc%3F@db/cada",
        ] {
            let config: postgres::Config = url.parse().expect(url);
            let password = String::from_utf8(config.get_password().expect(url).to_vec()).unwrap();
            let shown = StoreLocation::parse(url).unwrap().to_string();
            assert!(!shown.contains(&password), "{url} shown as {shown}");
            // Nor as written (percent-encoded).
            let written = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
            let written = written.split_once(':').unwrap().1;
            assert!(!shown.contains(written), "{url} shown as {shown}");
            assert!(
                shown.starts_with("postgres") && shown.contains(":***@"),
                "{shown}"
            );
        }
    }
}
