//! The hash chain: every library's signed SHA3-256 history, stored durably and verifiable by
//! anyone who holds it (design.md, "The hash chain").
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
//! encoding ([`codec`](self::codec), version 1) is hand-written, big-endian,
//! length-prefixed, bounded and canonical, frozen by golden vectors in `tests/chain_golden.rs`.
//!
//! # Rules an entry must follow (checked for local appends, peers' entries and at open)
//!
//! - It decodes canonically: known version and operation, bounded lengths, paths that follow
//!   [`path`](self::path)'s rules (NFC, relative, `/`-separated, no empty/`.`/`..` segment,
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
//! as an `Arc<redb::Database>` with the later event queue, block index and settings tables.
//! See [`store`](self::store) for the layout, atomicity and the check at open.
//!
//! # The file tree
//!
//! [`ChainStore::tree`] folds the DAG in its deterministic topological order (Lamport clock,
//! then hash); concurrent writes to one path keep both versions, the earlier under
//! `name.sync-conflict-YYYYMMDD-HHMMSS-XXXXXXX.ext` (see [`fold`](self::fold)).
//!
//! # For the sync protocol
//!
//! [`ChainStore::heads`], [`ChainStore::missing_for`] (entries the other side lacks,
//! ancestors first, in batches), [`Entry::to_bytes`]/[`Entry::from_bytes`] for the wire, and
//! [`ChainStore::insert_remote`] (verifies, then stores atomically, or names the bad entry).
//!
//! # Known limits
//!
//! - Batch signature verification uses ed25519-dalek's (cofactorless, deterministic per batch)
//!   equation; for honestly made signatures it agrees with one-by-one checking. A member that
//!   crafts signatures with small-order components could make stores that group entries
//!   differently disagree; that needs a malicious *member*, whom removal handles.
//! - The index keeps every entry's vector clock in memory (8 bytes per author per entry).

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
