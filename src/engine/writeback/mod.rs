//! Write-back: peers' changes written into Nextcloud, as the library's owner.
//!
//! Ingest turns Nextcloud's changes into chain entries; write-back is the other direction
//! (docs/architecture.md §2). After peers' entries arrive, the library's folded
//! tree differs from what Nextcloud holds (the [`Mirror`](super::mirror::Mirror));
//! write-back applies the difference over WebDAV:
//!
//! ```text
//!   tree vs mirror ─▶ plan: DELETE … ─▶ MKCOL / MOVE / PUT in path order (parents first)
//!                              │             │                 │
//!                              └──── each checks Nextcloud first (PROPFIND) ────┘
//! ```
//!
//! - A moved file or folder (the same contents under a new name) is one `MOVE`, so
//!   Nextcloud keeps its file id, shares and versions.
//! - A `PUT` streams the version from the content store (fetched from peers first if its
//!   blocks are missing, through the [`ContentSource`] the swarm provides) with
//!   `OC-Checksum: SHA256:…`, `X-OC-MTime`, and chunked above 64 MiB.
//!
//! # The lost-update guard
//!
//! Before it overwrites or deletes a file, write-back checks that Nextcloud still holds the
//! version the mirror says, by content, never by ETag alone (an ETag can stay the same
//! across two writes in one second): a `SHA256` checksum Nextcloud lists is compared with
//! the one harpbridge wrote; otherwise the file is downloaded into the content store and
//! its content id compared. The overwrite then carries `If-Match` with the ETag just read,
//! which closes the window between the check and the write; a write to a path found empty
//! carries `If-None-Match: *`, so a file a user creates there meanwhile is not replaced
//! (chunked uploads cannot carry it: SabreDAV would judge it against the upload's `.file`).
//! Nextcloud refuses either with 412, and the next pass looks at the file again.
//!
//! When a user changed the file in Nextcloud meanwhile, nothing is overwritten. The two
//! writes were concurrent, and the chain keeps both, as its fold does for concurrent
//! writes: **Nextcloud's version keeps the name** (the user may be looking at it), and the
//! peer's version is recorded under its conflict name,
//! `name.sync-conflict-<date>-<device>.ext` (date and device of the peer's entry, see
//! [`crate::chain::conflict_name`]), then written there. A user's edit of a file a peer
//! deleted wins the same way: the file stays, and its new version is recorded. A folder a
//! peer deleted is deleted whole only if Nextcloud holds nothing below it that the mirror
//! does not know; otherwise only the files the mirror knows go (each checked as above),
//! and what users added stays and is recorded. Ingest applies the same rule from its side:
//! a user's file where a peer's version waits keeps both (see [`super::ingest`]).
//!
//! # Echoes
//!
//! Every write is remembered in [`super::echo::OwnWrites`] and recorded in the mirror
//! before the library's lock is released, so the webhooks Nextcloud fires for it find
//! Nextcloud equal to the mirror and record nothing.
//!
//! # Failures
//!
//! Nextcloud unreachable or failing (5xx, 423 locked, 507 full): the pass stops, the state
//! shows in `GET /api/ingest` (`writeback`), and the task retries with backoff (0.5 s
//! doubling to 60 s), like the ingest worker. A 401 pauses write-back for 10 minutes or
//! until AppAPI enables the app again (never a loop toward Nextcloud's brute-force
//! lock-out; peers' pulls do not end the pause). A version whose blocks no peer
//! can send yet stays pending (counted as `waiting_for_content`) and is tried again on the
//! next pull, when a peer connects, and every 10 s.
//!
//! - `plan.rs`: the steps that make Nextcloud hold the tree (pure, unit-tested).
//! - `apply.rs`: each step over WebDAV, with the checks above.
//! - this file: the task, its state and backoff, and one library's run.

mod apply;
mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde::Serialize;

use super::libraries::Library;
use super::stats::{lock, Counters};
use super::{Engine, EngineError};
use crate::backend::BackendError;
use crate::chain::{ContentId, LibraryId, TreeItem};

/// The write-back task's state.
#[derive(Default)]
pub(crate) struct WritebackTask {
    /// Wakes the task.
    pub(super) wake: tokio::sync::Notify,
    /// Where it fetches versions it lacks (the swarm, once it runs).
    pub(super) content_source: std::sync::Mutex<Option<Arc<dyn ContentSource>>>,
}

pub(crate) use plan::{plan, Step};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(600);
/// How often versions waiting for their blocks are tried again without a new pull or a
/// peer connecting (a fetch nobody can serve fails at once, so trying is cheap).
const WAITING_RETRY: Duration = Duration::from_secs(10);
/// Plans applied per library per run; each pass after the first only finishes what the
/// previous one unblocked (a conflict copy, a folder recreated, a write a user's change
/// raced).
const MAX_PASSES: usize = 4;
/// New versions fetched, and written, at once.
const PARALLEL_WRITES: usize = 16;

/// Where write-back gets a version's blocks it does not have (the swarm, in `serve`).
pub trait ContentSource: Send + Sync + 'static {
    /// Fetches every missing block of `content`; `Ok` once all are stored.
    fn fetch(
        &self,
        library: LibraryId,
        content: ContentId,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// How write-back stands, for `GET /api/ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WritebackState {
    /// The last run wrote everything it could: `pending` changes remain, of which
    /// `waiting_for_content` are versions whose blocks could not be fetched yet.
    Ok {
        pending: u64,
        waiting_for_content: u64,
    },
    /// Nextcloud failed (unreachable, 5xx, 423, 507); the write is retried.
    Retrying {
        since_ms: u64,
        error: String,
        retry_in_ms: u64,
    },
    /// Nextcloud refused our credentials: paused.
    Unauthorized { since_ms: u64, error: String },
}

impl Default for WritebackState {
    fn default() -> Self {
        WritebackState::Ok {
            pending: 0,
            waiting_for_content: 0,
        }
    }
}

/// What one library's write-back did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcome {
    /// Changes made in Nextcloud (or found made already).
    pub progress: usize,
    /// Versions whose blocks are not here and could not be fetched.
    pub waiting: usize,
    /// Changes Nextcloud does not hold yet, after the run.
    pub pending: usize,
    /// Entries appended (conflicts, users' edits that won).
    pub appended: usize,
    /// Writes Nextcloud refused (412) because a user changed or created the file after our
    /// look: the next pass looks again and keeps both versions.
    pub raced: usize,
}

impl Outcome {
    /// Adds what one step did.
    fn add(&mut self, other: Outcome) {
        self.progress += other.progress;
        self.waiting += other.waiting;
        self.pending += other.pending;
        self.appended += other.appended;
        self.raced += other.raced;
    }
}

/// Errors that stop the pass (Nextcloud is failing, or refuses us); others skip one step.
fn stops(e: &EngineError) -> bool {
    match e {
        EngineError::Backend(d) => d.is_transient() || matches!(d, BackendError::Unauthorized(_)),
        EngineError::Content(c) => c.is_disk_full(),
        EngineError::Db(_) | EngineError::Truncated { .. } => true,
        _ => false,
    }
}

impl Engine {
    /// Lets write-back fetch versions' blocks from peers (`serve` passes its swarm).
    pub fn set_content_source(&self, source: Arc<dyn ContentSource>) {
        *lock(&self.inner.writeback.content_source) = Some(source);
        self.wake_writeback();
    }

    /// Asks the write-back task to compare every library with Nextcloud again.
    pub fn wake_writeback(&self) {
        self.inner.writeback.wake.notify_one();
    }

    /// A library created before write-back existed: Nextcloud is taken to hold its tree
    /// (peers' entries pulled before then are not written back).
    pub(crate) fn adopt_tree(&self, id: &LibraryId) -> Result<(), EngineError> {
        let tree = self.tree(id)?;
        self.inner.mirror.adopt(id, &tree)?;
        tracing::info!(library = %id, "write-back starts from the library's current tree");
        Ok(())
    }

    /// Applies one library's tree to Nextcloud (see the module docs).
    pub(crate) async fn write_back(&self, library: &Library) -> Result<Outcome, EngineError> {
        // Versions are fetched before the library is locked: a transfer may take long, and
        // the library's webhooks must not wait for it.
        let mut unavailable = HashSet::new();
        if self.inner.mirror.knows(&library.id) {
            let tree = self.tree(&library.id)?;
            let wanted: HashSet<ContentId> =
                plan(&self.inner.mirror.items(&library.id), &tree, |_| false)
                    .iter()
                    .filter_map(|step| match step {
                        Step::Put(path) => match tree.items.get(path) {
                            Some(TreeItem::File { content, .. }) => Some(*content),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
            // Fetched several at a time: one small version is a round trip or two.
            let mut fetched = futures_util::stream::iter(wanted)
                .map(|content| async move {
                    (content, self.ensure_local(library.id, content, true).await)
                })
                .buffer_unordered(PARALLEL_WRITES);
            while let Some((content, here)) = fetched.next().await {
                if !here? {
                    unavailable.insert(content);
                }
            }
        }
        let lock_ = self.write_lock(&library.id);
        let _guard = lock_.lock().await;
        if !self.inner.mirror.knows(&library.id) {
            self.adopt_tree(&library.id)?;
            return Ok(Outcome::default());
        }
        let mut total = Outcome::default();
        let mut passes = 0;
        loop {
            let tree = self.tree(&library.id)?;
            let renamed = |item: &TreeItem| self.renamed_here(item);
            let steps = plan(&self.inner.mirror.items(&library.id), &tree, renamed);
            total.pending = steps.len();
            if steps.is_empty() || passes == MAX_PASSES {
                break;
            }
            passes += 1;
            let mut pass = Outcome::default();
            // In plan order, except that consecutive new versions are written several at a
            // time (they touch different files, their folders exist by then).
            let mut steps = steps.into_iter().peekable();
            while let Some(first) = steps.next() {
                let mut group = vec![first];
                while matches!(group[0], Step::Put(_)) && matches!(steps.peek(), Some(Step::Put(_)))
                {
                    group.extend(steps.next());
                }
                let mut results = futures_util::stream::iter(group)
                    .map(|step| {
                        let tree = &tree;
                        let unavailable = &unavailable;
                        async move {
                            let mut out = Outcome::default();
                            let r = self
                                .apply(library, tree, &step, unavailable, &mut out)
                                .await;
                            (step, r, out)
                        }
                    })
                    .buffer_unordered(PARALLEL_WRITES);
                let mut stop = None;
                while let Some((step, result, out)) = results.next().await {
                    pass.add(out);
                    match result {
                        Ok(()) => {}
                        Err(e) if stops(&e) => stop = stop.or(Some(e)),
                        Err(e) => {
                            tracing::warn!(library = %library.id, ?step, error = %e, "cannot write this change; skipped");
                        }
                    }
                }
                if let Some(e) = stop {
                    total.appended += pass.appended;
                    if total.appended > 0 {
                        self.refresh_current(&library.id).await?;
                    }
                    return Err(e);
                }
            }
            total.progress += pass.progress;
            total.appended += pass.appended;
            total.waiting = pass.waiting;
            if pass.progress == 0 && pass.appended == 0 && pass.raced == 0 {
                break;
            }
        }
        if total.appended > 0 {
            self.refresh_current(&library.id).await?;
        }
        Ok(total)
    }
}

/// The write-back task: runs after every wake (peers' entries arrived, start), and retries
/// with backoff while Nextcloud fails.
pub(crate) async fn run(engine: Engine) {
    let mut backoff = FIRST_BACKOFF;
    let mut enables = engine.inner.enablement.enables.subscribe();
    loop {
        engine.until_enabled().await;
        enables.borrow_and_update();
        let mut waiting = 0u64;
        let mut pending = 0u64;
        let mut failure = None;
        let held = engine.inner.chain.libraries();
        for library in engine.inner.libraries.list() {
            if !held.contains(&library.id) {
                // Joined, and its chain not pulled yet: nothing to write.
                continue;
            }
            match engine.write_back(&library).await {
                Ok(outcome) => {
                    if outcome.progress > 0 && engine.inner.options.backend_serves_content {
                        // What was written is served from the backend now: its blocks
                        // become cache.
                        if let Err(e) = engine.refresh_current(&library.id).await {
                            tracing::warn!(library = %library.id, error = %e, "could not update the versions the library needs");
                        }
                    }
                    waiting += outcome.waiting as u64;
                    pending += outcome.pending as u64;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let now = crate::chain::now_ms();
        let pause = match failure {
            None => {
                backoff = FIRST_BACKOFF;
                *lock(&engine.inner.status.writeback) = WritebackState::Ok {
                    pending,
                    waiting_for_content: waiting,
                };
                if waiting > 0 {
                    Some(WAITING_RETRY)
                } else {
                    None
                }
            }
            Some(EngineError::Backend(BackendError::Unauthorized(_))) => {
                tracing::error!("Nextcloud refused harpbridge's credentials; write-back paused for 10 minutes or until the next enable (check APP_SECRET, and the brute-force lock-out)");
                *lock(&engine.inner.status.writeback) = WritebackState::Unauthorized {
                    since_ms: now,
                    error: crate::backend::BackendError::Unauthorized("Nextcloud").to_string(),
                };
                // Pulls do not end this pause (each try could count toward Nextcloud's
                // lock-out); only time or AppAPI enabling the app again (since this run
                // started) does.
                let _ = tokio::time::timeout(UNAUTHORIZED_PAUSE, enables.changed()).await;
                continue;
            }
            Some(e) => {
                Counters::add(&engine.inner.counters.writeback_retries, 1);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "write-back failed; retrying");
                let since_ms = match &*lock(&engine.inner.status.writeback) {
                    WritebackState::Retrying { since_ms, .. } => *since_ms,
                    _ => now,
                };
                *lock(&engine.inner.status.writeback) = WritebackState::Retrying {
                    since_ms,
                    error: e.to_string(),
                    retry_in_ms: backoff.as_millis() as u64,
                };
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        match pause {
            Some(pause) => {
                let _ = tokio::time::timeout(pause, engine.inner.writeback.wake.notified()).await;
            }
            None => engine.inner.writeback.wake.notified().await,
        }
    }
}
