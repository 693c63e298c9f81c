//! The hash chain: every library's signed SHA3-256 history, stored durably and verifiable by
//! anyone who holds it (docs/wire.md §2).
//!
//! # Shape
//!
//! Each library (one synced folder, named by a random 16-byte [`LibraryId`]) has a DAG of
//! [`Entry`]s. An entry holds its [`Meta`] (format version, library, author key, author
//! sequence number, Lamport clock, wall time and the [`Op`]), its parents, and the author's
//! ed25519 signature over its hash:
//!
//! ```text
//! hash = SHA3-256(encode(meta) || parent_1 || … || parent_n)   parents ascending
//! hash = SHA3-256(encode(meta) || [0; 32])                      the genesis
//! ```
//!
//! so an entry with one parent is exactly Harp's `append_metadata(prev_hash, meta)`. The
//! encoding ([`codec`], version 1) is hand-written, big-endian,
//! length-prefixed, bounded and canonical, frozen by golden vectors in `tests/chain_golden.rs`.
//!
//! # Rules an entry must follow (checked for local appends, peers' entries and at open)
//!
//! - It decodes canonically: known version and operation, bounded lengths, paths that follow
//!   [`path`]'s rules (NFC, relative, `/`-separated, no empty/`.`/`..` segment,
//!   no NUL, ≤ 4096 bytes), parents strictly ascending, at most 64.
//! - Its parents are all known (in the store, or earlier in the same batch).
//! - The genesis (no parents) is the first entry of its library and is its author's own
//!   `AddDevice` with sequence number 1 and Lamport clock 1. There is only one.
//! - Lamport clock = 1 + the largest parent's; a `Merge` has at least two parents.
//! - Author sequence number = 1 + the author's largest in the ancestry, and unique: each
//!   device's entries form one chain (this makes vector clocks exact, see `dag.rs`).
//! - The author is a member of the library at that point of the DAG (the membership computed
//!   from the entry's ancestry; see `dag.rs` for how concurrent adds and removes combine),
//!   and the keys it names are usable ed25519 keys.
//! - The signature verifies (ed25519, batched over the machine's cores).
//!
//! # Storage
//!
//! One embedded database per data directory, `<data>/harpbridge.redb`, opened by
//! [`crate::db`]: redb (pure Rust, ACID, commits fsync'd with `Durability::Immediate`), shared
//! as a [`crate::db::Db`] with the content index, the event queue and the engine's tables.
//! See [`store`] for the layout, atomicity and the check at open.
//!
//! # The file tree
//!
//! [`ChainStore::tree`] folds the DAG in its deterministic topological order (Lamport clock,
//! then hash); concurrent writes to one path keep both versions, the earlier under
//! `name.sync-conflict-YYYYMMDD-HHMMSS-XXXXXXX.ext` (see [`fold`]).
//!
//! # API at a glance
//!
//! ```text
//! // open (verifies what the last checkpoint does not cover; refuses a damaged chain naming
//! // the entry)
//! ChainStore::open(db: Db) -> Result<ChainStore, ChainError>
//! ChainStore::checkpoint(&self) -> Result<usize, ChainError>              // at a clean close
//! ChainStore::open_path(path: &Path) -> Result<ChainStore, ChainError>
//! ChainStore::verify(&self) -> Result<VerifyReport, ChainError>            // re-read, from scratch
//!
//! // the engine / ingest worker (durable when Ok is returned)
//! create_library(&self, key: &SigningKey, device_name: &str) -> Result<(LibraryId, Entry), _>
//! append(&self, lib: &LibraryId, key: &SigningKey, op: Op) -> Result<Entry, _>
//! append_batch(&self, lib, key, ops: Vec<Op>) -> Result<Vec<Entry>, _>      // one commit
//! merge(&self, lib, key) -> Result<Option<Entry>, _>
//! tree(&self, lib) -> Result<Tree, _>                 // kept between calls, updated incrementally
//! summary / members / is_member / libraries / len / log / entry / entries
//!
//! // the sync protocol
//! heads(&self, lib) -> Result<Vec<EntryHash>, _>
//! version_vector(&self, lib) -> Result<Vec<(DeviceKey, u64)>, _>
//! missing_for(&self, lib, their_heads: &[EntryHash], batch: usize) -> Result<Missing, _>
//! missing_for_vector(&self, lib, their_vector: &[(DeviceKey, u64)], batch) -> Result<Missing, _>
//!     // Missing: Iterator<Item = Result<Vec<Entry>, ChainError>>, ancestors first
//! insert_remote(&self, lib, batch: Vec<Entry>) -> Result<InsertOutcome, _>  // all or nothing
//! Entry::to_bytes(&self) -> Vec<u8>;  Entry::from_bytes(&[u8]) -> Result<Entry, DecodeError>
//! Entry::from_bytes_expecting(&[u8], &EntryHash) -> Result<Entry, DecodeError>
//! ```
//!
//! `missing_for` takes the other side's heads; heads it does not know tell it nothing, so it
//! then sends everything. `missing_for_vector` takes the other side's version vector (per
//! author, how many of its entries it holds) and is exact in every case, because each
//! author's entries form one chain; that is why `/harp/sync/1` exchanges vectors.
//!
//! The signing key is [`crate::identity::DeviceIdentity::signing_key`]: the device's libp2p
//! ed25519 key.
//!
//! # Known limits
//!
//! - Batch signature verification (`sig`: dalek's cofactorless equation, terms summed per
//!   author, deterministic per batch) agrees with one-by-one checking for honestly made
//!   signatures. A member that crafts signatures with small-order components could make stores
//!   that group entries differently disagree; that needs a malicious *member*, whom removal handles.
//! - The index keeps every entry's vector clock in memory (8 bytes per author per entry).
//! - A device that signs two different entries with the same sequence number (a restored
//!   backup of its key and database) is equivocating: a store keeps whichever it saw first and
//!   refuses the other ([`EntryFault::DuplicateSeq`]), so stores that saw them in different
//!   orders stay apart until one of the two is removed by hand.
//! - Opening verifies every entry stored after the last checkpoint (a clean close saves one,
//!   [`ChainStore::checkpoint`]); a store killed without one re-verifies what came after the
//!   previous one, at about 190 thousand entries/s on two cores (`harpbridge chain bench`).

mod checkpoint;
pub mod codec;
mod dag;
pub mod entry;
pub mod error;
pub mod fold;
pub mod path;
mod sig;
pub mod store;
pub mod types;

pub use entry::{hash_entry, Entry, Meta, NextcloudRef, Op, FORMAT_VERSION, MAX_PARENTS};
pub use error::{ChainError, DecodeError, EntryFault, ParseIdError, PathError};
pub use fold::{conflict_name, Tree, TreeItem};
pub use path::{ChainPath, MAX_PATH_LEN};
pub use store::{
    now_ms, ChainStore, InsertOutcome, LibrarySummary, Missing, VerifyReport, ENTRIES,
};
pub use types::{ContentId, DeviceKey, EntryHash, LibraryId};
