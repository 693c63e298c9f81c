//! The in-memory index of one library's DAG: who wrote what, which entries are heads, each
//! entry's vector clock and the membership in force after it. It is rebuilt from the database
//! at open (which is how opening verifies the chain) and kept in step with every insert.
//!
//! # Causality by vector clocks
//!
//! Every author's entries form one chain: an entry's sequence number must be exactly one more
//! than the largest sequence number of the same author among its ancestors. So the vector
//! clock of an entry (for each author, the largest sequence number in its ancestry, itself
//! included) decides ancestry exactly: `x` is an ancestor of (or equal to) `y` iff
//! `vc(y)[author(x)] >= seq(x)`. This answers the fold's "did this write see that one?",
//! the membership merge and `missing_for` without walking the graph.
//!
//! # Membership
//!
//! The genesis is its author's own `AddDevice`. The membership in force at an entry is
//! computed from its ancestry only: for each device, the latest `AddDevice`/`RemoveDevice`
//! operations about it (those no other such operation descends from). A device is a member
//! when it has such operations and all of them are adds, so a removal concurrent with a
//! re-add wins until someone adds the device again after seeing both. Any member may add or
//! remove devices. Entries that a removed device made concurrently with its removal stay
//! valid (they did not see it); the sync layer refuses peers that are not members at its heads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use super::entry::{Entry, Op, MAX_DEVICE_NAME_LEN, MAX_ETAG_LEN};
use super::error::EntryFault;
use super::path::is_within;
use super::types::{DeviceKey, EntryHash, LibraryId};

/// The membership operations in force, per device: (node index, is an add).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Membership {
    pub(crate) frontier: BTreeMap<DeviceKey, Vec<(u32, bool)>>,
}

impl Membership {
    pub(crate) fn is_member(&self, d: &DeviceKey) -> bool {
        match self.frontier.get(d) {
            Some(ops) => !ops.is_empty() && ops.iter().all(|o| o.1),
            None => false,
        }
    }
    pub(crate) fn members(&self) -> Vec<DeviceKey> {
        self.frontier
            .keys()
            .filter(|d| self.is_member(d))
            .copied()
            .collect()
    }
}

/// One entry as the index knows it.
#[derive(Debug)]
pub(crate) struct Node {
    pub hash: EntryHash,
    pub lamport: u64,
    pub author: u16,
    pub seq: u64,
    pub vc: Box<[u64]>,
    pub members: Arc<Membership>,
}

#[derive(Debug)]
pub(crate) struct Author {
    pub key: DeviceKey,
    pub vk: VerifyingKey,
    /// Node indices of this author's entries, by `seq - 1`.
    pub entries: Vec<u32>,
}

/// What [`LibIndex::check`] found out about an entry, ready for [`LibIndex::push`].
pub(crate) struct Checked {
    /// The author's index, or `None` for a genesis (the author is registered by `push`).
    author: Option<u16>,
    pub vk: VerifyingKey,
    /// A key `push` must register (the genesis author or a newly added device).
    new_key: Option<(DeviceKey, VerifyingKey)>,
    vc: Box<[u64]>,
    members: Arc<Membership>,
}

/// A point to roll back to when a batch fails part way.
pub(crate) struct Snapshot {
    nodes: usize,
    authors: usize,
    heads: BTreeSet<EntryHash>,
}

/// One library's DAG index.
#[derive(Debug)]
pub(crate) struct LibIndex {
    pub library: LibraryId,
    pub nodes: Vec<Node>,
    by_hash: HashMap<EntryHash, u32>,
    heads: BTreeSet<EntryHash>,
    pub authors: Vec<Author>,
    author_idx: HashMap<DeviceKey, u16>,
}

/// Parses a public key the chain can use: a valid point of full order.
pub(crate) fn usable_key(k: &DeviceKey) -> Result<VerifyingKey, EntryFault> {
    match VerifyingKey::from_bytes(&k.0) {
        Ok(vk) if !vk.is_weak() => Ok(vk),
        _ => Err(EntryFault::BadKey(k.to_hex())),
    }
}

/// Checks the parts of an operation that do not depend on the DAG.
pub(crate) fn check_op(op: &Op) -> Result<(), EntryFault> {
    match op {
        Op::Put {
            nextcloud: Some(nc),
            ..
        } if nc.etag.len() > MAX_ETAG_LEN => Err(EntryFault::FieldTooLong("etag")),
        Op::AddDevice { name, .. } if name.len() > MAX_DEVICE_NAME_LEN => {
            Err(EntryFault::FieldTooLong("device name"))
        }
        Op::Rename { from, to } if is_within(to.as_str(), from.as_str()) => {
            Err(EntryFault::RenameIntoItself)
        }
        _ => Ok(()),
    }
}

impl LibIndex {
    pub(crate) fn new(library: LibraryId) -> Self {
        LibIndex {
            library,
            nodes: Vec::new(),
            by_hash: HashMap::new(),
            heads: BTreeSet::new(),
            authors: Vec::new(),
            author_idx: HashMap::new(),
        }
    }

    /// An index rebuilt from saved parts (a [`super::checkpoint`]): `None` when they do not
    /// fit together (a node out of its author's sequence, a repeated hash, an unknown head).
    pub(crate) fn restore(
        library: LibraryId,
        keys: Vec<(DeviceKey, VerifyingKey)>,
        nodes: Vec<Node>,
        heads: BTreeSet<EntryHash>,
    ) -> Option<Self> {
        let mut index = LibIndex::new(library);
        for (key, vk) in keys {
            let a = u16::try_from(index.authors.len()).ok()?;
            if index.author_idx.insert(key, a).is_some() {
                return None;
            }
            index.authors.push(Author {
                key,
                vk,
                entries: Vec::new(),
            });
        }
        index.by_hash.reserve(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let i = u32::try_from(i).ok()?;
            let entries = &mut index.authors.get_mut(usize::from(n.author))?.entries;
            if n.seq != entries.len() as u64 + 1 {
                return None;
            }
            entries.push(i);
            if index.by_hash.insert(n.hash, i).is_some() {
                return None;
            }
        }
        if heads.is_empty() || !heads.iter().all(|h| index.by_hash.contains_key(h)) {
            return None;
        }
        index.nodes = nodes;
        index.heads = heads;
        Some(index)
    }

    /// Node indices paired with their hashes (what a read checks the stored bytes against).
    pub(crate) fn with_hashes(&self, nodes: &[u32]) -> Vec<(u32, EntryHash)> {
        nodes
            .iter()
            .map(|&i| (i, self.nodes[i as usize].hash))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn get(&self, h: &EntryHash) -> Option<u32> {
        self.by_hash.get(h).copied()
    }

    /// The heads, ascending.
    pub(crate) fn heads(&self) -> Vec<EntryHash> {
        self.heads.iter().copied().collect()
    }

    /// True if node `x` is an ancestor of node `y` or `y` itself.
    pub(crate) fn is_ancestor_or_self(&self, x: u32, y: u32) -> bool {
        let nx = &self.nodes[x as usize];
        let ny = &self.nodes[y as usize];
        ny.vc.get(usize::from(nx.author)).copied().unwrap_or(0) >= nx.seq
    }

    /// The membership in force at the current heads.
    pub(crate) fn current_members(&self) -> Membership {
        let heads: Vec<u32> = self.heads.iter().filter_map(|h| self.get(h)).collect();
        if heads.is_empty() {
            return Membership::default();
        }
        (*self.merge_members(&heads)).clone()
    }

    /// All nodes in the deterministic topological order: by Lamport clock, then hash.
    pub(crate) fn topo_order(&self) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..self.nodes.len() as u32).collect();
        idx.sort_unstable_by_key(|&i| {
            let n = &self.nodes[i as usize];
            (n.lamport, n.hash)
        });
        idx
    }

    /// The nodes that are not ancestors of (or equal to) any of `their_heads`, in topological
    /// order. Unknown hashes in `their_heads` are ignored.
    pub(crate) fn missing_for(&self, their_heads: &[EntryHash]) -> Vec<u32> {
        let mut known = vec![0u64; self.authors.len()];
        for h in their_heads {
            if let Some(i) = self.get(h) {
                for (k, v) in known.iter_mut().zip(self.nodes[i as usize].vc.iter()) {
                    *k = (*k).max(*v);
                }
            }
        }
        let mut out: Vec<u32> = Vec::new();
        for (a, author) in self.authors.iter().enumerate() {
            let from = usize::try_from(known[a]).unwrap_or(usize::MAX);
            if from < author.entries.len() {
                out.extend_from_slice(&author.entries[from..]);
            }
        }
        out.sort_unstable_by_key(|&i| {
            let n = &self.nodes[i as usize];
            (n.lamport, n.hash)
        });
        out
    }

    /// For each author, how many of its entries this index holds (= its largest sequence
    /// number here, since an author's entries form one chain).
    pub(crate) fn version_vector(&self) -> Vec<(DeviceKey, u64)> {
        self.authors
            .iter()
            .filter(|a| !a.entries.is_empty())
            .map(|a| (a.key, a.entries.len() as u64))
            .collect()
    }

    /// The first `limit` nodes the holder of `their` lacks, in topological order, and how
    /// many it lacks in all: the same answer as the head of
    /// [`LibIndex::missing_for_vector`], without sorting everything.
    ///
    /// Each author's entries form one chain whose Lamport clocks strictly increase (every
    /// entry has its author's previous one as an ancestor), so each author's missing suffix
    /// is already in topological order and a k-way merge of those suffixes yields the
    /// prefix in O(authors + limit · log authors). A pull of n entries in batches of b
    /// therefore costs O(n log authors) on the answering side instead of O(n²/b).
    pub(crate) fn missing_prefix_for_vector(
        &self,
        their: &[(DeviceKey, u64)],
        limit: usize,
    ) -> (Vec<u32>, usize) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut total = 0usize;
        // (clock, hash) of each author's next missing entry, with the author and position.
        let mut next = BinaryHeap::new();
        for (a, author) in self.authors.iter().enumerate() {
            let have = their
                .iter()
                .filter(|(k, _)| *k == author.key)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            let from = usize::try_from(have).unwrap_or(usize::MAX);
            if from < author.entries.len() {
                total += author.entries.len() - from;
                let n = &self.nodes[author.entries[from] as usize];
                next.push(Reverse((n.lamport, n.hash, a, from)));
            }
        }
        let mut out = Vec::with_capacity(limit.min(total));
        while out.len() < limit {
            let Some(Reverse((_, _, a, pos))) = next.pop() else {
                break;
            };
            let entries = &self.authors[a].entries;
            out.push(entries[pos]);
            if let Some(&i) = entries.get(pos + 1) {
                let n = &self.nodes[i as usize];
                next.push(Reverse((n.lamport, n.hash, a, pos + 1)));
            }
        }
        (out, total)
    }

    /// The nodes the holder of `their` lacks, in topological order.
    pub(crate) fn missing_for_vector(&self, their: &[(DeviceKey, u64)]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for author in &self.authors {
            let have = their
                .iter()
                .filter(|(k, _)| *k == author.key)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            let from = usize::try_from(have).unwrap_or(usize::MAX);
            if from < author.entries.len() {
                out.extend_from_slice(&author.entries[from..]);
            }
        }
        out.sort_unstable_by_key(|&i| {
            let n = &self.nodes[i as usize];
            (n.lamport, n.hash)
        });
        out
    }

    fn merge_members(&self, parents: &[u32]) -> Arc<Membership> {
        let first = &self.nodes[parents[0] as usize].members;
        if parents
            .iter()
            .all(|&p| Arc::ptr_eq(&self.nodes[p as usize].members, first))
        {
            return first.clone();
        }
        let mut union: BTreeMap<DeviceKey, Vec<(u32, bool)>> = BTreeMap::new();
        for &p in parents {
            for (d, ops) in &self.nodes[p as usize].members.frontier {
                union.entry(*d).or_default().extend_from_slice(ops);
            }
        }
        for ops in union.values_mut() {
            ops.sort_unstable();
            ops.dedup();
            let all = ops.clone();
            ops.retain(|&(x, _)| {
                !all.iter()
                    .any(|&(y, _)| y != x && self.is_ancestor_or_self(x, y))
            });
        }
        let merged = Membership { frontier: union };
        for &p in parents {
            if *self.nodes[p as usize].members == merged {
                return self.nodes[p as usize].members.clone();
            }
        }
        Arc::new(merged)
    }

    /// Checks that `e` (not yet in the index) may be added now: library, parents present,
    /// genesis rules, Lamport clock, sequence number, author membership and operation rules.
    /// The signature is checked separately (in batches) against the returned key.
    pub(crate) fn check(&self, e: &Entry) -> Result<Checked, EntryFault> {
        let m = e.meta();
        if m.library != self.library {
            return Err(EntryFault::WrongLibrary(m.library));
        }
        check_op(&m.op)?;
        let new_idx = self.nodes.len() as u32;
        let mut parents = Vec::with_capacity(e.parents().len());
        for p in e.parents() {
            parents.push(self.get(p).ok_or(EntryFault::MissingParent(*p))?);
        }
        if parents.is_empty() {
            if !self.nodes.is_empty() {
                return Err(EntryFault::SecondGenesis);
            }
            match &m.op {
                Op::AddDevice { device, .. } if *device == m.author && m.seq == 1 => {}
                _ => return Err(EntryFault::BadGenesis),
            }
            if m.lamport != 1 {
                return Err(EntryFault::BadLamport {
                    expected: 1,
                    got: m.lamport,
                });
            }
            let vk = usable_key(&m.author)?;
            let mut frontier = BTreeMap::new();
            frontier.insert(m.author, vec![(new_idx, true)]);
            return Ok(Checked {
                author: None,
                vk,
                new_key: Some((m.author, vk)),
                vc: Box::new([1]),
                members: Arc::new(Membership { frontier }),
            });
        }
        let expected_lamport = 1 + parents
            .iter()
            .map(|&p| self.nodes[p as usize].lamport)
            .max()
            .unwrap_or(0);
        if m.lamport != expected_lamport {
            return Err(EntryFault::BadLamport {
                expected: expected_lamport,
                got: m.lamport,
            });
        }
        if matches!(m.op, Op::Merge) && parents.len() < 2 {
            return Err(EntryFault::MergeNeedsParents);
        }
        let not_member = || EntryFault::NotMember(m.author.display_name());
        let a = *self.author_idx.get(&m.author).ok_or_else(not_member)?;
        let before = self.merge_members(&parents);
        if !before.is_member(&m.author) {
            return Err(not_member());
        }
        let mut vc = vec![0u64; self.authors.len()];
        for &p in &parents {
            for (k, v) in vc.iter_mut().zip(self.nodes[p as usize].vc.iter()) {
                *k = (*k).max(*v);
            }
        }
        let ai = usize::from(a);
        let expected_seq = vc[ai] + 1;
        if m.seq != expected_seq {
            return Err(EntryFault::BadSeq {
                expected: expected_seq,
                got: m.seq,
            });
        }
        if self.authors[ai].entries.len() as u64 >= m.seq {
            return Err(EntryFault::DuplicateSeq(m.seq));
        }
        vc[ai] = m.seq;
        let mut new_key = None;
        let members = match &m.op {
            Op::AddDevice { device, .. } | Op::RemoveDevice { device } => {
                let add = matches!(m.op, Op::AddDevice { .. });
                if add && !self.author_idx.contains_key(device) {
                    new_key = Some((*device, usable_key(device)?));
                }
                let mut after = (*before).clone();
                after.frontier.insert(*device, vec![(new_idx, add)]);
                Arc::new(after)
            }
            _ => before,
        };
        Ok(Checked {
            author: Some(a),
            vk: self.authors[ai].vk,
            new_key,
            vc: vc.into_boxed_slice(),
            members,
        })
    }

    /// Adds a checked entry; returns its node index (= its position in the stored order).
    pub(crate) fn push(&mut self, e: &Entry, c: Checked) -> u32 {
        let idx = self.nodes.len() as u32;
        if let Some((key, vk)) = c.new_key {
            if !self.author_idx.contains_key(&key) {
                self.author_idx.insert(key, self.authors.len() as u16);
                self.authors.push(Author {
                    key,
                    vk,
                    entries: Vec::new(),
                });
            }
        }
        let author = match c.author {
            Some(a) => a,
            None => self.author_idx.get(&e.meta().author).copied().unwrap_or(0),
        };
        self.authors[usize::from(author)].entries.push(idx);
        for p in e.parents() {
            self.heads.remove(p);
        }
        self.heads.insert(e.hash());
        self.by_hash.insert(e.hash(), idx);
        self.nodes.push(Node {
            hash: e.hash(),
            lamport: e.meta().lamport,
            author,
            seq: e.meta().seq,
            vc: c.vc,
            members: c.members,
        });
        idx
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.nodes.len(),
            authors: self.authors.len(),
            heads: self.heads.clone(),
        }
    }

    pub(crate) fn rollback(&mut self, s: Snapshot) {
        while self.nodes.len() > s.nodes {
            if let Some(n) = self.nodes.pop() {
                self.by_hash.remove(&n.hash);
                self.authors[usize::from(n.author)].entries.pop();
            }
        }
        while self.authors.len() > s.authors {
            if let Some(a) = self.authors.pop() {
                self.author_idx.remove(&a.key);
            }
        }
        self.heads = s.heads;
    }
}
