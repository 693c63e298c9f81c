//! [`ContentStore`]: block files plus their index, the cache policy, and the calls the ingest
//! worker and the block transfer make.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Durability, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::chain::LibraryId;
use crate::db::Db;

use super::commit::{Committer, Prepared};
use super::error::ContentError;
use super::files::{sweep, BlockFiles, Pending};
use super::ids::{BlockHash, ManifestId};
use super::index::{self, Tables};
use super::manifest::{BlockRef, ChunkerParams, Manifest, MAX_BLOCK_SIZE, MAX_MANIFEST_LEN};
use super::reader::ContentReader;
use super::writer::{ContentWriter, Ingested, Staged};

/// Flush remembered block uses to the database once this many are pending.
const TOUCH_FLUSH: usize = 4096;

/// How a store is set up.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Size limit of the block store in bytes (see the module docs: a soft limit that is
    /// never met by evicting a needed block).
    pub cache_limit: u64,
    /// How new files are cut.
    pub chunker: ChunkerParams,
}

impl Default for StoreOptions {
    /// 16 GiB, the default chunker.
    fn default() -> Self {
        StoreOptions {
            cache_limit: 16 * 1024 * 1024 * 1024,
            chunker: ChunkerParams::DEFAULT,
        }
    }
}

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Partial `*.tmp` files of an interrupted write, removed.
    pub removed_temp: u64,
    /// Whole block files the index did not know (an ingest killed before its commit),
    /// verified and indexed as unneeded cache.
    pub adopted: u64,
    /// Block files whose bytes did not match their name, removed.
    pub discarded: u64,
}

/// Result of an eviction pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// Blocks removed.
    pub evicted: u64,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Bytes stored after the pass.
    pub total_bytes: u64,
    /// The limit.
    pub limit: u64,
    /// Still above the limit: everything left is needed by a current version (or being
    /// written). The store never evicts those; the caller should tell the admin.
    pub over_limit: bool,
}

/// What [`ContentStore::put_blocks`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutReport {
    /// Blocks that were new to the store.
    pub stored: u64,
    /// Blocks whose bytes did not match their hash (or were too large): not stored.
    pub rejected: Vec<BlockHash>,
}

/// Received blocks verified and written under temporary names, waiting for
/// [`ContentStore::commit_blocks`] ([`ContentStore::stage_blocks`]). Its blocks are pinned
/// against eviction until then; dropping it removes the files it wrote and unpins them.
pub struct ReceivedBlocks {
    store: ContentStore,
    pending: Pending,
    /// Directories whose new entries (or new subdirectories) must be made durable.
    dirty: HashSet<PathBuf>,
    /// Every staged block, written now or found already on disk, with its size.
    blocks: Vec<(BlockHash, u64)>,
}

impl ReceivedBlocks {
    fn new(store: &ContentStore) -> Self {
        ReceivedBlocks {
            store: store.clone(),
            pending: Pending::default(),
            dirty: HashSet::new(),
            blocks: Vec::new(),
        }
    }

    /// Stages one verified block.
    fn add(&mut self, h: BlockHash, bytes: &[u8]) -> Result<(), ContentError> {
        let files = &self.store.inner.files;
        // Pin before looking at the disk (see `Inner::inflight`).
        self.store.pin_inflight(h);
        self.blocks.push((h, bytes.len() as u64));
        if files.exists(&h) {
            self.dirty.insert(files.dir_of(&h));
            Ok(())
        } else {
            files.stage(&h, bytes, &mut self.pending, &mut self.dirty)
        }
    }

    /// Blocks staged.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl Drop for ReceivedBlocks {
    fn drop(&mut self) {
        self.pending.discard();
        self.store
            .unpin_inflight(self.blocks.iter().map(|(h, _)| *h));
    }
}

impl std::fmt::Debug for ReceivedBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedBlocks")
            .field("blocks", &self.blocks.len())
            .field("files", &self.pending.len())
            .finish()
    }
}

/// Sizes, for the panel and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Stored blocks.
    pub blocks: u64,
    /// Their bytes.
    pub total_bytes: u64,
    /// Bytes of stored blocks a current version needs.
    pub needed_bytes: u64,
    /// Stored manifests.
    pub manifests: u64,
    /// The limit.
    pub limit: u64,
}

/// The content store of one data directory. Cheap to clone; all clones share state.
///
/// Every method is synchronous and may block on disk I/O and fsync: call it from a
/// `spawn_blocking` task (or a dedicated thread), not from an async task.
#[derive(Clone)]
pub struct ContentStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) files: BlockFiles,
    pub(crate) chunker: ChunkerParams,
    limit: AtomicU64,
    clock: AtomicU64,
    /// Block uses not yet written to the index (flushed in batches; losing them in a crash
    /// only makes the LRU order slightly stale).
    touches: Mutex<HashMap<BlockHash, u64>>,
    /// Blocks that live writers and `put_block` calls have placed or found on disk but not
    /// yet committed to the index: eviction must not remove them. Eviction holds this lock
    /// from choosing its victims until their files are gone.
    pub(crate) inflight: Mutex<HashMap<BlockHash, u32>>,
    /// Whether the store was last found over its limit with nothing left to evict (said
    /// once, not at every commit while it stays so).
    over_limit: std::sync::atomic::AtomicBool,
    report: OpenReport,
    /// Finished files wait here for a shared flush and commit ([`super::commit`]).
    pub(crate) committer: Committer,
}

fn db<E: Into<redb::Error>>(e: E) -> ContentError {
    ContentError::db(e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain maps in a usable state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ContentStore {
    /// Opens the store on the data directory's database, creating its tables and
    /// `<data>/blocks`, then sweeps the block directory: partial `*.tmp` files are removed,
    /// block files the index lacks are verified and adopted (or removed if damaged). The
    /// sweep lists every block file once, so opening costs one directory walk.
    pub fn open(
        database: Db,
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<ContentStore, ContentError> {
        options.chunker.validate()?;
        let files = BlockFiles::open(data_dir)?;
        let clock = {
            let txn = begin(&database)?;
            let clock = {
                let t = Tables::open(&txn)?;
                let c = t.meta.get(index::CLOCK).map_err(db)?.map(|v| v.value());
                c.unwrap_or(0)
            };
            txn.commit().map_err(db)?;
            clock
        };
        let mut store = ContentStore {
            inner: Arc::new(Inner {
                db: database,
                files,
                chunker: options.chunker,
                limit: AtomicU64::new(options.cache_limit),
                clock: AtomicU64::new(clock),
                touches: Mutex::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                over_limit: std::sync::atomic::AtomicBool::new(false),
                report: OpenReport::default(),
                committer: Committer::default(),
            }),
        };
        let report = store.recover()?;
        if let Some(inner) = Arc::get_mut(&mut store.inner) {
            inner.report = report;
        }
        Ok(store)
    }

    fn recover(&self) -> Result<OpenReport, ContentError> {
        let found = sweep(&self.inner.files)?;
        let mut report = OpenReport {
            removed_temp: found.removed_temp,
            ..OpenReport::default()
        };
        let unknown: Vec<BlockHash> = {
            let txn = self.inner.db.begin_read().map_err(db)?;
            let t = txn.open_table(index::BLOCKS).map_err(db)?;
            let mut v = Vec::new();
            for h in found.blocks {
                if t.get(h.0).map_err(db)?.is_none() {
                    v.push(h);
                }
            }
            v
        };
        if unknown.is_empty() {
            return Ok(report);
        }
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            for h in unknown {
                match self.inner.files.read(&h, u64::from(MAX_BLOCK_SIZE)) {
                    Ok(Some(bytes)) if BlockHash::of(&bytes) == h => {
                        t.insert_block(&h, bytes.len() as u64, self.tick())?;
                        report.adopted += 1;
                    }
                    Ok(None) => {}
                    Ok(Some(_)) | Err(ContentError::BlockTooLarge(_)) => {
                        self.inner.files.remove(&h)?;
                        report.discarded += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            t.save_clock(self.clock())?;
        }
        txn.commit().map_err(db)?;
        if report != OpenReport::default() {
            tracing::info!(?report, "content store recovered after an unclean stop");
        }
        Ok(report)
    }

    /// What [`open`](Self::open) found and repaired.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The chunker parameters new files are cut with.
    pub fn chunker(&self) -> ChunkerParams {
        self.inner.chunker
    }

    /// The cache limit in bytes.
    pub fn cache_limit(&self) -> u64 {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// Changes the cache limit (takes effect at the next eviction pass).
    pub fn set_cache_limit(&self, bytes: u64) {
        self.inner.limit.store(bytes, Ordering::Relaxed);
    }

    /// The directory holding block files.
    pub fn blocks_dir(&self) -> &Path {
        self.inner.files.root()
    }

    /// The path of a block's file (whether or not it exists).
    pub fn block_path(&self, h: &BlockHash) -> PathBuf {
        self.inner.files.path_of(h)
    }

    pub(crate) fn tick(&self) -> u64 {
        self.inner.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn clock(&self) -> u64 {
        self.inner.clock.load(Ordering::Relaxed)
    }

    // ----- ingest -------------------------------------------------------------------------

    /// Starts ingesting one file version for `library`: feed it bytes with
    /// [`ContentWriter::write`] as they arrive, then [`ContentWriter::finish`]. See
    /// [`ContentWriter`] for how to drive it from async code.
    pub fn writer(&self, library: LibraryId) -> ContentWriter {
        ContentWriter::new(self.clone(), library)
    }

    /// Ingests everything `reader` yields as one file version of `library`.
    pub fn ingest_reader(
        &self,
        library: LibraryId,
        reader: impl Read,
    ) -> Result<Ingested, ContentError> {
        let mut w = self.writer(library);
        copy_into(reader, &mut w, &mut vec![0u8; 256 * 1024])?;
        w.finish()
    }

    /// Ingests each reader as one file version of `library`, with one flush round and one
    /// index commit per batch of files instead of per file (see [`super::commit`]): what a
    /// caller holding many small files should use (an initial scan, a folder, an import).
    /// Batches hold at most [`INGEST_ALL_FILES`] files or [`INGEST_ALL_BYTES`] bytes, so the
    /// temporary files held open stay bounded however many readers come.
    ///
    /// One result per reader, in order: a reader that fails fails its own file only; a
    /// failed flush or commit fails every file of its batch. Each Ok is durable when this
    /// returns, exactly as from [`ingest_reader`](Self::ingest_reader).
    pub fn ingest_all<R: Read>(
        &self,
        library: LibraryId,
        readers: impl IntoIterator<Item = R>,
    ) -> Vec<Result<Ingested, ContentError>> {
        let mut results = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        for reader in readers {
            let at = results.len();
            results.push(None);
            let mut w = self.writer(library);
            match copy_into(reader, &mut w, &mut buf) {
                Ok(()) => {
                    bytes += w.written();
                    batch.push((at, w));
                }
                Err(e) => results[at] = Some(Err(e)),
            }
            if batch.len() >= INGEST_ALL_FILES || bytes >= INGEST_ALL_BYTES {
                self.finish_batch(std::mem::take(&mut batch), &mut results);
                bytes = 0;
            }
        }
        self.finish_batch(batch, &mut results);
        results.into_iter().flatten().collect()
    }

    /// Finishes several writers (of any libraries) with one flush round and one index
    /// commit for all of them: [`ContentWriter::finish`] for a batch. One result per writer,
    /// in order; each Ok is durable when this returns. Every writer keeps its last blocks'
    /// temporary files open until the commit, so keep batches to a few hundred files.
    pub fn finish_all(
        &self,
        writers: impl IntoIterator<Item = ContentWriter>,
    ) -> Vec<Result<Ingested, ContentError>> {
        let batch: Vec<(usize, ContentWriter)> = writers.into_iter().enumerate().collect();
        let mut results = Vec::new();
        results.resize_with(batch.len(), || None);
        self.finish_batch(batch, &mut results);
        results.into_iter().flatten().collect()
    }

    /// Finishes `batch` as one commit job, writing each writer's result at its index.
    fn finish_batch(
        &self,
        batch: Vec<(usize, ContentWriter)>,
        results: &mut [Option<Result<Ingested, ContentError>>],
    ) {
        if batch.is_empty() {
            return;
        }
        let mut slots = Vec::with_capacity(batch.len());
        let mut prepared = Vec::with_capacity(batch.len());
        for (at, w) in batch {
            match w.prepare() {
                Ok(p) => {
                    slots.push(at);
                    prepared.push(p);
                }
                Err(e) => results[at] = Some(Err(e)),
            }
        }
        match self.inner.committer.commit(self, prepared) {
            Ok(done) => {
                for (at, ingested) in slots.into_iter().zip(done) {
                    results[at] = Some(Ok(ingested));
                }
            }
            Err(e) => {
                for at in slots {
                    results[at] = Some(Err(e.for_member()));
                }
            }
        }
        if let Err(e) = self.evict_if_over() {
            tracing::warn!(error = %e, "eviction after ingest failed");
        }
    }

    /// Makes staged versions ([`ContentWriter::stage`]) durable and names them, all with one
    /// flush round and one index commit; one result per version, in order. May then run an
    /// eviction pass if the store is over its limit.
    pub fn commit_staged(&self, staged: Vec<Staged>) -> Result<Vec<Ingested>, ContentError> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = staged.into_iter().map(Staged::into_prepared).collect();
        let done = self.inner.committer.commit(self, prepared)?;
        if let Err(e) = self.evict_if_over() {
            tracing::warn!(error = %e, "eviction after ingest failed");
        }
        Ok(done)
    }

    /// Commits prepared files through the group committer (what
    /// [`ContentWriter::finish`] does with its one file).
    pub(crate) fn commit_prepared(
        &self,
        prepared: Vec<Prepared>,
    ) -> Result<Vec<Ingested>, ContentError> {
        self.inner.committer.commit(self, prepared)
    }

    pub(crate) fn pin_inflight(&self, h: BlockHash) {
        *lock(&self.inner.inflight).entry(h).or_insert(0) += 1;
    }

    /// Pins `hashes` (already pinned by [`pin_inflight`](Self::pin_inflight)) until the
    /// returned guard is dropped.
    pub(crate) fn pins(&self, hashes: HashSet<BlockHash>) -> Pins {
        Pins {
            store: self.clone(),
            hashes,
        }
    }

    pub(crate) fn unpin_inflight(&self, hashes: impl IntoIterator<Item = BlockHash>) {
        let mut m = lock(&self.inner.inflight);
        for h in hashes {
            if let Some(n) = m.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&h);
                }
            }
        }
    }

    /// Indexes blocks whose files are durably in place, as unneeded cache.
    pub(crate) fn index_loose(&self, blocks: &[BlockRef]) -> Result<(), ContentError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            let stamp = self.tick();
            for b in blocks {
                t.insert_block(&b.hash, u64::from(b.size), stamp)?;
            }
            t.save_clock(self.clock())?;
        }
        txn.commit().map_err(db)
    }

    /// Commits finished files: indexes their blocks, stores their manifests and adds each to
    /// its library's current set, all in one durable transaction (their block files must
    /// already be durably in place). One [`Ingested`] per file, in order.
    pub(crate) fn commit_versions<'m>(
        &self,
        versions: impl IntoIterator<Item = (LibraryId, &'m Manifest)>,
    ) -> Result<Vec<Ingested>, ContentError> {
        let txn = begin(&self.inner.db)?;
        let mut out = Vec::new();
        {
            let mut t = Tables::open(&txn)?;
            let stamp = self.tick();
            for (library, manifest) in versions {
                let encoded = manifest.encode();
                let id = ManifestId::of(&encoded);
                let (mut new_blocks, mut new_bytes) = (0u64, 0u64);
                let mut seen = HashSet::with_capacity(manifest.blocks.len());
                for b in &manifest.blocks {
                    if seen.insert(b.hash) && t.insert_block(&b.hash, u64::from(b.size), stamp)? {
                        new_blocks += 1;
                        new_bytes += u64::from(b.size);
                    }
                }
                t.store_manifest(&id, &encoded, manifest, stamp)?;
                t.hold(library.0, &id, stamp)?;
                out.push(Ingested {
                    id,
                    size: manifest.total_size,
                    blocks: manifest.blocks.len() as u64,
                    new_blocks,
                    new_bytes,
                });
            }
            self.flush_touches_into(&mut t)?;
        }
        txn.commit().map_err(|e| {
            // A latched I/O error: have the database re-opened (see `crate::db`).
            self.inner.db.check(&e);
            db(e)
        })?;
        Ok(out)
    }

    // ----- blocks -------------------------------------------------------------------------

    /// Whether the block is in the store (per the index).
    pub fn has_block(&self, h: &BlockHash) -> Result<bool, ContentError> {
        let txn = self.inner.db.begin_read().map_err(db)?;
        let t = match txn.open_table(index::BLOCKS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(db(e)),
        };
        Ok(t.get(h.0).map_err(db)?.is_some())
    }

    /// A block's bytes, verified against its hash. A block that no longer matches is
    /// removed from the store (file and index) and reported as
    /// [`ContentError::CorruptBlock`], so [`missing_blocks`](Self::missing_blocks) names it
    /// again and the transfer fetches a good copy.
    pub fn read_block(&self, h: &BlockHash) -> Result<Vec<u8>, ContentError> {
        let Some(bytes) = self.inner.files.read(h, u64::from(MAX_BLOCK_SIZE))? else {
            // Indexed but gone (deleted behind our back): forget it, so `missing_blocks`
            // names it again.
            if self.has_block(h)? {
                tracing::warn!(block = %h, "indexed block file is missing, forgetting it");
                self.forget_block(h)?;
            }
            return Err(ContentError::BlockNotFound(*h));
        };
        if BlockHash::of(&bytes) != *h {
            tracing::warn!(block = %h, "corrupt block on disk, removing it");
            self.forget_block(h)?;
            return Err(ContentError::CorruptBlock { hash: *h });
        }
        self.touch(*h)?;
        Ok(bytes)
    }

    fn forget_block(&self, h: &BlockHash) -> Result<(), ContentError> {
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            t.remove_block(h)?;
        }
        txn.commit().map_err(db)?;
        self.inner.files.remove(h)
    }

    fn touch(&self, h: BlockHash) -> Result<(), ContentError> {
        let stamp = self.tick();
        let full = {
            let mut m = lock(&self.inner.touches);
            m.insert(h, stamp);
            m.len() >= TOUCH_FLUSH
        };
        if full {
            self.flush_touches()?;
        }
        Ok(())
    }

    fn flush_touches_into(&self, t: &mut Tables<'_>) -> Result<(), ContentError> {
        let pending = std::mem::take(&mut *lock(&self.inner.touches));
        for (h, stamp) in pending {
            t.touch(&h, stamp)?;
        }
        t.save_clock(self.clock())
    }

    /// Writes remembered block uses to the index (done automatically in batches and before
    /// every eviction pass).
    pub fn flush_touches(&self) -> Result<(), ContentError> {
        if lock(&self.inner.touches).is_empty() {
            return Ok(());
        }
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            self.flush_touches_into(&mut t)?;
        }
        txn.commit().map_err(db)
    }

    /// Stores a block received from anyone, after checking that `bytes` hash to `h`
    /// ([`ContentError::HashMismatch`] otherwise: nothing is written). Returns true if the
    /// block was new. Durable when it returns. The block is evictable until a current
    /// version's manifest lists it, so mark the version current (with
    /// [`set_current`](Self::set_current)) *before* fetching its blocks.
    pub fn put_block(&self, h: &BlockHash, bytes: &[u8]) -> Result<bool, ContentError> {
        if bytes.len() as u64 > u64::from(MAX_BLOCK_SIZE) {
            return Err(ContentError::BlockTooLarge(bytes.len() as u64));
        }
        let actual = BlockHash::of(bytes);
        if actual != *h {
            return Err(ContentError::HashMismatch {
                expected: *h,
                actual,
            });
        }
        Ok(self.store_verified(&[(*h, bytes)])? == 1)
    }

    /// Stores a batch of received blocks with one round of fsyncs and one index commit: a
    /// [`stage_blocks`](Self::stage_blocks) and a [`commit_blocks`](Self::commit_blocks) in
    /// one call. Every block is verified first; those whose bytes do not match their hash
    /// (or are too large) are not stored and are listed in [`PutReport::rejected`], so the
    /// caller can drop the peer that sent them and fetch them elsewhere. Durable when it
    /// returns.
    pub fn put_blocks<'a>(
        &self,
        blocks: impl IntoIterator<Item = (BlockHash, &'a [u8])>,
    ) -> Result<PutReport, ContentError> {
        let (staged, rejected) = self.stage_blocks(blocks)?;
        let stored = self.commit_blocks(vec![staged])?;
        Ok(PutReport { stored, rejected })
    }

    /// Writes verified blocks (one batch of fsyncs, one commit); returns how many were new.
    fn store_verified(&self, blocks: &[(BlockHash, &[u8])]) -> Result<u64, ContentError> {
        let mut staged = ReceivedBlocks::new(self);
        for (h, bytes) in blocks {
            staged.add(*h, bytes)?;
        }
        self.commit_blocks(vec![staged])
    }

    /// The first half of storing received blocks, done as they arrive: each block is
    /// verified and written to a temporary file next to its final name (write-back started),
    /// so that what is left for [`commit_blocks`](Self::commit_blocks) is the flush, the
    /// renames and the index commit. Returns the staged blocks and the hashes of those whose
    /// bytes did not match (or were too large), which were not written. Nothing is durable
    /// or visible until the commit; dropping the staged blocks removes their files.
    pub fn stage_blocks<'a>(
        &self,
        blocks: impl IntoIterator<Item = (BlockHash, &'a [u8])>,
    ) -> Result<(ReceivedBlocks, Vec<BlockHash>), ContentError> {
        let mut staged = ReceivedBlocks::new(self);
        let mut rejected = Vec::new();
        for (h, bytes) in blocks {
            if bytes.len() as u64 > u64::from(MAX_BLOCK_SIZE) || BlockHash::of(bytes) != h {
                rejected.push(h);
            } else {
                staged.add(h, bytes)?;
            }
        }
        Ok((staged, rejected))
    }

    /// Makes staged blocks durable and indexed, all batches with one flush round and one
    /// index commit; returns how many blocks were new to the store. On an error nothing of
    /// the batches is indexed and their temporary files are removed.
    pub fn commit_blocks(&self, mut batches: Vec<ReceivedBlocks>) -> Result<u64, ContentError> {
        let files = &self.inner.files;
        let r = (|| -> Result<u64, ContentError> {
            let mut pending: Vec<&mut Pending> =
                batches.iter_mut().map(|b| &mut b.pending).collect();
            files.publish_all(&mut pending)?;
            let mut dirty: HashSet<PathBuf> =
                batches.iter_mut().flat_map(|b| b.dirty.drain()).collect();
            files.sync_dirs(&mut dirty)?;
            let txn = begin(&self.inner.db)?;
            let mut stored = 0;
            {
                let mut t = Tables::open(&txn)?;
                let stamp = self.tick();
                for (h, size) in batches.iter().flat_map(|b| &b.blocks) {
                    if t.insert_block(h, *size, stamp)? {
                        stored += 1;
                    }
                }
                t.save_clock(self.clock())?;
            }
            txn.commit().map_err(|e| {
                // A latched I/O error (a full disk): have the database re-opened.
                self.inner.db.check(&e);
                db(e)
            })?;
            Ok(stored)
        })();
        // Unpins (and on an error removes the temporary files).
        drop(batches);
        let stored = r?;
        if stored > 0 {
            self.evict_if_over()?;
        }
        Ok(stored)
    }

    // ----- manifests ----------------------------------------------------------------------

    /// The decoded manifest of a version.
    pub fn manifest(&self, id: &ManifestId) -> Result<Manifest, ContentError> {
        let bytes = self
            .manifest_bytes(id)?
            .ok_or(ContentError::ManifestNotFound(*id))?;
        Ok(Manifest::decode(&bytes)?)
    }

    /// The encoded manifest (what a peer is sent), if stored.
    pub fn manifest_bytes(&self, id: &ManifestId) -> Result<Option<Vec<u8>>, ContentError> {
        let txn = self.inner.db.begin_read().map_err(db)?;
        let t = match txn.open_table(index::MANIFESTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db(e)),
        };
        Ok(t.get(id.0).map_err(db)?.map(|v| v.value().to_vec()))
    }

    /// Stores a manifest received from a peer, after checking that `bytes` hash to `id` and
    /// decode within bounds. Idempotent.
    pub fn put_manifest(&self, id: &ManifestId, bytes: &[u8]) -> Result<Manifest, ContentError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(super::ManifestError::TooLong(bytes.len()).into());
        }
        let actual = ManifestId::of(bytes);
        if actual != *id {
            return Err(ContentError::ManifestIdMismatch {
                expected: *id,
                actual,
            });
        }
        let m = Manifest::decode(bytes)?;
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            t.store_manifest(id, bytes, &m, self.tick())?;
            t.save_clock(self.clock())?;
        }
        txn.commit().map_err(db)?;
        Ok(m)
    }

    /// The distinct blocks of a stored version that the store lacks, in file order.
    pub fn missing_blocks(&self, id: &ManifestId) -> Result<Vec<BlockRef>, ContentError> {
        let m = self.manifest(id)?;
        let txn = self.inner.db.begin_read().map_err(db)?;
        let t = txn.open_table(index::BLOCKS).map_err(db)?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for b in m.blocks {
            if seen.insert(b.hash) && t.get(b.hash.0).map_err(db)?.is_none() {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Streams a version's bytes back out, verifying every block as it is read.
    pub fn open_reader(&self, id: &ManifestId) -> Result<ContentReader, ContentError> {
        Ok(ContentReader::new(self.clone(), self.manifest(id)?))
    }

    // ----- current versions and the cache -------------------------------------------------

    /// Replaces the set of versions `library`'s current tree needs (every `content` of its
    /// tree's files, including conflict copies). Blocks of these versions are never evicted.
    /// Versions whose manifest is not stored yet are held too, and protect their blocks as
    /// soon as the manifest arrives. An empty slice releases the library.
    pub fn set_current(
        &self,
        library: LibraryId,
        versions: &[ManifestId],
    ) -> Result<(), ContentError> {
        let want: HashSet<ManifestId> = versions.iter().copied().collect();
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            let stamp = self.tick();
            let have: HashSet<ManifestId> = t.current_of(library.0)?.into_iter().collect();
            for id in have.difference(&want) {
                t.release(library.0, id, stamp)?;
            }
            for id in want.difference(&have) {
                t.hold(library.0, id, stamp)?;
            }
            t.save_clock(self.clock())?;
        }
        txn.commit().map_err(db)?;
        self.evict_if_over().map(|_| ())
    }

    /// Adds one version to `library`'s current set (what [`ContentWriter::finish`] does).
    pub fn add_current(&self, library: LibraryId, id: &ManifestId) -> Result<(), ContentError> {
        let txn = begin(&self.inner.db)?;
        {
            let mut t = Tables::open(&txn)?;
            t.hold(library.0, id, self.tick())?;
            t.save_clock(self.clock())?;
        }
        txn.commit().map_err(db)
    }

    /// The versions `library` currently holds.
    pub fn current(&self, library: LibraryId) -> Result<Vec<ManifestId>, ContentError> {
        let txn = begin(&self.inner.db)?;
        let v = Tables::open(&txn)?.current_of(library.0)?;
        txn.abort().map_err(db)?;
        Ok(v)
    }

    pub(crate) fn evict_if_over(&self) -> Result<Option<EvictReport>, ContentError> {
        if self.total_bytes()? <= self.cache_limit() {
            return Ok(None);
        }
        let r = self.evict()?;
        let was = self.inner.over_limit.swap(r.over_limit, Ordering::Relaxed);
        if r.over_limit && !was {
            tracing::warn!(
                total = r.total_bytes,
                limit = r.limit,
                "block store over its size limit: everything left is needed by current versions"
            );
        }
        Ok(Some(r))
    }

    /// Removes least-recently-used blocks that no current version needs until the store is
    /// within its limit (or nothing evictable is left: then `over_limit` is set).
    pub fn evict(&self) -> Result<EvictReport, ContentError> {
        self.evict_to(self.cache_limit())
    }

    /// Evicts what no current version needs until `extra` more bytes fit under the limit;
    /// false if they cannot (what is left is all current). A cache asks this before each
    /// fetch, so that its limit holds: current versions are never evicted, so fetching
    /// beyond the limit would only grow the store.
    pub fn make_room(&self, extra: u64) -> Result<bool, ContentError> {
        let Some(target) = self.cache_limit().checked_sub(extra) else {
            return Ok(false);
        };
        if self.total_bytes()? <= target {
            return Ok(true);
        }
        Ok(self.evict_to(target)?.total_bytes <= target)
    }

    /// [`ContentStore::evict`] down to `limit` bytes.
    fn evict_to(&self, limit: u64) -> Result<EvictReport, ContentError> {
        // Held until the victims' files are gone, so no writer can count on a block that is
        // about to disappear (see `Inner::inflight`).
        let inflight = lock(&self.inner.inflight);
        let txn = begin(&self.inner.db)?;
        let mut victims = Vec::new();
        let mut freed = 0u64;
        let total = {
            let mut t = Tables::open(&txn)?;
            self.flush_touches_into(&mut t)?;
            let total = t.total_bytes()?;
            let mut candidates = Vec::new();
            if total > limit {
                let mut would_free = 0u64;
                for item in t.lru.iter().map_err(db)? {
                    let (k, _) = item.map_err(db)?;
                    let h = BlockHash(k.value().1);
                    if inflight.contains_key(&h) {
                        continue;
                    }
                    let size = t.blocks.get(h.0).map_err(db)?.map(|v| v.value().0);
                    candidates.push(h);
                    would_free += size.unwrap_or(0);
                    if total - would_free.min(total) <= limit {
                        break;
                    }
                }
            }
            for h in candidates {
                if let Some(size) = t.remove_block(&h)? {
                    victims.push(h);
                    freed += size;
                }
            }
            total
        };
        txn.commit().map_err(db)?;
        for h in &victims {
            // A removal failure leaves an orphan file that the next open adopts again.
            if let Err(e) = self.inner.files.remove(h) {
                tracing::warn!(error = %e, "could not remove an evicted block file");
            }
        }
        drop(inflight);
        let after = total.saturating_sub(freed);
        Ok(EvictReport {
            evicted: victims.len() as u64,
            freed_bytes: freed,
            total_bytes: after,
            limit,
            over_limit: after > limit,
        })
    }

    fn total_bytes(&self) -> Result<u64, ContentError> {
        let txn = self.inner.db.begin_read().map_err(db)?;
        let t = match txn.open_table(index::META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(db(e)),
        };
        Ok(t.get(index::TOTAL_BYTES)
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Counts and sizes (walks the index: for the panel and tests, not hot paths).
    pub fn stats(&self) -> Result<StoreStats, ContentError> {
        let txn = self.inner.db.begin_read().map_err(db)?;
        let blocks = txn.open_table(index::BLOCKS).map_err(db)?;
        let needed = txn.open_table(index::NEEDED).map_err(db)?;
        let manifests = txn.open_table(index::MANIFESTS).map_err(db)?;
        let mut s = StoreStats {
            limit: self.cache_limit(),
            manifests: manifests.len().map_err(db)?,
            ..StoreStats::default()
        };
        for item in blocks.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let (size, _) = v.value();
            s.blocks += 1;
            s.total_bytes += size;
            if needed.get(k.value()).map_err(db)?.is_some() {
                s.needed_bytes += size;
            }
        }
        Ok(s)
    }

    /// Reads and verifies every indexed block; returns the hashes that are missing or
    /// corrupt (a full check, for tests and a future `fsck` command; it does not repair).
    pub fn verify_all(&self) -> Result<Vec<BlockHash>, ContentError> {
        let hashes: Vec<BlockHash> = {
            let txn = self.inner.db.begin_read().map_err(db)?;
            let t = txn.open_table(index::BLOCKS).map_err(db)?;
            let mut v = Vec::new();
            for item in t.iter().map_err(db)? {
                v.push(BlockHash(item.map_err(db)?.0.value()));
            }
            v
        };
        let mut bad = Vec::new();
        for h in hashes {
            match self.inner.files.read(&h, u64::from(MAX_BLOCK_SIZE)) {
                Ok(Some(b)) if BlockHash::of(&b) == h => {}
                Ok(_) | Err(ContentError::BlockTooLarge(_)) => bad.push(h),
                Err(e) => return Err(e),
            }
        }
        Ok(bad)
    }
}

/// Blocks pinned against eviction while their file waits for its commit; unpinned on drop.
pub(crate) struct Pins {
    store: ContentStore,
    hashes: HashSet<BlockHash>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let hashes = std::mem::take(&mut self.hashes);
        if !hashes.is_empty() {
            self.store.unpin_inflight(hashes);
        }
    }
}

/// [`ContentStore::ingest_all`] commits at least every this many files…
pub const INGEST_ALL_FILES: usize = 256;
/// …or every this many bytes.
pub const INGEST_ALL_BYTES: u64 = 64 << 20;

/// Feeds everything `reader` yields to `w`.
fn copy_into(
    mut reader: impl Read,
    w: &mut ContentWriter,
    buf: &mut [u8],
) -> Result<(), ContentError> {
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ContentError::io("reading input", "<reader>", e)),
        };
        w.write(&buf[..n])?;
    }
}

fn begin(db: &Db) -> Result<WriteTransaction, ContentError> {
    let mut txn = db.begin_write().map_err(self::db)?;
    txn.set_durability(Durability::Immediate)
        .map_err(self::db)?;
    Ok(txn)
}
