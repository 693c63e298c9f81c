//! The worker: drains the event queue, oldest first.
//!
//! - Success: the event leaves the queue.
//! - Nextcloud unreachable or failing (transport errors, 5xx, 423, 507): the event stays,
//!   the worker waits with exponential backoff (0.5 s doubling to 60 s) and tries again;
//!   the backlog and the reason are visible in the API and the log.
//! - Nextcloud refuses our credentials (401): about five of those lock the ExApp out of
//!   Nextcloud for 30 minutes, so the worker does not retry in a loop: it reports the
//!   state and waits 10 minutes (or a new enable) before one more try.
//! - Anything else (an event that can never succeed): moved to the failed table with its
//!   reason, so nothing is lost silently.
//!
//! - The database cannot be written (a full disk, see [`super::storage`]): the event stays,
//!   and the worker waits until the database is back, without blaming Nextcloud.
//!
//! Events of one batch that only ask what is at one path now are looked at once (a burst
//! of writes to one file costs one read). When Nextcloud answers again after failing, a
//! catch-up ([`super::catchup`]) follows: deliveries it could not make meanwhile are lost.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::stats::{lock, Counters, NextcloudState};
use super::{Engine, EngineError};
use crate::appapi::event::{EventKind, FileEvent};
use crate::backend::BackendError;
use crate::chain::now_ms;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(600);
const BATCH: usize = 64;

/// How one failure is handled.
enum Verdict {
    Retry,
    Unauthorized,
    GiveUp,
}

fn verdict(e: &EngineError) -> Verdict {
    match e {
        EngineError::Backend(BackendError::Unauthorized(_)) => Verdict::Unauthorized,
        EngineError::Backend(d) if d.is_transient() => Verdict::Retry,
        EngineError::Content(c) if c.is_disk_full() => Verdict::Retry,
        EngineError::Queue(_) | EngineError::Db(_) | EngineError::Truncated { .. } => {
            Verdict::Retry
        }
        _ => Verdict::GiveUp,
    }
}

pub(crate) async fn run(engine: Engine) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        engine.until_enabled().await;
        let batch = match engine.queue().peek(BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the event queue");
                engine.storage_back_or(MAX_BACKOFF).await;
                continue;
            }
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(30), engine.queue().wait()).await;
            continue;
        }
        let mut done = Vec::new();
        let mut pause = None;
        let mut looked_at = HashSet::new();
        let appended_before = engine.counters().appended.load(Ordering::Relaxed);
        for (seq, mut queued) in batch {
            // Every event in this batch has arrived, and processing reads the current
            // state: a path already reconciled in this batch needs no second look.
            if let Some(key) = coalesce_key(&queued.event) {
                if !looked_at.insert(key) {
                    done.push(seq);
                    Counters::add(&engine.counters().coalesced, 1);
                    continue;
                }
            }
            match engine.process(&queued.event).await {
                Ok(()) => {
                    done.push(seq);
                    backoff = FIRST_BACKOFF;
                    set_state(&engine, NextcloudState::Ok);
                }
                Err(e) if !engine.storage_writable() => {
                    // Nothing can be recorded, nor the attempt noted: wait for the database.
                    tracing::warn!(error = %e, "the database cannot be written; events wait");
                    pause = Some(MAX_BACKOFF);
                    break;
                }
                Err(e) => {
                    queued.attempts += 1;
                    queued.last_error = Some(e.to_string());
                    match verdict(&e) {
                        Verdict::Retry => {
                            Counters::add(&engine.counters().retries, 1);
                            let backlog = engine.queue().len().unwrap_or(0);
                            tracing::warn!(error = %e, backlog, retry_in_ms = backoff.as_millis() as u64, "Nextcloud unavailable; events wait");
                            set_state(
                                &engine,
                                NextcloudState::Unavailable {
                                    since_ms: now_ms(),
                                    error: e.to_string(),
                                    retry_in_ms: backoff.as_millis() as u64,
                                },
                            );
                            let _ = engine.queue().record_attempt(seq, &queued);
                            pause = Some(backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                        Verdict::Unauthorized => {
                            tracing::error!(error = %e, "Nextcloud refused harpbridge's credentials; pausing the worker (check APP_SECRET, and the brute-force lock-out)");
                            set_state(
                                &engine,
                                NextcloudState::Unauthorized {
                                    since_ms: now_ms(),
                                    error: e.to_string(),
                                },
                            );
                            let _ = engine.queue().record_attempt(seq, &queued);
                            pause = Some(UNAUTHORIZED_PAUSE);
                        }
                        Verdict::GiveUp => {
                            Counters::add(&engine.counters().failed, 1);
                            tracing::error!(error = %e, path = %queued.event.node.path, "event cannot be processed; kept in the failed table");
                            if let Err(qe) = engine.queue().fail(seq, &queued) {
                                tracing::error!(error = %qe, "cannot move the event to the failed table");
                            }
                            continue;
                        }
                    }
                    break;
                }
            }
        }
        if done.is_empty() {
        } else if let Err(e) = engine.queue().complete(&done) {
            tracing::error!(error = %e, "cannot remove processed events (they will be processed again)");
        }
        if engine.counters().appended.load(Ordering::Relaxed) != appended_before {
            refresh_current(&engine).await;
        }
        if let Some(pause) = pause {
            engine.storage_back_or(pause).await;
        }
    }
}

/// After a batch that appended entries, tells the content store what every library's
/// tree needs now.
async fn refresh_current(engine: &Engine) {
    for library in engine.libraries().list() {
        if let Err(e) = engine.refresh_current(&library.id).await {
            tracing::warn!(library = %library.id, error = %e, "cannot update the versions to keep");
        }
    }
}

/// Events that only ask "what is at this path now?" share a key; moves, copies and
/// restores, which relate two paths, are never coalesced.
fn coalesce_key(event: &FileEvent) -> Option<(String, String)> {
    match event.kind {
        EventKind::Created | EventKind::Written | EventKind::Touched | EventKind::Deleted => {
            Some((event.node.uid.clone(), event.node.path.clone()))
        }
        _ => None,
    }
}

fn set_state(engine: &Engine, state: NextcloudState) {
    let mut current = lock(&engine.status().nextcloud);
    if *current != state {
        let recovered = state == NextcloudState::Ok && *current != NextcloudState::Ok;
        *current = state;
        drop(current);
        if recovered {
            tracing::info!("Nextcloud reachable again; catching up");
            engine.request_catch_up("Nextcloud was unreachable");
        }
    }
}
