//! The durable chain store: every library's entries in the shared redb database, an
//! in-memory DAG index per library, and the operations the engine and the sync protocol use.
//!
//! # Layout
//!
//! One table, [`ENTRIES`]: key `(library id, position)`, value the entry's canonical bytes
//! ([`Entry::to_bytes`]). Positions count 0, 1, 2 … per library in the order entries were
//! accepted, which is always a topological order (parents are accepted before children).
//! Hashes are not stored: they are recomputed from the bytes, so stored bytes cannot claim a
//! hash they do not have.
//!
//! # Durability and checking
//!
//! Every append or insert is one redb write transaction committed with
//! `Durability::Immediate`: when the call returns `Ok`, the entries are on disk and survive
//! `kill -9`; when it fails, none of them are stored and the index is rolled back. Opening a
//! store reads every entry the last checkpoint does not cover (all of them without one) and
//! verifies it exactly as if it had come from a peer (decoding, links, genesis, Lamport
//! clock, sequence number, membership, signature); the first bad entry makes
//! [`ChainStore::open`] fail with [`ChainError::Damaged`], naming the library, the entry's
//! position and its hash. The checkpointed prefix is taken from the checkpoint (see
//! [`super::checkpoint`] for why that is sound); every later read of a stored entry is
//! checked against the hash the index holds, and [`ChainStore::verify`] re-checks it all.
//!
//! # Concurrency
//!
//! Open one [`ChainStore`] per database and share it: it is a cheap `Clone` (an `Arc`). (A
//! second store opened on the same database would not see the first one's appends; its
//! writes are refused rather than let overwrite anything.) Calls block (disk I/O, fsync, signature
//! checks): async callers should use `spawn_blocking`. One mutex guards the indexes, so
//! writes are serialised, as redb serialises them anyway.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ed25519_dalek::SigningKey;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::db::Db;

use super::checkpoint::{self, CHECKPOINTS};
use super::dag::LibIndex;
use super::entry::{Entry, Meta, Op, MAX_PARENTS};
use super::error::{ChainError, EntryFault};
use super::fold::{Folder, Tree};
use super::sig::{self, SigItem};
use super::types::{DeviceKey, EntryHash, LibraryId};

/// The chain's table in the shared database: `(library, position) → entry bytes`.
pub const ENTRIES: TableDefinition<([u8; 16], u64), &[u8]> = TableDefinition::new("chain_entries");

/// Entries decoded and checked per step while loading (bounds memory at open).
const LOAD_CHUNK: usize = 32_768;

/// What [`ChainStore::insert_remote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertOutcome {
    /// Entries newly stored.
    pub inserted: usize,
    /// Entries the store already had.
    pub already_had: usize,
}

/// What [`ChainStore::verify`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Libraries.
    pub libraries: usize,
    /// Entries, all libraries together.
    pub entries: u64,
}

/// A short summary of one library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibrarySummary {
    /// The library.
    pub library: LibraryId,
    /// Its entries.
    pub entries: usize,
    /// Its heads, ascending.
    pub heads: Vec<EntryHash>,
    /// Its members at the heads.
    pub members: Vec<DeviceKey>,
}

struct Inner {
    db: Db,
    libs: Mutex<HashMap<LibraryId, LibIndex>>,
    /// The folded tree per library, kept up to date incrementally (see [`ChainStore::tree`]).
    trees: Mutex<HashMap<LibraryId, FoldCache>>,
    /// Per library, how many entries its stored checkpoint covers.
    checkpointed: Mutex<HashMap<LibraryId, usize>>,
}

/// A library's fold so far: every node below `applied` (in index order) has been applied,
/// the last of them in the fold order having key `last`.
struct FoldCache {
    folder: Folder,
    applied: usize,
    last: (u64, EntryHash),
}

/// The chain store. See the module docs.
#[derive(Clone)]
pub struct ChainStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore").finish_non_exhaustive()
    }
}

pub use crate::clock::now_ms;

fn write_entries(
    db: &Db,
    lib: LibraryId,
    start: u64,
    entries: &[&Entry],
) -> Result<(), ChainError> {
    commit(db, stage_entries(db, lib, start, entries)?)
}

/// Writes entries into a new transaction without committing it (dropping it discards them).
fn stage_entries(
    db: &Db,
    lib: LibraryId,
    start: u64,
    entries: &[&Entry],
) -> Result<redb::WriteTransaction, ChainError> {
    let mut txn = db.begin_write().map_err(ChainError::db)?;
    txn.set_durability(Durability::Immediate)
        .map_err(ChainError::db)?;
    {
        let mut t = txn.open_table(ENTRIES).map_err(ChainError::db)?;
        for (i, e) in entries.iter().enumerate() {
            let old = t
                .insert((lib.0, start + i as u64), e.to_bytes().as_slice())
                .map_err(ChainError::db)?;
            if old.is_some() {
                // Dropping the transaction discards it: nothing is overwritten.
                return Err(ChainError::Internal(
                    "stored position already taken: is a second ChainStore open on this database?",
                ));
            }
        }
    }
    Ok(txn)
}

/// Commits a staged write durably.
fn commit(db: &Db, txn: redb::WriteTransaction) -> Result<(), ChainError> {
    txn.commit().map_err(|e| {
        db.check(&e);
        ChainError::db(e)
    })
}

/// Signatures of one loaded chunk, with where each entry is stored.
struct ChunkSigs {
    sigs: Vec<SigItem>,
    at: Vec<(LibraryId, u64)>,
}

impl ChunkSigs {
    fn verify(self) -> Result<(), ChainError> {
        sig::verify_all(&self.sigs).map_err(|i| ChainError::Damaged {
            library: self.at[i].0,
            index: self.at[i].1,
            hash: Some(self.sigs[i].0),
            reason: EntryFault::BadSignature.to_string(),
        })
    }
}

/// The checkpoints (see [`super::checkpoint`]) that still describe a prefix of the stored
/// entries: their last entry is stored and hashes to what they say. Others are ignored.
fn usable_checkpoints(
    txn: &redb::ReadTransaction,
    table: &redb::ReadOnlyTable<([u8; 16], u64), &[u8]>,
) -> Result<HashMap<LibraryId, LibIndex>, ChainError> {
    let mut out = HashMap::new();
    let saved = match txn.open_table(CHECKPOINTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(ChainError::db(e)),
    };
    for item in saved.iter().map_err(ChainError::db)? {
        let (k, v) = item.map_err(ChainError::db)?;
        let lib = LibraryId(k.value());
        let Ok(c) = checkpoint::decode(lib, v.value()) else {
            continue;
        };
        let matches = table
            .get((lib.0, c.entries - 1))
            .map_err(ChainError::db)?
            .is_some_and(|row| Entry::from_bytes_expecting(row.value(), &c.last).is_ok());
        if matches {
            out.insert(lib, c.index);
        }
    }
    Ok(out)
}

/// Reads, decodes and verifies the stored entries, building the indexes: every entry of a
/// library without a usable checkpoint, only those after it otherwise. Signatures of one
/// chunk are checked on other threads while the next chunk is decoded and linked.
/// Also returns, per library, how many entries its checkpoint covered.
fn load_all(db: &Database) -> Result<Loaded, ChainError> {
    load(db, true)
}

/// The indexes, and how many entries of each library a checkpoint covered.
type Loaded = (HashMap<LibraryId, LibIndex>, HashMap<LibraryId, usize>);

fn load(db: &Database, use_checkpoints: bool) -> Result<Loaded, ChainError> {
    let txn = db.begin_read().map_err(ChainError::db)?;
    let table = match txn.open_table(ENTRIES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
        Err(e) => return Err(ChainError::db(e)),
    };
    let mut libs = if use_checkpoints {
        usable_checkpoints(&txn, &table)?
    } else {
        HashMap::new()
    };
    let covered: HashMap<LibraryId, u64> = libs.iter().map(|(l, i)| (*l, i.len() as u64)).collect();
    let mut raw: Vec<(LibraryId, u64, Vec<u8>)> = Vec::with_capacity(LOAD_CHUNK);
    let mut pending: Option<std::thread::JoinHandle<Result<(), ChainError>>> = None;
    let mut iter = table.iter().map_err(ChainError::db)?;
    loop {
        let item = iter.next();
        let done = item.is_none();
        if let Some(item) = item {
            let (k, v) = item.map_err(ChainError::db)?;
            let (lib, idx) = k.value();
            match covered.get(&LibraryId(lib)) {
                // The checkpoint covers this library up to `n`: skip to there.
                Some(&n) if idx < n => {
                    iter = table.range((lib, n)..).map_err(ChainError::db)?;
                    continue;
                }
                _ => raw.push((LibraryId(lib), idx, v.value().to_vec())),
            }
        }
        if raw.len() < LOAD_CHUNK && !done {
            continue;
        }
        let (chunk, fault) = load_chunk(&mut libs, &raw);
        raw.clear();
        // Damage in an earlier chunk comes first.
        if let Some(h) = pending.take() {
            h.join()
                .unwrap_or_else(|_| Err(ChainError::Random("signature thread panicked".into())))?;
        }
        if let Some(fault) = fault {
            // A bad signature before the first structural fault is the earlier damage.
            chunk.verify()?;
            return Err(fault);
        }
        if done {
            chunk.verify()?;
            let covered = covered.into_iter().map(|(l, n)| (l, n as usize)).collect();
            return Ok((libs, covered));
        }
        pending = Some(std::thread::spawn(move || chunk.verify()));
    }
}

/// Decodes and links one chunk of stored entries into the indexes. Returns the signatures
/// still to check (those of every entry before the first fault) and that fault, if any.
fn load_chunk(
    libs: &mut HashMap<LibraryId, LibIndex>,
    raw: &[(LibraryId, u64, Vec<u8>)],
) -> (ChunkSigs, Option<ChainError>) {
    let mut out = ChunkSigs {
        sigs: Vec::with_capacity(raw.len()),
        at: Vec::with_capacity(raw.len()),
    };
    for (lib, idx, bytes) in raw {
        let index = libs.entry(*lib).or_insert_with(|| LibIndex::new(*lib));
        let damaged = |hash: Option<EntryHash>, reason: String| ChainError::Damaged {
            library: *lib,
            index: *idx,
            hash,
            reason,
        };
        if *idx != index.len() as u64 {
            let fault = ChainError::Damaged {
                library: *lib,
                index: index.len() as u64,
                hash: None,
                reason: format!("missing (the next stored entry is #{idx})"),
            };
            return (out, Some(fault));
        }
        let e = match Entry::from_bytes(bytes) {
            Ok(e) => e,
            Err(err) => return (out, Some(damaged(None, format!("undecodable: {err}")))),
        };
        match index.check(&e) {
            Ok(c) => {
                out.sigs.push((e.hash(), c.vk, *e.signature()));
                out.at.push((*lib, *idx));
                index.push(&e, c);
            }
            Err(f) => return (out, Some(damaged(Some(e.hash()), f.to_string()))),
        }
    }
    (out, None)
}

impl ChainStore {
    /// Opens the chain on a shared database handle, creating its table if needed, and
    /// verifies every stored entry (see the module docs). A damaged chain is refused.
    pub fn open(db: Db) -> Result<Self, ChainError> {
        {
            let txn = db.begin_write().map_err(ChainError::db)?;
            txn.open_table(ENTRIES).map_err(ChainError::db)?;
            txn.commit().map_err(ChainError::db)?;
        }
        let (libs, covered) = db.with(load_all).map_err(ChainError::db)??;
        let inner = Arc::new(Inner {
            db: db.clone(),
            libs: Mutex::new(libs),
            trees: Mutex::new(HashMap::new()),
            checkpointed: Mutex::new(covered),
        });
        // A re-opened database holds what was committed: the indexes are rebuilt from it.
        db.on_reopen(&inner, |inner, database| {
            let mut libs = crate::locks::lock(&inner.libs);
            let (loaded, covered) = load_all(database).map_err(|e| e.to_string())?;
            *libs = loaded;
            *crate::locks::lock(&inner.checkpointed) = covered;
            crate::locks::lock(&inner.trees).clear();
            Ok(())
        });
        Ok(ChainStore { inner })
    }

    /// Convenience: opens the database file at `path` (see [`crate::db`]) and the chain on it.
    pub fn open_path(path: &Path) -> Result<Self, ChainError> {
        let db = Database::create(path).map_err(ChainError::db)?;
        Self::open(Db::new(db))
    }

    /// Saves a checkpoint of every library that grew since its last one (see
    /// [`super::checkpoint`]), in one durable commit, so that the next open verifies only
    /// what is stored after it. Meant for a clean close: it costs about the size of the
    /// in-memory index (some 70 bytes per entry). Returns how many libraries were saved.
    pub fn checkpoint(&self) -> Result<usize, ChainError> {
        let libs = self.lock();
        let mut saved = crate::locks::lock(&self.inner.checkpointed);
        let stale: Vec<(&LibraryId, &LibIndex)> = libs
            .iter()
            .filter(|(lib, index)| index.len() > 0 && saved.get(*lib) != Some(&index.len()))
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let db = &self.inner.db;
        let mut txn = db.begin_write().map_err(ChainError::db)?;
        txn.set_durability(Durability::Immediate)
            .map_err(ChainError::db)?;
        {
            let mut t = txn.open_table(CHECKPOINTS).map_err(ChainError::db)?;
            for (lib, index) in &stale {
                if let Some(bytes) = checkpoint::encode(index) {
                    t.insert(lib.0, bytes.as_slice()).map_err(ChainError::db)?;
                }
            }
        }
        txn.commit().map_err(|e| {
            db.check(&e);
            ChainError::db(e)
        })?;
        for (lib, index) in &stale {
            saved.insert(**lib, index.len());
        }
        Ok(stale.len())
    }

    /// The shared database handle.
    pub fn database(&self) -> &Db {
        &self.inner.db
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LibraryId, LibIndex>> {
        crate::locks::lock(&self.inner.libs)
    }

    /// Re-reads every stored entry from disk and verifies it from scratch.
    pub fn verify(&self) -> Result<VerifyReport, ChainError> {
        let (libs, _) = self
            .inner
            .db
            .with(|db| load(db, false))
            .map_err(ChainError::db)??;
        Ok(VerifyReport {
            libraries: libs.len(),
            entries: libs.values().map(|l| l.len() as u64).sum(),
        })
    }

    /// The libraries in this store, ascending.
    pub fn libraries(&self) -> Vec<LibraryId> {
        let mut v: Vec<LibraryId> = self.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Entries, heads and members of a library.
    pub fn summary(&self, lib: &LibraryId) -> Result<LibrarySummary, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(LibrarySummary {
            library: *lib,
            entries: index.len(),
            heads: index.heads(),
            members: index.current_members().members(),
        })
    }

    /// Creates a library whose genesis adds `key`'s device (named `device_name`).
    pub fn create_library(
        &self,
        key: &SigningKey,
        device_name: &str,
    ) -> Result<(LibraryId, Entry), ChainError> {
        let lib = LibraryId::random().map_err(|e| ChainError::Random(e.to_string()))?;
        let e = self.create_library_with(lib, key, device_name, now_ms())?;
        Ok((lib, e))
    }

    /// Creates a library with a given id and genesis wall time (tests, golden vectors).
    pub fn create_library_with(
        &self,
        lib: LibraryId,
        key: &SigningKey,
        device_name: &str,
        wall_ms: u64,
    ) -> Result<Entry, ChainError> {
        let author = DeviceKey(key.verifying_key().to_bytes());
        let meta = Meta {
            library: lib,
            author,
            seq: 1,
            lamport: 1,
            wall_ms,
            op: Op::AddDevice {
                device: author,
                name: device_name.to_string(),
            },
        };
        let genesis = Entry::sign(meta, Vec::new(), key);
        let mut libs = self.lock();
        if libs.contains_key(&lib) {
            return Err(ChainError::LibraryExists(lib));
        }
        let mut index = LibIndex::new(lib);
        let c = index
            .check(&genesis)
            .map_err(|fault| ChainError::Rejected {
                hash: genesis.hash(),
                fault,
            })?;
        index.push(&genesis, c);
        write_entries(&self.inner.db, lib, 0, &[&genesis])?;
        libs.insert(lib, index);
        Ok(genesis)
    }

    /// Appends one local operation signed by `key`, naming all current heads as parents
    /// (at most 64), durably. Returns the new entry once it is on disk.
    pub fn append(&self, lib: &LibraryId, key: &SigningKey, op: Op) -> Result<Entry, ChainError> {
        let mut v = self.append_batch_at(lib, key, vec![op], now_ms())?;
        v.pop().ok_or(ChainError::UnknownLibrary(*lib))
    }

    /// Appends several local operations in one durable transaction: the first names the
    /// current heads, each next one the previous entry.
    pub fn append_batch(
        &self,
        lib: &LibraryId,
        key: &SigningKey,
        ops: Vec<Op>,
    ) -> Result<Vec<Entry>, ChainError> {
        self.append_batch_at(lib, key, ops, now_ms())
    }

    /// [`ChainStore::append_batch`] with an explicit wall time.
    pub fn append_batch_at(
        &self,
        lib: &LibraryId,
        key: &SigningKey,
        ops: Vec<Op>,
        wall_ms: u64,
    ) -> Result<Vec<Entry>, ChainError> {
        self.append_inner(lib, key, ops, wall_ms, None)
    }

    /// Appends local operations that were decided looking at the library as it was at the
    /// heads `seen`: entries stored since (a peer's, pulled meanwhile) are not their
    /// ancestors, so where both wrote one path the fold keeps both versions instead of
    /// letting ours replace one we never saw. Heads holding this device's own later entries
    /// are parents too (its entries stay in one line).
    pub fn append_batch_after(
        &self,
        lib: &LibraryId,
        key: &SigningKey,
        ops: Vec<Op>,
        seen: &[EntryHash],
    ) -> Result<Vec<Entry>, ChainError> {
        self.append_inner(lib, key, ops, now_ms(), Some(seen))
    }

    fn append_inner(
        &self,
        lib: &LibraryId,
        key: &SigningKey,
        ops: Vec<Op>,
        wall_ms: u64,
        seen: Option<&[EntryHash]>,
    ) -> Result<Vec<Entry>, ChainError> {
        let author = DeviceKey(key.verifying_key().to_bytes());
        let mut libs = self.lock();
        let index = libs.get_mut(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        let current = index.heads();
        let heads: Vec<EntryHash> = match seen.filter(|s| s.iter().all(|h| index.get(h).is_some()))
        {
            // Nothing known to go by (or not all of it stored): every head.
            None => current.into_iter().take(MAX_PARENTS).collect(),
            Some(seen) => {
                let a = index.authors.iter().position(|x| x.key == author);
                let mine = |h: &EntryHash| -> u64 {
                    match (a, index.get(h)) {
                        (Some(a), Some(i)) => {
                            index.nodes[i as usize].vc.get(a).copied().unwrap_or(0)
                        }
                        _ => 0,
                    }
                };
                let seen_mine = seen.iter().map(mine).max().unwrap_or(0);
                let mut heads: Vec<EntryHash> = current
                    .iter()
                    .filter(|h| mine(h) > seen_mine)
                    .copied()
                    .collect();
                for h in seen {
                    if !heads.contains(h) {
                        heads.push(*h);
                    }
                }
                heads.truncate(MAX_PARENTS);
                heads
            }
        };
        let head_nodes: Vec<u32> = heads.iter().filter_map(|h| index.get(h)).collect();
        let first_lamport = 1 + head_nodes
            .iter()
            .map(|&i| index.nodes[i as usize].lamport)
            .max()
            .unwrap_or(0);
        let a = index.authors.iter().position(|x| x.key == author);
        let first_seq = 1 + a.map_or(0, |a| {
            head_nodes
                .iter()
                .map(|&i| index.nodes[i as usize].vc.get(a).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        });
        let mut parents = heads;
        let mut entries = Vec::with_capacity(ops.len());
        for (k, op) in (0u64..).zip(ops) {
            let meta = Meta {
                library: *lib,
                author,
                seq: first_seq + k,
                lamport: first_lamport + k,
                wall_ms,
                op,
            };
            let e = Entry::unsigned(meta, std::mem::take(&mut parents));
            parents = vec![e.hash()];
            entries.push(e);
        }
        let snap = index.snapshot();
        let start = index.len() as u64;
        // The DAG checks do not need the signatures: they run while the entries are signed.
        let hashes: Vec<EntryHash> = entries.iter().map(Entry::hash).collect();
        let (signatures, checked) = std::thread::scope(|s| {
            let signing = s.spawn(|| sig::sign_all(&hashes, key));
            let checked = entries.iter().try_for_each(|e| {
                let c = index.check(e).map_err(|fault| ChainError::Rejected {
                    hash: e.hash(),
                    fault,
                })?;
                index.push(e, c);
                Ok(())
            });
            (signing.join().unwrap_or_default(), checked)
        });
        if let Err(e) = checked {
            index.rollback(snap);
            return Err(e);
        }
        if signatures.len() != entries.len() {
            index.rollback(snap);
            return Err(ChainError::Internal("a signing thread failed"));
        }
        for (e, sig) in entries.iter_mut().zip(signatures) {
            e.set_signature(sig);
        }
        let refs: Vec<&Entry> = entries.iter().collect();
        if let Err(err) = write_entries(&self.inner.db, *lib, start, &refs) {
            index.rollback(snap);
            return Err(err);
        }
        Ok(entries)
    }

    /// Appends a `Merge` naming all heads, if there are several. Returns it, or `None` when
    /// there is one head already.
    pub fn merge(&self, lib: &LibraryId, key: &SigningKey) -> Result<Option<Entry>, ChainError> {
        if self.heads(lib)?.len() < 2 {
            return Ok(None);
        }
        self.append(lib, key, Op::Merge).map(Some)
    }

    /// The library's heads, ascending.
    pub fn heads(&self, lib: &LibraryId) -> Result<Vec<EntryHash>, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(index.heads())
    }

    /// Number of entries in the library.
    pub fn len(&self, lib: &LibraryId) -> Result<usize, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(index.len())
    }

    /// True if the library holds the entry.
    pub fn contains(&self, lib: &LibraryId, hash: &EntryHash) -> bool {
        self.lock()
            .get(lib)
            .is_some_and(|index| index.get(hash).is_some())
    }

    /// The devices that are members at the library's heads.
    pub fn members(&self, lib: &LibraryId) -> Result<Vec<DeviceKey>, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(index.current_members().members())
    }

    /// True if `device` is a member at the library's heads.
    pub fn is_member(&self, lib: &LibraryId, device: &DeviceKey) -> bool {
        self.lock()
            .get(lib)
            .is_some_and(|index| index.current_members().is_member(device))
    }

    /// Reads stored entries by position, each checked against the hash the index holds for
    /// it: a row damaged since it was verified (or since the checkpoint that vouched for it)
    /// is named here rather than handed on.
    fn read_at(
        &self,
        lib: &LibraryId,
        wanted: &[(u32, EntryHash)],
    ) -> Result<Vec<Entry>, ChainError> {
        let txn = self.inner.db.begin_read().map_err(ChainError::db)?;
        let table = txn.open_table(ENTRIES).map_err(ChainError::db)?;
        let mut out = Vec::with_capacity(wanted.len());
        for &(i, hash) in wanted {
            let damaged = |reason: String| ChainError::Damaged {
                library: *lib,
                index: u64::from(i),
                hash: Some(hash),
                reason,
            };
            let guard = table
                .get((lib.0, u64::from(i)))
                .map_err(ChainError::db)?
                .ok_or_else(|| damaged("vanished from the database".into()))?;
            out.push(
                Entry::from_bytes_expecting(guard.value(), &hash)
                    .map_err(|e| damaged(format!("undecodable: {e}")))?,
            );
        }
        Ok(out)
    }

    /// One entry by hash, searching every library.
    pub fn entry(&self, hash: &EntryHash) -> Result<Option<(LibraryId, Entry)>, ChainError> {
        let found = self
            .lock()
            .iter()
            .find_map(|(lib, index)| index.get(hash).map(|i| (*lib, i)));
        match found {
            None => Ok(None),
            Some((lib, i)) => Ok(self.read_at(&lib, &[(i, *hash)])?.pop().map(|e| (lib, e))),
        }
    }

    /// The library's entry hashes in the deterministic topological order (Lamport clock, then
    /// hash): the order [`ChainStore::tree`] folds in.
    pub fn log(&self, lib: &LibraryId) -> Result<Vec<EntryHash>, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(index
            .topo_order()
            .into_iter()
            .map(|i| index.nodes[i as usize].hash)
            .collect())
    }

    /// Entries by hash, in the order asked; `None` for hashes the library does not hold.
    pub fn entries(
        &self,
        lib: &LibraryId,
        hashes: &[EntryHash],
    ) -> Result<Vec<Option<Entry>>, ChainError> {
        let positions: Vec<Option<u32>> = {
            let libs = self.lock();
            let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
            hashes.iter().map(|h| index.get(h)).collect()
        };
        let present: Vec<(u32, EntryHash)> = positions
            .iter()
            .zip(hashes)
            .filter_map(|(p, h)| p.map(|p| (p, *h)))
            .collect();
        let mut read = self.read_at(lib, &present)?.into_iter();
        Ok(positions
            .into_iter()
            .map(|p| p.and_then(|_| read.next()))
            .collect())
    }

    /// What the other side lacks, given its heads: every entry here that is not an ancestor
    /// of (or equal to) one of `their_heads`, ancestors first, read lazily in batches of at
    /// most `batch_size`. Heads this store does not know are ignored (they may be entries
    /// this side lacks; the protocol's next round covers them).
    pub fn missing_for(
        &self,
        lib: &LibraryId,
        their_heads: &[EntryHash],
        batch_size: usize,
    ) -> Result<Missing, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(Missing {
            store: self.clone(),
            lib: *lib,
            order: index.missing_for(their_heads),
            pos: 0,
            batch: batch_size.max(1),
        })
    }

    /// This store's version vector: for each author, how many of its entries the library
    /// holds. Because each author's entries form one chain, this describes exactly which
    /// entries the store has, including ones the other side has never heard of.
    pub fn version_vector(&self, lib: &LibraryId) -> Result<Vec<(DeviceKey, u64)>, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(index.version_vector())
    }

    /// Like [`ChainStore::missing_for`], given the other side's
    /// [`ChainStore::version_vector`] instead of its heads: exact even when the other side
    /// holds entries this one lacks.
    pub fn missing_for_vector(
        &self,
        lib: &LibraryId,
        their_vector: &[(DeviceKey, u64)],
        batch_size: usize,
    ) -> Result<Missing, ChainError> {
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        Ok(Missing {
            store: self.clone(),
            lib: *lib,
            order: index.missing_for_vector(their_vector),
            pos: 0,
            batch: batch_size.max(1),
        })
    }

    /// The first `limit` entries that the holder of `their_vector` lacks, ancestors first,
    /// and how many it lacks in all: one batch of [`ChainStore::missing_for_vector`],
    /// computed in time proportional to the batch (plus the number of authors), not to the
    /// library. This is what a sync server answers each fetch with.
    pub fn missing_batch_for_vector(
        &self,
        lib: &LibraryId,
        their_vector: &[(DeviceKey, u64)],
        limit: usize,
    ) -> Result<(Vec<Entry>, usize), ChainError> {
        let (order, total) = {
            let libs = self.lock();
            let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
            let (order, total) = index.missing_prefix_for_vector(their_vector, limit);
            (index.with_hashes(&order), total)
        };
        Ok((self.read_at(lib, &order)?, total))
    }

    /// Verifies a batch of entries from a peer and stores them atomically: all or nothing.
    /// The batch may come in any order and may repeat entries the store has. Each new entry
    /// must have its parents here or earlier in the batch, a valid signature by a device that
    /// is a member at that point of the DAG, and follow every rule of [`crate::chain`]; the
    /// first that does not makes the call fail with [`ChainError::Rejected`] naming it.
    /// A library this store does not know is created when the batch starts with its genesis.
    pub fn insert_remote(
        &self,
        lib: &LibraryId,
        batch: Vec<Entry>,
    ) -> Result<InsertOutcome, ChainError> {
        let mut batch = batch;
        batch.sort_by_key(|e| (e.meta().lamport, e.hash()));
        batch.dedup_by_key(|e| e.hash());
        let mut libs = self.lock();
        let is_new = !libs.contains_key(lib);
        let mut fresh = LibIndex::new(*lib);
        let index = match libs.get_mut(lib) {
            Some(i) => i,
            None => &mut fresh,
        };
        let snap = index.snapshot();
        let start = index.len() as u64;
        let mut outcome = InsertOutcome::default();
        // Entries already here are skipped before anything else (their signature is not
        // looked at: the hash does not cover it, and ours was checked).
        let fresh_entries: Vec<&Entry> = batch
            .iter()
            .filter(|e| index.get(&e.hash()).is_none())
            .collect();
        outcome.already_had = batch.len() - fresh_entries.len();
        if fresh_entries.is_empty() {
            return Ok(outcome);
        }
        // A signature does not depend on the DAG: all of them are checked on other threads
        // while this one checks links, clocks and membership and stages the write. An entry
        // whose key is unusable is left to the DAG check, which refuses it.
        let mut keys: HashMap<DeviceKey, Option<ed25519_dalek::VerifyingKey>> = HashMap::new();
        let sigs: Vec<SigItem> = fresh_entries
            .iter()
            .filter_map(|e| {
                let author = e.meta().author;
                let vk = *keys
                    .entry(author)
                    .or_insert_with(|| super::dag::usable_key(&author).ok());
                vk.map(|vk| (e.hash(), vk, *e.signature()))
            })
            .collect();
        let db = &self.inner.db;
        let (checked, signed) = std::thread::scope(|s| {
            let signatures = s.spawn(|| sig::verify_all(&sigs));
            let checked = (|| {
                for e in &fresh_entries {
                    let c = index.check(e).map_err(|fault| ChainError::Rejected {
                        hash: e.hash(),
                        fault,
                    })?;
                    index.push(e, c);
                }
                stage_entries(db, *lib, start, &fresh_entries)
            })();
            let signed = signatures.join().unwrap_or(Err(0));
            (checked, signed)
        });
        // A fault the DAG check found comes first, as when the checks ran one after another.
        let staged = match (checked, signed) {
            (Err(e), _) => {
                index.rollback(snap);
                return Err(e);
            }
            (Ok(_), Err(i)) => {
                index.rollback(snap);
                return Err(ChainError::Rejected {
                    hash: sigs.get(i).map_or(fresh_entries[0].hash(), |s| s.0),
                    fault: EntryFault::BadSignature,
                });
            }
            (Ok(txn), Ok(())) => txn,
        };
        if let Err(err) = commit(db, staged) {
            index.rollback(snap);
            return Err(err);
        }
        let new = fresh_entries;
        outcome.inserted = new.len();
        if is_new {
            libs.insert(*lib, fresh);
        }
        Ok(outcome)
    }

    /// Folds the library into its file tree (see [`crate::chain::fold`]).
    ///
    /// The fold is kept between calls: entries added since the last call are applied on top
    /// when they all come after it in the fold order (always true for local appends, whose
    /// Lamport clock is above every head); otherwise (a peer's entries that sort earlier)
    /// the library is folded again from the start.
    pub fn tree(&self, lib: &LibraryId) -> Result<Tree, ChainError> {
        const STEP: usize = 4096;
        let libs = self.lock();
        let index = libs.get(lib).ok_or(ChainError::UnknownLibrary(*lib))?;
        let mut trees = crate::locks::lock(&self.inner.trees);
        let key = |i: u32| {
            let n = &index.nodes[i as usize];
            (n.lamport, n.hash)
        };
        let reuse = trees.get(lib).filter(|c| {
            c.applied <= index.len() && (c.applied..index.len()).all(|i| key(i as u32) > c.last)
        });
        let (mut cache, mut todo): (FoldCache, Vec<u32>) = match reuse {
            Some(_) => {
                let c = trees
                    .remove(lib)
                    .ok_or(ChainError::Internal("fold cache"))?;
                let todo = (c.applied as u32..index.len() as u32).collect();
                (c, todo)
            }
            None => (
                FoldCache {
                    folder: Folder::default(),
                    applied: 0,
                    last: (0, EntryHash::default()),
                },
                (0..index.len() as u32).collect(),
            ),
        };
        todo.sort_unstable_by_key(|&i| key(i));
        let saw = |x: u32, y: u32| index.is_ancestor_or_self(x, y);
        for chunk in todo.chunks(STEP) {
            let entries = self.read_at(lib, &index.with_hashes(chunk))?;
            for (&i, e) in chunk.iter().zip(&entries) {
                cache.folder.apply(i, e, &saw);
            }
        }
        if let Some(&i) = todo.last() {
            cache.last = key(i);
        }
        cache.applied = index.len();
        let tree = cache.folder.tree();
        trees.insert(*lib, cache);
        Ok(tree)
    }
}

/// The entries another side lacks, in batches, ancestors first (see
/// [`ChainStore::missing_for`]). Each item is one batch read from the database.
#[derive(Debug)]
pub struct Missing {
    store: ChainStore,
    lib: LibraryId,
    order: Vec<u32>,
    pos: usize,
    batch: usize,
}

impl Missing {
    /// Entries in all, including those already returned.
    pub fn total(&self) -> usize {
        self.order.len()
    }
    /// Entries not yet returned.
    pub fn remaining(&self) -> usize {
        self.order.len() - self.pos
    }
}

impl Iterator for Missing {
    type Item = Result<Vec<Entry>, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch).min(self.order.len());
        let chunk = &self.order[self.pos..end];
        self.pos = end;
        let wanted = match self.store.lock().get(&self.lib) {
            Some(index) => index.with_hashes(chunk),
            None => return Some(Err(ChainError::UnknownLibrary(self.lib))),
        };
        Some(self.store.read_at(&self.lib, &wanted))
    }
}
