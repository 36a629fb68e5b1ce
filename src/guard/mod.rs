//! The deletion guard. [`operations`] is THE table of destructive SmartLead
//! calls (routes, facts, capture plans, alternatives, match fields);
//! [`classify`] reads requests by it, [`policy`] decides (pure), and the
//! ordered [`pipeline`] claims the target ([`ledger`]), captures what the
//! call would destroy ([`capture`]) and acts. Every refusal is one
//! [`error::GuardError`], mapped to a response in one place.

pub mod capture;
pub mod classify;
pub mod context;
pub mod error;
pub mod glob;
pub mod history;
pub mod ledger;
pub mod operations;
pub mod pipeline;
pub mod policy;
pub mod tasks;
