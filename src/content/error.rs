//! The content store's typed errors.
//!
//! Everything that comes from disk or from a peer is a value of [`ContentError`], never a
//! panic. Two conditions get their own variants because callers act on them differently:
//! [`ContentError::DiskFull`] (stop ingesting, tell the admin; nothing was left
//! half-written) and the hash mismatches ([`ContentError::HashMismatch`] for bytes offered by
//! a peer, which the block transfer answers by dropping that peer, and
//! [`ContentError::CorruptBlock`] for a block that rotted on our own disk, which the store
//! removes so that [`missing_blocks`](super::ContentStore::missing_blocks) names it again).

use std::io;
use std::path::PathBuf;

use super::ids::{BlockHash, ManifestId};

/// Why bytes are not a valid encoded manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The input ended early.
    #[error("manifest truncated at byte {0}")]
    Truncated(usize),
    /// Bytes left after the last block.
    #[error("{0} trailing bytes after the manifest")]
    Trailing(usize),
    /// Longer than [`MAX_MANIFEST_LEN`](super::manifest::MAX_MANIFEST_LEN).
    #[error("manifest is {0} bytes, more than the limit")]
    TooLong(usize),
    /// Not starting with the manifest magic.
    #[error("not a manifest (bad magic)")]
    BadMagic,
    /// A format version this build does not know.
    #[error("unknown manifest format version {0}")]
    UnknownVersion(u8),
    /// A block hash algorithm this build does not know.
    #[error("unknown hash algorithm {0}")]
    UnknownHash(u8),
    /// A chunker this build does not know.
    #[error("unknown chunker {0}")]
    UnknownChunker(u8),
    /// Chunker sizes out of range or out of order.
    #[error("bad chunker parameters min={min} avg={avg} max={max}")]
    BadChunker {
        /// Minimum block size.
        min: u32,
        /// Average block size.
        avg: u32,
        /// Maximum block size.
        max: u32,
    },
    /// More blocks than the limit.
    #[error("{0} blocks, more than the limit")]
    TooManyBlocks(u64),
    /// A block of size 0, above the chunker's maximum, or below its minimum before the end.
    #[error("block {index} has size {size}, outside the chunker's bounds")]
    BadBlockSize {
        /// Position in the manifest.
        index: usize,
        /// The size it claims.
        size: u32,
    },
    /// The block sizes do not add up to the total.
    #[error("block sizes add up to {sum}, the manifest says {total}")]
    SizeMismatch {
        /// Sum of block sizes.
        sum: u64,
        /// The declared total.
        total: u64,
    },
}

/// What went wrong in the content store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The disk (or quota) is full. Nothing was left half-written: the temporary file was
    /// removed and no index entry or manifest names the block.
    #[error("disk full while {op} {path}")]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// Bytes offered for a block do not hash to the name they were offered under.
    #[error("block bytes hash to {actual}, not {expected}")]
    HashMismatch {
        /// The name the block was offered under.
        expected: BlockHash,
        /// What the bytes hash to.
        actual: BlockHash,
    },
    /// A block on our own disk no longer matches its name; it has been removed.
    #[error("block {hash} is corrupt on disk (removed)")]
    CorruptBlock {
        /// The block.
        hash: BlockHash,
    },
    /// A block larger than [`MAX_BLOCK_SIZE`](super::manifest::MAX_BLOCK_SIZE).
    #[error("block of {0} bytes is larger than the limit")]
    BlockTooLarge(u64),
    /// No such block in the store.
    #[error("block {0} not in the store")]
    BlockNotFound(BlockHash),
    /// No such manifest in the store.
    #[error("manifest {0} not in the store")]
    ManifestNotFound(ManifestId),
    /// Manifest bytes offered under a name they do not hash to.
    #[error("manifest bytes hash to {actual}, not {expected}")]
    ManifestIdMismatch {
        /// The name it was offered under.
        expected: ManifestId,
        /// What the bytes hash to.
        actual: ManifestId,
    },
    /// Manifest bytes that do not decode.
    #[error("bad manifest: {0}")]
    BadManifest(#[from] ManifestError),
    /// A file grew past the largest size a manifest can describe.
    #[error("file too large for one manifest")]
    FileTooLarge,
    /// A writer was used after an earlier error; start a new one.
    #[error("writer failed earlier and can no longer be used")]
    WriterPoisoned,
}

impl ContentError {
    /// Wraps an I/O error, turning "no space left" into [`ContentError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            ContentError::DiskFull { op, path }
        } else {
            ContentError::Io { op, path, source }
        }
    }

    /// Wraps a database error, turning "no space left" into [`ContentError::DiskFull`].
    pub(crate) fn db(e: impl Into<redb::Error>) -> Self {
        let e: redb::Error = e.into();
        if let redb::Error::Io(io) = &e {
            if is_disk_full(io) {
                return ContentError::DiskFull {
                    op: "committing",
                    path: PathBuf::from("database"),
                };
            }
        }
        ContentError::Db(e)
    }

    /// True when the disk (or quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ContentError::DiskFull { .. })
    }

    /// The same failure again, for another caller whose file was in the group commit that
    /// met it (see [`commit`](super::commit)): every member must learn why, and neither
    /// `io::Error` nor `redb::Error` can be cloned. The variant, the I/O error kind (so a
    /// full disk stays [`DiskFull`](ContentError::DiskFull)) and the message are kept; an
    /// OS error code becomes its message.
    pub(crate) fn for_member(&self) -> ContentError {
        fn again(e: &io::Error) -> io::Error {
            io::Error::new(e.kind(), e.to_string())
        }
        match self {
            ContentError::Io { op, path, source } => ContentError::Io {
                op,
                path: path.clone(),
                source: again(source),
            },
            ContentError::DiskFull { op, path } => ContentError::DiskFull {
                op,
                path: path.clone(),
            },
            ContentError::Db(redb::Error::Io(e)) => ContentError::Db(redb::Error::Io(again(e))),
            ContentError::Db(redb::Error::Corrupted(s)) => {
                ContentError::Db(redb::Error::Corrupted(s.clone()))
            }
            ContentError::Db(redb::Error::PreviousIo) => ContentError::Db(redb::Error::PreviousIo),
            other => ContentError::Io {
                op: "committing",
                path: PathBuf::from("the group commit"),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
