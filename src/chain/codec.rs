//! The hand-written entry encoding, version 1. Big-endian, length-prefixed, every length
//! bounded, exactly one encoding per value (the decoder refuses any other), frozen by the
//! golden vectors in `tests/chain_golden.rs`.
//!
//! ```text
//! meta   := u8 version(=1) | library[16] | author[32] | u64 seq | u64 lamport | u64 wall_ms | op
//! op     := u8 tag | fields
//!   1 Put          path | u64 size | i64 mtime_ms | content[32] | u8 has_nc (0|1) [u64 fileid | str etag]
//!   2 Delete       path
//!   3 Rename       path from | path to
//!   4 Mkdir        path
//!   5 Merge        (nothing)
//!   6 AddDevice    key[32] | str name
//!   7 RemoveDevice key[32]
//! path, str := u16 len | UTF-8 bytes          (paths ≤ 4096 bytes, NFC, see `path.rs`)
//! entry  := meta | u8 n(≤64) | n × parent[32] (strictly ascending) | signature[64]
//! ```

use super::entry::{
    Meta, NextcloudRef, Op, FORMAT_VERSION, MAX_DEVICE_NAME_LEN, MAX_ETAG_LEN, MAX_PARENTS,
};
use super::error::DecodeError;
use super::path::{ChainPath, MAX_PATH_LEN};
use super::types::{ContentId, DeviceKey, EntryHash, LibraryId};
use crate::cursor::{Cursor, Truncated};

const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_RENAME: u8 = 3;
const TAG_MKDIR: u8 = 4;
const TAG_MERGE: u8 = 5;
const TAG_ADD_DEVICE: u8 = 6;
const TAG_REMOVE_DEVICE: u8 = 7;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Every string is bounded far below u16::MAX when it is built (paths by ChainPath, names
    // and etags by validation), so the length always fits.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

pub(crate) fn encode_meta(m: &Meta, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&m.library.0);
    out.extend_from_slice(&m.author.0);
    out.extend_from_slice(&m.seq.to_be_bytes());
    out.extend_from_slice(&m.lamport.to_be_bytes());
    out.extend_from_slice(&m.wall_ms.to_be_bytes());
    match &m.op {
        Op::Put {
            path,
            size,
            mtime_ms,
            content,
            nextcloud,
        } => {
            out.push(TAG_PUT);
            put_str(out, path.as_str());
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&mtime_ms.to_be_bytes());
            out.extend_from_slice(&content.0);
            match nextcloud {
                None => out.push(0),
                Some(nc) => {
                    out.push(1);
                    out.extend_from_slice(&nc.fileid.to_be_bytes());
                    put_str(out, &nc.etag);
                }
            }
        }
        Op::Delete { path } => {
            out.push(TAG_DELETE);
            put_str(out, path.as_str());
        }
        Op::Rename { from, to } => {
            out.push(TAG_RENAME);
            put_str(out, from.as_str());
            put_str(out, to.as_str());
        }
        Op::Mkdir { path } => {
            out.push(TAG_MKDIR);
            put_str(out, path.as_str());
        }
        Op::Merge => out.push(TAG_MERGE),
        Op::AddDevice { device, name } => {
            out.push(TAG_ADD_DEVICE);
            out.extend_from_slice(&device.0);
            put_str(out, name);
        }
        Op::RemoveDevice { device } => {
            out.push(TAG_REMOVE_DEVICE);
            out.extend_from_slice(&device.0);
        }
    }
}

pub(crate) fn encode_tail(parents: &[EntryHash], signature: &[u8; 64], out: &mut Vec<u8>) {
    // At most MAX_PARENTS by construction (append and decode both bound it).
    out.push(u8::try_from(parents.len()).unwrap_or(u8::MAX));
    for p in parents {
        out.extend_from_slice(&p.0);
    }
    out.extend_from_slice(signature);
}

impl From<Truncated> for DecodeError {
    fn from(t: Truncated) -> Self {
        DecodeError::Truncated(t.len)
    }
}

impl<'a> Cursor<'a> {
    fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::BadUtf8(what))
    }
    fn path(&mut self) -> Result<ChainPath, DecodeError> {
        Ok(ChainPath::parse_canonical(self.str("path", MAX_PATH_LEN)?)?)
    }
}

/// Decodes a whole entry: (meta, length of the meta bytes, parents, signature).
pub(crate) fn decode_entry(
    bytes: &[u8],
) -> Result<(Meta, usize, Vec<EntryHash>, [u8; 64]), DecodeError> {
    let mut r = Cursor::new(bytes);
    let meta = decode_meta(&mut r)?;
    let meta_len = r.position();
    let n = usize::from(r.u8()?);
    if n > MAX_PARENTS {
        return Err(DecodeError::TooLong {
            what: "parents",
            len: n,
            max: MAX_PARENTS,
        });
    }
    let mut parents = Vec::with_capacity(n);
    for _ in 0..n {
        let p = EntryHash(r.array()?);
        if parents.last().is_some_and(|last| *last >= p) {
            return Err(DecodeError::ParentsNotSorted);
        }
        parents.push(p);
    }
    let signature: [u8; 64] = r.array()?;
    if r.position() != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - r.position()));
    }
    Ok((meta, meta_len, parents, signature))
}

fn decode_meta(r: &mut Cursor<'_>) -> Result<Meta, DecodeError> {
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let library = LibraryId(r.array()?);
    let author = DeviceKey(r.array()?);
    let seq = r.u64()?;
    let lamport = r.u64()?;
    let wall_ms = r.u64()?;
    let tag_at = r.position();
    let op = match r.u8()? {
        TAG_PUT => {
            let path = r.path()?;
            let size = r.u64()?;
            let mtime_ms = r.i64()?;
            let content = ContentId(r.array()?);
            let flag_at = r.position();
            let nextcloud = match r.u8()? {
                0 => None,
                1 => {
                    let fileid = r.u64()?;
                    let etag = r.str("etag", MAX_ETAG_LEN)?.to_string();
                    Some(NextcloudRef { fileid, etag })
                }
                f => return Err(DecodeError::BadFlag(f, flag_at)),
            };
            Op::Put {
                path,
                size,
                mtime_ms,
                content,
                nextcloud,
            }
        }
        TAG_DELETE => Op::Delete { path: r.path()? },
        TAG_RENAME => {
            let from = r.path()?;
            let to = r.path()?;
            Op::Rename { from, to }
        }
        TAG_MKDIR => Op::Mkdir { path: r.path()? },
        TAG_MERGE => Op::Merge,
        TAG_ADD_DEVICE => {
            let device = DeviceKey(r.array()?);
            let name = r.str("device name", MAX_DEVICE_NAME_LEN)?.to_string();
            Op::AddDevice { device, name }
        }
        TAG_REMOVE_DEVICE => Op::RemoveDevice {
            device: DeviceKey(r.array()?),
        },
        t => return Err(DecodeError::UnknownOp(t, tag_at)),
    };
    Ok(Meta {
        library,
        author,
        seq,
        lamport,
        wall_ms,
        op,
    })
}
