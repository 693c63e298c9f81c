//! Checkpoints: a library's DAG index saved at a clean close, so the next open reads it back
//! instead of re-verifying every entry.
//!
//! # Why this is safe
//!
//! Entries are append-only: position `k` of a library, once written, never changes (a second
//! write to a taken position is refused, see [`super::store`]). So an index built from the
//! first `n` entries stays true of them forever, and a checkpoint `(n, hash of entry n-1,
//! index)` is a valid prefix of every later state of the store. At open, the store checks that
//! the stored entry `n-1` still hashes to what the checkpoint says, takes the index from it,
//! and verifies only entries `n..` as before. What the checkpoint does not re-check at open:
//! the bytes of entries `0..n-1`. Every read of a stored entry compares its hash with the
//! index's ([`Entry::from_bytes_expecting`](super::Entry::from_bytes_expecting)), so a
//! damaged row is named when it is read, and [`super::ChainStore::verify`] still checks
//! everything from scratch.
//!
//! A checkpoint that is damaged itself (its BLAKE3 checksum, a count past the table, a field
//! out of range) is ignored: the library is then loaded and verified in full, as without one.
//!
//! # Format (version 1, little-endian)
//!
//! ```text
//! "HBCK" u8 version | u64 n | [32] last hash
//! u32 authors   × [32] key
//! u32 memberships × ( u32 devices × ([32] key, u32 ops × (u32 node, u8 add)) )
//! n × ( [32] hash, u64 lamport, u16 author, u64 seq, u32 membership, u16 k, k × u64 vc )
//! u32 heads × [32] hash
//! [32] BLAKE3 of everything before
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::dag::{usable_key, LibIndex, Membership, Node};
use super::types::{DeviceKey, EntryHash, LibraryId};

/// The table of checkpoints: library → encoded index.
pub const CHECKPOINTS: redb::TableDefinition<[u8; 16], &[u8]> =
    redb::TableDefinition::new("chain_checkpoints");

const MAGIC: &[u8; 4] = b"HBCK";
const VERSION: u8 = 1;

/// A decoded checkpoint: how many entries it covers, the last one's hash, the index.
pub(crate) struct Checkpoint {
    pub entries: u64,
    pub last: EntryHash,
    pub index: LibIndex,
}

/// Encodes a library's index (which must hold at least one entry).
pub(crate) fn encode(index: &LibIndex) -> Option<Vec<u8>> {
    let last = index.nodes.last()?.hash;
    let mut out = Vec::with_capacity(64 + index.nodes.len() * (62 + 8 * index.authors.len()));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(index.nodes.len() as u64).to_le_bytes());
    out.extend_from_slice(&last.0);
    out.extend_from_slice(&(index.authors.len() as u32).to_le_bytes());
    for a in &index.authors {
        out.extend_from_slice(&a.key.0);
    }
    // Memberships are shared between nodes (`Arc`): each distinct one is written once.
    let mut ids: HashMap<*const Membership, u32> = HashMap::new();
    let mut distinct: Vec<&Membership> = Vec::new();
    let node_members: Vec<u32> = index
        .nodes
        .iter()
        .map(|n| {
            *ids.entry(Arc::as_ptr(&n.members)).or_insert_with(|| {
                distinct.push(&n.members);
                distinct.len() as u32 - 1
            })
        })
        .collect();
    out.extend_from_slice(&(distinct.len() as u32).to_le_bytes());
    for m in distinct {
        out.extend_from_slice(&(m.frontier.len() as u32).to_le_bytes());
        for (device, ops) in &m.frontier {
            out.extend_from_slice(&device.0);
            out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            for (node, add) in ops {
                out.extend_from_slice(&node.to_le_bytes());
                out.push(u8::from(*add));
            }
        }
    }
    for (n, m) in index.nodes.iter().zip(node_members) {
        out.extend_from_slice(&n.hash.0);
        out.extend_from_slice(&n.lamport.to_le_bytes());
        out.extend_from_slice(&n.author.to_le_bytes());
        out.extend_from_slice(&n.seq.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&(n.vc.len() as u16).to_le_bytes());
        for v in n.vc.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let heads = index.heads();
    out.extend_from_slice(&(heads.len() as u32).to_le_bytes());
    for h in heads {
        out.extend_from_slice(&h.0);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Some(out)
}

/// Why a checkpoint was not used (the library is then verified in full).
#[derive(Debug, thiserror::Error)]
#[error("checkpoint unusable: {0}")]
pub(crate) struct Unusable(&'static str);

/// A bounds-checked reader over the checkpoint's bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Unusable> {
        if self.rest.len() < n {
            return Err(Unusable("truncated"));
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], Unusable> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Unusable> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Unusable> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, Unusable> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, Unusable> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A count of items at least `min_size` bytes each: refused if the rest cannot hold them.
    fn count(&mut self, min_size: usize) -> Result<usize, Unusable> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.rest.len() {
            return Err(Unusable("count past the end"));
        }
        Ok(n)
    }
}

/// Decodes a checkpoint of `library`, checking its checksum and every index and count in it.
pub(crate) fn decode(library: LibraryId, bytes: &[u8]) -> Result<Checkpoint, Unusable> {
    if bytes.len() < 32 {
        return Err(Unusable("truncated"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(Unusable("checksum"));
    }
    let mut r = Reader { rest: body };
    if r.take(4)? != MAGIC || r.u8()? != VERSION {
        return Err(Unusable("unknown format"));
    }
    let entries = r.u64()?;
    let last = EntryHash(r.arr()?);
    let n_authors = r.count(32)?;
    let mut authors = Vec::with_capacity(n_authors);
    for _ in 0..n_authors {
        let key = DeviceKey(r.arr()?);
        let vk = usable_key(&key).map_err(|_| Unusable("author key"))?;
        authors.push((key, vk));
    }
    let n_members = r.count(4)?;
    let mut members = Vec::with_capacity(n_members);
    for _ in 0..n_members {
        let devices = r.count(36)?;
        let mut frontier = BTreeMap::new();
        for _ in 0..devices {
            let device = DeviceKey(r.arr()?);
            let ops = r.count(5)?;
            let mut v = Vec::with_capacity(ops);
            for _ in 0..ops {
                let node = r.u32()?;
                if u64::from(node) >= entries {
                    return Err(Unusable("membership node"));
                }
                v.push((node, r.u8()? != 0));
            }
            frontier.insert(device, v);
        }
        members.push(Arc::new(Membership { frontier }));
    }
    let count = usize::try_from(entries).map_err(|_| Unusable("count"))?;
    if count == 0 || count.saturating_mul(64) > r.rest.len() {
        return Err(Unusable("node count"));
    }
    let mut nodes = Vec::with_capacity(count);
    for _ in 0..count {
        let hash = EntryHash(r.arr()?);
        let lamport = r.u64()?;
        let author = r.u16()?;
        let seq = r.u64()?;
        let m = r.u32()? as usize;
        let k = usize::from(r.u16()?);
        if usize::from(author) >= n_authors || k > n_authors {
            return Err(Unusable("node author"));
        }
        let members = members.get(m).ok_or(Unusable("node membership"))?.clone();
        let mut vc = Vec::with_capacity(k);
        for _ in 0..k {
            vc.push(r.u64()?);
        }
        nodes.push(Node {
            hash,
            lamport,
            author,
            seq,
            vc: vc.into_boxed_slice(),
            members,
        });
    }
    if nodes.last().map(|n| n.hash) != Some(last) {
        return Err(Unusable("last hash"));
    }
    let n_heads = r.count(32)?;
    let mut heads = BTreeSet::new();
    for _ in 0..n_heads {
        heads.insert(EntryHash(r.arr()?));
    }
    if !r.rest.is_empty() {
        return Err(Unusable("trailing bytes"));
    }
    let index = LibIndex::restore(library, authors, nodes, heads).ok_or(Unusable("index"))?;
    Ok(Checkpoint {
        entries,
        last,
        index,
    })
}
