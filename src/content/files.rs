//! Blocks as files: `<data>/blocks/ab/cd/<64 hex>`, written so that a crash never leaves a
//! partial block under a real name.
//!
//! # Layout
//!
//! Two levels of 256 directories keyed by the first two bytes of the hash keep every
//! directory small (a million blocks is ~16 per leaf directory) without a per-directory
//! lookup cost. A block's name *is* its BLAKE3 hash, so any file can be checked on its own.
//!
//! # Atomic write
//!
//! ```text
//! create   ab/cd/<hex>.<pid>-<n>.tmp   (create_new: never clobbers)
//! write    all bytes
//! fsync    the file                    (its bytes are on disk before it has a real name)
//! rename   → ab/cd/<hex>               (atomic on POSIX: the name holds all or nothing)
//! fsync    ab/cd                       (the rename itself is durable; batched per ingest)
//! ```
//!
//! Any failure (ENOSPC included) removes the temporary file. After `kill -9` or power loss
//! only `*.tmp` files can be partial; [`sweep`] deletes them when the store opens.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ContentError;
use super::ids::BlockHash;

/// Name of the blocks directory inside the data directory.
pub const BLOCKS_DIR: &str = "blocks";
const TMP_SUFFIX: &str = ".tmp";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where block files live.
#[derive(Debug, Clone)]
pub struct BlockFiles {
    root: PathBuf,
}

impl BlockFiles {
    /// The block directory under `data_dir` (created if needed).
    pub fn open(data_dir: &Path) -> Result<Self, ContentError> {
        let root = data_dir.join(BLOCKS_DIR);
        fs::create_dir_all(&root).map_err(|e| ContentError::io("creating", &root, e))?;
        Ok(BlockFiles { root })
    }

    /// The root (`<data>/blocks`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The leaf directory of a block.
    pub fn dir_of(&self, h: &BlockHash) -> PathBuf {
        let hex = h.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4])
    }

    /// The file of a block.
    pub fn path_of(&self, h: &BlockHash) -> PathBuf {
        self.dir_of(h).join(h.to_hex())
    }

    /// Whether the block's file exists.
    pub fn exists(&self, h: &BlockHash) -> bool {
        self.path_of(h).is_file()
    }

    /// Writes `bytes` as block `h` atomically (see the module docs). The leaf directory is
    /// *not* fsync'd: it is added to `dirty_dirs`, and the caller syncs it with
    /// [`sync_dirs`](Self::sync_dirs) before the index names the block.
    pub fn write_atomic(
        &self,
        h: &BlockHash,
        bytes: &[u8],
        dirty_dirs: &mut HashSet<PathBuf>,
    ) -> Result<(), ContentError> {
        let dir = self.dir_of(h);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| ContentError::io("creating", &dir, e))?;
            // The new directories' own entries must be durable too.
            if let Some(parent) = dir.parent() {
                dirty_dirs.insert(parent.to_path_buf());
            }
            dirty_dirs.insert(self.root.clone());
        }
        let final_path = dir.join(h.to_hex());
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(
            "{}.{}-{n}{TMP_SUFFIX}",
            h.to_hex(),
            std::process::id()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| ContentError::io("creating", &tmp, e))?;
            f.write_all(bytes)
                .map_err(|e| ContentError::io("writing", &tmp, e))?;
            f.sync_data()
                .map_err(|e| ContentError::io("syncing", &tmp, e))?;
            drop(f);
            fs::rename(&tmp, &final_path).map_err(|e| ContentError::io("renaming", &tmp, e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        dirty_dirs.insert(dir);
        Ok(())
    }

    /// fsyncs each directory (making renames and new directories durable), then clears the set.
    pub fn sync_dirs(&self, dirty_dirs: &mut HashSet<PathBuf>) -> Result<(), ContentError> {
        // Leaves first, then parents, then the root: order does not matter for correctness
        // (each fsync covers its own entries), only that all happen before the commit.
        for d in dirty_dirs.drain() {
            let f = File::open(&d).map_err(|e| ContentError::io("opening", &d, e))?;
            f.sync_all()
                .map_err(|e| ContentError::io("syncing directory", &d, e))?;
        }
        Ok(())
    }

    /// Reads a block's bytes, unverified, refusing files larger than `max` (a damaged or
    /// planted file must not make us allocate without bound).
    pub fn read(&self, h: &BlockHash, max: u64) -> Result<Option<Vec<u8>>, ContentError> {
        let path = self.path_of(h);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ContentError::io("opening", &path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| ContentError::io("reading", &path, e))?
            .len();
        if len > max {
            return Err(ContentError::BlockTooLarge(len));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ContentError::io("reading", &path, e))?;
        Ok(Some(buf))
    }

    /// Removes a block's file (no error if it is already gone).
    pub fn remove(&self, h: &BlockHash) -> Result<(), ContentError> {
        let path = self.path_of(h);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::io("removing", &path, e)),
        }
    }
}

/// What [`sweep`] found in the block directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Temporary files removed (partial writes of an earlier run).
    pub removed_temp: u64,
    /// Block files found, by hash (the caller compares them with the index).
    pub blocks: Vec<BlockHash>,
    /// Files with other names, left alone.
    pub foreign: u64,
}

/// Walks `<data>/blocks`, deletes `*.tmp` files and lists the block files.
pub fn sweep(files: &BlockFiles) -> Result<Sweep, ContentError> {
    let mut out = Sweep::default();
    for l1 in read_dir(files.root())? {
        if !is_hex_name(&l1, 2) {
            continue;
        }
        for l2 in read_dir(&l1)? {
            if !is_hex_name(&l2, 2) {
                continue;
            }
            for f in read_dir(&l2)? {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if name.ends_with(TMP_SUFFIX) {
                    fs::remove_file(&f).map_err(|e| ContentError::io("removing", &f, e))?;
                    out.removed_temp += 1;
                } else if let Ok(h) = name.parse::<BlockHash>() {
                    out.blocks.push(h);
                } else {
                    out.foreign += 1;
                }
            }
        }
    }
    Ok(out)
}

fn read_dir(d: &Path) -> Result<Vec<PathBuf>, ContentError> {
    let mut v = Vec::new();
    for e in fs::read_dir(d).map_err(|e| ContentError::io("listing", d, e))? {
        let e = e.map_err(|e| ContentError::io("listing", d, e))?;
        v.push(e.path());
    }
    Ok(v)
}

fn is_hex_name(p: &Path, len: usize) -> bool {
    p.is_dir()
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == len && n.bytes().all(|b| b.is_ascii_hexdigit()))
}
