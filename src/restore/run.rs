//! A restore from its start to its report, the same from the command line
//! and from the admin API: [`start`] records a new restore (once its plan
//! was shown), [`reopen`] takes up one that stopped, and [`execute`] replays
//! the steps not yet done and ends with the report, kept with the restore.

use crate::db::Pool;

use super::call::Caller;
use super::ledger::{self, Begin};
use super::replay::{self, Audit, Event};
use super::report::Report;
use super::source::{self, Captured, SourceError};
use super::{LeadChoice, Plan};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no restore {id} (`safedelete restore SNAPSHOT_ID` starts one)")]
    NoSuchRestore { id: i64 },
    #[error("restore {id} is done already")]
    Done { id: i64 },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the restore's record: {0}")]
    Db(#[from] sqlx::Error),
    #[error("restore {id} stopped: {reason}; `safedelete restore --resume {id}` continues where it stopped")]
    Stopped { id: i64, reason: String },
}

/// A restore ready to run: its id, what it restores and how.
pub struct Job {
    pub id: i64,
    pub captured: Captured,
    pub plan: Plan,
}

/// Works out the plan on a blocking thread: it reads the whole leads export,
/// which for half a million leads takes a while.
pub async fn plan(
    captured: Captured,
    name: Option<String>,
    choice: LeadChoice,
) -> Result<(Captured, Plan), SourceError> {
    tokio::task::spawn_blocking(move || {
        let plan = Plan::new(&captured, name.as_deref(), choice)?;
        Ok((captured, plan))
    })
    .await
    .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// Records a new restore of `plan`, run by `operator`.
pub async fn start(
    pool: &Pool,
    captured: Captured,
    plan: Plan,
    operator: &str,
) -> Result<Job, RunError> {
    let id = ledger::begin(
        pool,
        Begin {
            snapshot_id: plan.snapshot_id,
            name: &plan.name,
            leads_choice: plan.leads_choice.as_str(),
            operator,
            leads_total: plan.leads.restored,
            calls_total: plan.total_calls(),
        },
    )
    .await?;
    Ok(Job { id, captured, plan })
}

/// Takes up restore `id` again, with the name and leads it started with.
pub async fn reopen(pool: &Pool, id: i64) -> Result<Job, RunError> {
    let row = ledger::get(pool, id)
        .await?
        .ok_or(RunError::NoSuchRestore { id })?;
    if row.state == "done" {
        return Err(RunError::Done { id });
    }
    let captured = source::read(pool, row.snapshot_id).await?;
    let choice = LeadChoice::from_recorded(&row.leads_choice);
    let (captured, plan) = plan(captured, Some(row.name), choice).await?;
    ledger::reopen(pool, id).await?;
    Ok(Job { id, captured, plan })
}

/// Runs every step not yet done; ends the restore `done` with its report,
/// or `failed` with why (it can be resumed).
pub async fn execute(
    pool: &Pool,
    job: &Job,
    caller: &Caller,
    audit: &Audit<'_>,
    progress: &mut (dyn FnMut(Event) + Send),
) -> Result<Report, RunError> {
    let outcome = replay::replay(
        pool,
        job.id,
        &job.plan,
        &job.captured,
        caller,
        audit,
        progress,
    )
    .await;
    match outcome {
        Ok(_) => {
            ledger::finish(pool, job.id, None).await?;
            let report = Report::read(pool, job.id, &job.plan).await?;
            let text = serde_json::to_string(&report).unwrap_or_default();
            ledger::keep_report(pool, job.id, &text).await?;
            Ok(report)
        }
        Err(err) => {
            let reason = err.to_string();
            ledger::finish(pool, job.id, Some(&reason)).await?;
            Err(RunError::Stopped { id: job.id, reason })
        }
    }
}
