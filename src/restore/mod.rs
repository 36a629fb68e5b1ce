//! Restore: a snapshot becomes a plan of SmartLead API calls that rebuilds
//! what was destroyed as a new campaign. `source` reads the snapshot back,
//! `plan` works out every call and counts the leads (`--dry-run` prints it
//! and makes no call). `undo` puts back what the smaller deletes took (a
//! lead, a webhook, sender accounts) and unarchives a campaign, one call each;
//! `audit` records every call either makes.

pub mod audit;
pub mod call;
pub mod ledger;
pub mod plan;
pub mod replay;
pub mod report;
pub mod run;
pub mod source;
pub mod undo;

pub use plan::{LeadChoice, Plan};
pub use run::{Job, RunError};
pub use source::{Captured, SourceError};
pub use undo::{Undo, UndoError};
