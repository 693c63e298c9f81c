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
//! An ingest stages its blocks ([`BlockFiles::stage`]: create + write, and `sync_file_range`
//! to start writeback at once) and publishes them in batches ([`BlockFiles::publish`]: fsync
//! each, then rename each): one flush per block in a row costs several milliseconds on a busy
//! disk, while a batch lets the kernel write the blocks back together. The order per file is
//! unchanged: its bytes are durable before it gets its real name. A group commit of many
//! small files ([`BlockFiles::publish_all`], called from [`commit`](super::commit)) goes one
//! step further and replaces the per-file fsyncs by one `syncfs`.
//!
//! Any failure (ENOSPC included) removes the temporary file. After `kill -9` or power loss
//! only `*.tmp` files can be partial; [`sweep`] deletes them when the store opens.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// The root directory, open for as long as the store: `syncfs` reports a write-back
    /// error only if it happened after the descriptor it is called on was opened, so a
    /// descriptor opened just before the call would miss an error in the write-back that
    /// `stage` started earlier. This one sees every error since the store opened (anyone's
    /// on the same filesystem, which only makes a commit fail when it need not have).
    root_fd: Arc<File>,
}

impl BlockFiles {
    /// The block directory under `data_dir` (created if needed).
    pub fn open(data_dir: &Path) -> Result<Self, ContentError> {
        let root = data_dir.join(BLOCKS_DIR);
        crate::owner_only::create_dir_all(&root)
            .and_then(|()| crate::owner_only::restrict(&root))
            .map_err(|e| ContentError::io("creating", &root, e))?;
        let root_fd = File::open(&root).map_err(|e| ContentError::io("opening", &root, e))?;
        Ok(BlockFiles {
            root,
            root_fd: Arc::new(root_fd),
        })
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

    /// Writes `bytes` as block `h` atomically (see the module docs): [`stage`](Self::stage)
    /// then [`publish`](Self::publish). The leaf directory is *not* fsync'd: it is added to
    /// `dirty_dirs`, and the caller syncs it with [`sync_dirs`](Self::sync_dirs) before the
    /// index names the block.
    pub fn write_atomic(
        &self,
        h: &BlockHash,
        bytes: &[u8],
        dirty_dirs: &mut HashSet<PathBuf>,
    ) -> Result<(), ContentError> {
        let mut pending = Pending::default();
        self.stage(h, bytes, &mut pending, dirty_dirs)?;
        self.publish(&mut pending)
    }

    /// Writes `bytes` to a new temporary file next to block `h`'s final name, without
    /// syncing it; [`publish`](Self::publish) later syncs and renames a whole batch, which
    /// lets the kernel write many blocks back together instead of one flush per block.
    pub fn stage(
        &self,
        h: &BlockHash,
        bytes: &[u8],
        pending: &mut Pending,
        dirty_dirs: &mut HashSet<PathBuf>,
    ) -> Result<(), ContentError> {
        let dir = self.dir_of(h);
        if !dir.is_dir() {
            crate::owner_only::create_dir_all(&dir)
                .map_err(|e| ContentError::io("creating", &dir, e))?;
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
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::owner_only::FILE_MODE)
            .open(&tmp)
            .map_err(|e| ContentError::io("creating", &tmp, e))?;
        if let Err(e) = f.write_all(bytes) {
            drop(f);
            let _ = fs::remove_file(&tmp);
            return Err(ContentError::io("writing", &tmp, e));
        }
        start_writeback(&f);
        pending.bytes += bytes.len() as u64;
        pending.items.push(Staged {
            file: Some(f),
            tmp,
            final_path,
        });
        dirty_dirs.insert(dir);
        Ok(())
    }

    /// fsyncs every staged file, then renames each to its real name. On any error every
    /// file not yet renamed is removed, so no partial block ever carries a real name.
    pub fn publish(&self, pending: &mut Pending) -> Result<(), ContentError> {
        self.publish_all(&mut [pending])
    }

    /// [`publish`](Self::publish) for the staged files of several writers at once (a group
    /// commit). Above [`SYNCFS_OVER_FILES`] files, one `syncfs` makes all their bytes
    /// durable instead of one fsync each: every fsync of a new file is a journal commit and
    /// a device cache flush (about 4 ms here), while `syncfs` pays that once for the batch.
    /// The order per file is the same as in `publish`: bytes durable, then the real name.
    /// On any error every file not yet renamed, in every batch, is removed.
    pub fn publish_all(&self, batches: &mut [&mut Pending]) -> Result<(), ContentError> {
        let files: usize = batches.iter().map(|p| p.items.len()).sum();
        let synced = if files > SYNCFS_OVER_FILES {
            self.syncfs()
        } else {
            Ok(false)
        };
        let r = match synced {
            Ok(true) => {
                // Durable: the descriptors are no longer needed.
                for p in batches.iter_mut() {
                    for item in &mut p.items {
                        item.file = None;
                    }
                }
                Ok(())
            }
            Ok(false) => sync_each(batches),
            Err(e) => Err(e),
        };
        let r = r.and_then(|()| {
            for p in batches.iter_mut() {
                while let Some(item) = p.items.pop() {
                    if let Err(e) = fs::rename(&item.tmp, &item.final_path) {
                        let _ = fs::remove_file(&item.tmp);
                        return Err(ContentError::io("renaming", &item.tmp, e));
                    }
                }
                p.bytes = 0;
            }
            Ok(())
        });
        if r.is_err() {
            for p in batches.iter_mut() {
                p.discard();
            }
        }
        r
    }

    /// Makes the renames and new directories in `dirty_dirs` durable, then clears the set.
    ///
    /// A few directories are fsync'd one by one. Many (a large ingest touches one leaf
    /// directory per block, since hashes scatter) are made durable with one `syncfs` of the
    /// block store's filesystem instead: every directory fsync costs a device cache flush
    /// (about 2 ms here, 1,100 of them for a 1 GiB file), while one `syncfs` commits the
    /// journal and flushes once. `syncfs` reports write-back errors since Linux 5.8.
    pub fn sync_dirs(&self, dirty_dirs: &mut HashSet<PathBuf>) -> Result<(), ContentError> {
        if dirty_dirs.len() > SYNCFS_OVER_DIRS && self.syncfs()? {
            dirty_dirs.clear();
            return Ok(());
        }
        // Order does not matter for correctness (each fsync covers its own entries), only
        // that all happen before the commit.
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

    /// `syncfs` of the filesystem holding the blocks; Ok(false) where it is not available.
    fn syncfs(&self) -> Result<bool, ContentError> {
        syncfs(&self.root_fd, &self.root)
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

/// Asks the kernel to start writing the file's dirty pages now, without waiting.
///
/// Without this, a batch's fsyncs each find their file still unwritten and unallocated
/// (delayed allocation), so each does its own writeback and journal commit, one after the
/// other. With the writeback already under way, the first fsync of a batch commits the
/// journal for the whole batch and the rest return almost at once. A hint only: errors are
/// ignored here and reported by the fsync that follows.
#[cfg(target_os = "linux")]
fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a file descriptor we own and keep open for its duration;
    // it reads no memory of ours.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File) {}

/// Above this many dirty directories, [`BlockFiles::sync_dirs`] uses one `syncfs`.
const SYNCFS_OVER_DIRS: usize = 8;
/// Above this many staged files, [`BlockFiles::publish_all`] uses one `syncfs`.
pub const SYNCFS_OVER_FILES: usize = 2;

/// fsyncs each staged file (keeping its descriptor's own write-back error report).
fn sync_each(batches: &mut [&mut Pending]) -> Result<(), ContentError> {
    for p in batches.iter_mut() {
        for item in &mut p.items {
            if let Some(f) = item.file.take() {
                f.sync_data()
                    .map_err(|e| ContentError::io("syncing", &item.tmp, e))?;
            }
        }
    }
    Ok(())
}

/// `syncfs` on the filesystem of `fd` (the directory `dir`). Ok(false) where it is not
/// available.
#[cfg(target_os = "linux")]
fn syncfs(fd: &File, dir: &Path) -> Result<bool, ContentError> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a file descriptor that stays open for its duration.
    let r = unsafe { libc::syncfs(fd.as_raw_fd()) };
    if r == 0 {
        Ok(true)
    } else {
        Err(ContentError::io(
            "syncing filesystem of",
            dir,
            io::Error::last_os_error(),
        ))
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_: &File, _: &Path) -> Result<bool, ContentError> {
    Ok(false)
}

struct Staged {
    file: Option<File>,
    tmp: PathBuf,
    final_path: PathBuf,
}

/// Block files written under temporary names and not yet published. Dropping it removes
/// them (a writer abandoned half-way leaves nothing behind).
#[derive(Default)]
pub struct Pending {
    items: Vec<Staged>,
    bytes: u64,
}

impl Pending {
    /// Number of staged files.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes staged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Removes every staged temporary file.
    pub fn discard(&mut self) {
        for item in self.items.drain(..) {
            drop(item.file);
            let _ = fs::remove_file(&item.tmp);
        }
        self.bytes = 0;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.discard();
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
