//! The block index and the cache bookkeeping, as tables in the data directory's one redb
//! database (see [`crate::db`]).
//!
//! # Tables
//!
//! | table | key → value | meaning |
//! |---|---|---|
//! | `content_blocks` | block hash → (size, last use) | every block whose file is in place |
//! | `content_manifests` | manifest id → encoded manifest | every stored manifest |
//! | `content_current` | (library, manifest id) → () | what each library's current tree needs |
//! | `content_holders` | manifest id → n | how many libraries hold the manifest as current |
//! | `content_needed` | block hash → n | how many held *and stored* manifests list the block |
//! | `content_lru` | (last use, block hash) → () | stored blocks that nothing needs, oldest first |
//! | `content_meta` | name → u64 | `total_bytes` of stored blocks, the `clock` |
//!
//! # Invariants (each write transaction keeps them)
//!
//! - `content_needed[b]` = the number of distinct manifests `m` with `holders[m] > 0`, `m`
//!   stored, and `b ∈ m` (a manifest counts a repeated block once). A row with n = 0 is
//!   deleted.
//! - `content_lru` holds exactly the blocks in `content_blocks` without a `content_needed`
//!   row, keyed by their last use: eviction pops from its front, so picking victims costs
//!   nothing however big the store is, and a needed block can never be picked.
//! - `total_bytes` = the sum of sizes in `content_blocks`.
//!
//! "Last use" is a logical clock (a counter persisted in `content_meta`), not wall time, so
//! it never runs backwards. A block is used when it is written, read, listed in a finished
//! ingest, or stops being needed (a version that was just replaced is the likeliest to be
//! asked for by a peer that is behind).

use std::collections::HashSet;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::error::ContentError;
use super::ids::{BlockHash, ManifestId};
use super::manifest::Manifest;

/// Block hash → (size, last use).
pub const BLOCKS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("content_blocks");
/// Manifest id → encoded manifest.
pub const MANIFESTS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("content_manifests");
/// (library, manifest id) → ().
pub const CURRENT: TableDefinition<([u8; 16], [u8; 32]), ()> =
    TableDefinition::new("content_current");
/// Manifest id → number of libraries holding it.
pub const HOLDERS: TableDefinition<[u8; 32], u64> = TableDefinition::new("content_holders");
/// Block hash → number of held, stored manifests listing it.
pub const NEEDED: TableDefinition<[u8; 32], u64> = TableDefinition::new("content_needed");
/// (last use, block hash) → (): evictable blocks, least recently used first.
pub const LRU: TableDefinition<(u64, [u8; 32]), ()> = TableDefinition::new("content_lru");
/// Counters.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("content_meta");

/// `content_meta` key: bytes of stored blocks.
pub const TOTAL_BYTES: &str = "total_bytes";
/// `content_meta` key: the last-use clock.
pub const CLOCK: &str = "clock";

fn db<E: Into<redb::Error>>(e: E) -> ContentError {
    ContentError::db(e)
}

/// All content tables opened in one write transaction.
pub struct Tables<'t> {
    pub blocks: Table<'t, [u8; 32], (u64, u64)>,
    pub manifests: Table<'t, [u8; 32], &'static [u8]>,
    pub current: Table<'t, ([u8; 16], [u8; 32]), ()>,
    pub holders: Table<'t, [u8; 32], u64>,
    pub needed: Table<'t, [u8; 32], u64>,
    pub lru: Table<'t, (u64, [u8; 32]), ()>,
    pub meta: Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    /// Opens (creating) every table.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, ContentError> {
        Ok(Tables {
            blocks: txn.open_table(BLOCKS).map_err(db)?,
            manifests: txn.open_table(MANIFESTS).map_err(db)?,
            current: txn.open_table(CURRENT).map_err(db)?,
            holders: txn.open_table(HOLDERS).map_err(db)?,
            needed: txn.open_table(NEEDED).map_err(db)?,
            lru: txn.open_table(LRU).map_err(db)?,
            meta: txn.open_table(META).map_err(db)?,
        })
    }

    fn meta_get(&self, key: &str) -> Result<u64, ContentError> {
        Ok(self
            .meta
            .get(key)
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Bytes of stored blocks.
    pub fn total_bytes(&self) -> Result<u64, ContentError> {
        self.meta_get(TOTAL_BYTES)
    }

    fn add_total(&mut self, delta: i128) -> Result<(), ContentError> {
        let t = i128::from(self.total_bytes()?) + delta;
        let t = u64::try_from(t.max(0)).unwrap_or(u64::MAX);
        self.meta.insert(TOTAL_BYTES, t).map_err(db)?;
        Ok(())
    }

    /// Persists the clock (monotonic: never lowers it).
    pub fn save_clock(&mut self, clock: u64) -> Result<(), ContentError> {
        if clock > self.meta_get(CLOCK)? {
            self.meta.insert(CLOCK, clock).map_err(db)?;
        }
        Ok(())
    }

    fn block(&self, h: &BlockHash) -> Result<Option<(u64, u64)>, ContentError> {
        Ok(self.blocks.get(h.0).map_err(db)?.map(|v| v.value()))
    }

    fn is_needed(&self, h: &BlockHash) -> Result<bool, ContentError> {
        Ok(self.needed.get(h.0).map_err(db)?.is_some())
    }

    /// Records a block whose file is in place (durably). Returns true if it was new; an
    /// existing row only has its last use moved forward.
    pub fn insert_block(
        &mut self,
        h: &BlockHash,
        size: u64,
        stamp: u64,
    ) -> Result<bool, ContentError> {
        if self.block(h)?.is_some() {
            self.touch(h, stamp)?;
            return Ok(false);
        }
        self.blocks.insert(h.0, (size, stamp)).map_err(db)?;
        if !self.is_needed(h)? {
            self.lru.insert((stamp, h.0), ()).map_err(db)?;
        }
        self.add_total(i128::from(size))?;
        Ok(true)
    }

    /// Forgets a block (the caller removes its file after the commit). Returns its size.
    pub fn remove_block(&mut self, h: &BlockHash) -> Result<Option<u64>, ContentError> {
        let Some((size, last)) = self.blocks.remove(h.0).map_err(db)?.map(|v| v.value()) else {
            return Ok(None);
        };
        self.lru.remove((last, h.0)).map_err(db)?;
        self.add_total(-i128::from(size))?;
        Ok(Some(size))
    }

    /// Moves a stored block's last use forward to `stamp`.
    pub fn touch(&mut self, h: &BlockHash, stamp: u64) -> Result<(), ContentError> {
        let Some((size, last)) = self.block(h)? else {
            return Ok(());
        };
        if stamp <= last {
            return Ok(());
        }
        self.blocks.insert(h.0, (size, stamp)).map_err(db)?;
        if self.lru.remove((last, h.0)).map_err(db)?.is_some() {
            self.lru.insert((stamp, h.0), ()).map_err(db)?;
        }
        Ok(())
    }

    /// Adds `delta` (+1 or −1) to the need count of every distinct block of `m`.
    fn need_blocks(&mut self, m: &Manifest, up: bool, stamp: u64) -> Result<(), ContentError> {
        let mut seen = HashSet::with_capacity(m.blocks.len());
        for b in &m.blocks {
            if !seen.insert(b.hash) {
                continue;
            }
            let h = b.hash.0;
            let n = self
                .needed
                .get(h)
                .map_err(db)?
                .map(|v| v.value())
                .unwrap_or(0);
            let stored = self.block(&b.hash)?;
            if up {
                self.needed.insert(h, n + 1).map_err(db)?;
                if n == 0 {
                    if let Some((_, last)) = stored {
                        self.lru.remove((last, h)).map_err(db)?;
                    }
                }
            } else if n <= 1 {
                self.needed.remove(h).map_err(db)?;
                if let Some((size, last)) = stored {
                    // No longer needed: evictable, counted as used now.
                    let stamp = stamp.max(last);
                    self.blocks.insert(h, (size, stamp)).map_err(db)?;
                    self.lru.insert((stamp, h), ()).map_err(db)?;
                }
            } else {
                self.needed.insert(h, n - 1).map_err(db)?;
            }
        }
        Ok(())
    }

    /// The stored manifest, decoded.
    pub fn manifest(&self, id: &ManifestId) -> Result<Option<Manifest>, ContentError> {
        match self.manifests.get(id.0).map_err(db)? {
            Some(v) => Ok(Some(Manifest::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a manifest (already checked: `id` = BLAKE3(`encoded`)). If libraries already
    /// hold it, its blocks become needed now.
    pub fn store_manifest(
        &mut self,
        id: &ManifestId,
        encoded: &[u8],
        m: &Manifest,
        stamp: u64,
    ) -> Result<(), ContentError> {
        if self.manifests.get(id.0).map_err(db)?.is_some() {
            return Ok(());
        }
        self.manifests.insert(id.0, encoded).map_err(db)?;
        if self.holders(id)? > 0 {
            self.need_blocks(m, true, stamp)?;
        }
        Ok(())
    }

    fn holders(&self, id: &ManifestId) -> Result<u64, ContentError> {
        Ok(self
            .holders
            .get(id.0)
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Marks `id` as needed by `lib`'s current tree.
    pub fn hold(&mut self, lib: [u8; 16], id: &ManifestId, stamp: u64) -> Result<(), ContentError> {
        if self.current.insert((lib, id.0), ()).map_err(db)?.is_some() {
            return Ok(());
        }
        let n = self.holders(id)?;
        self.holders.insert(id.0, n + 1).map_err(db)?;
        if n == 0 {
            if let Some(m) = self.manifest(id)? {
                self.need_blocks(&m, true, stamp)?;
            }
        }
        Ok(())
    }

    /// Un-marks `id` for `lib`.
    pub fn release(
        &mut self,
        lib: [u8; 16],
        id: &ManifestId,
        stamp: u64,
    ) -> Result<(), ContentError> {
        if self.current.remove((lib, id.0)).map_err(db)?.is_none() {
            return Ok(());
        }
        let n = self.holders(id)?;
        if n <= 1 {
            self.holders.remove(id.0).map_err(db)?;
            if let Some(m) = self.manifest(id)? {
                self.need_blocks(&m, false, stamp)?;
            }
        } else {
            self.holders.insert(id.0, n - 1).map_err(db)?;
        }
        Ok(())
    }

    /// The manifests `lib` holds.
    pub fn current_of(&self, lib: [u8; 16]) -> Result<Vec<ManifestId>, ContentError> {
        let mut out = Vec::new();
        for item in self
            .current
            .range((lib, [0u8; 32])..=(lib, [0xffu8; 32]))
            .map_err(db)?
        {
            let (k, _) = item.map_err(db)?;
            out.push(ManifestId(k.value().1));
        }
        Ok(out)
    }
}
