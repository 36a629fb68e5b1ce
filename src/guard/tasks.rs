//! Counts guard pipelines still running, so shutdown can wait for them before
//! closing the database: a pipeline whose client hung up has no connection
//! left for the graceful drain to wait on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Running pipelines.
#[derive(Default)]
pub struct TaskCount {
    running: AtomicUsize,
    idle: Notify,
}

/// Held by a running pipeline; dropping it counts the pipeline done.
pub struct TaskGuard(Arc<TaskCount>);

impl TaskCount {
    pub fn enter(self: &Arc<Self>) -> TaskGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Resolves once no pipeline runs.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
