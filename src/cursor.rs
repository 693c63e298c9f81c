//! Reading a byte format front to back: the one cursor every wire decoder (chain entries,
//! content manifests, `/harp/sync/1` messages, `/harp/blocks/2` bodies) reads with.
//!
//! Every read checks the length first and fails with [`Truncated`] instead of reading past
//! the end, so a peer's short or lying message is an error, never a panic. Integers are
//! big-endian, as every format here writes them. Each decoder turns [`Truncated`] into its
//! own error type with `From`, and adds the reads only it needs (a length-prefixed string,
//! a bounded count) in its own `impl Cursor` block.

/// The input ended before a read: the input was this many bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated: the input is {len} bytes")]
pub struct Truncated {
    pub len: usize,
}

/// A position in a byte slice.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Truncated {
                len: self.bytes.len(),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `N` bytes, as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Truncated> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Everything not read yet (and the cursor at the end).
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        s
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Where the cursor is.
    pub fn position(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_never_past_the_end() {
        let bytes = [1, 0, 2, 0, 0, 0, 3, 9];
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.u8(), Ok(1));
        assert_eq!(c.u16(), Ok(2));
        assert_eq!(c.u32(), Ok(3));
        assert_eq!(c.remaining(), 1);
        assert_eq!(c.u64(), Err(Truncated { len: 8 }));
        assert_eq!(c.position(), 7, "a failed read moves nothing");
        assert_eq!(c.take(usize::MAX), Err(Truncated { len: 8 }));
        assert_eq!(c.rest(), &[9]);
        assert!(c.is_empty());
    }
}
