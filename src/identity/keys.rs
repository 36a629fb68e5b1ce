//! Gateway keys in the database: created, listed, revoked and rotated here,
//! and read by every gateway that shares the database. Only a key's SHA-256
//! is stored; the key itself exists once, in what `create` or `rotate`
//! returns.

use std::time::{Duration, SystemTime};

use crate::db::Pool;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

use super::KEY_PREFIX;
use crate::audit::format_time;
use crate::config::{Rate, Secret};

/// Random bytes in a key (43 URL-safe characters after the prefix).
const KEY_BYTES: usize = 32;

/// The most keys one name may have at once (the current one and those in a
/// rotation's grace period).
const MAX_VALID_PER_NAME: i64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a key name: use 1 to 64 letters, digits, `-`, `_`, `.` or `@` (for example \"alice\" or \"n8n-prod\")")]
    BadName(String),
    #[error("a key named {0:?} exists already; rotate it (`safedelete keys rotate {0}`) or revoke it first")]
    NameTaken(String),
    #[error("no valid key is named {0:?}; `safedelete keys list` shows the keys")]
    NotFound(String),
    #[error("{0:?} has {MAX_VALID_PER_NAME} keys still in their grace period; revoke it and create a new one, or wait for the old keys to expire")]
    TooManyRotations(String),
    #[error("the system's random source failed; no key was made")]
    Random,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// One stored key, as `keys list` shows it (never the key).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub account: String,
    pub rate_limit: Option<String>,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub replaced_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<String>,
}

/// The columns of a [`KeyRow`], in its order.
const ROW: &str = "id, name, account, rate_limit, created_at, created_by, expires_at, \
                   replaced_at, revoked_at, revoked_by, last_used_at";

/// A row to insert (`create` and `rotate`).
struct Insert<'a> {
    name: &'a str,
    key_sha256: &'a str,
    account: &'a str,
    rate_limit: Option<&'a str>,
    at: &'a str,
    by: &'a str,
    expires_at: Option<&'a str>,
}

async fn insert<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    row: Insert<'_>,
) -> Result<KeyRow, sqlx::Error> {
    sqlx::query_as::<_, KeyRow>(&format!(
        "INSERT INTO gateway_keys \
         (name, key_sha256, account, rate_limit, created_at, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ROW}"
    ))
    .bind(row.name)
    .bind(row.key_sha256)
    .bind(row.account)
    .bind(row.rate_limit)
    .bind(row.at)
    .bind(row.by)
    .bind(row.expires_at)
    .fetch_one(db)
    .await
}

/// Where a key stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    /// Replaced by a newer key, still accepted until it expires.
    Rotated,
    Expired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Rotated => "rotated",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }
}

impl KeyRow {
    pub fn state(&self, now: SystemTime) -> KeyState {
        let now = format_time(now);
        if self.revoked_at.is_some() {
            KeyState::Revoked
        } else if self
            .expires_at
            .as_deref()
            .is_some_and(|e| e <= now.as_str())
        {
            KeyState::Expired
        } else if self.replaced_at.is_some() {
            KeyState::Rotated
        } else {
            KeyState::Active
        }
    }
}

/// A key just made: the only time the key itself is known.
#[derive(Debug)]
pub struct Created {
    pub key: Secret,
    pub row: KeyRow,
}

/// What `rotate` did: the new key, and until when the old one still works.
#[derive(Debug)]
pub struct Rotated {
    pub new: Created,
    /// The old key's new `expires_at`: the end of the grace period, or its
    /// own expiry if that came sooner.
    pub old_valid_until: String,
}

/// A key as a gateway checks it: valid, or revoked or expired, which
/// earns a 401 that says so rather than "unknown key".
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KnownKey {
    pub key_sha256: String,
    pub name: String,
    pub account: String,
    pub rate_limit: Option<String>,
    pub expires_at: Option<String>,
    #[sqlx(try_from = "crate::db::Flag")]
    pub revoked: bool,
}

/// What `create` needs besides the pool.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub account: &'a str,
    pub expires_at: Option<SystemTime>,
    pub rate_limit: Option<Rate>,
    /// Who made it: the OS user, or `admin token`.
    pub by: &'a str,
}

/// Checks a key name: what rules' `actors` and `audit --actor` match.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != crate::guard::policy::UNKNOWN_ACTOR
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(name.to_string()))
    }
}

/// A new key: the prefix and 32 random bytes, URL-safe base64 without padding.
pub fn generate() -> Result<Secret, KeyError> {
    use base64::Engine;
    let mut bytes = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Ok(Secret::new(format!("{KEY_PREFIX}{encoded}")))
}

/// How a key is found: the hex SHA-256 of all of it.
pub fn hash(key: &str) -> String {
    crate::audit::redact::key_sha256(key)
}

/// Makes a key for `new.name`, refused when that name has a current key.
pub async fn create(pool: &Pool, new: NewKey<'_>) -> Result<Created, KeyError> {
    check_name(new.name)?;
    let key = generate()?;
    let now = format_time(SystemTime::now());
    let expires = new.expires_at.map(format_time);
    let rate = new.rate_limit.map(|r| r.to_string());
    let inserted = insert(
        pool,
        Insert {
            name: new.name,
            key_sha256: &hash(key.expose()),
            account: new.account,
            rate_limit: rate.as_deref(),
            at: &now,
            by: new.by,
            expires_at: expires.as_deref(),
        },
    )
    .await;
    match inserted {
        Ok(row) => Ok(Created { key, row }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(KeyError::NameTaken(new.name.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every key, newest first.
pub async fn list(pool: &Pool) -> Result<Vec<KeyRow>, KeyError> {
    Ok(sqlx::query_as::<_, KeyRow>(&format!(
        "SELECT {ROW} FROM gateway_keys ORDER BY name, id DESC"
    ))
    .fetch_all(pool)
    .await?)
}

/// Revokes every key of `name` still valid (the current one and any in a
/// rotation's grace period); returns how many.
pub async fn revoke(pool: &Pool, name: &str, by: &str) -> Result<u64, KeyError> {
    let now = format_time(SystemTime::now());
    let done = sqlx::query(
        "UPDATE gateway_keys SET revoked_at = $1, revoked_by = $2 \
         WHERE name = $3 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $4)",
    )
    .bind(&now)
    .bind(by)
    .bind(name)
    .bind(&now)
    .execute(pool)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(KeyError::NotFound(name.to_string()));
    }
    Ok(done)
}

/// A new key for `name` (same account, rate limit and lifetime); the old one
/// keeps working for `grace`, then expires.
pub async fn rotate(
    pool: &Pool,
    name: &str,
    grace: Duration,
    by: &str,
) -> Result<Rotated, KeyError> {
    let mut tx = pool.begin().await?;
    let now_t = SystemTime::now();
    let now = format_time(now_t);
    let current: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {ROW} FROM gateway_keys WHERE name = $1 AND replaced_at IS NULL \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"
    ))
    .bind(name)
    .bind(&now)
    .fetch_optional(&mut *tx)
    .await?;
    let current = current.ok_or_else(|| KeyError::NotFound(name.to_string()))?;
    let in_grace: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gateway_keys WHERE name = $1 AND replaced_at IS NOT NULL \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(name)
    .bind(&now)
    .fetch_one(&mut *tx)
    .await?;
    if in_grace + 1 >= MAX_VALID_PER_NAME {
        return Err(KeyError::TooManyRotations(name.to_string()));
    }
    // The old key ends with its grace period, or sooner if it expired sooner.
    let grace_end = format_time(now_t + grace);
    let old_end = match &current.expires_at {
        Some(e) if *e < grace_end => e.clone(),
        _ => grace_end,
    };
    sqlx::query("UPDATE gateway_keys SET replaced_at = $1, expires_at = $2 WHERE id = $3")
        .bind(&now)
        .bind(&old_end)
        .bind(current.id)
        .execute(&mut *tx)
        .await?;
    // The new key lives as long as the old one was meant to.
    let lifetime = current.expires_at.as_deref().and_then(|e| {
        let created = parse_time(&current.created_at)?;
        parse_time(e)?.duration_since(created).ok()
    });
    let key = generate()?;
    let new_expiry = lifetime.map(|l| format_time(now_t + l));
    let row = insert(
        &mut *tx,
        Insert {
            name,
            key_sha256: &hash(key.expose()),
            account: &current.account,
            rate_limit: current.rate_limit.as_deref(),
            at: &now,
            by,
            expires_at: new_expiry.as_deref(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Rotated {
        new: Created { key, row },
        old_valid_until: old_end,
    })
}

/// Every key a gateway checks callers against (revoked and expired ones
/// too, so their 401 can say so).
pub async fn known(pool: &Pool) -> Result<Vec<KnownKey>, sqlx::Error> {
    sqlx::query_as::<_, KnownKey>(
        "SELECT key_sha256, name, account, rate_limit, expires_at, \
         revoked_at IS NOT NULL AS revoked FROM gateway_keys",
    )
    .fetch_all(pool)
    .await
}

/// Records when keys were last used (`(key_sha256, time)` pairs).
pub async fn touch(pool: &Pool, used: &[(String, SystemTime)]) -> Result<(), sqlx::Error> {
    if used.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for (sha, at) in used {
        sqlx::query(
            "UPDATE gateway_keys SET last_used_at = $1 \
             WHERE key_sha256 = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(format_time(*at))
        .bind(sha)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A stored time back as a `SystemTime`.
pub fn parse_time(stored: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(stored, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_url_safe_and_never_repeat() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        let body = a.expose().strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(body.len(), 43, "32 bytes in unpadded base64");
        assert!(body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn names_are_words_people_can_type_and_rules_can_match() {
        for good in ["alice", "n8n-prod", "bob@example.com", "ci_2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "unknown", "has space", "a/b", &"x".repeat(65)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("for example"), "{err}");
        }
    }
}
