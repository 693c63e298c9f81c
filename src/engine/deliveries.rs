//! What webhook deliveries have told us, per library: the newest change a delivery named,
//! and how long the last delivery took to arrive.
//!
//! Nextcloud's webhook_listeners sends deliveries from background jobs and never retries
//! one, so "is anything stuck?" can only be answered by comparing what Nextcloud changed
//! (a library folder's modification time, which Nextcloud moves on every change below it)
//! with what was delivered. This keeps the delivered side; `web::health` compares.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::chain::LibraryId;

use super::stats::lock;

/// Deliveries seen since start (kept in memory: a restart catches up by scanning).
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Per library, the newest event time (Unix seconds) a delivery named.
    newest: Mutex<HashMap<LibraryId, i64>>,
    /// The last delivery's arrival minus its event time, in seconds.
    last_lag: Mutex<Option<i64>>,
}

impl Deliveries {
    /// Notes a delivery about `libraries`, of an event at `time`, arriving at `now`.
    pub fn record(&self, libraries: &[LibraryId], time: i64, now: i64) {
        let mut newest = lock(&self.newest);
        for id in libraries {
            let at = newest.entry(*id).or_insert(time);
            *at = (*at).max(time);
        }
        *lock(&self.last_lag) = Some((now - time).max(0));
    }

    /// The newest change a delivery named in `library`.
    pub fn newest(&self, library: &LibraryId) -> Option<i64> {
        lock(&self.newest).get(library).copied()
    }

    pub fn last_lag(&self) -> Option<i64> {
        *lock(&self.last_lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_time_per_library_and_the_last_lag() {
        let d = Deliveries::default();
        let (a, b) = (LibraryId([1; 16]), LibraryId([2; 16]));
        d.record(&[a], 100, 103);
        d.record(&[a, b], 90, 150);
        assert_eq!(d.newest(&a), Some(100));
        assert_eq!(d.newest(&b), Some(90));
        assert_eq!(d.last_lag(), Some(60));
        assert_eq!(d.newest(&LibraryId([3; 16])), None);
    }
}
