//! [`ContentReader`]: a version's bytes as a `std::io::Read`, one verified block at a time.

use std::io::{self, Read};

use super::error::ContentError;
use super::manifest::{BlockRef, Manifest};
use super::store::ContentStore;

/// Streams one version out of the store (for writing it to Nextcloud or a local folder).
///
/// Holds one block (≤ 4 MiB with the defaults) at a time; every block is checked against its
/// hash when read, so bytes that rotted on disk never leave the store. Read errors are
/// `io::Error::other(ContentError)`: [`ContentError::BlockNotFound`] if a block is missing
/// (fetch [`missing_blocks`](ContentStore::missing_blocks) first),
/// [`ContentError::CorruptBlock`] if one was damaged.
pub struct ContentReader {
    store: ContentStore,
    blocks: Vec<BlockRef>,
    total: u64,
    next: usize,
    cur: Vec<u8>,
    pos: usize,
}

impl ContentReader {
    pub(crate) fn new(store: ContentStore, m: Manifest) -> Self {
        ContentReader {
            store,
            total: m.total_size,
            blocks: m.blocks,
            next: 0,
            cur: Vec::new(),
            pos: 0,
        }
    }

    /// The version's size in bytes.
    pub fn total_size(&self) -> u64 {
        self.total
    }

    /// The next whole block (verified), or `None` at the end. Mixing this with `read` skips
    /// the unread rest of the current block.
    pub fn next_block(&mut self) -> Result<Option<Vec<u8>>, ContentError> {
        let Some(b) = self.blocks.get(self.next).copied() else {
            return Ok(None);
        };
        let bytes = self.store.read_block(&b.hash)?;
        if bytes.len() != b.size as usize {
            // Same hash, different size cannot happen with BLAKE3; a manifest that lies about
            // sizes is caught here rather than producing a file of the wrong length.
            return Err(ContentError::CorruptBlock { hash: b.hash });
        }
        self.next += 1;
        self.cur.clear();
        self.pos = 0;
        Ok(Some(bytes))
    }
}

impl Read for ContentReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            match self.next_block().map_err(io::Error::other)? {
                Some(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
