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

use sqlx::SqlitePool;

use super::query::{list, Filter, Page, StoredEvent};

/// `prev_hash` of the first chained record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields that are hashed, in a fixed order.
pub struct Hashed<'a> {
    pub id: i64,
    pub time: &'a str,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub actor_fingerprint: Option<&'a str>,
    pub actor_label: Option<&'a str>,
    pub client_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub operation: &'a str,
    pub campaign_id: Option<i64>,
    pub action: Option<&'a str>,
    pub would_action: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub policy_revision: Option<&'a str>,
    pub snapshot_id: Option<i64>,
    pub upstream_status: Option<i64>,
    pub status: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub duration_ms: f64,
    pub error_kind: Option<&'a str>,
    /// A note for people (gap and interrupted-operation records); hashed
    /// only when present, so records from before it existed still verify.
    pub detail: Option<&'a str>,
}

/// The record's hash given the previous one.
pub fn hash(prev_hash: &str, r: &Hashed<'_>) -> String {
    let canonical = canonical(r);
    let mut h = crate::digest::sha256_stream();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&canonical);
    crate::digest::hex(h.finish().as_ref())
}

/// The record as a compact JSON array, fields in [`Hashed`]'s order, byte for
/// byte what `serde_json` writes for it (the chain's format).
fn canonical(r: &Hashed<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.path.len() + r.query.map_or(0, str::len));
    out.push(b'[');
    int(&mut out, Some(r.id));
    text(&mut out, Some(r.time));
    text(&mut out, Some(r.request_id));
    text(&mut out, Some(r.method));
    text(&mut out, Some(r.path));
    text(&mut out, r.query);
    text(&mut out, r.actor_fingerprint);
    text(&mut out, r.actor_label);
    text(&mut out, r.client_addr);
    text(&mut out, r.user_agent);
    text(&mut out, Some(r.operation));
    int(&mut out, r.campaign_id);
    text(&mut out, r.action);
    text(&mut out, r.would_action);
    text(&mut out, r.rule);
    text(&mut out, r.policy_revision);
    int(&mut out, r.snapshot_id);
    int(&mut out, r.upstream_status);
    int(&mut out, Some(r.status));
    int(&mut out, Some(r.bytes_in));
    int(&mut out, Some(r.bytes_out));
    separate(&mut out);
    serde_json::to_writer(&mut out, &r.duration_ms).expect("writing JSON to memory cannot fail");
    text(&mut out, r.error_kind);
    if r.detail.is_some() {
        text(&mut out, r.detail);
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


fn hashed(e: &StoredEvent) -> Hashed<'_> {
    Hashed {
        id: e.id,
        time: &e.time,
        request_id: &e.request_id,
        method: &e.method,
        path: &e.path,
        query: e.query.as_deref(),
        actor_fingerprint: e.actor_fingerprint.as_deref(),
        actor_label: e.actor_label.as_deref(),
        client_addr: e.client_addr.as_deref(),
        user_agent: e.user_agent.as_deref(),
        operation: &e.operation,
        campaign_id: e.campaign_id,
        action: e.action.as_deref(),
        would_action: e.would_action.as_deref(),
        rule: e.rule.as_deref(),
        policy_revision: e.policy_revision.as_deref(),
        snapshot_id: e.snapshot_id,
        upstream_status: e.upstream_status,
        status: e.status,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        duration_ms: e.duration_ms,
        error_kind: e.error_kind.as_deref(),
        detail: e.detail.as_deref(),
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
pub async fn checkpoint(pool: &SqlitePool) -> Result<Option<Checkpoint>, sqlx::Error> {
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
    pool: &SqlitePool,
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
            if hash(prev_hash, &hashed(e)) != stored_hash {
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
    use sha2::{Digest, Sha256};

    fn sample<'a>(query: Option<&'a str>, duration_ms: f64) -> Hashed<'a> {
        Hashed {
            id: 42,
            time: "2026-11-26T12:00:00.123Z",
            request_id: "req-\"quoted\"\n",
            method: "GET",
            path: "/api/v1/campaigns/101/é",
            query,
            actor_fingerprint: Some("0123456789abcdef"),
            actor_label: None,
            client_addr: Some("127.0.0.1"),
            user_agent: Some("curl/8 \u{1}"),
            operation: "passthrough",
            campaign_id: Some(101),
            action: None,
            would_action: Some("archive"),
            rule: None,
            policy_revision: None,
            snapshot_id: None,
            upstream_status: Some(200),
            status: 200,
            bytes_in: 0,
            bytes_out: 1234,
            duration_ms,
            error_kind: None,
            detail: None,
        }
    }

    /// The encoding every stored chain was written with.
    fn reference(prev: &str, r: &Hashed<'_>) -> String {
        let canonical = serde_json::json!([
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
        ])
        .to_string();
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
            let r = sample(query, ms);
            assert_eq!(hash(GENESIS, &r), reference(GENESIS, &r), "{query:?} {ms}");
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
            r.user_agent = Some(t);
            r.rule = Some(t);
            r.campaign_id = Some(i64::MIN);
            r.snapshot_id = Some(i64::MAX);
            assert_eq!(hash(GENESIS, &r), reference(GENESIS, &r), "{t:?}");
        }
    }
}
