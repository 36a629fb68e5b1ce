//! Where the store lives, from `SAFEDELETE_DATABASE` or `[database] url`
//! (or `path`): a path or `sqlite://PATH` is an embedded SQLite file, a
//! `postgres://` (or `postgresql://`) URL a PostgreSQL database that several
//! gateways can share. A URL's password is never shown: [`Location`]'s
//! `Display` (in logs, errors, `config show`) replaces it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The store a gateway or command uses.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(PostgresUrl),
}

/// A validated `postgres://` URL (it may hold a password: not `Debug`-printed
/// or displayed as is).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(Box<url::Url>);

/// Why a store location was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadLocation {
    #[error("is empty; give a file path (SQLite) or a postgres:// URL")]
    Empty,
    #[error(
        "has the scheme `{0}://`, which safedelete does not store in; give a file path or \
         sqlite://PATH for SQLite, or postgres://USER@HOST:PORT/DATABASE for PostgreSQL"
    )]
    Scheme(String),
    #[error("is not a valid PostgreSQL URL ({0}); the form is postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem]")]
    Url(String),
    #[error("names no database; end the URL with /DATABASE (postgres://USER@HOST:PORT/DATABASE)")]
    NoDatabase,
    #[error("has the unknown parameter `{0}`; known: {known}", known = POSTGRES_PARAMETERS.join(", "))]
    Parameter(String),
    #[error("sets sslmode={0}; use one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("sets sslmode={0} without sslrootcert=CA.pem, the CA file the server's certificate is checked against")]
    NoCa(String),
}

/// The URL parameters a PostgreSQL location may carry: the ones that choose
/// the connection, not the pool (the pool is `[database]` settings).
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "host",
    "port",
    "user",
    "password",
    "dbname",
];

impl FromStr for Location {
    type Err = BadLocation;

    fn from_str(s: &str) -> Result<Location, BadLocation> {
        let s = s.trim();
        if s.is_empty() {
            return Err(BadLocation::Empty);
        }
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(BadLocation::Empty);
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        match s.split_once("://") {
            Some(("postgres" | "postgresql", _)) => PostgresUrl::parse(s).map(Location::Postgres),
            Some((scheme, _)) if is_scheme(scheme) => Err(BadLocation::Scheme(scheme.to_string())),
            _ => Ok(Location::Sqlite(PathBuf::from(s))),
        }
    }
}

/// A URL scheme as RFC 3986 spells one (so `./a://b` stays a path).
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl PostgresUrl {
    fn parse(s: &str) -> Result<PostgresUrl, BadLocation> {
        let url = url::Url::parse(s).map_err(|e| BadLocation::Url(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(BadLocation::Url("no host".into()));
        }
        let mut ssl_mode = None;
        let mut root_cert = false;
        let mut dbname = false;
        for (key, value) in url.query_pairs() {
            if !POSTGRES_PARAMETERS.contains(&&*key) {
                return Err(BadLocation::Parameter(key.into_owned()));
            }
            match &*key {
                "sslmode" => ssl_mode = Some(value.into_owned()),
                "sslrootcert" => root_cert = true,
                "dbname" => dbname = true,
                _ => {}
            }
        }
        if url.path().trim_start_matches('/').is_empty() && !dbname {
            return Err(BadLocation::NoDatabase);
        }
        if let Some(mode) = ssl_mode {
            match mode.as_str() {
                "disable" | "allow" | "prefer" | "require" => {}
                "verify-ca" | "verify-full" if !root_cert => return Err(BadLocation::NoCa(mode)),
                "verify-ca" | "verify-full" => {}
                _ => return Err(BadLocation::SslMode(mode)),
            }
        }
        Ok(PostgresUrl(Box::new(url)))
    }

    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The same server, another database (tests and `migrate-store` use
    /// the `postgres` database to create and drop others).
    pub fn with_database(&self, name: &str) -> PostgresUrl {
        let mut url = self.0.clone();
        url.set_path(&format!("/{name}"));
        PostgresUrl(url)
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        self.0.path().trim_start_matches('/')
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = (*self.0).clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("REDACTED"));
        }
        if shown.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = shown
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

impl Location {
    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            Location::Postgres(url) => write!(f, "Postgres({url})"),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::Sqlite(path.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Sqlite(path)
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Location {
        location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_sqlite_urls_are_sqlite_files() {
        for (given, path) in [
            ("data/safedelete.db", "data/safedelete.db"),
            ("/var/lib/x.db", "/var/lib/x.db"),
            ("sqlite:///var/lib/x.db", "/var/lib/x.db"),
            ("sqlite://rel.db", "rel.db"),
            ("sqlite:rel.db", "rel.db"),
            ("./odd://name.db", "./odd://name.db"),
        ] {
            assert_eq!(
                given.parse::<Location>().unwrap(),
                Location::Sqlite(PathBuf::from(path)),
                "{given}"
            );
        }
    }

    #[test]
    fn postgres_urls_are_checked_and_their_password_is_never_shown() {
        let l: Location = "postgres://gw:s3cret@db.internal:5432/safedelete?sslmode=verify-full&sslrootcert=/etc/ca.pem"
            .parse()
            .unwrap();
        assert!(l.is_postgres());
        let shown = format!("{l} {l:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://gw:REDACTED@db.internal:5432/safedelete"),
            "{shown}"
        );
        let Location::Postgres(url) = &l else {
            unreachable!()
        };
        assert!(url.expose().contains("s3cret"));
        assert_eq!(url.database(), "safedelete");
        assert_eq!(url.with_database("postgres").database(), "postgres");

        let q: Location = "postgresql://gw@h/db?password=hunter2".parse().unwrap();
        assert!(!q.to_string().contains("hunter2"), "{q}");
    }

    #[test]
    fn a_wrong_location_says_what_to_write() {
        for (given, want) in [
            ("", BadLocation::Empty),
            ("mysql://h/db", BadLocation::Scheme("mysql".into())),
            ("postgres://h", BadLocation::NoDatabase),
            (
                "postgres://h/db?sslmod=require",
                BadLocation::Parameter("sslmod".into()),
            ),
            (
                "postgres://h/db?sslmode=strict",
                BadLocation::SslMode("strict".into()),
            ),
            (
                "postgres://h/db?sslmode=verify-full",
                BadLocation::NoCa("verify-full".into()),
            ),
        ] {
            assert_eq!(given.parse::<Location>().unwrap_err(), want, "{given}");
        }
        let err = "postgres://h/db?sslmod=require"
            .parse::<Location>()
            .unwrap_err();
        assert!(err.to_string().contains("sslmode"), "{err}");
    }
}
