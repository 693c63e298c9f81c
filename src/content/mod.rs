//! The content store: files cut into blocks, blocks kept as files, manifests naming them, and
//! a size-limited cache (docs/wire.md §3).
//!
//! # The idea in one picture
//!
//! ```text
//!  file bytes ─▶ FastCDC ─▶ blocks ─▶ BLAKE3 ─▶ <data>/blocks/ab/cd/<hash>   (one file each)
//!                               │
//!                               ▼
//!  manifest = [version, hash alg, chunker, total size, (hash, size)…] ─▶ BLAKE3 = ManifestId
//!                                                                          = chain ContentId
//! ```
//!
//! A file version is named by the hash of its manifest, and a manifest by the hashes of its
//! blocks, so the 32 bytes in a chain `Put` entry pin down every byte of the file, and any
//! block can be checked on its own the moment it arrives from any peer.
//!
//! # Why these choices
//!
//! - **Content-defined chunking** ([`chunker`]): FastCDC cuts where the content says, about
//!   every MiB, so an edit in the middle of a large file changes one or two blocks and only
//!   those travel again; identical blocks (in one file, across files, across versions) are
//!   stored once.
//! - **BLAKE3 for blocks, SHA3-256 for the chain**: hashing bounds every transfer (SHA3-256
//!   runs at ~0.33 GB/s per core against BLAKE3's ~5 GB/s, docs/wire.md §3), and every block is
//!   hashed at least twice (when cut or received, and when read back). The manifest names its
//!   algorithm ([`manifest`]) so a later build can change it without ambiguity.
//! - **Blocks as files, index in redb** ([`files`], [`index`]): block bytes never pass
//!   through the database (no write amplification, no huge values in the B-tree, and
//!   `sendfile`-style serving stays possible later), while sizes, need counts and use order
//!   live in the data directory's one redb database next to the chain.
//! - **Streaming** ([`writer`], [`reader`]): ingest and read-back hold a bounded buffer (about
//!   8 MiB and 4 MiB) plus the manifest list (36 bytes per block), never the file.
//!
//! # Crash safety
//!
//! A block file appears under its real name only by an atomic rename after its bytes were
//! fsync'd ([`files`]); the index and manifest are written by one fsync'd redb transaction
//! after the block directories are fsync'd. Files finishing together share those flushes
//! and that transaction ([`commit`]), which changes their cost, not their order. So after
//! `kill -9` (or power loss):
//!
//! - a partial block exists only as `*.tmp`, removed when the store opens;
//! - a block file the index does not know (ingest killed before its commit) is verified and
//!   adopted as evictable cache;
//! - the index never names a block whose file was not durably in place, and a manifest never
//!   names a block that is not indexed (for local ingests; a manifest from a peer may of course
//!   name blocks we have yet to fetch: [`ContentStore::missing_blocks`]).
//!
//! Eviction removes index rows first and files after the commit, so a crash in between also
//! only leaves an orphan file that the next open adopts. "Disk full" surfaces as
//! [`ContentError::DiskFull`], after the temporary file was removed.
//!
//! # The cache: what may be evicted
//!
//! The store has a byte limit ([`StoreOptions::cache_limit`]). Each library declares the
//! versions its current tree needs with [`ContentStore::set_current`] (a *replacing* set per
//! library: the engine passes every `content` of the tree after each change; several
//! libraries may share a version). A finished ingest adds its version to its library's set at
//! once, in the same transaction, so a fresh version is never unprotected while the chain
//! entry is being appended. Blocks listed by any held version are *needed* and are never
//! evicted, even when the store is over its limit: eviction then reports
//! [`EvictReport::over_limit`] instead. Everything else is ordered by last use (written,
//! read, or released) and evicted oldest first whenever the store grows past its limit (after
//! an ingest, a `put_block`, or a `set_current`), or when [`ContentStore::evict`] is called.
//! The bookkeeping keeps need counts and an LRU table in the database ([`index`]) so that
//! eviction never scans the store.
//!
//! # What the block transfer calls
//!
//! Receiving a version: the chain entry names a `ContentId`, which the engine includes in
//! `set_current`; the manifest bytes from a peer go to [`ContentStore::put_manifest`]
//! (checks the id and bounds); [`ContentStore::missing_blocks`] says what to fetch, and each
//! block goes to [`ContentStore::put_block`] (checks the BLAKE3; a
//! [`ContentError::HashMismatch`] means: drop that peer, ask another) or, for pipelined
//! responses, [`ContentStore::put_blocks`] (one fsync round and one commit per batch; bad
//! blocks come back in [`PutReport::rejected`]), or its two halves:
//! [`ContentStore::stage_blocks`] as blocks arrive (verify, write under temporary names) and
//! [`ContentStore::commit_blocks`] for every group staged meanwhile (flush, name, index). Serving: answer with
//! [`ContentStore::manifest_bytes`] and [`ContentStore::read_block`] (verified before it
//! leaves). [`ContentStore::open_reader`] streams a complete version out.
//!
//! # Threads
//!
//! [`ContentStore`] is `Clone + Send + Sync`; its methods block (disk, fsync), so async code
//! calls them from `spawn_blocking`. Several writers may run at once; their commits are
//! grouped ([`commit`]): writers finishing together share one round of flushes and one redb
//! transaction, so many threads ingesting small files go faster than one, and one thread
//! with many small files goes faster still with [`ContentStore::ingest_all`] /
//! [`ContentStore::finish_all`].

pub mod chunker;
pub mod commit;
pub mod error;
pub mod files;
pub mod ids;
pub mod index;
pub mod manifest;
pub mod reader;
pub mod store;
pub mod writer;

pub use chunker::Chunker;
pub use error::{ContentError, ManifestError};
pub use ids::{BlockHash, ManifestId};
pub use manifest::{BlockRef, ChunkerParams, Manifest, MAX_BLOCK_SIZE, MAX_MANIFEST_LEN};
pub use reader::ContentReader;
pub use store::{
    ContentStore, EvictReport, OpenReport, PutReport, ReceivedBlocks, StoreOptions, StoreStats,
};
pub use writer::{ContentWriter, Ingested, Staged};
