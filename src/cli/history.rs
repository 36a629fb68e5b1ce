//! `safedelete history --campaign ID | --lead ID | --email-account ID`: the
//! story of one campaign, lead or email account through the gateway, told
//! from the operations and audit trail in the database.

use std::io::Write;

use crate::config::{Config, ProcessEnv};
use crate::db;
use crate::guard::history::{self, Bypass, History, OperationView, Subject};
use crate::snapshot::store::SnapshotInfo;

use super::{CliError, ConfigArg};

/// `safedelete history`
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_name = "ID", required_unless_present_any = ["lead", "email_account"], conflicts_with_all = ["lead", "email_account"])]
    pub campaign: Option<i64>,
    /// A lead's history (its deletes and unsubscribes, in any campaign).
    #[arg(long, value_name = "ID", conflicts_with = "email_account")]
    pub lead: Option<i64>,
    /// An email account's history (its deletion, its removals from campaigns).
    #[arg(long, value_name = "ID")]
    pub email_account: Option<i64>,
    /// The history as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `history`; a campaign the gateway never saw is an error.
pub async fn run(args: HistoryArgs) -> Result<(), CliError> {
    let config = Config::load(args.config.config.as_deref(), &ProcessEnv)?;
    let pool = db::open_read_only(&config.database.store).await?;
    let subject = match (args.campaign, args.lead, args.email_account) {
        (Some(id), _, _) => Subject::Campaign(id),
        (_, Some(id), _) => Subject::Lead(id),
        (_, _, Some(id)) => Subject::EmailAccount(id),
        // clap requires one of them.
        (None, None, None) => Subject::Campaign(0),
    };
    let history = history::of(&pool, subject).await;
    pool.close().await;
    let history = history?;
    if history.operations.is_empty() && history.first_seen.is_none() {
        return Err(CliError::UnknownSubject { subject });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &history).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        write_story(&mut out, &history)?;
    }
    out.flush()?;
    Ok(())
}

fn write_story(out: &mut impl Write, h: &History) -> std::io::Result<()> {
    let n = h.operations.len();
    write!(
        out,
        "{}: {n} guarded operation{}",
        h.subject,
        if n == 1 { "" } else { "s" }
    )?;
    if !h.bypasses.is_empty() {
        write!(out, "; deleted outside the gateway (bypass detected)")?;
    }
    writeln!(out)?;
    for op in &h.operations {
        writeln!(out)?;
        write_operation(out, op)?;
    }
    for b in &h.bypasses {
        writeln!(out)?;
        write_bypass(out, b)?;
    }
    for r in &h.restores {
        writeln!(out)?;
        let new = r
            .new_campaign_id
            .map_or("a new campaign (not created yet)".to_string(), |id| {
                format!("campaign {id}")
            });
        writeln!(
            out,
            "restore {}  {}  by {}: snapshot {} restored as {new} {:?} ({})",
            r.restore_id,
            r.created_at,
            r.operator,
            r.snapshot_id,
            r.name,
            match r.state.as_str() {
                "done" => "done".to_string(),
                "failed" => format!(
                    "stopped; `safedelete restore --resume {}` continues it",
                    r.restore_id
                ),
                other => other.to_string(),
            }
        )?;
    }
    writeln!(out)?;
    let p = h.passthrough_requests;
    write!(
        out,
        "{p} passthrough request{} touched it",
        if p == 1 { "" } else { "s" }
    )?;
    if let (Some(first), Some(last)) = (&h.first_seen, &h.last_seen) {
        write!(out, " (first {first}, last {last})")?;
    }
    writeln!(out)?;
    if !h.audit_gaps.is_empty() {
        writeln!(
            out,
            "\naudit records were lost {} time{} (some may have been about it):",
            h.audit_gaps.len(),
            if h.audit_gaps.len() == 1 { "" } else { "s" }
        )?;
        for g in &h.audit_gaps {
            writeln!(
                out,
                "  audit #{} {}: {}",
                g.audit_id,
                g.time,
                g.detail.as_deref().unwrap_or("records lost")
            )?;
        }
    }
    Ok(())
}

fn write_bypass(out: &mut impl Write, b: &Bypass) -> std::io::Result<()> {
    writeln!(
        out,
        "bypass detected  {}  deleted outside the gateway  (audit {})",
        b.time, b.audit_id
    )?;
    writeln!(
        out,
        "  account:   {}",
        b.account.as_deref().unwrap_or("unknown")
    )?;
    if let Some(detail) = &b.detail {
        writeln!(out, "  what:      {detail}")?;
    }
    match b.snapshot_id {
        Some(id) => writeln!(
            out,
            "  snapshot:  {id} (its data: `safedelete snapshots export {id}`)"
        )?,
        None => writeln!(
            out,
            "  snapshot:  none: the gateway never captured this campaign's data"
        )?,
    }
    Ok(())
}

fn write_operation(out: &mut impl Write, op: &OperationView) -> std::io::Result<()> {
    writeln!(
        out,
        "operation {}  {}  {} of {}  (request {})",
        op.id, op.created_at, op.kind, op.target, op.request_id
    )?;
    writeln!(
        out,
        "  actor:     {} ({})",
        op.actor_label.as_deref().unwrap_or("unknown"),
        op.actor_fingerprint.as_deref().unwrap_or("no key")
    )?;
    let decision = match (&op.action, &op.rule) {
        (Some(action), Some(rule)) => format!("{action} by rule `{rule}`"),
        (Some(action), None) => format!("{action} by the default"),
        (None, _) => "none (it ended before the policy decided)".to_string(),
    };
    write!(out, "  decision:  {decision}")?;
    if let Some(would) = &op.would_action {
        write!(out, "; shadow rules would: {would}")?;
    }
    writeln!(out)?;
    if let Some(revision) = &op.policy_revision {
        writeln!(out, "  policy:    revision {revision}")?;
    }
    writeln!(out, "  state:     {} (at {})", op.state, op.updated_at)?;
    match (&op.snapshot, op.snapshot_id) {
        (Some(s), _) => write_snapshot(out, s)?,
        (None, Some(id)) => writeln!(out, "  snapshot:  {id} (no longer stored)")?,
        (None, None) => writeln!(out, "  snapshot:  none")?,
    }
    writeln!(out, "  upstream:  {}", op.sent_upstream)?;
    if let Some(error) = &op.error {
        writeln!(out, "  error:     {error}")?;
    }
    Ok(())
}

fn write_snapshot(out: &mut impl Write, s: &SnapshotInfo) -> std::io::Result<()> {
    let complete = s.parts.iter().filter(|p| p.state == "complete").count();
    writeln!(
        out,
        "  snapshot:  {} {}, {complete}/{} parts complete",
        s.id,
        s.state,
        s.parts.len()
    )?;
    for p in &s.parts {
        writeln!(
            out,
            "             {:<15} {:<9} {:>12} bytes ({} stored)",
            p.kind, p.state, p.bytes, p.stored_bytes
        )?;
    }
    if let Some(error) = &s.error {
        writeln!(out, "             error: {error}")?;
    }
    Ok(())
}
