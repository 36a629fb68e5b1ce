//! Snapshots: what a destructive call would destroy, captured into SQLite as
//! zstd-compressed, checksummed chunks before the call is allowed.

pub mod csv_rows;
pub mod fetch;
pub mod store;
