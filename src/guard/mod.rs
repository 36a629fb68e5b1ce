//! The deletion guard: which requests are destructive ([`classify`]), the
//! team's policy ([`policy`]), and the ordered pipeline that captures a
//! campaign's data before anything destroys it; every refusal is one
//! [`error::GuardError`], mapped to a response in one place.

pub mod capture;
pub mod classify;
pub mod error;
pub mod glob;
pub mod history;
pub mod ledger;
pub mod operations;
pub mod pipeline;
pub mod policy;
pub mod tasks;
