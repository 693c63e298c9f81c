//! Write-back: peers' changes written into Nextcloud, as the library's owner.
//!
//! Ingest turns Nextcloud's changes into chain entries; write-back is the other direction
//! (design.md, "Nextcloud integration"). After peers' entries arrive, the library's folded
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
//! which closes the window between the check and the write.
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
//! next pull and every minute.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::libraries::Library;
use super::mirror::{Held, HeldFile};
use super::stats::{lock, Counters};
use super::{Engine, EngineError};
use crate::appapi::multistatus::DavEntry;
use crate::appapi::webdav::{DavError, PutOptions};
use crate::chain::{
    conflict_name, ChainPath, ContentId, LibraryId, NextcloudRef, Op, Tree, TreeItem,
};
use crate::content::{ContentError, ContentStore, ManifestId};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const UNAUTHORIZED_PAUSE: Duration = Duration::from_secs(600);
/// How often versions waiting for their blocks are tried again without a new pull.
const WAITING_RETRY: Duration = Duration::from_secs(60);
/// Plans applied per library per run; each pass after the first only finishes what the
/// previous one unblocked (a conflict copy, a folder recreated).
const MAX_PASSES: usize = 4;

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

/// One change to make in Nextcloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Delete(String),
    Move { from: String, to: String },
    Mkdir(String),
    Put(String),
}

/// Whether `path` is `root` or below it.
fn within(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The topmost paths of `paths` (sorted): those with no ancestor in the list.
fn topmost(paths: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        if out.last().is_some_and(|last| within(&p, last)) {
            continue;
        }
        out.push(p);
    }
    out
}

/// What a subtree holds, relative to its root: equal signatures mean a move.
type Signature = Vec<(String, Option<ContentId>)>;

fn relative(path: &str, root: &str) -> String {
    path[root.len()..].to_owned()
}

/// The steps that make Nextcloud (`held`) hold `tree`: deletions, then folders, moves and
/// files in path order (parents first). A path that disappeared and one that appeared with
/// the same contents are one move when `renamed` says the item got there by a `Rename`
/// (a Delete and a Put of the same bytes stay a Delete and a Put: another file).
pub(crate) fn plan(
    held: &BTreeMap<String, Held>,
    tree: &Tree,
    renamed: impl Fn(&TreeItem) -> bool,
) -> Vec<Step> {
    let kind_differs = |h: &Held, item: &TreeItem| {
        matches!(
            (h, item),
            (Held::Dir, TreeItem::File { .. }) | (Held::File(_), TreeItem::Dir { .. })
        )
    };
    let removed = topmost(
        held.iter()
            .filter(|(p, h)| tree.items.get(*p).is_none_or(|item| kind_differs(h, item)))
            .map(|(p, _)| p.clone()),
    );
    // Every path Nextcloud lacks is a possible move target, not only the topmost: a file
    // moved into a new folder is a MOVE after the folder's MKCOL.
    let added: Vec<&String> = tree
        .items
        .iter()
        .filter(|(p, item)| held.get(*p).is_none_or(|h| kind_differs(h, item)))
        .map(|(p, _)| p)
        .collect();
    let held_signature = |root: &str| -> Signature {
        held.range(root.to_owned()..)
            .take_while(|(p, _)| p.starts_with(root))
            .filter(|(p, _)| within(p, root))
            .map(|(p, h)| (relative(p, root), h.content()))
            .collect()
    };
    let tree_signature = |root: &str| -> Signature {
        tree.items
            .range(root.to_owned()..)
            .take_while(|(p, _)| p.starts_with(root))
            .filter(|(p, _)| within(p, root))
            .map(|(p, item)| {
                let content = match item {
                    TreeItem::File { content, .. } => Some(*content),
                    TreeItem::Dir { .. } => None,
                };
                (relative(p, root), content)
            })
            .collect()
    };
    let mut sources: HashMap<Signature, Vec<String>> = HashMap::new();
    for r in &removed {
        // A path the tree still has (as another kind) is replaced, not moved away.
        if !tree.items.contains_key(r) {
            sources
                .entry(held_signature(r))
                .or_default()
                .push(r.clone());
        }
    }
    let mut moves: HashMap<String, String> = HashMap::new();
    let mut moved_from = HashSet::new();
    let mut moved_to: Vec<String> = Vec::new();
    for a in added {
        if sources.values().all(Vec::is_empty) {
            break;
        }
        // A path Nextcloud holds already (as another kind) must be deleted first; a path
        // below a move's target arrives with it.
        if held.contains_key(a) || moved_to.iter().any(|to| within(a, to)) {
            continue;
        }
        let Some(candidates) = sources.get_mut(&tree_signature(a)) else {
            continue;
        };
        if candidates.is_empty() || !tree.items.get(a).is_some_and(&renamed) {
            continue;
        }
        if let Some(from) = candidates.pop() {
            moved_from.insert(from.clone());
            moved_to.push(a.clone());
            moves.insert(a.clone(), from);
        }
    }
    let mut steps: Vec<Step> = removed
        .into_iter()
        .filter(|r| !moved_from.contains(r))
        .map(Step::Delete)
        .collect();
    // In path order, so every target's parent folder exists before it is used.
    for (path, item) in &tree.items {
        if let Some(from) = moves.remove(path) {
            steps.push(Step::Move {
                from,
                to: path.clone(),
            });
            continue;
        }
        if moved_to.iter().any(|to| within(path, to)) {
            continue;
        }
        let step = match (held.get(path), item) {
            (Some(h), item) if h.same_as(item) => continue,
            (_, TreeItem::Dir { .. }) => Step::Mkdir(path.clone()),
            (_, TreeItem::File { .. }) => Step::Put(path.clone()),
        };
        steps.push(step);
    }
    steps
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
}

/// What a file in Nextcloud holds, found by checksum or by reading it.
enum Found {
    Content(ContentId),
    /// Gone meanwhile.
    Gone,
}

fn sha_listed(entry: &DavEntry, sha: &str) -> bool {
    entry.checksums.iter().any(|c| {
        c.split_once(':').is_some_and(|(algo, hex)| {
            algo.eq_ignore_ascii_case("SHA256") && hex.eq_ignore_ascii_case(sha)
        })
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a whole local version: its SHA-256 (lowercase hex), verifying every block.
fn sha256_of(store: &ContentStore, id: &ManifestId) -> Result<String, ContentError> {
    let mut reader = store.open_reader(id)?;
    let mut hasher = Sha256::new();
    while let Some(block) = reader.next_block()? {
        hasher.update(&block);
    }
    Ok(hex(&hasher.finalize()))
}

/// A local version as a body stream, read block by block on a blocking thread.
fn version_stream(
    store: ContentStore,
    id: ManifestId,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let fail = |e: ContentError| Err(std::io::Error::other(e.to_string()));
        let mut reader = match store.open_reader(&id) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(fail(e));
                return;
            }
        };
        loop {
            let item = match reader.next_block() {
                Ok(Some(block)) => Ok(Bytes::from(block)),
                Ok(None) => return,
                Err(e) => fail(e),
            };
            let last = item.is_err();
            if tx.blocking_send(item).is_err() || last {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Errors that stop the pass (Nextcloud is failing, or refuses us); others skip one step.
fn stops(e: &EngineError) -> bool {
    match e {
        EngineError::Dav(d) => d.is_transient() || matches!(d, DavError::Unauthorized),
        EngineError::Content(c) => c.is_disk_full(),
        EngineError::Db(_) | EngineError::Truncated { .. } => true,
        _ => false,
    }
}

fn chain_path(rel: &str) -> Result<ChainPath, EngineError> {
    ChainPath::new(rel).map_err(|e| EngineError::Invalid(format!("path {rel:?}: {e}")))
}

impl Engine {
    /// Lets write-back fetch versions' blocks from peers (`serve` passes its swarm).
    pub fn set_content_source(&self, source: Arc<dyn ContentSource>) {
        *lock(&self.inner.content_source) = Some(source);
        self.wake_writeback();
    }

    /// Asks the write-back task to compare every library with Nextcloud again.
    pub fn wake_writeback(&self) {
        self.inner.writeback_wake.notify_one();
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
            for content in wanted {
                if !self.ensure_local(library.id, content, true).await? {
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
            for step in steps {
                match self
                    .apply(library, &tree, &step, &unavailable, &mut pass)
                    .await
                {
                    Ok(()) => {}
                    Err(e) if stops(&e) => {
                        total.appended += pass.appended;
                        if total.appended > 0 {
                            self.refresh_current(&library.id).await?;
                        }
                        return Err(e);
                    }
                    Err(e) => {
                        tracing::warn!(library = %library.id, ?step, error = %e, "cannot write this change to Nextcloud; skipped");
                    }
                }
            }
            total.progress += pass.progress;
            total.appended += pass.appended;
            total.waiting = pass.waiting;
            if pass.progress == 0 && pass.appended == 0 {
                break;
            }
        }
        if total.appended > 0 {
            self.refresh_current(&library.id).await?;
        }
        Ok(total)
    }

    async fn apply(
        &self,
        library: &Library,
        tree: &Tree,
        step: &Step,
        unavailable: &HashSet<ContentId>,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
        match step {
            Step::Delete(path) => self.delete(library, path, out).await?,
            Step::Move { from, to } => {
                let held = mirror.get(&id, from);
                let Some(entry) = self.stat(library, from).await? else {
                    // Gone meanwhile: what should be at `to` is written afresh next pass.
                    mirror.remove(&id, from)?;
                    out.progress += 1;
                    return Ok(());
                };
                if let Some(Held::File(known)) = &held {
                    match self.found(library, from, &entry, Some(known)).await? {
                        Found::Content(c) if c == known.content => {}
                        _ => {
                            // Changed in Nextcloud: record that version; the tree decides.
                            mirror.remove(&id, from)?;
                            out.appended += self.record_nextcloud(library, from).await?;
                            out.progress += 1;
                            return Ok(());
                        }
                    }
                    if let Some(sha) = &known.sha256 {
                        self.inner
                            .own_writes
                            .remember(&library.uid, &library.user_path(to), sha);
                    }
                }
                match self
                    .inner
                    .dav
                    .rename(
                        &library.uid,
                        &library.user_path(from),
                        &library.user_path(to),
                        false,
                    )
                    .await
                {
                    Ok(_) => {
                        mirror.rename(&id, from, to)?;
                        Counters::add(&self.inner.counters.written, 1);
                        out.progress += 1;
                    }
                    // The target appeared in Nextcloud meanwhile: record it; the tree decides.
                    Err(DavError::PreconditionFailed(_) | DavError::AlreadyExists(_)) => {
                        out.appended += self.record_nextcloud(library, to).await?;
                        out.progress += 1;
                    }
                    Err(DavError::NotFound(_)) => {
                        mirror.remove(&id, from)?;
                        out.progress += 1;
                    }
                    Err(DavError::Conflict(_)) => self.parent_missing(library, to)?,
                    Err(e) => return Err(e.into()),
                }
            }
            Step::Mkdir(path) => {
                match self
                    .inner
                    .dav
                    .mkcol(&library.uid, &library.user_path(path))
                    .await
                {
                    Ok(_) => {
                        Counters::add(&self.inner.counters.written, 1);
                    }
                    Err(DavError::AlreadyExists(_)) => {
                        if !self.stat(library, path).await?.is_some_and(|e| e.is_dir) {
                            // A file where the tree has a folder: record it; the fold decides.
                            out.appended += self.record_nextcloud(library, path).await?;
                            out.progress += 1;
                            return Ok(());
                        }
                    }
                    Err(DavError::Conflict(_)) => {
                        self.parent_missing(library, path)?;
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
                mirror.set(&id, path, Held::Dir)?;
                out.progress += 1;
            }
            Step::Put(path) => {
                let Some(
                    item @ TreeItem::File {
                        size,
                        mtime_ms,
                        content,
                        ..
                    },
                ) = tree.items.get(path)
                else {
                    return Ok(());
                };
                let fetch = !unavailable.contains(content);
                let sha = match self.local_version(id, *content, fetch).await? {
                    Some(sha) => sha,
                    None => {
                        out.waiting += 1;
                        return Ok(());
                    }
                };
                let target = HeldFile {
                    content: *content,
                    size: *size,
                    sha256: Some(sha.clone()),
                    nextcloud: None,
                };
                let known = match mirror.get(&id, path) {
                    Some(Held::File(f)) => Some(f),
                    _ => None,
                };
                let mut if_match = None;
                if let Some(entry) = self.stat(library, path).await? {
                    if entry.is_dir {
                        out.appended += self.record_nextcloud(library, path).await?;
                        out.progress += 1;
                        return Ok(());
                    }
                    let current = if sha_listed(&entry, &sha) {
                        Found::Content(*content)
                    } else {
                        self.found(library, path, &entry, known.as_ref()).await?
                    };
                    match current {
                        Found::Content(c) if c == *content => {
                            // Nextcloud holds it already (our earlier write, or the same bytes).
                            let nextcloud = entry.fileid.map(|fileid| NextcloudRef {
                                fileid,
                                etag: entry.etag.clone().unwrap_or_default(),
                            });
                            let sha256 = sha_listed(&entry, &sha).then_some(sha);
                            mirror.set(
                                &id,
                                path,
                                Held::File(HeldFile {
                                    sha256,
                                    nextcloud,
                                    ..target
                                }),
                            )?;
                            out.progress += 1;
                            return Ok(());
                        }
                        Found::Content(c) if known.as_ref().is_some_and(|k| k.content == c) => {
                            if_match = entry.etag.clone();
                        }
                        Found::Gone => {}
                        Found::Content(c) => {
                            out.appended += self.keep_both(library, path, c, &entry, item).await?;
                            out.progress += 1;
                            return Ok(());
                        }
                    }
                }
                let user_path = library.user_path(path);
                self.inner
                    .own_writes
                    .remember(&library.uid, &user_path, &sha);
                let options = PutOptions {
                    if_match,
                    mtime: Some(mtime_ms.div_euclid(1000)),
                    checksum: Some(format!("SHA256:{sha}")),
                };
                let body = version_stream(self.inner.content.clone(), (*content).into());
                match self
                    .inner
                    .dav
                    .put(&library.uid, &user_path, body, *size, &options)
                    .await
                {
                    Ok(written) => {
                        let nextcloud = written.fileid.map(|fileid| NextcloudRef {
                            fileid,
                            etag: written.etag.unwrap_or_default(),
                        });
                        mirror.set(
                            &id,
                            path,
                            Held::File(HeldFile {
                                nextcloud,
                                ..target
                            }),
                        )?;
                        Counters::add(&self.inner.counters.written, 1);
                        Counters::add(&self.inner.counters.bytes_out, *size);
                        tracing::info!(library = %id, %path, size, "peer's version written to Nextcloud");
                        out.progress += 1;
                    }
                    // Changed between our look and our write: looked at again next pass.
                    Err(DavError::PreconditionFailed(_)) => {}
                    Err(DavError::Conflict(_)) => self.parent_missing(library, path)?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Deletes `path` in Nextcloud if it still holds what the mirror says; otherwise what a
    /// user changed there wins and is recorded.
    async fn delete(
        &self,
        library: &Library,
        path: &str,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
        match (self.stat(library, path).await?, mirror.get(&id, path)) {
            (None, _) => {}
            (Some(entry), Some(Held::Dir)) if entry.is_dir => {
                if self.added_below(library, path).await? {
                    // Users added to the folder since: delete only what the mirror knows,
                    // file by file, each checked, and record what is left.
                    tracing::info!(library = %id, %path, "a peer deleted a folder users added to; deleting only what the peer saw");
                    for (p, held) in mirror.subtree(&id, path) {
                        if let (Held::File(_), Some(entry)) = (&held, self.stat(library, &p).await?)
                        {
                            if !entry.is_dir {
                                self.delete_file(library, &p, &entry, out).await?;
                            }
                        }
                    }
                    mirror.remove(&id, path)?;
                    out.appended += self.record_nextcloud(library, path).await?;
                    out.progress += 1;
                    return Ok(());
                }
                self.inner
                    .dav
                    .delete(&library.uid, &library.user_path(path))
                    .await
                    .or_else(not_found_ok)?;
            }
            (Some(entry), _) if entry.is_dir => {
                // A folder where Nextcloud had a file: a user's, recorded.
                mirror.remove(&id, path)?;
                out.appended += self.record_nextcloud(library, path).await?;
                out.progress += 1;
                return Ok(());
            }
            (Some(entry), _) => {
                self.delete_file(library, path, &entry, out).await?;
                return Ok(());
            }
        }
        mirror.remove(&id, path)?;
        Counters::add(&self.inner.counters.written, 1);
        out.progress += 1;
        Ok(())
    }

    /// Deletes the file `entry` at `path` if it is still the mirror's version (by content);
    /// a user's edit of a file a peer deleted wins instead, and is recorded.
    async fn delete_file(
        &self,
        library: &Library,
        path: &str,
        entry: &DavEntry,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
        let known = match mirror.get(&id, path) {
            Some(Held::File(f)) => Some(f),
            _ => None,
        };
        match self.found(library, path, entry, known.as_ref()).await? {
            Found::Content(c) if known.as_ref().is_some_and(|k| k.content == c) => {
                self.inner
                    .dav
                    .delete(&library.uid, &library.user_path(path))
                    .await
                    .or_else(not_found_ok)?;
                Counters::add(&self.inner.counters.written, 1);
            }
            Found::Gone => {}
            Found::Content(_) => {
                tracing::info!(library = %id, %path, "changed in Nextcloud since a peer deleted it; keeping it");
                mirror.remove(&id, path)?;
                out.appended += self.record_nextcloud(library, path).await?;
                out.progress += 1;
                return Ok(());
            }
        }
        mirror.remove(&id, path)?;
        out.progress += 1;
        Ok(())
    }

    /// Whether Nextcloud holds anything below the folder `path` that the mirror does not
    /// know (a user added it).
    async fn added_below(&self, library: &Library, path: &str) -> Result<bool, EngineError> {
        let mut folders = vec![path.to_owned()];
        while let Some(folder) = folders.pop() {
            let listing = match self
                .inner
                .dav
                .propfind(
                    &library.uid,
                    &library.user_path(&folder),
                    crate::appapi::webdav::Depth::One,
                )
                .await
            {
                Ok(l) => l,
                Err(DavError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in listing {
                let Some(child) = super::ingest::href_to_rel(library, &entry.href) else {
                    continue;
                };
                if child == folder {
                    continue;
                }
                match self.inner.mirror.get(&library.id, &child) {
                    None => return Ok(true),
                    Some(Held::Dir) if entry.is_dir => folders.push(child),
                    Some(Held::File(_)) if !entry.is_dir => {}
                    Some(_) => return Ok(true),
                }
            }
        }
        Ok(false)
    }

    /// Whether the tree's item got where it is by a `Rename` (its last entry).
    fn renamed_here(&self, item: &TreeItem) -> bool {
        let entry = match item {
            TreeItem::File { entry, .. } | TreeItem::Dir { entry } => entry,
        };
        match self.inner.chain.entry(entry) {
            Ok(Some((_, e))) => matches!(e.meta().op, Op::Rename { .. }),
            _ => false,
        }
    }

    /// A parent folder Nextcloud lacks though the mirror has it: forget it, so the next pass
    /// creates it again.
    fn parent_missing(&self, library: &Library, path: &str) -> Result<(), EngineError> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.inner.mirror.remove(&library.id, parent)?;
        }
        Ok(())
    }

    /// What the file `entry` at `path` holds: the known version if Nextcloud lists its
    /// checksum, else its content id after reading it into the content store.
    async fn found(
        &self,
        library: &Library,
        path: &str,
        entry: &DavEntry,
        known: Option<&HeldFile>,
    ) -> Result<Found, EngineError> {
        if let Some(k) = known {
            if k.sha256
                .as_deref()
                .is_some_and(|sha| sha_listed(entry, sha))
            {
                return Ok(Found::Content(k.content));
            }
        }
        let user_path = library.user_path(path);
        match self.download(library, &user_path).await {
            Ok(ingested) => {
                if entry.size.is_some_and(|expected| expected != ingested.size) {
                    return Err(EngineError::Truncated {
                        path: user_path,
                        expected: entry.size.unwrap_or(0),
                        got: ingested.size,
                    });
                }
                Ok(Found::Content(ingested.id.into()))
            }
            Err(EngineError::Dav(DavError::NotFound(_))) => Ok(Found::Gone),
            Err(e) => Err(e),
        }
    }

    /// Records what Nextcloud holds at `path` as ingest would (a user's change that wins);
    /// returns the entries appended.
    async fn record_nextcloud(&self, library: &Library, path: &str) -> Result<usize, EngineError> {
        let before = self.inner.chain.len(&library.id)?;
        self.reconcile(library, path, Some(super::ingest::Walk::Additions), None)
            .await?;
        Ok(self.inner.chain.len(&library.id)?.saturating_sub(before))
    }

    /// Nextcloud's file changed while a peer's version (`peer`, the tree's item at `path`)
    /// waited to be written: records Nextcloud's version (`theirs`, read from `entry`) at
    /// `path`, and the peer's under its conflict name, which write-back then writes. Used by
    /// write-back and by ingest alike. Returns the entries appended.
    pub(super) async fn keep_both(
        &self,
        library: &Library,
        path: &str,
        theirs: ContentId,
        entry: &DavEntry,
        peer: &TreeItem,
    ) -> Result<usize, EngineError> {
        let TreeItem::File {
            size,
            mtime_ms,
            content,
            entry: writer,
            ..
        } = peer
        else {
            return Ok(0);
        };
        let (wall_ms, author) = match self.inner.chain.entry(writer)? {
            Some((_, e)) => (e.meta().wall_ms, e.meta().author),
            None => (crate::chain::now_ms(), self.inner.identity.device_key()),
        };
        let conflict = conflict_name(path, wall_ms, &author);
        let nextcloud = Op::Put {
            path: chain_path(path)?,
            size: entry.size.unwrap_or(0),
            mtime_ms: entry.mtime.unwrap_or(0).saturating_mul(1000),
            content: theirs,
            nextcloud: entry.fileid.map(|fileid| NextcloudRef {
                fileid,
                etag: entry.etag.clone().unwrap_or_default(),
            }),
        };
        let mut ops = vec![nextcloud.clone()];
        if self.tree(&library.id)?.items.contains_key(&conflict) {
            tracing::warn!(library = %library.id, %path, %conflict, "the conflict name is taken; the peer's version stays in the chain's history only");
        } else {
            ops.push(Op::Put {
                path: chain_path(&conflict)?,
                size: *size,
                mtime_ms: *mtime_ms,
                content: *content,
                nextcloud: None,
            });
        }
        tracing::warn!(library = %library.id, %path, %conflict, "changed in Nextcloud while a peer wrote it: both versions kept, Nextcloud's under the name");
        Counters::add(&self.inner.counters.conflicts, 1);
        let n = ops.len();
        self.append_unmirrored(library, ops, None).await?;
        self.inner.mirror.record(&library.id, &[nextcloud])?;
        Ok(n)
    }

    /// Whether a version's blocks are all here, after fetching them from peers if they are
    /// not and `fetch` allows.
    async fn ensure_local(
        &self,
        library: LibraryId,
        content: ContentId,
        fetch: bool,
    ) -> Result<bool, EngineError> {
        let store = self.inner.content.clone();
        let id: ManifestId = content.into();
        let complete = move || match store.missing_blocks(&id) {
            Ok(missing) => Ok(missing.is_empty()),
            Err(ContentError::ManifestNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        };
        let here = tokio::task::spawn_blocking(complete.clone())
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))??;
        if here || !fetch {
            return Ok(here);
        }
        let source = lock(&self.inner.content_source).clone();
        let Some(source) = source else {
            return Ok(false);
        };
        if let Err(e) = source.fetch(library, content).await {
            tracing::info!(%library, content = %content.to_hex(), error = %e, "version not fetched yet; its write-back waits");
            return Ok(false);
        }
        Ok(tokio::task::spawn_blocking(complete)
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))??)
    }

    /// Makes sure a version's blocks are here (fetching them if `fetch`); its SHA-256, or
    /// `None` if it cannot be had now.
    async fn local_version(
        &self,
        library: LibraryId,
        content: ContentId,
        fetch: bool,
    ) -> Result<Option<String>, EngineError> {
        if !self.ensure_local(library, content, fetch).await? {
            return Ok(None);
        }
        let store = self.inner.content.clone();
        let id: ManifestId = content.into();
        let sha = tokio::task::spawn_blocking(move || sha256_of(&store, &id))
            .await
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        match sha {
            Ok(sha) => Ok(Some(sha)),
            Err(e) if e.is_disk_full() => Err(e.into()),
            Err(e) => {
                tracing::warn!(%library, content = %content.to_hex(), error = %e, "cannot read the version back; its write-back waits");
                Ok(None)
            }
        }
    }
}

fn not_found_ok(e: DavError) -> Result<(), DavError> {
    match e {
        DavError::NotFound(_) => Ok(()),
        e => Err(e),
    }
}

/// The write-back task: runs after every wake (peers' entries arrived, start), and retries
/// with backoff while Nextcloud fails.
pub(crate) async fn run(engine: Engine) {
    let mut backoff = FIRST_BACKOFF;
    let mut enables = engine.inner.enables.subscribe();
    loop {
        enables.borrow_and_update();
        let mut waiting = 0u64;
        let mut pending = 0u64;
        let mut failure = None;
        for library in engine.inner.libraries.list() {
            match engine.write_back(&library).await {
                Ok(outcome) => {
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
            Some(EngineError::Dav(DavError::Unauthorized)) => {
                tracing::error!("Nextcloud refused harpbridge's credentials; write-back paused for 10 minutes or until the next enable (check APP_SECRET, and the brute-force lock-out)");
                *lock(&engine.inner.status.writeback) = WritebackState::Unauthorized {
                    since_ms: now,
                    error: DavError::Unauthorized.to_string(),
                };
                // Pulls do not end this pause (each try could count toward Nextcloud's
                // lock-out); only time or AppAPI enabling the app again (since this run
                // started) does.
                let _ = tokio::time::timeout(UNAUTHORIZED_PAUSE, enables.changed()).await;
                continue;
            }
            Some(e) => {
                Counters::add(&engine.inner.counters.writeback_retries, 1);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "write-back to Nextcloud failed; retrying");
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
                let _ = tokio::time::timeout(pause, engine.inner.writeback_wake.notified()).await;
            }
            None => engine.inner.writeback_wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::EntryHash;

    fn file(n: u8) -> TreeItem {
        TreeItem::File {
            size: 1,
            mtime_ms: 0,
            content: ContentId([n; 32]),
            nextcloud: None,
            entry: EntryHash::default(),
        }
    }

    fn dir() -> TreeItem {
        TreeItem::Dir {
            entry: EntryHash::default(),
        }
    }

    fn tree(items: &[(&str, TreeItem)]) -> Tree {
        Tree {
            items: items
                .iter()
                .map(|(p, i)| (p.to_string(), i.clone()))
                .collect(),
        }
    }

    fn held(t: &Tree) -> BTreeMap<String, Held> {
        t.items
            .iter()
            .map(|(p, i)| (p.clone(), Held::of(i)))
            .collect()
    }

    #[test]
    fn nothing_to_do_when_nextcloud_holds_the_tree() {
        let t = tree(&[("a", dir()), ("a/x", file(1))]);
        assert!(plan(&held(&t), &t, |_| true).is_empty());
    }

    #[test]
    fn deletes_first_then_folders_moves_and_files_parents_first() {
        let before = tree(&[
            ("a", dir()),
            ("a/x", file(1)),
            ("gone", dir()),
            ("gone/y", file(2)),
            ("old.txt", file(3)),
            ("z", file(4)),
        ]);
        let after = tree(&[
            ("b", dir()),
            ("b/x", file(1)),
            ("n", dir()),
            ("n/m", dir()),
            ("n/m/moved.txt", file(3)),
            ("n/m/new.txt", file(5)),
            ("z", file(6)),
        ]);
        let steps = plan(&held(&before), &after, |_| true);
        assert_eq!(
            steps,
            vec![
                Step::Delete("gone".into()),
                Step::Move {
                    from: "a".into(),
                    to: "b".into()
                },
                Step::Mkdir("n".into()),
                Step::Mkdir("n/m".into()),
                Step::Move {
                    from: "old.txt".into(),
                    to: "n/m/moved.txt".into()
                },
                Step::Put("n/m/new.txt".into()),
                Step::Put("z".into()),
            ]
        );
    }

    #[test]
    fn a_kind_change_is_a_delete_then_an_add() {
        let before = tree(&[("p", dir()), ("p/x", file(1))]);
        let after = tree(&[("p", file(2))]);
        assert_eq!(
            plan(&held(&before), &after, |_| true),
            vec![Step::Delete("p".into()), Step::Put("p".into())]
        );
    }

    #[test]
    fn the_same_bytes_elsewhere_without_a_rename_are_a_new_file() {
        let before = tree(&[("a.txt", file(1))]);
        let after = tree(&[("b.txt", file(1))]);
        assert_eq!(
            plan(&held(&before), &after, |_| false),
            vec![Step::Delete("a.txt".into()), Step::Put("b.txt".into())]
        );
    }
}
