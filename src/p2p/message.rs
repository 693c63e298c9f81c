//! The `/harp/sync/1` messages and their wire encoding.
//!
//! # The conversation
//!
//! Sync is *pull*: each side asks for what it lacks, and the side that holds the entries
//! decides, by [`super::trust`], whether the asker may have them.
//!
//! ```text
//! A → B  Libraries                        which libraries do we share?
//! B → A  Libraries[(library, heads)…]     those where A's key is a member, at B's heads
//! A → B  Fetch{library, have, limit}      have = A's version vector of that library
//! B → A  Entries{entries, remaining}      what A lacks, ancestors first, ≤ limit
//!        … A stores the batch (verified, all or nothing), and asks again with its new
//!        vector until `remaining` is 0. An interrupted pull resumes from what A stored.
//! A → B  Announce{library, heads}         A's library changed; B pulls from A if it lacks
//! B → A  Ack                              any of the heads
//! any    Refused(reason)                  the asker is not a member (or we failed)
//! ```
//!
//! `Fetch` carries a *version vector* (per author, how many of its entries the asker holds)
//! rather than heads: each author's entries form one chain, so the vector says exactly what
//! the asker has, even entries the answering side has never seen (see
//! [`crate::chain::ChainStore::missing_for_vector`]); heads only help when the other side
//! knows them. Heads are still exchanged in `Libraries` and `Announce`, to skip a fetch when
//! nothing is new.
//!
//! # Encoding (version 1, frozen by the golden test below)
//!
//! Every message is one frame: a big-endian `u32` body length, then the body. The body is a
//! tag byte and the fields in order; integers are big-endian, lists are a `u32` count then
//! the items, ids and hashes are their raw bytes, and an entry is a `u32` length then
//! [`crate::chain::Entry::to_bytes`] (the chain's own canonical encoding, decoded and
//! hash-checked by [`crate::chain::Entry::from_bytes`]). Nothing else is accepted: unknown
//! tags, counts over the limits below, trailing bytes and short bodies are errors, so a
//! peer can make us allocate at most one frame of [`MAX_REQUEST_BYTES`] or
//! [`MAX_RESPONSE_BYTES`].

use crate::chain::{DeviceKey, Entry, EntryHash, LibraryId};
use crate::cursor::{Cursor, Truncated};

use super::trust::Refusal;

/// The protocol name negotiated by multistream-select.
pub const PROTOCOL: &str = "/harp/sync/1";
/// Largest request frame body.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;
/// Largest response frame body.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most libraries in one `Libraries` answer.
pub const MAX_LIBRARIES: usize = 4096;
/// Most heads named for one library.
pub const MAX_HEADS: usize = 1024;
/// Most authors in a version vector (40 bytes each, so it fits a request).
pub const MAX_AUTHORS: usize = 8192;
/// Most entries in one `Entries` answer.
pub const MAX_BATCH_ENTRIES: usize = 4096;
/// Largest single encoded entry accepted (the chain's own bounds make entries far smaller:
/// two 4 KiB paths, 64 parents and a few small fields).
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// A library and its heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryHeads {
    /// The library.
    pub library: LibraryId,
    /// Its heads at the sender, ascending.
    pub heads: Vec<EntryHash>,
}

/// What one peer asks another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Which libraries do we share, and what are their heads at your side?
    Libraries,
    /// Send me what I lack of `library`, given that I hold `have` (my version vector).
    Fetch {
        /// The library.
        library: LibraryId,
        /// Per author, how many of its entries the asker holds.
        have: Vec<(DeviceKey, u64)>,
        /// At most this many entries, please.
        limit: u32,
    },
    /// My copy of `library` now has these heads.
    Announce(LibraryHeads),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The shared libraries (answer to `Libraries`).
    Libraries(Vec<LibraryHeads>),
    /// Entries the asker lacks, ancestors first, and how many more there are after them
    /// (answer to `Fetch`).
    Entries {
        /// The batch.
        entries: Vec<Entry>,
        /// Entries still missing after this batch.
        remaining: u64,
    },
    /// Heard (answer to `Announce`).
    Ack,
    /// Nothing for you.
    Refused(Refusal),
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ended early.
    #[error("message truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("trailing bytes after the message")]
    Trailing,
    /// An unknown tag.
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    /// A count or length over its limit.
    #[error("{what} {got} exceeds the limit {max}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The count found.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An entry did not decode by the chain's rules.
    #[error("bad entry: {0}")]
    BadEntry(String),
}

const T_LIBRARIES: u8 = 0x01;
const T_FETCH: u8 = 0x02;
const T_ANNOUNCE: u8 = 0x03;
const R_LIBRARIES: u8 = 0x81;
const R_ENTRIES: u8 = 0x82;
const R_ACK: u8 = 0x83;
const R_REFUSED: u8 = 0x84;

fn refusal_code(r: Refusal) -> u8 {
    match r {
        Refusal::NotAMember => 1,
        Refusal::NotADevice => 2,
        Refusal::Internal => 3,
    }
}

fn refusal_from(code: u8) -> Refusal {
    match code {
        1 => Refusal::NotAMember,
        2 => Refusal::NotADevice,
        // An unknown reason from a newer peer is still a refusal.
        _ => Refusal::Internal,
    }
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    out.extend_from_slice(&(v as u32).to_be_bytes());
}

fn put_heads(out: &mut Vec<u8>, lh: &LibraryHeads) {
    out.extend_from_slice(&lh.library.0);
    put_u32(out, lh.heads.len());
    for h in &lh.heads {
        out.extend_from_slice(&h.0);
    }
}

impl Request {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::Libraries => out.push(T_LIBRARIES),
            Request::Fetch {
                library,
                have,
                limit,
            } => {
                out.push(T_FETCH);
                out.extend_from_slice(&library.0);
                put_u32(&mut out, have.len());
                for (k, n) in have {
                    out.extend_from_slice(&k.0);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                out.extend_from_slice(&limit.to_be_bytes());
            }
            Request::Announce(lh) => {
                out.push(T_ANNOUNCE);
                put_heads(&mut out, lh);
            }
        }
        out
    }

    /// Decodes a frame body.
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Cursor::new(body);
        let req = match r.u8()? {
            T_LIBRARIES => Request::Libraries,
            T_FETCH => {
                let library = LibraryId(r.array()?);
                let n = r.count("authors", MAX_AUTHORS)?;
                let mut have = Vec::with_capacity(n);
                for _ in 0..n {
                    have.push((DeviceKey(r.array()?), r.u64()?));
                }
                let limit = r.u32()?;
                Request::Fetch {
                    library,
                    have,
                    limit,
                }
            }
            T_ANNOUNCE => Request::Announce(r.heads()?),
            t => return Err(WireError::UnknownTag(t)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Response {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Libraries(libs) => {
                out.push(R_LIBRARIES);
                put_u32(&mut out, libs.len());
                for lh in libs {
                    put_heads(&mut out, lh);
                }
            }
            Response::Entries { entries, remaining } => {
                out.push(R_ENTRIES);
                put_u32(&mut out, entries.len());
                for e in entries {
                    let bytes = e.to_bytes();
                    put_u32(&mut out, bytes.len());
                    out.extend_from_slice(&bytes);
                }
                out.extend_from_slice(&remaining.to_be_bytes());
            }
            Response::Ack => out.push(R_ACK),
            Response::Refused(r) => {
                out.push(R_REFUSED);
                out.push(refusal_code(*r));
            }
        }
        out
    }

    /// Decodes a frame body. Entries are decoded (and their hashes computed) here; whether
    /// they are valid in the chain is for [`crate::chain::ChainStore::insert_remote`].
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Cursor::new(body);
        let resp = match r.u8()? {
            R_LIBRARIES => {
                let n = r.count("libraries", MAX_LIBRARIES)?;
                let mut libs = Vec::with_capacity(n);
                for _ in 0..n {
                    libs.push(r.heads()?);
                }
                Response::Libraries(libs)
            }
            R_ENTRIES => {
                let n = r.count("entries", MAX_BATCH_ENTRIES)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = r.count("entry bytes", MAX_ENTRY_BYTES)?;
                    let bytes = r.take(len)?;
                    entries.push(
                        Entry::from_bytes(bytes).map_err(|e| WireError::BadEntry(e.to_string()))?,
                    );
                }
                let remaining = r.u64()?;
                Response::Entries { entries, remaining }
            }
            R_ACK => Response::Ack,
            R_REFUSED => Response::Refused(refusal_from(r.u8()?)),
            t => return Err(WireError::UnknownTag(t)),
        };
        r.end()?;
        Ok(resp)
    }
}

impl From<Truncated> for WireError {
    fn from(_: Truncated) -> Self {
        WireError::Truncated
    }
}

/// The reads only `/harp/sync/1` needs.
impl Cursor<'_> {
    /// A `u32` count, refused above `max` before anything is allocated for it.
    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let got = self.u32()? as usize;
        if got > max {
            return Err(WireError::TooLarge { what, got, max });
        }
        Ok(got)
    }
    fn heads(&mut self) -> Result<LibraryHeads, WireError> {
        let library = LibraryId(self.array()?);
        let n = self.count("heads", MAX_HEADS)?;
        let mut heads = Vec::with_capacity(n);
        for _ in 0..n {
            heads.push(EntryHash(self.array()?));
        }
        Ok(LibraryHeads { library, heads })
    }
    fn end(&self) -> Result<(), WireError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainStore, Op};
    use crate::identity::DeviceIdentity;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn golden_requests() {
        let lib = LibraryId([0xaa; 16]);
        assert_eq!(hex(&Request::Libraries.encode()), "01");
        let fetch = Request::Fetch {
            library: lib,
            have: vec![(DeviceKey([0x11; 32]), 3)],
            limit: 256,
        };
        assert_eq!(
            hex(&fetch.encode()),
            format!(
                "02{}00000001{}000000000000000300000100",
                "aa".repeat(16),
                "11".repeat(32)
            )
        );
        let ann = Request::Announce(LibraryHeads {
            library: lib,
            heads: vec![EntryHash([0x22; 32])],
        });
        assert_eq!(
            hex(&ann.encode()),
            format!("03{}00000001{}", "aa".repeat(16), "22".repeat(32))
        );
        for r in [Request::Libraries, fetch, ann] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn golden_responses() {
        assert_eq!(hex(&Response::Ack.encode()), "83");
        assert_eq!(
            hex(&Response::Refused(Refusal::NotAMember).encode()),
            "8401"
        );
        let libs = Response::Libraries(vec![LibraryHeads {
            library: LibraryId([1; 16]),
            heads: vec![],
        }]);
        assert_eq!(
            hex(&libs.encode()),
            format!("8100000001{}00000000", "01".repeat(16))
        );
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainStore::open_path(&dir.path().join("db.redb")).unwrap();
        let id = DeviceIdentity::from_secret([5; 32]);
        let (lib, genesis) = chain.create_library(id.signing_key(), "a").unwrap();
        let e2 = chain
            .append(
                &lib,
                id.signing_key(),
                Op::AddDevice {
                    device: DeviceIdentity::from_secret([6; 32]).device_key(),
                    name: "b".into(),
                },
            )
            .unwrap();
        let entries = vec![genesis, e2];
        let resp = Response::Entries {
            entries: entries.clone(),
            remaining: 7,
        };
        let body = resp.encode();
        assert_eq!(&body[..5], &[0x82, 0, 0, 0, entries.len() as u8]);
        assert_eq!(&body[body.len() - 8..], &7u64.to_be_bytes());
        for r in [Response::Ack, libs, resp] {
            assert_eq!(Response::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        assert_eq!(Request::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Request::decode(&[0x7f]), Err(WireError::UnknownTag(0x7f)));
        assert_eq!(Request::decode(&[0x01, 0]), Err(WireError::Trailing));
        // A count of 2^32-1 authors is refused before allocating.
        let mut big = vec![T_FETCH];
        big.extend_from_slice(&[0; 16]);
        big.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Request::decode(&big),
            Err(WireError::TooLarge {
                what: "authors",
                ..
            })
        ));
        let mut bad_entry = vec![R_ENTRIES, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3];
        bad_entry.extend_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            Response::decode(&bad_entry),
            Err(WireError::BadEntry(_))
        ));
        // Every prefix of a valid message is an error, never a panic.
        let body = Request::Fetch {
            library: LibraryId([3; 16]),
            have: vec![(DeviceKey([4; 32]), 9); 3],
            limit: 1,
        }
        .encode();
        for n in 0..body.len() {
            assert!(Request::decode(&body[..n]).is_err());
        }
    }
}
