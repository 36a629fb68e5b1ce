//! Managing gateway keys, as `safedelete keys ...` and the admin API's
//! `/v1/keys` both do it: which SmartLead account a new key sends for,
//! reading an expiry, a grace period and a rate limit, the JSON each answers
//! with, and the audit record each action leaves (never holding the key).
//! Writing that record is the caller's: the CLI appends it to the file, the
//! gateway hands it to its audit writer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::db::Pool;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::keys::{self, Created, KeyError, KeyRow, NewKey, Rotated};
use crate::audit::{format_time, AuditRecord, OperationKind};
use crate::config::{ConfigError, Rate};

/// The longest grace period a rotation may give the old key.
const MAX_GRACE: Duration = Duration::from_secs(365 * 86_400);

/// The latest expiry that still stores as a four-digit year (and so
/// compares correctly as text): 9999-12-31T23:59:59Z.
const LAST_EXPIRY: Duration = Duration::from_secs(253_402_300_799);

/// Why a key could not be created, revoked or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyActionError {
    #[error("there is no SmartLead account {name:?}; {defined}")]
    UnknownAccount { name: String, defined: String },
    #[error("no SmartLead account is configured, so a key would have nothing to send: set SAFEDELETE_SMARTLEAD_API_KEY (the \"default\" account) or add a [[smartlead.accounts]] table to the config")]
    NoAccount,
    #[error("several SmartLead accounts are configured ({defined}) and none is named \"default\": say which one the key sends for (--account NAME, or \"account\" in the admin API)")]
    AmbiguousAccount { defined: String },
    #[error("`{input}` is neither an age such as 90d or 12h nor an RFC 3339 time such as 2027-03-01T10:00:00Z")]
    BadExpiry { input: String },
    #[error("`{input}` is in the past ({at}); give a later time or an age such as 90d")]
    ExpiryPast { input: String, at: String },
    #[error("`{input}` is not a grace period such as 24h, 30m or 0s (at most 365d)")]
    BadGrace { input: String },
    #[error(transparent)]
    BadRate(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] KeyError),
}

/// Who asks and how, as the audit record remembers it.
#[derive(Debug, Clone)]
pub struct Via {
    /// `CLI`, or the HTTP method.
    pub method: String,
    /// `keys create`, or the request's path.
    pub path: String,
    /// The OS user, or `admin token`.
    pub actor: String,
}

/// The accounts a key may send for, from the config.
#[derive(Debug, Clone, Default)]
pub struct Accounts<'a> {
    pub names: &'a [String],
    /// `config.smartlead.default_account()`.
    pub default: Option<&'a str>,
}

impl Accounts<'_> {
    /// The account named, which must be defined, or the default one.
    pub fn choose(&self, requested: Option<&str>) -> Result<String, KeyActionError> {
        match requested {
            Some(name) if self.names.iter().any(|n| n == name) => Ok(name.to_string()),
            Some(name) => Err(KeyActionError::UnknownAccount {
                name: name.to_string(),
                defined: if self.names.is_empty() {
                    "none is configured: set SAFEDELETE_SMARTLEAD_API_KEY (the \"default\" \
                     account) or add a [[smartlead.accounts]] table"
                        .to_string()
                } else {
                    format!("the config defines {}", quoted(self.names))
                },
            }),
            None => match (self.default, self.names) {
                (Some(default), _) => Ok(default.to_string()),
                (None, []) => Err(KeyActionError::NoAccount),
                (None, names) => Err(KeyActionError::AmbiguousAccount {
                    defined: quoted(names),
                }),
            },
        }
    }
}

fn quoted(names: &[String]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    names.join(", ")
}

/// An expiry: an age from `now` (`90d`) or an RFC 3339 time, later than now.
pub fn parse_expiry(input: &str, now: SystemTime) -> Result<SystemTime, KeyActionError> {
    let bad = || KeyActionError::BadExpiry {
        input: input.to_string(),
    };
    let text = input.trim();
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => SystemTime::from(t),
        Err(_) => now
            .checked_add(humantime::parse_duration(text).map_err(|_| bad())?)
            .ok_or_else(bad)?,
    };
    if at > UNIX_EPOCH + LAST_EXPIRY {
        return Err(bad());
    }
    if at <= now {
        return Err(KeyActionError::ExpiryPast {
            input: input.to_string(),
            at: format_time(at),
        });
    }
    Ok(at)
}

/// A rotation's grace period (`24h`), at most a year.
pub fn parse_grace(input: &str) -> Result<Duration, KeyActionError> {
    humantime::parse_duration(input.trim())
        .ok()
        .filter(|g| *g <= MAX_GRACE)
        .ok_or_else(|| KeyActionError::BadGrace {
            input: input.to_string(),
        })
}

/// What a new key is asked for with.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    pub name: &'a str,
    pub account: Option<&'a str>,
    pub expires: Option<&'a str>,
    pub rate_limit: Option<&'a str>,
    /// How the rate limit was given (`--rate-limit`, `rate_limit`), for its error.
    pub rate_key: &'static str,
}

/// Makes a key; returns it with the audit record to write.
pub async fn create(
    pool: &Pool,
    accounts: &Accounts<'_>,
    request: CreateRequest<'_>,
    via: &Via,
) -> Result<(Created, AuditRecord), KeyActionError> {
    keys::check_name(request.name)?;
    let account = accounts.choose(request.account)?;
    let expires_at = request
        .expires
        .map(|e| parse_expiry(e, SystemTime::now()))
        .transpose()?;
    let rate_limit = request
        .rate_limit
        .map(|r| Rate::parse(request.rate_key, r))
        .transpose()?;
    let created = keys::create(
        pool,
        NewKey {
            name: request.name,
            account: &account,
            expires_at,
            rate_limit,
            by: &via.actor,
        },
    )
    .await?;
    let row = &created.row;
    let detail = format!(
        "{}; {}",
        row.expires_at
            .as_deref()
            .map_or("never expires".to_string(), |e| format!("expires {e}")),
        rate_note(row.rate_limit.as_deref())
    );
    let record = audit_record("key.create", via, row, detail);
    Ok((created, record))
}

/// Revokes every valid key of `name`; returns how many, with the audit record.
pub async fn revoke(
    pool: &Pool,
    name: &str,
    via: &Via,
) -> Result<(u64, AuditRecord), KeyActionError> {
    keys::check_name(name)?;
    let revoked = keys::revoke(pool, name, &via.actor).await?;
    // The account of the key just revoked, for the record.
    let rows = keys::list(pool).await?;
    let row = rows
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| KeyError::NotFound(name.to_string()))?;
    let detail = format!(
        "{revoked} key{} revoked",
        if revoked == 1 { "" } else { "s" }
    );
    Ok((revoked, audit_record("key.revoke", via, row, detail)))
}

/// A new key for `name`; the old one works for `grace` more.
pub async fn rotate(
    pool: &Pool,
    name: &str,
    grace: Duration,
    via: &Via,
) -> Result<(Rotated, AuditRecord), KeyActionError> {
    keys::check_name(name)?;
    let rotated = keys::rotate(pool, name, grace, &via.actor).await?;
    let detail = format!(
        "grace {}: the old key works until {}",
        span(grace),
        rotated.old_valid_until
    );
    let record = audit_record("key.rotate", via, &rotated.new.row, detail);
    Ok((rotated, record))
}

/// `24h`, `90m`, `2d`: a whole number of the largest unit that fits.
fn span(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `30/min`, or what applies when the key has no limit of its own.
pub fn rate_note(rate: Option<&str>) -> String {
    match rate {
        Some(r) => format!("rate limit {r}"),
        None => "the configured default rate limit".to_string(),
    }
}

fn audit_record(operation: &'static str, via: &Via, row: &KeyRow, detail: String) -> AuditRecord {
    let mut r = AuditRecord::empty(OperationKind::Key(operation));
    r.method = via.method.clone();
    r.path = via.path.clone();
    r.actor_label = Some(via.actor.clone());
    r.target = Some(format!("key:{}", row.name));
    r.account = Some(row.account.clone());
    r.detail = Some(detail);
    r.status = 200;
    r
}

/// A new key as `keys create --json` and `POST /v1/keys` show it, the only
/// time it is shown.
#[derive(Debug, Serialize)]
pub struct Shown<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub account: &'a str,
    pub expires_at: Option<&'a str>,
    pub rate_limit: Option<&'a str>,
    /// Rotations only: until when the replaced key keeps working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_valid_until: Option<&'a str>,
}

impl<'a> Shown<'a> {
    pub fn created(c: &'a Created) -> Shown<'a> {
        Shown {
            name: &c.row.name,
            key: c.key.expose(),
            account: &c.row.account,
            expires_at: c.row.expires_at.as_deref(),
            rate_limit: c.row.rate_limit.as_deref(),
            old_valid_until: None,
        }
    }

    pub fn rotated(r: &'a Rotated) -> Shown<'a> {
        Shown {
            old_valid_until: Some(&r.old_valid_until),
            ..Shown::created(&r.new)
        }
    }
}

/// A stored key as `keys list --json` and `GET /v1/keys` show it: the row
/// and where it stands (never the key, which is not stored).
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub row: KeyRow,
    pub state: &'static str,
}

/// Every key with its state at `now`.
pub async fn listed(pool: &Pool, now: SystemTime) -> Result<Vec<Listed>, KeyError> {
    Ok(keys::list(pool)
        .await?
        .into_iter()
        .map(|row| Listed {
            state: row.state(now).as_str(),
            row,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_account_is_the_one_named_or_the_default() {
        let defined = names(&["default", "eu"]);
        let accounts = Accounts {
            names: &defined,
            default: Some("default"),
        };
        assert_eq!(accounts.choose(Some("eu")).unwrap(), "eu");
        assert_eq!(accounts.choose(None).unwrap(), "default");
        let err = accounts.choose(Some("us")).unwrap_err().to_string();
        assert!(err.contains("\"default\", \"eu\""), "{err}");

        let none = Accounts::default();
        let err = none.choose(None).unwrap_err().to_string();
        assert!(err.contains("SAFEDELETE_SMARTLEAD_API_KEY"), "{err}");
        let two = names(&["eu", "us"]);
        let err = Accounts {
            names: &two,
            default: None,
        }
        .choose(None)
        .unwrap_err()
        .to_string();
        assert!(err.contains("--account"), "{err}");
    }

    #[test]
    fn expiries_are_ages_or_times_and_never_in_the_past() {
        let now =
            SystemTime::from(OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).unwrap());
        let in_90d = parse_expiry("90d", now).unwrap();
        assert_eq!(format_time(in_90d), "2026-04-01T00:00:00.000Z");
        let at = parse_expiry("2026-06-01T12:00:00+02:00", now).unwrap();
        assert_eq!(format_time(at), "2026-06-01T10:00:00.000Z");
        assert!(matches!(
            parse_expiry("2025-12-31T00:00:00Z", now),
            Err(KeyActionError::ExpiryPast { .. })
        ));
        assert!(matches!(
            parse_expiry("0s", now),
            Err(KeyActionError::ExpiryPast { .. })
        ));
        for bad in ["soon", "", "-1d", "10000000000000000d"] {
            assert!(
                matches!(
                    parse_expiry(bad, now),
                    Err(KeyActionError::BadExpiry { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn grace_periods_are_durations_up_to_a_year() {
        assert_eq!(parse_grace("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_grace("0s").unwrap(), Duration::ZERO);
        assert!(parse_grace("366d").is_err());
        assert!(parse_grace("tomorrow").is_err());
        assert_eq!(span(parse_grace("24h").unwrap()), "1d");
        assert_eq!(span(parse_grace("90m").unwrap()), "90m");
        assert_eq!(span(Duration::ZERO), "0s");
    }
}
