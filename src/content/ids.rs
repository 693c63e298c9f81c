//! The two 32-byte names of the content store: a block's [`BlockHash`] (BLAKE3 of its
//! bytes) and a file version's [`ManifestId`] (BLAKE3 of its encoded manifest), which is
//! the same 32 bytes the chain records as a `Put`'s [`ContentId`].

use std::fmt;
use std::str::FromStr;

use crate::chain::{ContentId, ParseIdError};

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// Lowercase hex (64 characters).
            pub fn to_hex(&self) -> String {
                crate::chain::types::to_hex(&self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                crate::chain::types::from_hex::<32>(s).map($name)
            }
        }
    };
}

id32!(
    /// The BLAKE3 hash of a block's bytes: its name on disk, in the index and on the wire.
    BlockHash
);
id32!(
    /// The BLAKE3 hash of an encoded [`Manifest`](super::Manifest): the name of one file
    /// version's content. Converts to and from the chain's [`ContentId`].
    ManifestId
);

impl BlockHash {
    /// BLAKE3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        BlockHash(*blake3::hash(bytes).as_bytes())
    }
}

impl ManifestId {
    /// BLAKE3 of encoded manifest bytes.
    pub fn of(encoded: &[u8]) -> Self {
        ManifestId(*blake3::hash(encoded).as_bytes())
    }
}

impl From<ContentId> for ManifestId {
    fn from(c: ContentId) -> Self {
        ManifestId(c.0)
    }
}

impl From<ManifestId> for ContentId {
    fn from(m: ManifestId) -> Self {
        ContentId(m.0)
    }
}
