//! The poison-tolerant lock every module uses for its `std::sync::Mutex`es.
//!
//! A mutex is poisoned when a thread panics while holding it. The shim's mutexes guard plain
//! bookkeeping that each critical section leaves consistent before anything that can panic, and
//! a shim that stopped serving every container because one request handler panicked would lose
//! exit statuses and output; so a poisoned lock is taken as it is, never propagated as a panic.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, ignoring poisoning (see the module docs).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
