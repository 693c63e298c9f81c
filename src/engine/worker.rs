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
//! Events are taken a batch at a time ([`super::batch`]): their paths are looked at in
//! parallel, they are applied in queue order, and their entries appended in one durable
//! commit; only then do they leave the queue. Events of one batch that only ask what is at
//! one path now are looked at once (a burst of writes to one file costs one read). An event
//! that fails stops the batch there: what the events before it decided is appended first,
//! and those after it wait with it (retry) or go on (set aside as failed). When Nextcloud
//! answers again after failing, a catch-up ([`super::catchup`]) follows: deliveries it
//! could not make meanwhile are lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::batch::{Batch, ReadAhead, IN_FLIGHT};
use super::stats::{lock, Counters, NextcloudState};
use super::{Engine, EngineError};
use crate::backend::BackendError;
use crate::chain::now_ms;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(600);
/// Events taken from the queue at once. A batch's entries are appended in one commit
/// ([`super::batch`]), so a bigger batch spreads that fsync (and the queue's) over more
/// files; 256 small files are also what a few hundred milliseconds of a busy Nextcloud
/// deliver, and what a failing event costs at most in looks made again.
const BATCH: usize = 256;

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
    let in_flight = engine
        .inner
        .options
        .ingest_in_flight
        .unwrap_or(IN_FLIGHT)
        .max(1);
    let mut backoff = FIRST_BACKOFF;
    // After an append of a whole batch failed with the database writable, the next batch
    // goes one event at a time, so the event it was about is found and set aside alone.
    let mut isolate = false;
    let read_ahead = ReadAhead::default();
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
        let started = std::time::Instant::now();
        let events = batch.len();
        let width = if isolate { 1 } else { in_flight };
        isolate = false;
        let mut pause = None;
        let appended_before = engine.counters().appended.load(Ordering::Relaxed);
        let mut applying = match Batch::begin(&engine, &batch, width, &read_ahead).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a batch of events");
                engine.storage_back_or(MAX_BACKOFF).await;
                continue;
            }
        };
        for (index, (seq, queued)) in batch.into_iter().enumerate() {
            let mut queued = queued;
            let result = applying.apply(index, seq, &queued.event).await;
            let e = match result {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    set_state(&engine, NextcloudState::Ok);
                    continue;
                }
                Err(e) => e,
            };
            // What the events before it decided is recorded first.
            let flushed = applying.flush().await;
            if !engine.storage_writable() {
                // Nothing can be recorded, nor the attempt noted: wait for the database.
                tracing::warn!(error = %e, "the database cannot be written; events wait");
                pause = Some(MAX_BACKOFF);
                break;
            }
            if let Err(fe) = flushed {
                tracing::warn!(error = %fe, "cannot append this batch's entries; its events wait");
                pause = Some(backoff);
                isolate = true;
                break;
            }
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
        if pause.is_none() {
            // Every event was applied: the files read ahead are decided after them.
            applying.read_ahead().await;
        }
        let applied = started.elapsed();
        let (done, failure) = applying.finish().await;
        let appended = started.elapsed();
        if let Some(e) = failure {
            tracing::warn!(error = %e, "cannot append this batch's entries; its events wait");
            if engine.storage_writable() {
                isolate = true;
                pause = pause.or(Some(backoff));
            } else {
                pause = Some(MAX_BACKOFF);
            }
        }
        // Only now, with their entries durable, do the events leave the queue.
        if done.is_empty() {
        } else if let Err(e) = engine.queue().complete(&done) {
            tracing::error!(error = %e, "cannot remove processed events (they will be processed again)");
        }
        let dequeued = started.elapsed();
        if engine.counters().appended.load(Ordering::Relaxed) != appended_before {
            refresh_current(&engine).await;
        }
        tracing::debug!(
            events,
            applied_ms = applied.as_millis() as u64,
            appended_ms = (appended - applied).as_millis() as u64,
            dequeued_ms = (dequeued - appended).as_millis() as u64,
            refreshed_ms = (started.elapsed() - dequeued).as_millis() as u64,
            "batch done"
        );
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
