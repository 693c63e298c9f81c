//! Locking a `std::sync::Mutex` (or `RwLock`) whose holder panicked. Every lock here
//! guards a map or a counter that stays consistent between statements, so a panic elsewhere
//! is no reason to stop everyone else: the guard is taken as it is.

use std::sync::{Mutex, MutexGuard};

/// The guard of `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A read guard of `l`, poisoned or not.
pub fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// A write guard of `l`, poisoned or not.
pub fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
