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
/// parameter replaced by `***`.
fn hide_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority_end, _) = rest
        .char_indices()
        .find(|(_, c)| matches!(c, '/' | '?'))
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
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
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
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
}
