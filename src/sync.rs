//! A mutex lock that outlives a panic elsewhere: the gateway's shared state
//! (the audit health, upload keys, pools) stays usable when a thread that
//! held the lock panicked, since every update leaves it whole.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the value even if another holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
