//! Tamper evidence for the audit trail. Every record carries `prev_hash` (the
//! previous record's `hash`) and `hash` = SHA-256 over `prev_hash`, a newline
//! and a canonical JSON encoding of the record (its id included). Writers
//! chain records inside the write transaction, so the chain holds across
//! threads and processes. [`verify`] walks the chain and names the first
//! record that was modified, deleted or inserted; a [`Checkpoint`] kept
//! elsewhere also proves that the trail still reaches that point (catching
//! truncation of the newest records).

use std::fmt;
use std::str::FromStr;

use crate::db::Pool;

use super::event::{Value, OPTIONAL_TAIL};
use super::query::{list, Filter, Page};

/// `prev_hash` of the first chained record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The record's hash given the previous one, over its hashed values
/// ([`StoredEvent::hashed_values`]).
pub fn hash(prev_hash: &str, values: &[Value<'_>]) -> String {
    let canonical = canonical(values);
    let mut h = crate::digest::sha256_stream();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&canonical);
    crate::digest::hex(h.finish().as_ref())
}

/// The record as a compact JSON array, fields in column order, byte for
/// byte what `serde_json` writes for it (the chain's format). Absent
/// fields at the end of the optional tail ([`OPTIONAL_TAIL`]) are left out.
fn canonical(values: &[Value<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(b'[');
    let first_optional = values.len().saturating_sub(OPTIONAL_TAIL);
    let mut end = values.len();
    while end > first_optional && values[end - 1] == Value::Text(None) {
        end -= 1;
    }
    for v in &values[..end] {
        match *v {
            Value::Int(n) => int(&mut out, n),
            Value::Text(t) => text(&mut out, t),
            Value::Float(f) => {
                separate(&mut out);
                serde_json::to_writer(&mut out, &f).expect("writing JSON to memory cannot fail");
            }
        }
    }
    out.push(b']');
    out
}

/// A comma before every value but the first.
fn separate(out: &mut Vec<u8>) {
    if out.len() > 1 {
        out.push(b',');
    }
}

/// An integer or `null`.
fn int(out: &mut Vec<u8>, value: Option<i64>) {
    separate(out);
    match value {
        Some(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A string or `null`. Strings with nothing to escape (the usual case) are
/// copied between quotes; the rest go through `serde_json`, which owns the
/// escaping rules.
fn text(out: &mut Vec<u8>, value: Option<&str>) {
    separate(out);
    let Some(s) = value else {
        out.extend_from_slice(b"null");
        return;
    };
    let plain = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20 && b != b'"' && b != b'\\'));
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing JSON to memory cannot fail");
    }
}

/// A point of the chain to keep elsewhere: `ID:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub hash: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.hash)
    }
}

/// A checkpoint that is not `ID:HASH`.
#[derive(Debug, thiserror::Error)]
#[error("a checkpoint is ID:HASH (as printed by `safedelete audit checkpoint`)")]
pub struct BadCheckpoint;

impl FromStr for Checkpoint {
    type Err = BadCheckpoint;
    fn from_str(s: &str) -> Result<Self, BadCheckpoint> {
        let (id, hash) = s.trim().split_once(':').ok_or(BadCheckpoint)?;
        let id = id.parse().map_err(|_| BadCheckpoint)?;
        let hash = hash.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadCheckpoint);
        }
        Ok(Checkpoint { id, hash })
    }
}

/// The newest chained record.
pub async fn checkpoint(pool: &Pool) -> Result<Option<Checkpoint>, sqlx::Error> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT id, hash FROM audit_events WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, hash)| Checkpoint { id, hash }))
}

/// The first thing wrong with the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The record's content no longer matches its hash.
    Modified { id: i64 },
    /// Records between two ids are gone.
    Deleted { after: i64, before: i64 },
    /// A record does not link to the one before it, or has no hash.
    Inserted { id: i64 },
    /// The checkpoint's record is gone (the trail was truncated or rewritten).
    CheckpointMissing { checkpoint: Checkpoint },
    /// The checkpoint's record exists but with another hash.
    CheckpointMismatch {
        checkpoint: Checkpoint,
        found: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Modified { id } => write!(f, "record {id} was modified"),
            Problem::Deleted { after, before } => {
                write!(f, "records after {after} and before {before} were deleted")
            }
            Problem::Inserted { id } => {
                write!(
                    f,
                    "record {id} was inserted (it does not link to the record before it)"
                )
            }
            Problem::CheckpointMissing { checkpoint } => write!(
                f,
                "checkpoint {checkpoint} is no longer in the trail (records were removed)"
            ),
            Problem::CheckpointMismatch { checkpoint, found } => write!(
                f,
                "record {} has hash {found}, not the checkpoint's {}",
                checkpoint.id, checkpoint.hash
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Chained records checked.
    pub records: u64,
    /// Records from before tamper evidence existed (no hash), skipped.
    pub unchained: u64,
    pub problem: Option<Problem>,
    /// The newest record, to keep as a checkpoint.
    pub head: Option<Checkpoint>,
    /// Gap records: where the trail says records were lost (id, detail).
    pub gaps: Vec<(i64, String)>,
}

/// Walks the whole chain, oldest first, in pages.
pub async fn verify(
    pool: &Pool,
    checkpoint: Option<&Checkpoint>,
) -> Result<VerifyReport, sqlx::Error> {
    let mut report = VerifyReport {
        records: 0,
        unchained: 0,
        problem: None,
        head: None,
        gaps: Vec::new(),
    };
    // Records from `chain_start` on must be chained; a missing start record
    // (deleted) means every record must be.
    let chain_start: i64 = sqlx::query_scalar("SELECT chain_start FROM audit_chain WHERE id = 1")
        .fetch_optional(pool)
        .await?
        .unwrap_or(1);
    let mut prev: Option<(i64, String)> = None;
    let mut checkpoint_seen = false;
    let mut after = None;
    'pages: loop {
        let page = list(pool, &Filter::default(), Page::OldestFirst { after }, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for e in &page {
            if e.id <= 0 {
                report.problem = Some(Problem::Inserted { id: e.id });
                break 'pages;
            }
            let Some(stored_hash) = e.hash.as_deref() else {
                if prev.is_some() || e.id >= chain_start {
                    report.problem = Some(Problem::Inserted { id: e.id });
                    break 'pages;
                }
                report.unchained += 1;
                continue;
            };
            let prev_hash = e.prev_hash.as_deref().unwrap_or("");
            if hash(prev_hash, &e.hashed_values()) != stored_hash {
                report.problem = Some(Problem::Modified { id: e.id });
                break 'pages;
            }
            let expected_prev = prev.as_ref().map(|(_, h)| h.as_str()).unwrap_or(GENESIS);
            if prev_hash != expected_prev {
                report.problem = Some(match &prev {
                    Some((prev_id, _)) if e.id != prev_id + 1 => Problem::Deleted {
                        after: *prev_id,
                        before: e.id,
                    },
                    None if prev_hash != GENESIS && e.id > 1 => Problem::Deleted {
                        after: 0,
                        before: e.id,
                    },
                    _ => Problem::Inserted { id: e.id },
                });
                break 'pages;
            }
            if let Some((prev_id, _)) = &prev {
                if e.id != prev_id + 1 {
                    report.problem = Some(Problem::Deleted {
                        after: *prev_id,
                        before: e.id,
                    });
                    break 'pages;
                }
            }
            if let Some(cp) = checkpoint {
                if e.id == cp.id {
                    checkpoint_seen = true;
                    if stored_hash != cp.hash {
                        report.problem = Some(Problem::CheckpointMismatch {
                            checkpoint: cp.clone(),
                            found: stored_hash.to_string(),
                        });
                        break 'pages;
                    }
                }
            }
            report.records += 1;
            if e.operation == super::OperationKind::AuditGap.as_str() {
                report
                    .gaps
                    .push((e.id, e.detail.clone().unwrap_or_default()));
            }
            prev = Some((e.id, stored_hash.to_string()));
        }
    }
    if report.problem.is_none() {
        if let Some(cp) = checkpoint {
            if !checkpoint_seen {
                report.problem = Some(Problem::CheckpointMissing {
                    checkpoint: cp.clone(),
                });
            }
        }
    }
    report.head = prev.map(|(id, hash)| Checkpoint { id, hash });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::StoredEvent;
    use sha2::{Digest, Sha256};

    fn sample(query: Option<&str>, duration_ms: f64) -> StoredEvent {
        StoredEvent {
            id: 42,
            time: "2026-11-26T12:00:00.123Z".into(),
            request_id: "req-\"quoted\"\n".into(),
            method: "GET".into(),
            path: "/api/v1/campaigns/101/é".into(),
            query: query.map(str::to_string),
            actor_fingerprint: Some("0123456789abcdef".into()),
            client_addr: Some("127.0.0.1".into()),
            user_agent: Some("curl/8 \u{1}".into()),
            operation: "passthrough".into(),
            campaign_id: Some(101),
            would_action: Some("archive".into()),
            upstream_status: Some(200),
            status: 200,
            bytes_out: 1234,
            duration_ms,
            ..StoredEvent::default()
        }
    }

    /// The encoding every stored chain was written with.
    fn reference(prev: &str, r: &StoredEvent) -> String {
        let mut fields = serde_json::json!([
            r.id,
            r.time,
            r.request_id,
            r.method,
            r.path,
            r.query,
            r.actor_fingerprint,
            r.actor_label,
            r.client_addr,
            r.user_agent,
            r.operation,
            r.campaign_id,
            r.action,
            r.would_action,
            r.rule,
            r.policy_revision,
            r.snapshot_id,
            r.upstream_status,
            r.status,
            r.bytes_in,
            r.bytes_out,
            r.duration_ms,
            r.error_kind,
        ]);
        // The optional tail: detail, target, account; nulls at its end left out.
        let tail = fields.as_array_mut().unwrap();
        let optional = [&r.detail, &r.target, &r.account];
        let present = optional
            .iter()
            .rposition(|v| v.is_some())
            .map_or(0, |i| i + 1);
        for v in &optional[..present] {
            tail.push((*v).clone().into());
        }
        let canonical = fields.to_string();
        format!(
            "{:x}",
            Sha256::digest(format!("{prev}\n{canonical}").as_bytes())
        )
    }

    #[test]
    fn the_fast_encoding_hashes_exactly_like_the_reference() {
        for (query, ms) in [
            (None, 0.0),
            (Some("api_key=[REDACTED]&x=1"), 1.234),
            (Some(""), 1e21),
            (Some("a=%20"), f64::NAN),
        ] {
            let mut r = sample(query, ms);
            assert_eq!(
                hash(GENESIS, &r.hashed_values()),
                reference(GENESIS, &r),
                "{query:?} {ms}"
            );
            r.target = Some("campaign:5/lead:7".into());
            assert_eq!(hash(GENESIS, &r.hashed_values()), reference(GENESIS, &r));
            r.detail = Some("3 audit records lost".into());
            assert_eq!(hash(GENESIS, &r.hashed_values()), reference(GENESIS, &r));
            r.target = None;
            assert_eq!(hash(GENESIS, &r.hashed_values()), reference(GENESIS, &r));
            r.account = Some("client-a".into());
            assert_eq!(hash(GENESIS, &r.hashed_values()), reference(GENESIS, &r));
            r.detail = None;
            assert_eq!(hash(GENESIS, &r.hashed_values()), reference(GENESIS, &r));
        }
    }

    #[test]
    fn every_character_class_encodes_like_the_reference() {
        // Each control character, the two JSON specials, DEL, non-ASCII and
        // the line separators that JSON leaves alone, alone and mixed in.
        let mut texts: Vec<String> = (0u8..0x20).map(|b| char::from(b).to_string()).collect();
        texts.extend(
            [
                "\"",
                "\\",
                "\u{7f}",
                "é",
                "\u{2028}",
                "\u{2029}",
                "/",
                "",
                "plain text",
            ]
            .map(String::from),
        );
        texts.push("a\"b\\c\nd\u{1f}e\u{7f}f".to_string());
        for t in &texts {
            let mut r = sample(Some(t), 0.5);
            r.user_agent = Some(t.clone());
            r.rule = Some(t.clone());
            r.detail = Some(t.clone());
            r.campaign_id = Some(i64::MIN);
            r.snapshot_id = Some(i64::MAX);
            assert_eq!(
                hash(GENESIS, &r.hashed_values()),
                reference(GENESIS, &r),
                "{t:?}"
            );
        }
    }
}
