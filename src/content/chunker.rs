//! Content-defined chunking, push-style: bytes go in as they arrive, whole blocks come out.
//!
//! # Why content-defined
//!
//! Cutting a file every N bytes would make an insertion near the start shift every later
//! block, so a one-byte edit would re-send the whole file. FastCDC instead cuts where a
//! rolling "gear" hash of the last bytes matches a mask: the cut points depend on the
//! content around them, so after an edit the chunker falls back into step with the old cut
//! points within a block or two, and only those blocks are new.
//!
//! # Why push, not `StreamCDC`
//!
//! The `fastcdc` crate's `StreamCDC` *pulls* from a `std::io::Read`. The ingest worker gets
//! content as an async stream of `Bytes` from reqwest, so [`Chunker::push`] accepts whatever
//! arrives and returns the blocks that are now certain. A cut point is certain once the
//! chunker holds `max` bytes past the previous cut (FastCDC never looks further) or at the
//! end of the input; this is exactly when `StreamCDC` cuts, so both give the same blocks for
//! the same bytes however the input is split (a test checks this against `StreamCDC`). We
//! call the crate's `v2020::cut` on our own buffer, with the masks computed the way its
//! `StreamCDC::with_level` does.
//!
//! # Memory
//!
//! One buffer of `2 × max` bytes (8 MiB with the defaults), allocated once: new bytes are
//! appended up to its capacity, blocks are cut off the front, and the unprocessed tail
//! (< `max` bytes) is moved to the front when room runs out. The caller is handed each block
//! as a slice of that buffer, so nothing is copied per block.

use fastcdc::v2020::{cut, logarithm2, MASKS};

use super::error::ManifestError;
use super::manifest::ChunkerParams;

/// Push-style FastCDC (2020) over a fixed buffer.
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    /// Start of the unprocessed bytes in `buf`.
    start: usize,
}

impl Chunker {
    /// A chunker with `params`, which must pass [`ChunkerParams::validate`] (a zero or
    /// out-of-range size could otherwise make `push` loop forever).
    pub fn new(params: ChunkerParams) -> Result<Self, ManifestError> {
        params.validate()?;
        Ok(Chunker::new_unchecked(params))
    }

    /// [`Chunker::new`] for parameters already validated (the store checks its own at open).
    pub(crate) fn new_unchecked(params: ChunkerParams) -> Self {
        let bits = logarithm2(params.avg) as usize;
        let norm = usize::from(params.normalization);
        let mask_s = MASKS[(bits + norm).min(MASKS.len() - 1)];
        let mask_l = MASKS[bits.saturating_sub(norm)];
        Chunker {
            params,
            mask_s,
            mask_l,
            buf: Vec::with_capacity(2 * params.max as usize),
            start: 0,
        }
    }

    /// The parameters.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    fn cut_len(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (_, n) = cut(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        n
    }

    /// Feeds `data`; calls `emit` with every block whose end is now certain, in order.
    /// Stops at the first error from `emit` (the chunker is then in an unspecified state).
    pub fn push<E>(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.params.max as usize;
        while !data.is_empty() {
            if self.buf.len() == self.buf.capacity() {
                // Room ran out: move the unprocessed tail (< max bytes) to the front.
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let room = self.buf.capacity() - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            while self.buf.len() - self.start >= max {
                let n = self.cut_len(&self.buf[self.start..]);
                let n = n.max(1);
                emit(&self.buf[self.start..self.start + n])?;
                self.start += n;
            }
        }
        Ok(())
    }

    /// Ends the input: emits the remaining blocks (the last may be shorter than `min`).
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        while self.start < self.buf.len() {
            let n = self.cut_len(&self.buf[self.start..]).max(1);
            emit(&self.buf[self.start..self.start + n])?;
            self.start += n;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn small() -> ChunkerParams {
        ChunkerParams {
            min: 1024,
            avg: 4096,
            max: 16384,
            ..ChunkerParams::DEFAULT
        }
    }

    fn blocks_push(p: ChunkerParams, input: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut c = Chunker::new(p).unwrap();
        let mut emit = |b: &[u8]| -> Result<(), ()> {
            out.push(b.to_vec());
            Ok(())
        };
        for part in input.chunks(piece.max(1)) {
            c.push(part, &mut emit).unwrap();
        }
        c.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn same_blocks_as_stream_cdc_whatever_the_pieces() {
        let p = small();
        let input = data(300_000, 7);
        let reference: Vec<Vec<u8>> =
            fastcdc::v2020::StreamCDC::new(&input[..], p.min, p.avg, p.max)
                .map(|c| c.unwrap().data)
                .collect();
        assert!(reference.len() > 10);
        for piece in [1usize, 100, 4096, 16384, 50_000, 1_000_000] {
            assert_eq!(blocks_push(p, &input, piece), reference, "piece {piece}");
        }
    }

    #[test]
    fn default_params_match_stream_cdc() {
        let p = ChunkerParams::DEFAULT;
        let input = data(9 * 1024 * 1024, 3);
        let reference: Vec<Vec<u8>> =
            fastcdc::v2020::StreamCDC::new(&input[..], p.min, p.avg, p.max)
                .map(|c| c.unwrap().data)
                .collect();
        assert_eq!(blocks_push(p, &input, 65536), reference);
    }

    #[test]
    fn refuses_parameters_it_cannot_run_with() {
        let zero = ChunkerParams {
            max: 0,
            ..ChunkerParams::DEFAULT
        };
        assert!(Chunker::new(zero).is_err());
    }

    #[test]
    fn empty_input_gives_no_blocks() {
        assert!(blocks_push(small(), &[], 10).is_empty());
    }
}
