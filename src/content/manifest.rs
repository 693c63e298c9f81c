//! A file version's manifest: which blocks, in which order, make the file, and how they were
//! cut and hashed. Its BLAKE3 hash is the version's [`ManifestId`] (the chain's `ContentId`).
//!
//! # Encoding, version 1
//!
//! Hand-written, big-endian, fixed-width, exactly one encoding per manifest (the decoder
//! refuses anything else), so the same file cut with the same parameters gives the same id
//! on every device:
//!
//! ```text
//! manifest := "HBMF" | u8 version(=1) | u8 hash_alg | chunker | u64 total_size
//!             | u32 n | n × (hash[32] | u32 size)
//! chunker  := u8 kind(=1 FastCDC 2020) | u8 normalization | u32 min | u32 avg | u32 max
//! hash_alg := 1 BLAKE3
//! ```
//!
//! The hash algorithm and the chunker are named in the manifest itself (docs/wire.md §3), so
//! that they can change: a later build may add `hash_alg = 2` and still read version-1
//! manifests; this one refuses what it does not know instead of guessing.
//!
//! # Bounds
//!
//! Manifests come from peers, so decoding trusts nothing: the input is at most
//! [`MAX_MANIFEST_LEN`], the block count at most [`MAX_BLOCKS`] *and* exactly what the
//! remaining bytes hold (checked before anything is allocated), every block size is between 1
//! and the chunker's maximum (and at least its minimum, except the last block), the
//! chunker's maximum is at most [`MAX_BLOCK_SIZE`], and the sizes add up to the total. The
//! ordering rules above make the encoding canonical: decode then encode gives the input back.
//!
//! # Size
//!
//! 36 bytes per block, about 36 KiB per GiB of file at the 1 MiB average: a manifest is held
//! whole in memory while it is written and read, the only part of ingest that grows with the
//! file (0.003 % of its size). [`MAX_BLOCKS`] caps a single version at about 4 TiB.

use super::error::ManifestError;
use super::ids::{BlockHash, ManifestId};
use crate::cursor::{Cursor, Truncated};

/// The 4 bytes every encoded manifest starts with.
pub const MAGIC: &[u8; 4] = b"HBMF";
/// The manifest format this build writes.
pub const FORMAT_VERSION: u8 = 1;
/// Hash algorithm id of BLAKE3 (the only one so far).
pub const HASH_BLAKE3: u8 = 1;
/// Chunker id of FastCDC (2020 variant, the `fastcdc` crate's `v2020`).
pub const CHUNKER_FASTCDC_2020: u8 = 1;
/// The largest block any manifest may name (16 MiB, FastCDC's own ceiling). Also the most a
/// peer can make us hold in memory for one block.
pub const MAX_BLOCK_SIZE: u32 = 16 * 1024 * 1024;
/// The most blocks one manifest may list (about 4 TiB at 1 MiB average).
pub const MAX_BLOCKS: u32 = 4 * 1024 * 1024;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 4 + 1 + 1 + (1 + 1 + 4 + 4 + 4) + 8 + 4;
/// Bytes per listed block.
pub const BLOCK_ENTRY_LEN: usize = 32 + 4;
/// The longest encoded manifest.
pub const MAX_MANIFEST_LEN: usize = HEADER_LEN + MAX_BLOCKS as usize * BLOCK_ENTRY_LEN;

/// How a file was cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkerParams {
    /// Chunker id ([`CHUNKER_FASTCDC_2020`]).
    pub kind: u8,
    /// FastCDC normalization level (0–3).
    pub normalization: u8,
    /// Smallest block (except a file's last).
    pub min: u32,
    /// Target average block.
    pub avg: u32,
    /// Largest block.
    pub max: u32,
}

impl ChunkerParams {
    /// harpbridge's parameters: FastCDC 2020, normalization 1, 256 KiB / 1 MiB / 4 MiB.
    ///
    /// About 1 MiB on average (docs/wire.md §3) keeps the index small (one row per MiB) and the
    /// per-block cost of a transfer (one request, one fsync) negligible, while an edit still
    /// moves only a MiB or two. The 4× spread on each side of the average is FastCDC's usual
    /// choice; with normalization level 1 nearly all blocks land between 512 KiB and 2 MiB.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        kind: CHUNKER_FASTCDC_2020,
        normalization: 1,
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
    };

    /// Checks the parameters against what the chunker supports.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.kind != CHUNKER_FASTCDC_2020 {
            return Err(ManifestError::UnknownChunker(self.kind));
        }
        let bad = ManifestError::BadChunker {
            min: self.min,
            avg: self.avg,
            max: self.max,
        };
        use fastcdc::v2020 as f;
        let ok = self.normalization <= 3
            && (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&self.min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&self.avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX.min(MAX_BLOCK_SIZE)).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(bad)
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams::DEFAULT
    }
}

/// One block of a file: its hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// BLAKE3 of the block's bytes.
    pub hash: BlockHash,
    /// Its length in bytes (1 ..= the chunker's max).
    pub size: u32,
}

/// The content of one file version: its blocks in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Block hash algorithm ([`HASH_BLAKE3`]).
    pub hash_alg: u8,
    /// How the blocks were cut.
    pub chunker: ChunkerParams,
    /// File size: the sum of the block sizes.
    pub total_size: u64,
    /// The blocks, in file order (the same hash may appear more than once).
    pub blocks: Vec<BlockRef>,
}

impl Manifest {
    /// A manifest for `blocks` cut with `chunker` (BLAKE3), its total computed.
    pub fn new(chunker: ChunkerParams, blocks: Vec<BlockRef>) -> Self {
        let total_size = blocks.iter().map(|b| u64::from(b.size)).sum();
        Manifest {
            hash_alg: HASH_BLAKE3,
            chunker,
            total_size,
            blocks,
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.blocks.len() * BLOCK_ENTRY_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(self.hash_alg);
        out.push(self.chunker.kind);
        out.push(self.chunker.normalization);
        out.extend_from_slice(&self.chunker.min.to_be_bytes());
        out.extend_from_slice(&self.chunker.avg.to_be_bytes());
        out.extend_from_slice(&self.chunker.max.to_be_bytes());
        out.extend_from_slice(&self.total_size.to_be_bytes());
        // Writers never build more than MAX_BLOCKS (ContentWriter refuses), so this fits.
        let n = u32::try_from(self.blocks.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.hash.0);
            out.extend_from_slice(&b.size.to_be_bytes());
        }
        out
    }

    /// The manifest's id: BLAKE3 of [`encode`](Self::encode).
    pub fn id(&self) -> ManifestId {
        ManifestId::of(&self.encode())
    }

    /// Decodes and checks bytes (from disk or from a peer); see the module docs for the rules.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLong(bytes.len()));
        }
        let mut r = Cursor::new(bytes);
        if r.take(4)? != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(ManifestError::UnknownVersion(version));
        }
        let hash_alg = r.u8()?;
        if hash_alg != HASH_BLAKE3 {
            return Err(ManifestError::UnknownHash(hash_alg));
        }
        let chunker = ChunkerParams {
            kind: r.u8()?,
            normalization: r.u8()?,
            min: r.u32()?,
            avg: r.u32()?,
            max: r.u32()?,
        };
        chunker.validate()?;
        let total_size = r.u64()?;
        let n = r.u32()?;
        if n > MAX_BLOCKS {
            return Err(ManifestError::TooManyBlocks(u64::from(n)));
        }
        let n = n as usize;
        let need = n * BLOCK_ENTRY_LEN;
        let left = r.remaining();
        if left < need {
            return Err(ManifestError::Truncated(bytes.len()));
        }
        if left > need {
            return Err(ManifestError::Trailing(left - need));
        }
        let mut blocks = Vec::with_capacity(n);
        let mut sum: u64 = 0;
        for index in 0..n {
            let hash = BlockHash(r.array()?);
            let size = r.u32()?;
            let last = index + 1 == n;
            if size == 0 || size > chunker.max || (!last && size < chunker.min) {
                return Err(ManifestError::BadBlockSize { index, size });
            }
            sum += u64::from(size);
            blocks.push(BlockRef { hash, size });
        }
        if sum != total_size {
            return Err(ManifestError::SizeMismatch {
                sum,
                total: total_size,
            });
        }
        Ok(Manifest {
            hash_alg,
            chunker,
            total_size,
            blocks,
        })
    }
}

impl From<Truncated> for ManifestError {
    fn from(t: Truncated) -> Self {
        ManifestError::Truncated(t.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::new(
            ChunkerParams::DEFAULT,
            vec![
                BlockRef {
                    hash: BlockHash([1; 32]),
                    size: 300_000,
                },
                BlockRef {
                    hash: BlockHash([2; 32]),
                    size: 7,
                },
            ],
        )
    }

    #[test]
    fn round_trip_is_canonical() {
        let m = sample();
        let enc = m.encode();
        assert_eq!(enc.len(), HEADER_LEN + 2 * BLOCK_ENTRY_LEN);
        let back = Manifest::decode(&enc).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode(), enc);
    }

    #[test]
    fn empty_file_manifest() {
        let m = Manifest::new(ChunkerParams::DEFAULT, vec![]);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn golden_empty_manifest_id() {
        // Frozen: changing the encoding changes every ContentId in every chain.
        let m = Manifest::new(ChunkerParams::DEFAULT, vec![]);
        assert_eq!(
            crate::chain::types::to_hex(&m.encode()),
            "48424d4601010101000400000010000000400000000000000000000000000000"
        );
        assert_eq!(
            m.id().to_hex(),
            "6015d9f68d8e865a13abbe3f461233a4227bdf1bdd1688f793372398424dd84a"
        );
    }

    #[test]
    fn rejects_short_middle_block_and_bad_sum() {
        let mut m = sample();
        m.blocks.swap(0, 1);
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::BadBlockSize { index: 0, .. })
        ));
        let mut m = sample();
        m.total_size += 1;
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn rejects_unknown_algorithm_and_trailing() {
        let mut enc = sample().encode();
        enc[5] = 2;
        assert_eq!(Manifest::decode(&enc), Err(ManifestError::UnknownHash(2)));
        let mut enc = sample().encode();
        enc.push(0);
        assert_eq!(Manifest::decode(&enc), Err(ManifestError::Trailing(1)));
    }
}
