//! The chain's typed errors.

use super::types::{EntryHash, LibraryId};

/// A hex id that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// Wrong number of characters.
    #[error("expected {expected} hex characters, got {got}")]
    Length {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A character that is not a hex digit.
    #[error("not a hex string")]
    NotHex,
}

/// A path that breaks the library's path rules (see [`crate::chain::path`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The empty path.
    #[error("empty path")]
    Empty,
    /// Longer than the limit.
    #[error("path is {0} bytes, more than the limit of 4096")]
    TooLong(usize),
    /// Contains a NUL character.
    #[error("path contains NUL")]
    Nul,
    /// Starts with `/`.
    #[error("path is absolute")]
    Absolute,
    /// Has an empty segment (`a//b`, trailing `/`).
    #[error("path has an empty segment")]
    EmptySegment,
    /// Has a `.` or `..` segment.
    #[error("path has a `.` or `..` segment")]
    DotSegment,
    /// Not in Unicode NFC.
    #[error("path is not in Unicode NFC")]
    NotNfc,
}

/// Bytes that are not a valid encoded entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended early.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A format version this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// An operation tag this build does not know.
    #[error("unknown operation tag {0} at byte {1}")]
    UnknownOp(u8, usize),
    /// A length above its bound.
    #[error("{what} is {len} long, more than the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    BadUtf8(&'static str),
    /// A path that breaks the path rules.
    #[error("bad path: {0}")]
    BadPath(#[from] PathError),
    /// A flag byte other than 0 or 1.
    #[error("bad flag byte {0} at byte {1}")]
    BadFlag(u8, usize),
    /// Parents not strictly ascending (unsorted or repeated).
    #[error("parents are not strictly ascending")]
    ParentsNotSorted,
    /// Bytes left over after the entry.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The bytes hash to something else than the hash they were fetched by.
    #[error("bytes hash to {got}, not to the requested {expected}")]
    HashMismatch {
        /// The hash asked for.
        expected: EntryHash,
        /// The hash of the bytes.
        got: EntryHash,
    },
}

/// Why an entry is not a valid next step of its chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryFault {
    /// The signature does not verify against the author's key and the entry's hash.
    #[error("bad signature")]
    BadSignature,
    /// The author's key, or a key being added, is not a usable ed25519 public key.
    #[error("{0} is not a usable ed25519 public key")]
    BadKey(String),
    /// A parent the store does not hold.
    #[error("missing parent {0}")]
    MissingParent(EntryHash),
    /// The author is not a member of the library at this point of the DAG.
    #[error("author {0} is not a member of the library here")]
    NotMember(String),
    /// The Lamport clock is not one more than the largest parent's.
    #[error("Lamport clock {got}, expected {expected}")]
    BadLamport {
        /// What the rule gives.
        expected: u64,
        /// What the entry says.
        got: u64,
    },
    /// The author sequence number is not one more than the author's last in the ancestry.
    #[error("author sequence number {got}, expected {expected}")]
    BadSeq {
        /// What the rule gives.
        expected: u64,
        /// What the entry says.
        got: u64,
    },
    /// The author already signed a different entry with this sequence number.
    #[error("author already has another entry with sequence number {0}")]
    DuplicateSeq(u64),
    /// An entry for a different library.
    #[error("entry belongs to library {0}")]
    WrongLibrary(LibraryId),
    /// An entry without parents in a library that already has its genesis.
    #[error("a second genesis entry")]
    SecondGenesis,
    /// A genesis entry that is not its author adding itself with seq 1.
    #[error("genesis must be the author's own AddDevice with sequence number 1")]
    BadGenesis,
    /// A merge that joins fewer than two heads.
    #[error("a merge needs at least two parents")]
    MergeNeedsParents,
    /// A rename onto itself or into its own subtree.
    #[error("rename into itself")]
    RenameIntoItself,
    /// A string field above its bound (device name, ETag).
    #[error("{0} is too long")]
    FieldTooLong(&'static str),
}

/// Everything the chain store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The embedded database failed.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// An entry was refused (from a peer, or a local append that would break a rule).
    #[error("entry {hash} refused: {fault}")]
    Rejected {
        /// The refused entry.
        hash: EntryHash,
        /// Why.
        fault: EntryFault,
    },
    /// Bytes that do not decode (from a peer).
    #[error("undecodable entry: {0}")]
    Decode(#[from] DecodeError),
    /// The stored chain is damaged; the store refuses to open.
    #[error("library {library}: stored entry #{index}{}: {reason}", hash.map(|h| format!(" ({h})")).unwrap_or_default())]
    Damaged {
        /// The library.
        library: LibraryId,
        /// Position of the bad entry in the library's stored order (0 = genesis).
        index: u64,
        /// The hash of the stored bytes, when they decode.
        hash: Option<EntryHash>,
        /// What is wrong.
        reason: String,
    },
    /// No such library in this store.
    #[error("unknown library {0}")]
    UnknownLibrary(LibraryId),
    /// The library already exists.
    #[error("library {0} already exists")]
    LibraryExists(LibraryId),
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
    /// A worker thread failed (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ChainError {
    pub(crate) fn db(e: impl Into<redb::Error>) -> Self {
        ChainError::Db(e.into())
    }
}
