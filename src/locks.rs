//! Locking a `std::sync::Mutex` whose holder panicked. Every mutex here guards a map or a
//! counter that stays consistent between statements, so a panic elsewhere is no reason to
//! stop everyone else: the guard is taken as it is.

use std::sync::{Mutex, MutexGuard};

/// The guard of `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
