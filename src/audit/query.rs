//! Reading the audit trail back, for `safedelete audit` and the admin API.

use crate::db::{Pool, Statement};

pub use super::event::StoredEvent;

/// What the guard did with a request, as `audit_events.action` stores it,
/// with the word a policy uses for it (the guard's table checks they agree).
pub const ACTIONS: [(&str, &str); 5] = [
    ("allowed", "allow"),
    ("archived", "archive"),
    ("paused", "pause"),
    ("denied", "deny"),
    ("refused", "refuse"),
];

/// An action as people write it: the stored word or the policy's (`allow`,
/// `archive`, `pause`, `deny`), in any case. The error lists what is accepted.
pub fn parse_action(input: &str) -> Result<&'static str, String> {
    let word = input.trim().to_ascii_lowercase();
    ACTIONS
        .iter()
        .find(|(stored, policy)| word == *stored || word == *policy)
        .map(|(stored, _)| *stored)
        .ok_or_else(|| {
            let stored: Vec<&str> = ACTIONS.iter().map(|(s, _)| *s).collect();
            format!(
                "`{input}` is not an action; use one of {} (or the policy's allow, archive, pause, deny)",
                stored.join(", ")
            )
        })
}

/// Which records to read. Every field narrows; none set means all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub campaign_id: Option<i64>,
    /// An actor label or a key fingerprint.
    pub actor: Option<String>,
    /// The guard's action: allowed, archived, paused, denied, refused.
    pub action: Option<String>,
    pub method: Option<String>,
    pub status: Option<i64>,
    /// RFC 3339 times (UTC, as stored): `since <= time < until`.
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Page order: newest first (`before` is an exclusive id cursor) or oldest
/// first (`after`), both stable because ids only grow.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    NewestFirst { before: Option<i64> },
    OldestFirst { after: Option<i64> },
}

/// Records matching `filter`, one page of at most `limit`.
pub async fn list(
    pool: &Pool,
    filter: &Filter,
    page: Page,
    limit: u32,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut q = Statement::new(format!(
        "SELECT {} FROM audit_events WHERE 1=1",
        super::event::COLUMNS.join(", ")
    ));
    if let Some(c) = filter.campaign_id {
        q.push(" AND campaign_id = ").bind(c);
    }
    if let Some(a) = &filter.actor {
        q.push(" AND (actor_label = ")
            .bind(a.clone())
            .push(" OR actor_fingerprint = ")
            .bind(a.clone())
            .push(")");
    }
    if let Some(a) = &filter.action {
        q.push(" AND action = ").bind(a.clone());
    }
    if let Some(m) = &filter.method {
        q.push(" AND method = ").bind(m.to_ascii_uppercase());
    }
    if let Some(s) = filter.status {
        q.push(" AND status = ").bind(s);
    }
    if let Some(t) = &filter.since {
        q.push(" AND time >= ").bind(t.clone());
    }
    if let Some(t) = &filter.until {
        q.push(" AND time < ").bind(t.clone());
    }
    match page {
        Page::NewestFirst { before } => {
            if let Some(b) = before {
                q.push(" AND id < ").bind(b);
            }
            q.push(" ORDER BY id DESC");
        }
        Page::OldestFirst { after } => {
            if let Some(a) = after {
                q.push(" AND id > ").bind(a);
            }
            q.push(" ORDER BY id ASC");
        }
    }
    q.push(" LIMIT ").bind(i64::from(limit));
    let (sql, args) = q.finish();
    sqlx::query_as_with::<_, StoredEvent, _>(&sql, args)
        .fetch_all(pool)
        .await
}

/// The most recent `limit` records, newest first.
pub async fn recent(pool: &Pool, limit: u32) -> Result<Vec<StoredEvent>, sqlx::Error> {
    list(
        pool,
        &Filter::default(),
        Page::NewestFirst { before: None },
        limit,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_read_in_the_trail_s_words_and_the_policy_s() {
        assert_eq!(parse_action("archive"), Ok("archived"));
        assert_eq!(parse_action("ARCHIVED"), Ok("archived"));
        assert_eq!(parse_action("deny"), Ok("denied"));
        assert_eq!(parse_action("allow"), Ok("allowed"));
        assert_eq!(parse_action("refused"), Ok("refused"));
        assert_eq!(parse_action("Pause"), Ok("paused"));
        let err = parse_action("archve").unwrap_err();
        assert!(
            err.contains("allowed, archived, paused, denied, refused"),
            "{err}"
        );
    }
}
