//! Applying one step of the plan over WebDAV, with the lost-update guard (see the parent
//! module): every overwrite or delete first checks, by content, that Nextcloud still holds
//! what the mirror says; a user's change found there wins and is recorded instead.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::{Outcome, Step};
use crate::backend::{BackendError, ByteStream, Depth, Item, WriteOptions};
use crate::chain::{
    conflict_name, ChainPath, ContentId, LibraryId, NextcloudRef, Op, Tree, TreeItem,
};
use crate::content::{ContentError, ContentStore, ManifestId};
use crate::engine::libraries::Library;
use crate::engine::mirror::{Held, HeldFile};
use crate::engine::stats::{lock, Counters};
use crate::engine::{Engine, EngineError};

/// What a file in Nextcloud holds, found by checksum or by reading it.
enum Found {
    Content(ContentId),
    /// Gone meanwhile.
    Gone,
}

fn sha_listed(entry: &Item, sha: &str) -> bool {
    entry.checksums.iter().any(|c| {
        c.split_once(':').is_some_and(|(algo, hex)| {
            algo.eq_ignore_ascii_case("SHA256") && hex.eq_ignore_ascii_case(sha)
        })
    })
}

/// Reads a whole local version: its SHA-256 (lowercase hex), verifying every block.
fn sha256_of(store: &ContentStore, id: &ManifestId) -> Result<String, ContentError> {
    let mut reader = store.open_reader(id)?;
    let mut hasher = Sha256::new();
    while let Some(block) = reader.next_block()? {
        hasher.update(&block);
    }
    Ok(crate::chain::types::to_hex(&hasher.finalize()))
}

/// A local version as a body stream, read block by block on a blocking thread.
fn version_stream(store: ContentStore, id: ManifestId) -> ByteStream {
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
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

fn chain_path(rel: &str) -> Result<ChainPath, EngineError> {
    ChainPath::new(rel).map_err(|e| EngineError::BadPath {
        path: rel.to_owned(),
        reason: e.to_string(),
    })
}

impl Engine {
    /// Carries out one step of write-back, or leaves it for the next pass (`out` says which).
    pub(super) async fn apply(
        &self,
        library: &Library,
        tree: &Tree,
        step: &Step,
        unavailable: &HashSet<ContentId>,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        match step {
            Step::Delete(path) => self.write_delete(library, path, out).await,
            Step::Move { from, to } => self.write_rename(library, from, to, out).await,
            Step::Mkdir(path) => self.write_mkdir(library, path, out).await,
            Step::Put(path) => self.write_put(library, tree, path, unavailable, out).await,
        }
    }

    /// Renames `from` to `to` if Nextcloud still holds the mirror's version at `from`;
    /// otherwise records what it holds, and the tree decides.
    async fn write_rename(
        &self,
        library: &Library,
        from: &str,
        to: &str,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
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
            .backend
            .rename(library.root(), from, to, false)
            .await
        {
            Ok(_) => {
                mirror.rename(&id, from, to)?;
                Counters::add(&self.inner.counters.written, 1);
                out.progress += 1;
            }
            // The target appeared in Nextcloud meanwhile: record it; the tree decides.
            Err(BackendError::PreconditionFailed(_) | BackendError::AlreadyExists(_)) => {
                out.appended += self.record_nextcloud(library, to).await?;
                out.progress += 1;
            }
            Err(BackendError::NotFound(_)) => {
                mirror.remove(&id, from)?;
                out.progress += 1;
            }
            Err(BackendError::Conflict(_)) => self.parent_missing(library, to)?,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Makes the folder `path`; a file there is a user's, recorded.
    async fn write_mkdir(
        &self,
        library: &Library,
        path: &str,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
        match self.inner.backend.mkdir(library.root(), path).await {
            Ok(_) => {
                Counters::add(&self.inner.counters.written, 1);
            }
            Err(BackendError::AlreadyExists(_)) => {
                if !self.stat(library, path).await?.is_some_and(|e| e.is_dir) {
                    // A file where the tree has a folder: record it; the fold decides.
                    out.appended += self.record_nextcloud(library, path).await?;
                    out.progress += 1;
                    return Ok(());
                }
            }
            Err(BackendError::Conflict(_)) => {
                self.parent_missing(library, path)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        mirror.set(&id, path, Held::Dir)?;
        out.progress += 1;
        Ok(())
    }

    /// Writes the tree's version of `path`, under the lost-update guard: only over the
    /// version the mirror knows, or only where nothing is; a user's version found instead
    /// is kept beside the peer's.
    async fn write_put(
        &self,
        library: &Library,
        tree: &Tree,
        path: &str,
        unavailable: &HashSet<ContentId>,
        out: &mut Outcome,
    ) -> Result<(), EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
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
        let Some((if_match, if_absent)) = self
            .put_guard(library, path, item, &target, known.as_ref(), out)
            .await?
        else {
            return Ok(());
        };
        let user_path = library.user_path(path);
        self.inner
            .own_writes
            .remember(&library.uid, &user_path, &sha);
        let options = WriteOptions {
            if_absent,
            if_match,
            mtime: Some(mtime_ms.div_euclid(1000)),
            checksum: Some(format!("SHA256:{sha}")),
        };
        let body = version_stream(self.inner.content.clone(), (*content).into());
        match self
            .inner
            .backend
            .write(library.root(), path, body, *size, &options)
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
                tracing::info!(library = %id, %path, size, "peer's version written");
                out.progress += 1;
            }
            // Changed (If-Match) or created (If-None-Match) between our look and our
            // write: looked at again next pass, which finds the user's version and
            // keeps both (the user's under its name, the peer's as the conflict copy).
            Err(BackendError::PreconditionFailed(_)) => {
                Counters::add(&self.inner.counters.writeback_raced, 1);
                tracing::info!(library = %id, %path, "the write was refused (the file changed meanwhile); looking again");
                out.raced += 1;
            }
            // A parent folder is missing: Nextcloud 33 answers a PUT with 404 (checked on
            // the real server), WebDAV's RFC with 409.
            Err(BackendError::Conflict(_) | BackendError::NotFound(_)) => {
                self.parent_missing(library, path)?
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// What the write of `target` at `path` must be conditioned on (`If-Match`, create
    /// only), or `None` when there is nothing to write: Nextcloud holds it already, or holds
    /// a user's version, which was recorded (and the peer's kept beside it).
    async fn put_guard(
        &self,
        library: &Library,
        path: &str,
        item: &TreeItem,
        target: &HeldFile,
        known: Option<&HeldFile>,
        out: &mut Outcome,
    ) -> Result<Option<(Option<String>, bool)>, EngineError> {
        let id = library.id;
        let mirror = &self.inner.mirror;
        let sha = target.sha256.as_deref().unwrap_or_default();
        let mut if_match = None;
        // Seen empty (or gone by the time it was read): only create, so that a file
        // a user creates there meanwhile is not overwritten.
        let mut if_absent = true;
        if let Some(entry) = self.stat(library, path).await? {
            if entry.is_dir {
                out.appended += self.record_nextcloud(library, path).await?;
                out.progress += 1;
                return Ok(None);
            }
            let current = if sha_listed(&entry, sha) {
                Found::Content(target.content)
            } else {
                self.found(library, path, &entry, known).await?
            };
            match current {
                Found::Content(c) if c == target.content => {
                    // Nextcloud holds it already (our earlier write, or the same bytes).
                    let nextcloud = entry.fileid.map(|fileid| NextcloudRef {
                        fileid,
                        etag: entry.etag.clone().unwrap_or_default(),
                    });
                    let sha256 = sha_listed(&entry, sha).then(|| sha.to_owned());
                    mirror.set(
                        &id,
                        path,
                        Held::File(HeldFile {
                            sha256,
                            nextcloud,
                            ..target.clone()
                        }),
                    )?;
                    out.progress += 1;
                    return Ok(None);
                }
                Found::Content(c) if known.is_some_and(|k| k.content == c) => {
                    if_match = entry.etag.clone();
                    if_absent = false;
                }
                Found::Gone => {}
                Found::Content(c) => {
                    out.appended += self.keep_both(library, path, c, &entry, item).await?;
                    out.progress += 1;
                    return Ok(None);
                }
            }
        }
        Ok(Some((if_match, if_absent)))
    }

    /// Deletes `path` in Nextcloud if it still holds what the mirror says; otherwise what a
    /// user changed there wins and is recorded.
    async fn write_delete(
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
                    .backend
                    .delete(library.root(), path)
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
        entry: &Item,
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
                    .backend
                    .delete(library.root(), path)
                    .await
                    .or_else(not_found_ok)?;
                Counters::add(&self.inner.counters.written, 1);
            }
            Found::Gone => {}
            Found::Content(_) => {
                tracing::info!(library = %id, %path, "changed here since a peer deleted it; keeping it");
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
                .backend
                .list(library.root(), &folder, Depth::One)
                .await
            {
                Ok(l) => l,
                Err(BackendError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in listing {
                let child = entry.path.clone();
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
    pub(super) fn renamed_here(&self, item: &TreeItem) -> bool {
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
        entry: &Item,
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
        match self.download(library, path).await {
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
            Err(EngineError::Backend(BackendError::NotFound(_))) => Ok(Found::Gone),
            Err(e) => Err(e),
        }
    }

    /// Records what Nextcloud holds at `path` as ingest would (a user's change that wins);
    /// returns the entries appended.
    async fn record_nextcloud(&self, library: &Library, path: &str) -> Result<usize, EngineError> {
        let before = self.inner.chain.len(&library.id)?;
        self.reconcile(
            library,
            path,
            Some(crate::engine::ingest::Walk::Additions),
            None,
        )
        .await?;
        Ok(self.inner.chain.len(&library.id)?.saturating_sub(before))
    }

    /// Nextcloud's file changed while a peer's version (`peer`, the tree's item at `path`)
    /// waited to be written: records Nextcloud's version (`theirs`, read from `entry`) at
    /// `path`, and the peer's under its conflict name, which write-back then writes. Used by
    /// write-back and by ingest alike. Returns the entries appended.
    pub(crate) async fn keep_both(
        &self,
        library: &Library,
        path: &str,
        theirs: ContentId,
        entry: &Item,
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
        tracing::warn!(library = %library.id, %path, %conflict, "changed here while a peer wrote it: both versions kept, this one under the name");
        Counters::add(&self.inner.counters.conflicts, 1);
        let n = ops.len();
        self.append_unmirrored(library, ops, None).await?;
        self.inner.mirror.record(&library.id, &[nextcloud])?;
        Ok(n)
    }

    /// Whether a version's blocks are all here, after fetching them from peers if they are
    /// not and `fetch` allows.
    pub(super) async fn ensure_local(
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
        let here = tokio::task::spawn_blocking(complete.clone()).await??;
        if here || !fetch {
            return Ok(here);
        }
        let source = lock(&self.inner.writeback.content_source).clone();
        let Some(source) = source else {
            return Ok(false);
        };
        if let Err(e) = source.fetch(library, content).await {
            tracing::info!(%library, content = %content.to_hex(), error = %e, "version not fetched yet; its write-back waits");
            return Ok(false);
        }
        Ok(tokio::task::spawn_blocking(complete).await??)
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
        let sha = tokio::task::spawn_blocking(move || sha256_of(&store, &id)).await?;
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

fn not_found_ok(e: BackendError) -> Result<(), BackendError> {
    match e {
        BackendError::NotFound(_) => Ok(()),
        e => Err(e),
    }
}
