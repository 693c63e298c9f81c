//! The database's health as the engine reports it and acts on it.
//!
//! [`crate::db`] re-opens the database by itself after an I/O error (a full disk); this
//! module is the engine's side of that:
//!
//! - While it cannot be written, deliveries are answered 503 (AppAPI never retries one, so
//!   each is counted as refused) and the worker waits for it, without blaming Nextcloud.
//! - The admin is told where they look: `/api/ingest` (`storage`), the health check
//!   (`storage`, also on the panel), `/heartbeat` (so the container turns unhealthy), the
//!   log, and Nextcloud's log through AppAPI.
//! - Once it is back: the worker, write-back and a catch-up of every library are woken, so
//!   what changed while deliveries were refused is recorded by folder ETags
//!   ([`super::catchup`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::stats::lock;
use super::Engine;
use crate::appapi::client::LogLevel;
use crate::db::DbHealth;

/// The engine's record of the database's failures.
#[derive(Debug, Default)]
pub(crate) struct StorageState {
    /// Deliveries answered with an error since the last failure ended.
    refused: AtomicU64,
    /// The last failure that ended.
    last_failure: Mutex<Option<PastFailure>>,
    /// Woken when the database is writable again.
    back: tokio::sync::Notify,
}

/// A failure that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PastFailure {
    pub since_ms: u64,
    pub until_ms: u64,
    /// The last error said while it lasted.
    pub error: String,
    /// Deliveries answered with an error meanwhile (their changes were caught up with).
    pub refused_deliveries: u64,
}

/// `storage` in `/api/ingest`: [`DbHealth`] (`state` `ok` | `failing` with `since_ms`,
/// `error`, `attempts`, `retry_in_ms`), the deliveries refused so far, and the last
/// failure that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageStatus {
    #[serde(flatten)]
    pub health: DbHealth,
    pub refused_deliveries: u64,
    pub last_failure: Option<PastFailure>,
}

impl Engine {
    /// Whether the database can be written now.
    pub fn storage_writable(&self) -> bool {
        self.inner.db.health() == DbHealth::Ok
    }

    /// The database's health, for the API.
    pub fn storage_status(&self) -> StorageStatus {
        StorageStatus {
            health: self.inner.db.health(),
            refused_deliveries: self.inner.storage.refused.load(Ordering::Relaxed),
            last_failure: lock(&self.inner.storage.last_failure).clone(),
        }
    }

    /// A delivery was answered with an error.
    pub(super) fn delivery_failed(&self) {
        self.inner.storage.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits `at_most`, or less if the database becomes writable again meanwhile.
    pub(super) async fn storage_back_or(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.inner.storage.back.notified()).await;
    }

    /// Writes a line to Nextcloud's log, in the background (best effort: the disk that
    /// failed may be Nextcloud's too).
    fn tell_nextcloud(&self, level: LogLevel, message: String) {
        let Some(nextcloud) = self.inner.nextcloud.clone() else {
            return;
        };
        if !self.was_enabled() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = nextcloud.log(level, &message).await {
                tracing::debug!(error = %e, "cannot write to Nextcloud's log");
            }
        });
    }
}

/// Follows the database's health: says when it fails, and catches up once it is back.
pub(crate) async fn run(engine: Engine) {
    let mut health = engine.inner.db.watch();
    let mut failing: Option<(u64, String)> = None;
    let mut reopens = engine.inner.db.reopens();
    loop {
        if health.changed().await.is_err() {
            return;
        }
        let now = health.borrow_and_update().clone();
        match now {
            DbHealth::Failing {
                since_ms, error, ..
            } => {
                match &mut failing {
                    // The re-open tries say best what is wrong (the disk's own error).
                    Some((_, last)) => *last = error,
                    None => {
                        engine.tell_nextcloud(
                            LogLevel::Error,
                            format!("harpbridge cannot write its database ({error}): file changes are not recorded and webhook deliveries are refused until it can. Free space on its data directory's disk: harpbridge re-opens the database by itself, then catches up with what changed meanwhile."),
                        );
                        failing = Some((since_ms, error));
                    }
                }
            }
            DbHealth::Ok => {
                let reopened = engine.inner.db.reopens();
                if reopened == reopens {
                    continue;
                }
                reopens = reopened;
                let until_ms = crate::clock::now_ms();
                let (since_ms, error) = failing
                    .take()
                    .unwrap_or((until_ms, "an I/O error".to_owned()));
                let refused = engine.inner.storage.refused.swap(0, Ordering::Relaxed);
                *lock(&engine.inner.storage.last_failure) = Some(PastFailure {
                    since_ms,
                    until_ms,
                    error,
                    refused_deliveries: refused,
                });
                let seconds = until_ms.saturating_sub(since_ms) / 1000;
                tracing::info!(
                    seconds,
                    refused_deliveries = refused,
                    "the database is writable again; catching up with what changed meanwhile"
                );
                engine.tell_nextcloud(
                    LogLevel::Warning,
                    format!("harpbridge can write its database again after {seconds} s ({refused} webhook deliveries were refused meanwhile); it is catching up with the changes of that time."),
                );
                engine.inner.storage.back.notify_waiters();
                engine.inner.queue.wake();
                engine.wake_writeback();
                engine.request_catch_up("the database could not be written");
            }
        }
    }
}
