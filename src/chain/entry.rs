//! One chain entry: its metadata, its parents, the hash rule and the author's signature.
//!
//! # The hash rule
//!
//! ```text
//! hash = SHA3-256( encode(meta) || parent_1 || … || parent_n )     parents sorted ascending
//! hash = SHA3-256( encode(meta) || [0u8; 32] )                      genesis (no parents)
//! ```
//!
//! With exactly one parent this is Harp's `append_metadata(prev_hash, meta) =
//! SHA3-256(meta.serialize() || prev_hash)`. The parents are not part of `meta`; they are
//! appended after it, so a one-parent entry is byte for byte Harp's rule. The author signs the
//! 32-byte hash with ed25519.

use ed25519_dalek::{Signer, SigningKey};
use sha3::{Digest, Sha3_256};

use super::codec;
use super::error::DecodeError;
use super::path::ChainPath;
use super::types::{ContentId, DeviceKey, EntryHash, LibraryId};

/// The format version this build writes (the first byte of every encoded entry).
pub const FORMAT_VERSION: u8 = 1;
/// Most parents one entry may name.
pub const MAX_PARENTS: usize = 64;
/// Longest ETag kept in a `Put`.
pub const MAX_ETAG_LEN: usize = 256;
/// Longest device name in an `AddDevice`.
pub const MAX_DEVICE_NAME_LEN: usize = 256;

/// Where a version came from in Nextcloud, when it came from Nextcloud.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextcloudRef {
    /// Nextcloud's file id.
    pub fileid: u64,
    /// The ETag Nextcloud gave this version (at most 256 bytes).
    pub etag: String,
}

/// What an entry does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new version of a file.
    Put {
        /// Where.
        path: ChainPath,
        /// Size in bytes.
        size: u64,
        /// Modification time, milliseconds since the Unix epoch.
        mtime_ms: i64,
        /// The version's content (hash of its manifest).
        content: ContentId,
        /// Nextcloud's id for it, if it came from Nextcloud.
        nextcloud: Option<NextcloudRef>,
    },
    /// A file or directory (with everything below it) is gone.
    Delete {
        /// What.
        path: ChainPath,
    },
    /// A file or directory moved.
    Rename {
        /// From.
        from: ChainPath,
        /// To.
        to: ChainPath,
    },
    /// A directory exists.
    Mkdir {
        /// Where.
        path: ChainPath,
    },
    /// Joins several heads, changing nothing else.
    Merge,
    /// A device becomes a member of the library.
    AddDevice {
        /// Its public key.
        device: DeviceKey,
        /// A human name for it (at most 256 bytes).
        name: String,
    },
    /// A device stops being a member.
    RemoveDevice {
        /// Its public key.
        device: DeviceKey,
    },
}

impl Op {
    /// A short lowercase name of the kind of operation.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Rename { .. } => "rename",
            Op::Mkdir { .. } => "mkdir",
            Op::Merge => "merge",
            Op::AddDevice { .. } => "add-device",
            Op::RemoveDevice { .. } => "remove-device",
        }
    }
}

/// Everything an entry says except its parents and signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Meta {
    /// The library.
    pub library: LibraryId,
    /// The device that wrote it.
    pub author: DeviceKey,
    /// The author's sequence number: 1 for its first entry in the library, then +1.
    pub seq: u64,
    /// Lamport clock: 1 + the largest parent's (1 for the genesis).
    pub lamport: u64,
    /// The author's wall clock when writing, milliseconds since the Unix epoch (informative,
    /// and the date in conflict names).
    pub wall_ms: u64,
    /// The operation.
    pub op: Op,
}

impl Meta {
    /// The deterministic encoding of this metadata (format version first).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        codec::encode_meta(self, &mut out);
        out
    }
}

/// Computes an entry hash from encoded metadata and sorted parents.
pub fn hash_entry(meta_bytes: &[u8], parents: &[EntryHash]) -> EntryHash {
    let mut h = Sha3_256::new();
    h.update(meta_bytes);
    if parents.is_empty() {
        h.update([0u8; 32]);
    }
    for p in parents {
        h.update(p.0);
    }
    EntryHash(h.finalize().into())
}

/// A signed entry. Its hash is computed when it is made or decoded, never trusted from
/// outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    meta: Meta,
    parents: Vec<EntryHash>,
    signature: [u8; 64],
    hash: EntryHash,
}

impl Entry {
    /// Builds and signs an entry. `parents` are sorted and de-duplicated here.
    pub fn sign(meta: Meta, parents: Vec<EntryHash>, key: &SigningKey) -> Entry {
        let mut e = Entry::unsigned(meta, parents);
        e.signature = key.sign(&e.hash.0).to_bytes();
        e
    }

    /// An entry with its hash computed and an all-zero signature, to be signed with
    /// [`Entry::set_signature`] (lets callers sign many entries in parallel).
    pub fn unsigned(meta: Meta, mut parents: Vec<EntryHash>) -> Entry {
        parents.sort_unstable();
        parents.dedup();
        let hash = hash_entry(&meta.encode(), &parents);
        Entry {
            meta,
            parents,
            signature: [0u8; 64],
            hash,
        }
    }

    /// Replaces the signature.
    pub fn set_signature(&mut self, signature: [u8; 64]) {
        self.signature = signature;
    }

    /// The metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
    /// The parents, ascending.
    pub fn parents(&self) -> &[EntryHash] {
        &self.parents
    }
    /// The author's ed25519 signature over [`Entry::hash`].
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    /// The entry's hash.
    pub fn hash(&self) -> EntryHash {
        self.hash
    }
    /// True for the library's first entry.
    pub fn is_genesis(&self) -> bool {
        self.parents.is_empty()
    }

    /// The wire and storage form: `encode(meta) || u8 n || n × parent || signature(64)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 32 * self.parents.len());
        codec::encode_meta(&self.meta, &mut out);
        codec::encode_tail(&self.parents, &self.signature, &mut out);
        out
    }

    /// Decodes [`Entry::to_bytes`] output, refusing anything non-canonical, and computes the
    /// hash. Does not check the signature or links: that is verification's job.
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let (meta, meta_len, parents, signature) = codec::decode_entry(bytes)?;
        let hash = hash_entry(&bytes[..meta_len], &parents);
        Ok(Entry {
            meta,
            parents,
            signature,
            hash,
        })
    }

    /// [`Entry::from_bytes`], and the bytes must hash to `expected` (for entries fetched by
    /// hash: a peer that answers with other bytes is caught here).
    pub fn from_bytes_expecting(bytes: &[u8], expected: &EntryHash) -> Result<Entry, DecodeError> {
        let e = Entry::from_bytes(bytes)?;
        if e.hash != *expected {
            return Err(DecodeError::HashMismatch {
                expected: *expected,
                got: e.hash,
            });
        }
        Ok(e)
    }
}
