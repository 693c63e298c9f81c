//! The `/harp/blocks/2` messages (and `/1`, the same without `Cancel`) and their bounded
//! encoding on a stream.
//!
//! # The conversation (one long-lived stream per fetcher and provider)
//!
//! ```text
//! F → P  Want{library, content, send_manifest}    which blocks of this version do you hold?
//! P → F  Have{manifest?, n, have[n], fetching[n]} bitmaps over the manifest's block list
//! F → P  Get{index} Get{index} Get{index} …       pipelined: a window of requests in flight
//! P → F  Block{index, bytes} | Missing{index} …   one answer per request, in request order
//! F → P  Cancel{index}                            (2 only) no longer wanted: not answered
//!                                                 itself; the Get's answer may turn into
//! P → F  Cancelled{index}                         (2 only) instead of the block
//! F → P  Want{…}                                  again, any time: a fresh Have (same version)
//! any    Refused(reason)                          not a member, or content the library
//!                                                 does not reference (told apart from nothing)
//! ```
//!
//! Answers come back in the order of the requests, so the fetcher always knows what the next
//! frame answers, and so how large it may be: a `Block` must be exactly the size the manifest
//! gives that block, a `Have` at most [`MAX_HAVE_BYTES`]. `Get` names a block by its index in
//! the manifest of the stream's version, so a provider serves only blocks of the version it
//! has authorised, never "any hash".
//!
//! `Cancel{index}` is how the endgame stops the copy it no longer needs (see
//! [`super::endgame`]): the provider answers an unanswered `Get{index}` on the stream
//! (the latest, if there are several) with `Cancelled{index}` if it has not started
//! writing that block, and with the block otherwise; a `Cancel` with no such `Get` is
//! ignored. Either way the answers stay in request order and every `Get` gets exactly one.
//!
//! # Versions
//!
//! The protocol name carries the version. A fetcher opens `/harp/blocks/2` and, if the
//! provider does not speak it, `/harp/blocks/1`, and then sends no `Cancel` (a version 1
//! provider closes the stream on an unknown request tag). A provider accepts both, and
//! refuses `Cancel` on a version 1 stream.
//!
//! # Encoding
//!
//! Every message is a frame: a big-endian `u32` body length, then the body, a tag byte and
//! the fields, big-endian:
//!
//! ```text
//! Want    := 1 | library[16] | content[32] | flags u8 (bit 0: send the manifest)
//! Get     := 2 | index u32
//! Cancel  := 3 | index u32                                      (version 2)
//! Have    := 1 | flags u8 (bit 0: manifest follows; bit 1: fetching this version, manifest
//!              not here yet) | [u32 len | manifest]
//!              | u32 n | have ⌈n/8⌉ bytes | fetching ⌈n/8⌉ bytes   (bit i = byte i/8, 1<<(i%8);
//!              bits from n on are 0)
//! Block   := 2 | index u32 | bytes
//! Missing := 3 | index u32
//! Refused := 4 | reason u8 (1 not a member, 2 not a device, 3 internal)
//! Cancelled := 5 | index u32                                    (version 2)
//! ```
//!
//! A provider that lacks the manifest answers `Have` with n = 0. Lengths are checked against
//! the limit before anything is read, and a long body (a manifest can reach
//! [`MAX_MANIFEST_LEN`]) is read into a buffer that grows as bytes arrive, so a peer cannot
//! make us allocate what it does not send. Unknown tags, short bodies and trailing bytes are
//! errors (`io::ErrorKind::InvalidData`), never panics.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::chain::{ContentId, LibraryId};
use crate::content::{MAX_BLOCK_SIZE, MAX_MANIFEST_LEN};
use crate::cursor::{Cursor, Truncated};
use crate::p2p::trust::Refusal;

/// The protocol's name, newest version: what a fetcher opens first.
pub const PROTOCOL: &str = "/harp/blocks/2";
/// Version 1: no `Cancel`. Still served, and opened when a provider lacks version 2.
pub const PROTOCOL_V1: &str = "/harp/blocks/1";

/// Which version a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `/harp/blocks/1`.
    V1,
    /// `/harp/blocks/2`: adds `Cancel` and `Cancelled`.
    V2,
}

impl Version {
    /// The protocol name of this version.
    pub fn protocol(self) -> &'static str {
        match self {
            Version::V1 => PROTOCOL_V1,
            Version::V2 => PROTOCOL,
        }
    }
}
/// Largest request body (a `Want`).
pub const MAX_ASK_BYTES: usize = 1 + 16 + 32 + 1;
/// Most blocks a `Have` may describe (the manifest format's own cap).
pub const MAX_HAVE_BLOCKS: u32 = crate::content::manifest::MAX_BLOCKS;
/// Largest `Have` body: a full manifest and two full bitmaps.
pub const MAX_HAVE_BYTES: usize =
    1 + 1 + 4 + MAX_MANIFEST_LEN + 4 + 2 * (MAX_HAVE_BLOCKS as usize).div_ceil(8);
/// Largest `Block` body.
pub const MAX_BLOCK_BYTES: usize = 1 + 4 + MAX_BLOCK_SIZE as usize;

/// A fetcher's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Which blocks of `content` (a version of `library`) do you hold?
    Want {
        /// The library whose chain references the version.
        library: LibraryId,
        /// The version (manifest id).
        content: ContentId,
        /// Send the manifest bytes too (the fetcher lacks them).
        send_manifest: bool,
    },
    /// Send block number `index` of the stream's version.
    Get {
        /// Its index in the manifest's block list.
        index: u32,
    },
    /// (Version 2.) Block `index` is no longer wanted: an unanswered `Get` of it may be
    /// answered `Cancelled`.
    Cancel {
        /// Its index in the manifest's block list.
        index: u32,
    },
}

/// A set of block indices over a manifest's block list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bits {
    len: u32,
    bytes: Vec<u8>,
}

impl Bits {
    /// `len` bits, all clear.
    pub fn new(len: u32) -> Self {
        Bits {
            len,
            bytes: vec![0; (len as usize).div_ceil(8)],
        }
    }

    /// How many bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// No bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` (false past the end).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Sets bit `i` (ignored past the end).
    pub fn set(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] |= 1 << (i % 8);
        }
    }

    /// Clears bit `i` (ignored past the end).
    pub fn clear(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] &= !(1 << (i % 8));
        }
    }

    /// How many bits are set.
    pub fn count(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// `len` bits from a `Have`'s bitmap (`bytes` is ⌈len/8⌉ long). A bit set past `len` is
    /// refused: [`Bits::count`] would count it (a provider would seem to hold blocks it does
    /// not name), and each set has one encoding.
    fn from_wire(len: u32, bytes: &[u8]) -> io::Result<Self> {
        let used = len % 8;
        if used != 0 && bytes.last().is_some_and(|last| last >> used != 0) {
            return Err(invalid("bitmap bits past its length"));
        }
        Ok(Bits {
            len,
            bytes: bytes.to_vec(),
        })
    }
}

/// A provider's answer to `Want`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Have {
    /// The manifest bytes, when asked for and held (the fetcher checks their hash).
    pub manifest: Option<Vec<u8>>,
    /// Blocks the provider holds, by manifest index (empty: it lacks the manifest).
    pub have: Bits,
    /// Blocks the provider is fetching right now (for the LAN split, see the module docs of
    /// [`super`]).
    pub fetching: Bits,
    /// The provider is fetching this version too but has not set it up yet (no manifest,
    /// or the manifest just stored and its `fetching` bits not yet known, so they may be
    /// empty): a LAN fetcher waits for its next `Have` before it asks the WAN.
    pub starting: bool,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To `Want`.
    Have(Have),
    /// To `Get`: the block's bytes (the fetcher verifies them).
    Block {
        /// Its index.
        index: u32,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// To `Get`: not held (any more).
    Missing {
        /// Its index.
        index: u32,
    },
    /// The provider will not serve this version to us.
    Refused(Refusal),
    /// (Version 2.) To `Get`, after a `Cancel` of it: the block is not sent.
    Cancelled {
        /// Its index.
        index: u32,
    },
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The most of a frame's body allocated before its bytes arrive.
const FIRST_READ: usize = 1 << 20;

/// Reads one frame body of at most `max` bytes; `Ok(None)` on a clean end of stream before
/// the frame starts.
async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> io::Result<Option<Vec<u8>>> {
    match read_len(io, max).await? {
        Some(len) => read_bytes(io, len).await.map(Some),
        None => Ok(None),
    }
}

/// The length of the next frame, at most `max`; `Ok(None)` on a clean end of stream
/// before it.
async fn read_len<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> io::Result<Option<usize>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = io.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes over the limit {max}"
        )));
    }
    Ok(Some(len))
}

/// Reads exactly `len` bytes. The buffer grows as bytes arrive, to at most twice what came:
/// a peer that announces a big frame and sends nothing costs us at most [`FIRST_READ`].
/// Exact reads into the part just added rather than `read_to_end`, which zero-fills the
/// whole spare capacity at every growth (a block is at most 1 MiB past the first read,
/// so usually one step; `read_to_end` was a tenth of a transfer's CPU in bench/transfer).
async fn read_bytes<R: AsyncRead + Unpin>(io: &mut R, len: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0u8; len.min(FIRST_READ)];
    io.read_exact(&mut body).await?;
    while body.len() < len {
        let got = body.len();
        body.resize(len.min(got * 2), 0);
        io.read_exact(&mut body[got..]).await?;
    }
    Ok(body)
}

/// Writes one frame. Small parts are gathered into one buffer (one write, so one transport
/// frame, for a header); a large last part (a block's bytes) is written from where it lies.
async fn write_parts<W: AsyncWrite + Unpin>(io: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| invalid("frame too long"))?;
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(&len.to_be_bytes());
    for p in parts {
        if p.len() > 4096 {
            io.write_all(&head).await?;
            head.clear();
            io.write_all(p).await?;
        } else {
            head.extend_from_slice(p);
        }
    }
    if !head.is_empty() {
        io.write_all(&head).await?;
    }
    Ok(())
}

impl From<Truncated> for io::Error {
    fn from(_: Truncated) -> Self {
        invalid("message too short")
    }
}

/// Whether the body was read to its end.
fn finished(b: &Cursor<'_>) -> io::Result<()> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(invalid("trailing bytes"))
    }
}

/// Writes a request.
pub async fn write_ask<W: AsyncWrite + Unpin>(io: &mut W, ask: &Ask) -> io::Result<()> {
    match ask {
        Ask::Want {
            library,
            content,
            send_manifest,
        } => {
            write_parts(
                io,
                &[&[1], &library.0, &content.0, &[u8::from(*send_manifest)]],
            )
            .await
        }
        Ask::Get { index } => write_parts(io, &[&[2], &index.to_be_bytes()]).await,
        Ask::Cancel { index } => write_parts(io, &[&[3], &index.to_be_bytes()]).await,
    }
}

/// Reads a request; `Ok(None)` when the fetcher closed the stream.
pub async fn read_ask<R: AsyncRead + Unpin>(io: &mut R) -> io::Result<Option<Ask>> {
    let Some(body) = read_frame(io, MAX_ASK_BYTES).await? else {
        return Ok(None);
    };
    let mut b = Cursor::new(&body);
    let ask = match b.u8()? {
        1 => {
            let library = LibraryId(b.array()?);
            let content = ContentId(b.array()?);
            let flags = b.u8()?;
            if flags > 1 {
                return Err(invalid("unknown Want flags"));
            }
            Ask::Want {
                library,
                content,
                send_manifest: flags == 1,
            }
        }
        2 => Ask::Get { index: b.u32()? },
        3 => Ask::Cancel { index: b.u32()? },
        t => return Err(invalid(format!("unknown request tag {t}"))),
    };
    finished(&b)?;
    Ok(Some(ask))
}

fn refusal_code(r: Refusal) -> u8 {
    match r {
        Refusal::NotAMember => 1,
        Refusal::NotADevice => 2,
        Refusal::Internal => 3,
    }
}

/// Writes an answer.
pub async fn write_answer<W: AsyncWrite + Unpin>(io: &mut W, answer: &Answer) -> io::Result<()> {
    match answer {
        Answer::Have(h) => {
            if h.have.len() != h.fetching.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "bitmaps of different lengths",
                ));
            }
            let n = h.have.len().to_be_bytes();
            let flags = u8::from(h.manifest.is_some()) | (u8::from(h.starting) << 1);
            match &h.manifest {
                Some(m) => {
                    let mlen = u32::try_from(m.len()).map_err(|_| invalid("manifest too long"))?;
                    write_parts(
                        io,
                        &[
                            &[1, flags],
                            &mlen.to_be_bytes(),
                            m,
                            &n,
                            &h.have.bytes,
                            &h.fetching.bytes,
                        ],
                    )
                    .await
                }
                None => write_parts(io, &[&[1, flags], &n, &h.have.bytes, &h.fetching.bytes]).await,
            }
        }
        Answer::Block { index, bytes } => {
            write_parts(io, &[&[2], &index.to_be_bytes(), bytes]).await
        }
        Answer::Missing { index } => write_parts(io, &[&[3], &index.to_be_bytes()]).await,
        Answer::Refused(r) => write_parts(io, &[&[4, refusal_code(*r)]]).await,
        Answer::Cancelled { index } => write_parts(io, &[&[5], &index.to_be_bytes()]).await,
    }
}

/// Reads an answer whose body is at most `max` bytes (the fetcher knows what the next answer
/// answers: [`MAX_HAVE_BYTES`] for a `Want`, 5 + the block's size for a `Get`). `Ok(None)`
/// when the provider closed the stream.
pub async fn read_answer<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
) -> io::Result<Option<Answer>> {
    let Some(len) = read_len(io, max).await? else {
        return Ok(None);
    };
    if len == 0 {
        return Err(invalid("empty answer"));
    }
    let mut tag = [0u8; 1];
    io.read_exact(&mut tag).await?;
    if tag[0] == 2 {
        // A block: its bytes are read into a buffer of their own, never moved again.
        if len < 5 {
            return Err(invalid("block answer too short"));
        }
        let mut index = [0u8; 4];
        io.read_exact(&mut index).await?;
        let bytes = read_bytes(io, len - 5).await?;
        return Ok(Some(Answer::Block {
            index: u32::from_be_bytes(index),
            bytes,
        }));
    }
    let body = read_bytes(io, len - 1).await?;
    let mut b = Cursor::new(&body);
    let answer = match tag[0] {
        1 => {
            let flags = b.u8()?;
            if flags > 3 {
                return Err(invalid("unknown Have flags"));
            }
            let manifest = if flags & 1 == 1 {
                let len = b.u32()? as usize;
                if len > MAX_MANIFEST_LEN {
                    return Err(invalid("manifest too long"));
                }
                Some(b.take(len)?.to_vec())
            } else {
                None
            };
            let n = b.u32()?;
            if n > MAX_HAVE_BLOCKS {
                return Err(invalid("too many blocks"));
            }
            let bytes = (n as usize).div_ceil(8);
            let have = Bits::from_wire(n, b.take(bytes)?)?;
            let fetching = Bits::from_wire(n, b.take(bytes)?)?;
            Answer::Have(Have {
                manifest,
                have,
                fetching,
                starting: flags & 2 == 2,
            })
        }
        3 => Answer::Missing { index: b.u32()? },
        4 => Answer::Refused(match b.u8()? {
            1 => Refusal::NotAMember,
            2 => Refusal::NotADevice,
            _ => Refusal::Internal,
        }),
        5 => Answer::Cancelled { index: b.u32()? },
        t => return Err(invalid(format!("unknown answer tag {t}"))),
    };
    finished(&b)?;
    Ok(Some(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::io::Cursor;

    #[tokio::test]
    async fn messages_round_trip() {
        let asks = [
            Ask::Want {
                library: LibraryId([3; 16]),
                content: ContentId([4; 32]),
                send_manifest: true,
            },
            Ask::Get { index: 77 },
            Ask::Cancel { index: 78 },
        ];
        let mut buf = Cursor::new(Vec::new());
        for a in &asks {
            write_ask(&mut buf, a).await.unwrap();
        }
        buf.set_position(0);
        for a in &asks {
            assert_eq!(read_ask(&mut buf).await.unwrap().as_ref(), Some(a));
        }
        assert_eq!(read_ask(&mut buf).await.unwrap(), None);

        let mut have = Bits::new(10);
        have.set(0);
        have.set(9);
        let answers = [
            Answer::Have(Have {
                manifest: Some(vec![1, 2, 3]),
                have: have.clone(),
                fetching: Bits::new(10),
                starting: false,
            }),
            Answer::Have(Have::default()),
            Answer::Have(Have {
                starting: true,
                ..Have::default()
            }),
            Answer::Block {
                index: 5,
                bytes: vec![9; 1000],
            },
            Answer::Missing { index: 6 },
            Answer::Refused(Refusal::NotAMember),
            Answer::Cancelled { index: 7 },
        ];
        let mut buf = Cursor::new(Vec::new());
        for a in &answers {
            write_answer(&mut buf, a).await.unwrap();
        }
        buf.set_position(0);
        for a in &answers {
            let got = read_answer(&mut buf, MAX_HAVE_BYTES).await.unwrap();
            assert_eq!(got.as_ref(), Some(a));
        }
        assert_eq!(have.count(), 2);
        assert!(have.get(9) && !have.get(8) && !have.get(10));
    }

    /// Freezes the encoding (version 1, and what version 2 adds): a change here is a protocol
    /// change (a new name).
    #[tokio::test]
    async fn golden_bytes() {
        let mut buf = Cursor::new(Vec::new());
        write_ask(
            &mut buf,
            &Ask::Want {
                library: LibraryId([0x11; 16]),
                content: ContentId([0x22; 32]),
                send_manifest: true,
            },
        )
        .await
        .unwrap();
        write_ask(&mut buf, &Ask::Get { index: 0x0102_0304 })
            .await
            .unwrap();
        write_ask(&mut buf, &Ask::Cancel { index: 0x0102_0305 })
            .await
            .unwrap();
        let mut want = vec![0, 0, 0, 50, 1];
        want.extend([0x11; 16]);
        want.extend([0x22; 32]);
        want.push(1);
        want.extend([0, 0, 0, 5, 2, 1, 2, 3, 4]);
        want.extend([0, 0, 0, 5, 3, 1, 2, 3, 5]);
        assert_eq!(buf.get_ref(), &want);

        let mut have = Bits::new(9);
        have.set(0);
        have.set(8);
        let mut fetching = Bits::new(9);
        fetching.set(1);
        let mut buf = Cursor::new(Vec::new());
        for a in [
            Answer::Have(Have {
                manifest: Some(vec![0xEE; 2]),
                have,
                fetching,
                starting: false,
            }),
            Answer::Have(Have {
                starting: true,
                ..Have::default()
            }),
            Answer::Block {
                index: 7,
                bytes: vec![0xAA, 0xBB],
            },
            Answer::Missing { index: 8 },
            Answer::Refused(Refusal::NotAMember),
            Answer::Cancelled { index: 9 },
        ] {
            write_answer(&mut buf, &a).await.unwrap();
        }
        let golden: Vec<u8> = [
            &[
                0, 0, 0, 16, 1, 1, 0, 0, 0, 2, 0xEE, 0xEE, 0, 0, 0, 9, 0x01, 0x01, 0x02, 0x00,
            ][..],
            &[0, 0, 0, 6, 1, 2, 0, 0, 0, 0],
            &[0, 0, 0, 7, 2, 0, 0, 0, 7, 0xAA, 0xBB],
            &[0, 0, 0, 5, 3, 0, 0, 0, 8],
            &[0, 0, 0, 2, 4, 1],
            &[0, 0, 0, 5, 5, 0, 0, 0, 9],
        ]
        .concat();
        assert_eq!(buf.get_ref(), &golden);
    }

    #[tokio::test]
    async fn oversized_short_and_unknown_frames_are_refused() {
        let mut block = Cursor::new(Vec::new());
        write_answer(
            &mut block,
            &Answer::Block {
                index: 1,
                bytes: vec![0; 100],
            },
        )
        .await
        .unwrap();
        block.set_position(0);
        // The fetcher expected a 99-byte block: the frame is over its limit.
        let e = read_answer(&mut block, 5 + 99).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let mut huge = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(read_answer(&mut huge, MAX_HAVE_BYTES).await.is_err());
        let mut short = Cursor::new(vec![0, 0, 0, 9, 2]);
        assert!(read_ask(&mut short).await.is_err());
        let mut unknown = Cursor::new(vec![0, 0, 0, 1, 9]);
        assert!(read_ask(&mut unknown).await.is_err());
        let mut trailing = Cursor::new(vec![0, 0, 0, 6, 2, 0, 0, 0, 1, 0]);
        assert!(read_ask(&mut trailing).await.is_err());
        // A Have whose bitmaps are shorter than its count says.
        let mut bad = Cursor::new(vec![0, 0, 0, 7, 1, 0, 0, 0, 0, 64, 0]);
        assert!(read_answer(&mut bad, MAX_HAVE_BYTES).await.is_err());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/blocks_wire.rs): a `Have` of 9 blocks whose
    /// bitmaps set bits 9..15 was accepted, and `count` then said the provider held blocks
    /// that no index names.
    #[tokio::test]
    async fn bitmap_bits_past_the_length_are_refused() {
        for (have, fetching) in [
            ([1, 0x02], [0, 0]),
            ([0, 0], [0, 0x80]),
            ([0, 0x7f], [0, 0]),
        ] {
            let mut frame = vec![0, 0, 0, 10, 1, 0, 0, 0, 0, 9];
            frame.extend(have);
            frame.extend(fetching);
            let e = read_answer(&mut Cursor::new(frame), MAX_HAVE_BYTES)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
        // Bit 8, the last of 9, is a block.
        let frame = vec![0, 0, 0, 10, 1, 0, 0, 0, 0, 9, 0, 1, 0xff, 1];
        let Some(Answer::Have(h)) = read_answer(&mut Cursor::new(frame), MAX_HAVE_BYTES)
            .await
            .unwrap()
        else {
            panic!("not a Have");
        };
        assert_eq!((h.have.count(), h.fetching.count()), (1, 9));
        assert!(h.have.get(8) && h.fetching.get(8));
    }
}
