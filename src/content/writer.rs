//! [`ContentWriter`]: ingest one file version from a stream, holding only a bounded buffer.
//!
//! # Flow
//!
//! ```text
//! bytes ──write()──▶ Chunker (8 MiB buffer) ──block──▶ BLAKE3 ──▶ block file (atomic, fsync)
//!                                                          └────▶ manifest list (36 B/block)
//! finish() ──▶ last blocks ──▶ group commit (shared with other writers finishing now):
//!              fsync blocks and block dirs ──▶ one redb transaction: index the blocks,
//!              store the manifest, add it to the library's current set
//! ```
//!
//! Blocks reach their (temporary) files as soon as they are cut and get their real names in
//! fsync'd batches of up to 32 blocks or 64 MiB (see [`files`](super::files)), so memory
//! stays at the chunker's buffer (2 × max block = 8 MiB) plus the manifest list, whatever the
//! file size. Nothing names the version until `finish` commits. A writer dropped half-way
//! removes its temporary files and indexes the blocks it already published as evictable
//! cache; one killed half-way leaves temporary files (removed at the next open) and whole
//! block files the index does not know (adopted at the next open). Either way a retried
//! ingest finds those blocks already there.
//!
//! # Driving it from async code
//!
//! The writer is synchronous (hashing and fsync are blocking work). The ingest worker, which
//! receives reqwest's `Stream<Item = Result<Bytes>>`, can either run the whole loop inside
//! `spawn_blocking` with `Handle::block_on(stream.next())`, or (recommended) forward the
//! chunks through a small bounded channel to one blocking task:
//!
//! ```ignore
//! let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8); // bounds memory: 8 chunks
//! let store = store.clone();
//! let job = tokio::task::spawn_blocking(move || {
//!     let mut w = store.writer(library);
//!     while let Some(b) = rx.blocking_recv() {
//!         w.write(&b)?;
//!     }
//!     w.finish()
//! });
//! while let Some(chunk) = body.next().await {
//!     if tx.send(chunk?).await.is_err() { break; } // the writer failed: see `job`
//! }
//! drop(tx);
//! let ingested = job.await??;
//! ```
//!
//! The bounded channel is the back-pressure: when the disk is slower than the network, the
//! download waits instead of piling up bytes in memory. If the download fails half-way, drop
//! the sender *and* make the task skip `finish` (e.g. send an abort flag): a version must
//! only be finished with all its bytes.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use crate::chain::LibraryId;

use super::chunker::Chunker;
use super::commit::Prepared;
use super::error::ContentError;
use super::files::Pending;
use super::ids::{BlockHash, ManifestId};
use super::manifest::{BlockRef, Manifest, MAX_BLOCKS};
use super::store::ContentStore;

/// Publish staged blocks once this many are waiting…
const PUBLISH_BLOCKS: usize = 32;
/// …or this many bytes (page cache, not heap: the process's memory does not grow with it).
const PUBLISH_BYTES: u64 = 64 * 1024 * 1024;

/// What a finished ingest produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// The version's manifest id (convert to the chain's `ContentId` with `.into()`).
    pub id: ManifestId,
    /// File size in bytes.
    pub size: u64,
    /// Blocks in the manifest.
    pub blocks: u64,
    /// Blocks the store did not have before.
    pub new_blocks: u64,
    /// Their bytes.
    pub new_bytes: u64,
}

/// A file version read in full whose last blocks are written but not yet durable, and that
/// nothing names yet ([`ContentWriter::stage`]). Its id and size are known, so a caller can
/// decide what to record while many such versions wait; [`ContentStore::commit_staged`]
/// then makes them all durable with one flush round and one index commit. Dropped
/// uncommitted, it leaves nothing behind (its temporary files are removed).
pub struct Staged {
    prepared: Prepared,
    id: ManifestId,
}

impl Staged {
    /// The version's manifest id (what a chain entry names, once committed).
    pub fn id(&self) -> ManifestId {
        self.id
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.prepared.manifest.total_size
    }

    pub(crate) fn into_prepared(self) -> Prepared {
        self.prepared
    }
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("id", &self.id)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// Ingests one file version; see the module docs.
pub struct ContentWriter {
    chunker: Chunker,
    sink: Sink,
}

struct Sink {
    store: ContentStore,
    library: LibraryId,
    blocks: Vec<BlockRef>,
    size: u64,
    dirty_dirs: HashSet<PathBuf>,
    /// Blocks written under temporary names, published in batches.
    pending: Pending,
    /// Blocks this writer pinned against eviction (released after the commit, or on drop).
    pinned: HashSet<BlockHash>,
    poisoned: bool,
    /// Counted among the committer's open writers (until handed in or dropped).
    open: bool,
}

impl Sink {
    fn emit(&mut self, bytes: &[u8]) -> Result<(), ContentError> {
        if self.blocks.len() >= MAX_BLOCKS as usize {
            return Err(ContentError::FileTooLarge);
        }
        let hash = BlockHash::of(bytes);
        if self.pinned.insert(hash) {
            // Pin before looking at the disk, so an eviction pass either ran before (and the
            // file is gone, so we write it) or skips this block.
            self.store.pin_inflight(hash);
            let files = &self.store.inner.files;
            if files.exists(&hash) {
                // Another writer may have renamed it moments ago: make sure that rename is
                // durable before our commit names the block.
                self.dirty_dirs.insert(files.dir_of(&hash));
            } else {
                files.stage(&hash, bytes, &mut self.pending, &mut self.dirty_dirs)?;
                if self.pending.len() >= PUBLISH_BLOCKS || self.pending.bytes() >= PUBLISH_BYTES {
                    files.publish(&mut self.pending)?;
                }
            }
        }
        // Chunks are at most the chunker's max (≤ 16 MiB), so the length fits in u32.
        let size = u32::try_from(bytes.len())
            .map_err(|_| ContentError::BlockTooLarge(bytes.len() as u64))?;
        self.blocks.push(BlockRef { hash, size });
        self.size += u64::from(size);
        Ok(())
    }
}

impl ContentWriter {
    pub(crate) fn new(store: ContentStore, library: LibraryId) -> Self {
        store.inner.committer.writer_opened();
        ContentWriter {
            chunker: Chunker::new_unchecked(store.inner.chunker),
            sink: Sink {
                store,
                library,
                blocks: Vec::new(),
                size: 0,
                dirty_dirs: HashSet::new(),
                pending: Pending::default(),
                pinned: HashSet::new(),
                poisoned: false,
                open: true,
            },
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.sink.size
    }

    /// Feeds the next bytes of the file. Whole blocks are hashed and written to disk as soon
    /// as their end is certain. After an error the writer refuses further use
    /// ([`ContentError::WriterPoisoned`]); drop it and start again.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), ContentError> {
        if self.sink.poisoned {
            return Err(ContentError::WriterPoisoned);
        }
        let sink = &mut self.sink;
        let r = self.chunker.push(bytes, &mut |b: &[u8]| sink.emit(b));
        if r.is_err() {
            self.sink.poisoned = true;
        }
        r
    }

    /// Ends the file: writes the last blocks, makes them durable, and in one transaction
    /// indexes them, stores the manifest and adds the version to the library's current set
    /// (so its blocks are safe from eviction; the engine's next
    /// [`set_current`](ContentStore::set_current) for the library replaces that set). Durable
    /// when it returns. May then run an eviction pass if the store is over its limit.
    ///
    /// The flushes and the transaction are shared with whatever other writers finish at
    /// the same moment ([`commit`](super::commit)); to finish many files from one thread,
    /// use [`ContentStore::finish_all`].
    pub fn finish(self) -> Result<Ingested, ContentError> {
        let store = self.sink.store.clone();
        let prepared = self.prepare()?;
        let ingested = store.commit_prepared(vec![prepared])?.pop();
        if let Err(e) = store.evict_if_over() {
            tracing::warn!(error = %e, "eviction after ingest failed");
        }
        ingested.ok_or_else(|| ContentError::Io {
            op: "committing",
            path: store.blocks_dir().to_path_buf(),
            source: io::Error::other("the commit returned no result for this file"),
        })
    }

    /// Ends the file up to its commit, which is left to the caller: for many files that are
    /// to be recorded together (a batch of events), so they share one commit
    /// ([`ContentStore::commit_staged`]) instead of a flush round each.
    pub fn stage(self) -> Result<Staged, ContentError> {
        let prepared = self.prepare()?;
        let id = prepared.manifest.id();
        Ok(Staged { prepared, id })
    }

    /// Ends the file up to its commit: cuts and writes the last blocks (staged, not yet
    /// synced) and builds the manifest. The result goes to the group committer.
    pub(crate) fn prepare(mut self) -> Result<Prepared, ContentError> {
        if self.sink.poisoned {
            return Err(ContentError::WriterPoisoned);
        }
        let sink = &mut self.sink;
        self.chunker.finish(&mut |b: &[u8]| sink.emit(b))?;
        let manifest = Manifest::new(self.chunker.params(), std::mem::take(&mut self.sink.blocks));
        let store = &self.sink.store;
        if std::mem::take(&mut self.sink.open) {
            store.inner.committer.writer_closed();
        }
        Ok(Prepared {
            library: self.sink.library,
            manifest,
            pending: std::mem::take(&mut self.sink.pending),
            dirty_dirs: std::mem::take(&mut self.sink.dirty_dirs),
            _pins: store.pins(std::mem::take(&mut self.sink.pinned)),
        })
    }
}

#[cfg(test)]
impl ContentWriter {
    /// Makes the writer refuse further use, as after an error.
    pub(crate) fn sink_poison_for_test(&mut self) {
        self.sink.poisoned = true;
    }
}

impl Drop for ContentWriter {
    /// An unfinished writer (download failed, task cancelled): staged temporary files are
    /// removed, and blocks already published are indexed as evictable cache (best effort),
    /// so the size accounting stays right and a retry finds them. No version is recorded.
    fn drop(&mut self) {
        self.sink.pending.discard();
        let blocks = std::mem::take(&mut self.sink.blocks);
        if !blocks.is_empty() {
            let files = &self.sink.store.inner.files;
            let published: Vec<BlockRef> = blocks
                .into_iter()
                .filter(|b| self.sink.pinned.contains(&b.hash) && files.exists(&b.hash))
                .collect();
            let r = files
                .sync_dirs(&mut self.sink.dirty_dirs)
                .and_then(|()| self.sink.store.index_loose(&published));
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not index the blocks of an abandoned ingest");
            }
        }
        let pinned = std::mem::take(&mut self.sink.pinned);
        if !pinned.is_empty() {
            self.sink.store.unpin_inflight(pinned);
        }
        if self.sink.open {
            self.sink.store.inner.committer.writer_closed();
        }
    }
}

impl io::Write for ContentWriter {
    /// The same as [`ContentWriter::write`], for `std::io::copy`. Errors are
    /// `io::Error::other(ContentError)`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        ContentWriter::write(self, buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
