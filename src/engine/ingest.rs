//! Reading the truth of one path over WebDAV and recording it in the chain.
//!
//! Events only say *where* to look. For each path the worker asks Nextcloud what is there
//! now (PROPFIND), and records what changed since Nextcloud was last seen there (the
//! [`mirror`](super::mirror)), unless the tree has it already:
//!
//! - gone → `Delete`, only of what Nextcloud held as the tree has it. A path the tree has
//!   from a peer and write-back has not written yet is pending, not deleted (so neither a
//!   webhook nor a periodic scan deletes a peer's file before it reached Nextcloud);
//! - a folder → `Mkdir` (if the tree lacks it), and a walk of its children when it may
//!   have arrived with content (copy, restore, move into the library);
//! - a file → download it as a stream into the content store; a `Put` only if its
//!   content differs from both the mirror's version (a pending write-back stays pending)
//!   and the tree's.
//!
//! A rename whose source is gone and whose target exists becomes one `Rename`, so peers
//! move the file instead of fetching it again. Looking before recording makes the
//! worker correct whatever order events arrive in, and lets it process one event twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::StreamExt;

use super::bundle::bundles;
use super::fetched::{Fetched, STAGE_MAX};
use super::libraries::Library;
use super::mirror::{Held, HeldFile};
use super::stats::{lock, Counters, ScanProgress, ScanState};
use super::{Engine, EngineError};
use crate::appapi::event::{EventKind, FileEvent};
use crate::backend::{BackendError, Depth, Item};
use crate::chain::{ChainPath, ContentId, NextcloudRef, Op, TreeItem};
use crate::content::ContentWriter;

/// Scans append in batches of this many entries (one fsync each).
const SCAN_BATCH: usize = 256;
/// Files a scan reads at once.
const PARALLEL_FILES: usize = 8;

/// Whether a walk also records deletions of what it did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    /// New content under a folder (copy, restore): add what is there.
    Additions,
    /// A full scan: also delete what is gone.
    Full,
}

/// The topmost of sorted paths: those with no ancestor among them.
fn topmost(paths: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        if out.last().is_some_and(|l| {
            p.strip_prefix(l.as_str())
                .is_some_and(|r| r.starts_with('/'))
        }) {
            continue;
        }
        out.push(p);
    }
    out
}

/// The events one change fires for one node: Nextcloud fires `NodeCreated` and
/// `NodeWritten` for a new file (and `NodeCopied` too for a copy), each with the node's id
/// and the same `time`, delivered separately and in any order. Once one of them was
/// processed (Nextcloud's file read and recorded), the others ask nothing new: they are
/// looked at with PROPFIND only, and the file is read again only if its file id, ETag or
/// size differ from what was recorded. A kind seen twice for one id and second is a new
/// write, read as any other.
#[derive(Debug, Default)]
pub(crate) struct Bursts(std::sync::Mutex<HashMap<(String, String), Burst>>);

#[derive(Debug)]
struct Burst {
    id: u64,
    time: i64,
    kinds: Vec<EventKind>,
}

/// More bursts than this remembered: forget them all (they only save downloads).
const MAX_BURSTS: usize = 4096;

impl Bursts {
    fn key(event: &FileEvent) -> Option<((String, String), u64)> {
        match event.kind {
            EventKind::Created | EventKind::Written | EventKind::Copied => {}
            _ => return None,
        }
        let id = event.node.id?;
        Some(((event.node.uid.clone(), event.node.path.clone()), id))
    }

    /// Whether another event of this one's burst was processed already.
    fn answered(&self, event: &FileEvent) -> bool {
        let Some((key, id)) = Self::key(event) else {
            return false;
        };
        lock(&self.0)
            .get(&key)
            .is_some_and(|b| b.id == id && b.time == event.time && !b.kinds.contains(&event.kind))
    }

    /// The event was processed.
    fn note(&self, event: &FileEvent) {
        let Some((key, id)) = Self::key(event) else {
            return;
        };
        let mut bursts = lock(&self.0);
        if bursts.len() >= MAX_BURSTS && !bursts.contains_key(&key) {
            bursts.clear();
        }
        match bursts.get_mut(&key) {
            Some(b) if b.id == id && b.time == event.time && !b.kinds.contains(&event.kind) => {
                b.kinds.push(event.kind);
            }
            _ => {
                bursts.insert(
                    key,
                    Burst {
                        id,
                        time: event.time,
                        kinds: vec![event.kind],
                    },
                );
            }
        }
    }
}

/// Whether an event names a path in `library` (as its node, or as a move's source).
pub(super) fn touches(library: &Library, event: &FileEvent) -> bool {
    library.node_path(&event.node).is_some()
        || event
            .source
            .as_ref()
            .is_some_and(|s| library.node_path(s).is_some())
}

/// Whether `path` lies strictly below `folder`.
fn below(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// What a walk did.
pub(super) struct Walked {
    /// Chain entries it recorded.
    pub appended: u64,
    /// The ETag of every folder it listed, as the listing gave it (before anything below
    /// it was read): to be recorded only once the walk has succeeded.
    pub folder_etags: Vec<(String, String)>,
}

fn chain_path(rel: &str) -> Result<ChainPath, EngineError> {
    ChainPath::new(rel).map_err(|e| EngineError::BadPath {
        path: rel.to_owned(),
        reason: e.to_string(),
    })
}

impl Engine {
    /// Processes one queued event in one library, whose write lock the caller holds.
    /// `trust`: another event of this one's burst was processed ([`Bursts`]).
    pub(super) async fn process_in(
        &self,
        library: &Library,
        event: &FileEvent,
        trust: bool,
    ) -> Result<(), EngineError> {
        let source = event.source.as_ref().and_then(|s| library.node_path(s));
        let target = library.node_path(&event.node);
        let user = event.user.as_deref();
        if let (EventKind::Renamed, Some(from), Some(to)) = (event.kind, source, target) {
            if self.rename(library, from, to, user).await? {
                return Ok(());
            }
        }
        // A copy leaves its source as it was; a move (into or out of the library)
        // empties it. A restore's source is the trash bin, outside every library.
        if let (EventKind::Renamed, Some(from)) = (event.kind, source) {
            self.reconcile(library, from, None, user).await?;
        }
        if let Some(to) = target {
            let walk = match event.kind {
                EventKind::Written | EventKind::Deleted | EventKind::Touched => None,
                _ => Some(Walk::Additions),
            };
            self.reconcile_trusting(library, to, walk, user, trust)
                .await?;
        }
        Ok(())
    }

    /// Notes an event as processed (in every library it touches).
    pub(super) fn processed(&self, event: &FileEvent) {
        self.inner.bursts.note(event);
        Counters::add(&self.inner.counters.processed, 1);
    }

    /// Whether another event of this one's burst was processed already ([`Bursts`]).
    pub(super) fn burst_answered(&self, event: &FileEvent) -> bool {
        self.inner.bursts.answered(event)
    }

    /// Records a rename as one entry when the source is gone and the target is there.
    async fn rename(
        &self,
        library: &Library,
        from: &str,
        to: &str,
        user: Option<&str>,
    ) -> Result<bool, EngineError> {
        if from.is_empty() || to.is_empty() || from == to {
            return Ok(false);
        }
        let tree = self.tree(&library.id)?;
        if !tree.items.contains_key(from) || tree.items.contains_key(to) {
            return Ok(false);
        }
        // Only a move of what Nextcloud held as the tree has it; anything else is looked
        // at path by path.
        let mirror = &self.inner.mirror;
        let held = mirror.get(&library.id, from);
        if !held.is_some_and(|h| tree.items.get(from).is_some_and(|item| h.same_as(item)))
            || mirror.get(&library.id, to).is_some()
        {
            return Ok(false);
        }
        if self.stat(library, from).await?.is_some() || self.stat(library, to).await?.is_none() {
            return Ok(false);
        }
        let op = Op::Rename {
            from: chain_path(from)?,
            to: chain_path(to)?,
        };
        self.append(library, vec![op], user).await?;
        Ok(true)
    }

    /// PROPFIND depth 0 of a library path; `None` when it does not exist.
    pub(super) async fn stat(
        &self,
        library: &Library,
        rel: &str,
    ) -> Result<Option<Item>, EngineError> {
        match self
            .inner
            .backend
            .list(library.root(), rel, Depth::Zero)
            .await
        {
            Ok(entries) => Ok(entries.into_iter().next()),
            Err(BackendError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the tree agree with Nextcloud at `rel`.
    pub(super) async fn reconcile(
        &self,
        library: &Library,
        rel: &str,
        walk: Option<Walk>,
        user: Option<&str>,
    ) -> Result<(), EngineError> {
        self.reconcile_trusting(library, rel, walk, user, false)
            .await
    }

    /// [`Self::reconcile`]; `trust_unchanged`: a file whose file id, ETag and size equal
    /// the mirror's is taken as unchanged without downloading it ([`Bursts`]).
    async fn reconcile_trusting(
        &self,
        library: &Library,
        rel: &str,
        walk: Option<Walk>,
        user: Option<&str>,
        trust_unchanged: bool,
    ) -> Result<(), EngineError> {
        // What is recorded below was decided on the tree at these heads.
        let seen = self.inner.chain.heads(&library.id)?;
        let seen = Some(seen.as_slice());
        match self.stat(library, rel).await? {
            None => {
                let ops = self.gone(library, rel)?;
                self.append_after(library, ops, user, seen).await?;
            }
            Some(entry) if entry.is_dir => {
                if !rel.is_empty()
                    && !matches!(
                        self.tree(&library.id)?.items.get(rel),
                        Some(TreeItem::Dir { .. })
                    )
                {
                    let op = Op::Mkdir {
                        path: chain_path(rel)?,
                    };
                    self.append(library, vec![op], user).await?;
                }
                if !rel.is_empty() {
                    self.inner.mirror.set(&library.id, rel, Held::Dir)?;
                }
                if let Some(walk) = walk {
                    self.walk(library, rel, walk, None, false).await?;
                }
            }
            Some(entry) => {
                if let Some(op) = self
                    .ingest_file(library, rel, &entry, trust_unchanged)
                    .await?
                {
                    self.append_after(library, vec![op], user, seen).await?;
                }
            }
        }
        Ok(())
    }

    /// Nextcloud holds nothing at `rel`: the deletions to record.
    ///
    /// Only what Nextcloud held (the mirror) can have been deleted there. A path the tree
    /// has from a peer that is not written back yet is pending, not deleted; and where a
    /// peer's version is pending over the one a user deleted, the peer's write wins (as the
    /// chain's fold lets a write win over a concurrent delete): write-back puts it back.
    pub(super) fn gone(&self, library: &Library, rel: &str) -> Result<Vec<Op>, EngineError> {
        if rel.is_empty() {
            return Ok(Vec::new());
        }
        let mirror = &self.inner.mirror;
        let held: BTreeMap<String, Held> = mirror.subtree(&library.id, rel).into_iter().collect();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let tree = self.tree(&library.id)?;
        let below = tree
            .items
            .range(rel.to_owned()..)
            .take_while(|(p, _)| p.starts_with(rel))
            .filter(|(p, _)| {
                p.as_str() == rel || p.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
            });
        let mut pending = false;
        let mut any = false;
        for (p, item) in below {
            any = true;
            if !held.get(p).is_some_and(|h| h.same_as(item)) {
                pending = true;
                break;
            }
        }
        if !any {
            mirror.remove(&library.id, rel)?;
            return Ok(Vec::new());
        }
        if !pending {
            return Ok(vec![Op::Delete {
                path: chain_path(rel)?,
            }]);
        }
        // Part of it is pending: delete only the files Nextcloud had as the tree has them.
        mirror.remove(&library.id, rel)?;
        let mut ops = Vec::new();
        for (p, h) in &held {
            if matches!(h, Held::File(_)) && tree.items.get(p).is_some_and(|item| h.same_as(item)) {
                ops.push(Op::Delete {
                    path: chain_path(p)?,
                });
            }
        }
        Ok(ops)
    }

    /// Reads a file's content into the store; the `Put` to record, if its content is new.
    ///
    /// `trust_unchanged`: during scans, a file whose file id, ETag and size equal the
    /// tree's version is taken as unchanged without downloading it.
    async fn ingest_file(
        &self,
        library: &Library,
        rel: &str,
        entry: &Item,
        trust_unchanged: bool,
    ) -> Result<Option<Op>, EngineError> {
        let fetched = self
            .fetch_file(library, rel, entry, trust_unchanged, false)
            .await?;
        self.file_op(library, rel, entry, fetched).await
    }

    /// The backend's half of [`Self::ingest_file`]: whether the file needs reading, and
    /// if so its content, streamed into the store. Decides nothing about the chain, so it
    /// may run ahead of the events before it ([`super::batch`]).
    pub(super) async fn fetch_file(
        &self,
        library: &Library,
        rel: &str,
        entry: &Item,
        trust_unchanged: bool,
        stage: bool,
    ) -> Result<Fetched, EngineError> {
        if let Some(known) = self.known_without_reading(library, rel, entry, trust_unchanged) {
            return Ok(known);
        }
        if stage && entry.size.is_some_and(|size| size <= STAGE_MAX) {
            return match self.read_in(library, rel, ContentWriter::stage).await {
                Ok(staged) => Ok(Fetched::Staged(Box::new(staged))),
                Err(EngineError::Backend(BackendError::NotFound(_))) => Ok(Fetched::Vanished),
                Err(e) => Err(e),
            };
        }
        match self.download(library, rel).await {
            Ok(i) => Ok(Fetched::Got(i)),
            // Gone between PROPFIND and GET: its delete event will follow.
            Err(EngineError::Backend(BackendError::NotFound(_))) => Ok(Fetched::Vanished),
            Err(e) => Err(e),
        }
    }

    /// What [`Self::fetch_file`] knows of a file without reading it: unchanged (trusted by
    /// its file id, ETag and size, when `trust_unchanged`), or harpbridge's own write.
    pub(super) fn known_without_reading(
        &self,
        library: &Library,
        rel: &str,
        entry: &Item,
        trust_unchanged: bool,
    ) -> Option<Fetched> {
        let held = self.inner.mirror.get(&library.id, rel);
        if trust_unchanged {
            if let Some(Held::File(HeldFile {
                size,
                nextcloud: Some(nc),
                ..
            })) = &held
            {
                if Some(nc.fileid) == entry.fileid
                    && Some(&nc.etag) == entry.etag.as_ref()
                    && Some(*size) == entry.size
                {
                    return Some(Fetched::Trusted { held });
                }
            }
        }
        let user_path = library.user_path(rel);
        self.inner
            .own_writes
            .is_echo(&library.uid, &user_path, &entry.checksums)
            .then_some(Fetched::Echo)
    }

    /// The chain's half of [`Self::ingest_file`]: what a fetched file means against the
    /// tree and the mirror as they are now; the `Put` to record, if any.
    pub(super) async fn file_op(
        &self,
        library: &Library,
        rel: &str,
        entry: &Item,
        fetched: Fetched,
    ) -> Result<Option<Op>, EngineError> {
        let ingested = match fetched {
            Fetched::Trusted { .. } | Fetched::Vanished => return Ok(None),
            Fetched::Echo => {
                Counters::add(&self.inner.counters.echoes, 1);
                return Ok(None);
            }
            Fetched::Got(ingested) => ingested,
            Fetched::Staged(staged) => {
                // Recorded on its own: durable first.
                let store = self.inner.content.clone();
                tokio::task::spawn_blocking(move || store.commit_staged(vec![*staged]))
                    .await??
                    .pop()
                    .ok_or(EngineError::Abandoned)?
            }
        };
        self.version_op(library, rel, entry, ingested.id, ingested.size)
            .await
    }

    /// [`Self::file_op`] for a version read into the content store (`id`, `size` bytes). A
    /// `Put` it returns must only be recorded once the version is durable.
    pub(super) async fn version_op(
        &self,
        library: &Library,
        rel: &str,
        entry: &Item,
        id: crate::content::ManifestId,
        size: u64,
    ) -> Result<Option<Op>, EngineError> {
        let tree = self.tree(&library.id)?;
        let current = match tree.items.get(rel) {
            Some(TreeItem::File { content, .. }) => Some(*content),
            _ => None,
        };
        // Compared with what Nextcloud held last (the mirror), not with the tree: the tree
        // may hold a peer's version not written back yet.
        let held = match self.inner.mirror.get(&library.id, rel) {
            Some(Held::File(f)) => Some(f),
            _ => None,
        };
        Counters::add(&self.inner.counters.bytes_in, size);
        if entry.size.is_some_and(|expected| expected != size) {
            // Changed while we read it, or cut short: try again later, record nothing now.
            return Err(EngineError::Truncated {
                path: library.user_path(rel),
                expected: entry.size.unwrap_or(0),
                got: size,
            });
        }
        let content: ContentId = id.into();
        let nextcloud = entry.fileid.map(|fileid| NextcloudRef {
            fileid,
            etag: entry.etag.clone().unwrap_or_default(),
        });
        let unchanged = held.as_ref().is_some_and(|h| h.content == content);
        if unchanged || current == Some(content) {
            // Nextcloud holds what was known (a pending write-back stays pending), or what
            // the tree has already: nothing new to record.
            Counters::add(&self.inner.counters.unchanged, 1);
            let sha256 = held.and_then(|h| h.sha256).filter(|_| unchanged);
            self.inner.mirror.set(
                &library.id,
                rel,
                Held::File(HeldFile {
                    content,
                    size,
                    sha256,
                    nextcloud,
                }),
            )?;
            return Ok(None);
        }
        // A peer's version waits to be written at this path, and a user wrote another one
        // meanwhile: the two are concurrent, both are kept (Nextcloud's under the name).
        if let Some(item @ TreeItem::File { .. }) = tree.items.get(rel) {
            let pending = !held
                .as_ref()
                .is_some_and(|h| Held::File(h.clone()).same_as(item));
            if pending {
                self.keep_both(library, rel, content, entry, item).await?;
                return Ok(None);
            }
        }
        Ok(Some(Op::Put {
            path: chain_path(rel)?,
            size,
            mtime_ms: entry.mtime.unwrap_or(0).saturating_mul(1000),
            content,
            nextcloud,
        }))
    }

    /// Streams a file from Nextcloud into the content store, a few chunks in memory at most.
    ///
    /// The version is finished only when the whole body arrived: a failed download, or one
    /// whose future is dropped half-way (the worker gave up on the rest of a batch), leaves
    /// its writer unfinished, so no cut-short version is ever stored.
    pub(super) async fn download(
        &self,
        library: &Library,
        rel: &str,
    ) -> Result<crate::content::Ingested, EngineError> {
        self.read_in(library, rel, ContentWriter::finish).await
    }

    /// [`Self::download`], ending the version with `end` (finish it, or stage it).
    async fn read_in<T: Send + 'static>(
        &self,
        library: &Library,
        rel: &str,
        end: fn(ContentWriter) -> Result<T, crate::content::ContentError>,
    ) -> Result<T, EngineError> {
        let mut body = self.inner.backend.read(library.root(), rel).await?;
        // `None`: the body is complete.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<bytes::Bytes>>(8);
        let store = self.inner.content.clone();
        let id = library.id;
        let job = tokio::task::spawn_blocking(move || {
            let mut writer = store.writer(id);
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Some(bytes) => writer.write(&bytes)?,
                    None => return end(writer).map(Some),
                }
            }
            // The sender went away before the end: abandon this version unfinished.
            Ok(None)
        });
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => {
                    if tx.send(Some(bytes)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            let _ = tx.send(None).await;
        }
        drop(tx);
        let written = job.await?;
        if let Some(e) = failure {
            return Err(BackendError::ReadCut(e).into());
        }
        written?.ok_or(EngineError::Abandoned)
    }

    /// Walks the folder `rel` and everything below it, recording what differs.
    ///
    /// `prune`: a folder whose ETag equals the one recorded after the last complete
    /// reconcile ([`super::catchup::FolderEtags`]) holds nothing new below it, so the walk
    /// does not descend into it (nor deletes anything below it).
    pub(super) async fn walk(
        &self,
        library: &Library,
        rel: &str,
        mode: Walk,
        progress_key: Option<&str>,
        prune: bool,
    ) -> Result<Walked, EngineError> {
        // Nextcloud does not say who made a change a walk finds: it was found in the
        // library owner's folder, and the panel shows it as theirs.
        let found_by = Some(library.uid.as_str());
        // What the walk records was decided on the tree at these heads (or later).
        let base = self.inner.chain.heads(&library.id)?;
        let base = Some(base.as_slice());
        let mut pending: Vec<Op> = Vec::new();
        let mut appended = 0u64;
        let mut seen: HashSet<String> = HashSet::new();
        // Folders not walked: their ETag is unchanged, or a peer's change to them waits
        // for write-back.
        let mut skipped: Vec<String> = Vec::new();
        let mut folder_etags: Vec<(String, String)> = Vec::new();
        let mut folders = vec![rel.to_owned()];
        while let Some(folder) = folders.pop() {
            let listing = match self
                .inner
                .backend
                .list(library.root(), &folder, Depth::One)
                .await
            {
                Ok(l) => l,
                Err(BackendError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            self.scan_progress(progress_key, |p| p.folders += 1);
            let mut files = Vec::new();
            for entry in listing {
                let child = entry.path.clone();
                if child == folder {
                    if let Some(etag) = &entry.etag {
                        folder_etags.push((child, etag.clone()));
                    }
                    continue;
                }
                if child.is_empty() {
                    continue;
                }
                if ChainPath::new(&child).is_err() {
                    tracing::warn!(library = %library.id, path = %child, "skipping a path the chain cannot hold");
                    continue;
                }
                seen.insert(child.clone());
                if entry.is_dir {
                    let in_tree = matches!(
                        self.tree(&library.id)?.items.get(&child),
                        Some(TreeItem::Dir { .. })
                    );
                    let held = self.inner.mirror.get(&library.id, &child) == Some(Held::Dir);
                    if !in_tree && held {
                        // Nextcloud holds it as known and the tree no longer has it: a
                        // peer's delete or move that write-back has yet to make.
                        skipped.push(child);
                        continue;
                    }
                    if !in_tree {
                        pending.push(Op::Mkdir {
                            path: chain_path(&child)?,
                        });
                    } else {
                        self.inner.mirror.set(&library.id, &child, Held::Dir)?;
                    }
                    let unchanged = prune
                        && entry.etag.is_some()
                        && entry.etag == self.inner.catch_up.etags.get(&library.id, &child);
                    if unchanged {
                        skipped.push(child);
                    } else {
                        folders.push(child);
                    }
                } else {
                    files.push(entry);
                }
            }
            // Files are read a few requests at a time: each costs a round trip to Nextcloud
            // and an fsync'd commit, which overlap well. Small ones go a bundle a request
            // and a commit, bigger ones on their own.
            let (small, big): (Vec<Item>, Vec<Item>) = files
                .into_iter()
                .partition(|entry| entry.size.is_some_and(|size| size <= STAGE_MAX));
            let reads = bundles(small, |entry| &entry.path)
                .into_iter()
                .chain(big.into_iter().map(|entry| vec![entry]));
            let folder = folder.as_str();
            let mut results = futures_util::stream::iter(reads)
                .map(|files| async move {
                    self.scan_progress(progress_key, |p| p.files_seen += files.len() as u64);
                    match <[Item; 1]>::try_from(files) {
                        Ok([entry]) => {
                            vec![self.ingest_file(library, &entry.path, &entry, true).await]
                        }
                        Err(files) => self.ingest_bundle(library, folder, files).await,
                    }
                })
                .buffered(PARALLEL_FILES)
                .flat_map(futures_util::stream::iter);
            while let Some(result) = results.next().await {
                if let Some(op) = result? {
                    if let Op::Put { size, .. } = &op {
                        let size = *size;
                        self.scan_progress(progress_key, |p| {
                            p.files_ingested += 1;
                            p.bytes += size;
                        });
                    }
                    pending.push(op);
                }
                if pending.len() >= SCAN_BATCH {
                    appended += pending.len() as u64;
                    self.append_after(library, std::mem::take(&mut pending), found_by, base)
                        .await?;
                }
            }
        }
        if mode == Walk::Full {
            // What Nextcloud held (the mirror) and no longer has; never a pending write-back.
            let missing = self
                .inner
                .mirror
                .subtree(&library.id, rel)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| {
                    p.as_str() != rel && !seen.contains(p) && !skipped.iter().any(|s| below(p, s))
                });
            for path in topmost(missing) {
                pending.extend(self.gone(library, &path)?);
            }
            pending = self.pair_moves(library, pending)?;
        }
        appended += pending.len() as u64;
        self.append_after(library, pending, found_by, base).await?;
        Ok(Walked {
            appended,
            folder_etags,
        })
    }

    /// Moves a walk found: a file gone from one path whose content is new at another is
    /// one `Rename` (peers move their copy, keep its history) instead of a delete and a new
    /// file. Only within the walk's last batch, and only files the backend held as the tree
    /// has them.
    fn pair_moves(&self, library: &Library, ops: Vec<Op>) -> Result<Vec<Op>, EngineError> {
        let tree = self.tree(&library.id)?;
        let mut ops: Vec<Option<Op>> = ops.into_iter().map(Some).collect();
        for i in 0..ops.len() {
            let Some(Op::Delete { path: from }) = ops[i].clone() else {
                continue;
            };
            let Some(Held::File(held)) = self.inner.mirror.get(&library.id, from.as_str()) else {
                continue;
            };
            if !tree
                .items
                .get(from.as_str())
                .is_some_and(|item| Held::File(held.clone()).same_as(item))
            {
                continue;
            }
            let new_at = ops.iter().position(|op| {
                matches!(op, Some(Op::Put { path, content, .. })
                    if *content == held.content && !tree.items.contains_key(path.as_str()))
            });
            if let Some(j) = new_at {
                let Some(Op::Put { path: to, .. }) = ops[j].take() else {
                    continue;
                };
                ops[i] = None;
                ops[j] = Some(Op::Rename { from, to });
            }
        }
        Ok(ops.into_iter().flatten().collect())
    }

    fn scan_progress(&self, key: Option<&str>, update: impl FnOnce(&mut ScanProgress)) {
        if let Some(key) = key {
            if let Some(p) = lock(&self.inner.status.scans).get_mut(key) {
                update(p);
                if p.files_seen > 0 && p.files_seen % 1000 == 0 {
                    tracing::info!(
                        library = key,
                        files = p.files_seen,
                        ingested = p.files_ingested,
                        "scan progress"
                    );
                }
            }
        }
    }

    /// Marks a library's scan as running (visible in the API at once).
    pub(crate) fn mark_scan_running(&self, library: &Library) {
        lock(&self.inner.status.scans).insert(
            library.id.to_hex(),
            ScanProgress {
                state: ScanState::Running,
                folders: 0,
                files_seen: 0,
                files_ingested: 0,
                bytes: 0,
                error: None,
                started_ms: crate::chain::now_ms(),
                finished_ms: None,
            },
        );
    }

    /// Scans a whole library (its initial scan), with its progress in the status. A scan
    /// is a catch-up ([`super::catchup`]) that shows its progress: it records the folders'
    /// ETags, so the catch-ups after it look only where something changed.
    pub async fn scan_library(&self, library: &Library) {
        let key = library.id.to_hex();
        self.mark_scan_running(library);
        self.publish_library(library);
        let result = self.reconcile_library(library, Some(&key)).await.map(drop);
        let now = crate::chain::now_ms();
        if let Some(p) = lock(&self.inner.status.scans).get_mut(&key) {
            p.finished_ms = Some(now);
            match &result {
                Ok(()) => {
                    p.state = ScanState::Done;
                    tracing::info!(library = %key, files = p.files_seen, ingested = p.files_ingested, bytes = p.bytes, "scan finished");
                }
                Err(e) => {
                    p.state = ScanState::Failed;
                    p.error = Some(e.to_string());
                    tracing::error!(library = %key, error = %e, "scan failed");
                }
            }
        }
        self.publish_library(library);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appapi::event::{Area, Node};

    fn event(kind: EventKind, id: u64, time: i64) -> FileEvent {
        FileEvent {
            kind,
            user: Some("alice".into()),
            time,
            node: Node {
                id: Some(id),
                uid: "alice".into(),
                area: Area::Files,
                path: "Team/a.bin".into(),
            },
            source: None,
        }
    }

    #[test]
    fn the_events_of_one_change_are_answered_by_the_first() {
        let bursts = Bursts::default();
        let created = event(EventKind::Created, 7, 100);
        let written = event(EventKind::Written, 7, 100);
        assert!(!bursts.answered(&written));
        bursts.note(&written);
        assert!(bursts.answered(&created), "same node, same second");
        bursts.note(&created);
        assert!(bursts.answered(&event(EventKind::Copied, 7, 100)));
        // A second write in the same second is a new change; so is a later one, and
        // another node at the path.
        assert!(!bursts.answered(&written));
        bursts.note(&written);
        assert!(!bursts.answered(&event(EventKind::Written, 7, 100)));
        assert!(!bursts.answered(&event(EventKind::Created, 7, 101)));
        assert!(!bursts.answered(&event(EventKind::Created, 8, 100)));
        let mut deleted = event(EventKind::Deleted, 7, 100);
        assert!(!bursts.answered(&deleted));
        deleted.node.id = None;
        bursts.note(&deleted);
        assert!(bursts.answered(&created));
    }
}
