//! What the guard works with, and nothing of the proxy's: the upstream,
//! the database, the audit trail, the policy in force, its settings, and the
//! runtime and bookkeeping for pipelines and captures that outlive a request.

use std::sync::{Arc, RwLock};

use crate::db::Pool;

use super::capture::Captures;
use super::tasks::TaskCount;
use crate::audit::AuditSink;
use crate::config::{Config, GuardPolicy, GuardSettings};
use crate::upstream::Upstream;

/// The guard's context, shared by every guarded request.
pub struct GuardContext {
    pub upstream: Upstream,
    /// Operations, snapshots, guarded audit records.
    pub pool: Pool,
    pub audit: AuditSink,
    /// The deletion policy and actors; swapped whole on SIGHUP.
    policy: RwLock<Arc<GuardPolicy>>,
    pub settings: GuardSettings,
    /// The main runtime, where guard pipelines run (not on a proxy worker,
    /// which may stop before they finish).
    pub background: tokio::runtime::Handle,
    /// Guard pipelines and captures still running (shutdown waits for them).
    pub tasks: Arc<TaskCount>,
    /// Snapshot captures whose client was answered before they ended; a
    /// retry of the same call joins them.
    pub captures: Arc<Captures>,
}

impl GuardContext {
    pub fn new(config: &Config, upstream: Upstream, pool: Pool, audit: AuditSink) -> Self {
        GuardContext {
            upstream,
            pool,
            audit,
            policy: RwLock::new(Arc::new(config.policy.clone())),
            settings: config.guard.clone(),
            background: tokio::runtime::Handle::current(),
            tasks: Arc::default(),
            captures: Arc::default(),
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<GuardPolicy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a new, already validated policy.
    pub fn set_policy(&self, policy: GuardPolicy) {
        let new = Arc::new(policy);
        match self.policy.write() {
            Ok(mut p) => *p = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}
