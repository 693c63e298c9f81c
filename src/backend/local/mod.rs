//! A plain folder on this machine as a [`Backend`]: what `node --dir` keeps in sync.
//!
//! A library's [`Root::folder`] is the folder's absolute path, without its leading `/` as
//! the engine keeps library folders (a leading `/` is accepted too; the owner is unused).
//! Writes
//! never leave a half-written file under a real name: the bytes go to a temporary file in
//! the same directory, are flushed to disk, get their modification time, and are renamed
//! over the name in one step. Nothing is ever deleted outright: a delete, and every file a
//! write replaces, moves into `.harp/trash/<when>/` under the folder, so a peer's change
//! that should not have happened can be undone by hand.
//!
//! ETags are made from what the file system keeps (modification time, size, inode), so an
//! edit by anyone changes them and the lost-update guard ([`WriteOptions::if_match`]) holds
//! against a user editing the file while a peer's version is being written. Folders have
//! no ETag: a folder's modification time does not change when something deep below it does,
//! so the engine must look inside every time.
//!
//! The checksum a write carries is listed back for that file while it is unchanged (same
//! size, time and inode), which is how the engine recognises its own writes; an edit makes
//! the file a user's again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{Backend, BackendError, ByteStream, Depth, Item, Root, WriteOptions, Written};

pub mod ignore;
pub mod trash;
pub mod watch;

pub use self::ignore::Ignores;

/// How this backend names itself in errors.
const NAME: &str = "the local folder";
/// harpbridge's own folder inside a synced folder: trash and temporary files. Never listed.
pub const HARP_DIR: &str = ".harp";
/// Bytes read per chunk of a file.
const CHUNK: usize = 1 << 20;

/// Local folders, each library one of them.
#[derive(Debug, Default, Clone)]
pub struct LocalDir {
    /// Checksums of our own writes, by absolute path, with the state they left the file in.
    written: Arc<Mutex<HashMap<PathBuf, (FileState, String)>>>,
    /// What each folder leaves out ([`ignore`]).
    ignores: Ignores,
}

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    size: u64,
    mtime_ns: i128,
    inode: u64,
}

impl FileState {
    fn of(meta: &std::fs::Metadata) -> FileState {
        FileState {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            inode: meta.ino(),
        }
    }

    fn etag(&self) -> String {
        format!("{:x}-{:x}-{:x}", self.mtime_ns, self.size, self.inode)
    }
}

pub(super) fn io_error(path: &Path, e: std::io::Error) -> BackendError {
    let shown = path.display().to_string();
    match e.kind() {
        std::io::ErrorKind::NotFound => BackendError::NotFound(shown),
        std::io::ErrorKind::AlreadyExists => BackendError::AlreadyExists(shown),
        std::io::ErrorKind::StorageFull => BackendError::Full {
            backend: NAME,
            path: shown,
        },
        _ => BackendError::Io {
            path: shown,
            source: e,
        },
    }
}

/// The folder `root` names, as an absolute path. The whole file system (`/`) is refused:
/// its trash would be `/.harp`.
pub fn folder_path(root: Root<'_>) -> Result<PathBuf, BackendError> {
    let folder = root.folder.trim_start_matches('/');
    if folder.is_empty() {
        return Err(BackendError::Malformed {
            backend: NAME,
            message: "the root of the file system cannot be a synced folder".to_owned(),
        });
    }
    Ok(Path::new("/").join(folder))
}

/// The absolute path of `rel` in `root`, refusing anything that would leave the folder.
fn resolve(root: Root<'_>, rel: &str) -> Result<PathBuf, BackendError> {
    let base = folder_path(root)?;
    if rel.is_empty() {
        return Ok(base);
    }
    let rel_path = Path::new(rel);
    let inside = rel_path
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let first = rel.split('/').next().unwrap_or("");
    if !inside || first == HARP_DIR {
        return Err(BackendError::Malformed {
            backend: NAME,
            message: format!("{rel:?} is not a path inside the folder"),
        });
    }
    Ok(base.join(rel_path))
}

/// `rel` joined under `parent` (`""` is the folder itself).
fn child_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

fn unix_s(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

impl LocalDir {
    pub fn new() -> Self {
        LocalDir::default()
    }

    fn item(&self, path: &Path, rel: String, meta: &std::fs::Metadata) -> Item {
        let state = FileState::of(meta);
        let checksums = if meta.is_file() {
            let written = crate::locks::lock(&self.written);
            match written.get(path) {
                Some((s, sum)) if *s == state => vec![sum.clone()],
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        Item {
            path: rel,
            is_dir: meta.is_dir(),
            etag: meta.is_file().then(|| state.etag()),
            fileid: Some(meta.ino()),
            size: Some(if meta.is_file() { meta.len() } else { 0 }),
            mtime: meta.modified().ok().and_then(unix_s),
            content_type: None,
            permissions: None,
            checksums,
        }
    }

    /// What `folder` leaves out ([`ignore`]).
    pub fn ignores(&self) -> &Ignores {
        &self.ignores
    }

    /// Whether the file at `path` is as this backend's own write left it (no one changed
    /// it since): its watcher's events are echoes, with nothing to record.
    pub fn is_own_write(&self, path: &Path) -> bool {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return false;
        };
        crate::locks::lock(&self.written)
            .get(path)
            .is_some_and(|(state, _)| *state == FileState::of(&meta))
    }

    /// Refuses to write at a path the folder leaves out.
    fn check_wanted(&self, folder: &Path, rel: &str, is_dir: bool) -> Result<(), BackendError> {
        if self.ignores.ignored(folder, rel, is_dir) {
            return Err(BackendError::Ignored(
                folder.join(rel).display().to_string(),
            ));
        }
        Ok(())
    }

    fn list_blocking(
        &self,
        folder: &Path,
        path: &Path,
        rel: &str,
        depth: Depth,
    ) -> Result<Vec<Item>, BackendError> {
        let path = path.to_owned();
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
        let mut items = vec![self.item(&path, rel.to_owned(), &meta)];
        if depth == Depth::One && meta.is_dir() {
            let rules = self.ignores.rules(folder);
            let entries = std::fs::read_dir(&path).map_err(|e| io_error(&path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error(&path, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    tracing::warn!(folder = %path.display(), "skipping a name that is not UTF-8");
                    continue;
                };
                if rel.is_empty() && name == HARP_DIR {
                    continue;
                }
                let child = entry.path();
                // Symlinks are not followed: what they point at may be outside the folder.
                let Ok(meta) = std::fs::symlink_metadata(&child) else {
                    continue; // gone meanwhile
                };
                if !(meta.is_file() || meta.is_dir()) {
                    continue;
                }
                let child_rel = child_rel(rel, &name);
                if ignore::is_ignored(&rules, &child_rel, meta.is_dir()) {
                    continue;
                }
                items.push(self.item(&child, child_rel, &meta));
            }
        }
        Ok(items)
    }

    fn check_guard(path: &Path, options: &WriteOptions) -> Result<bool, BackendError> {
        let shown = || path.display().to_string();
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                if options.if_absent || meta.is_dir() {
                    return Err(BackendError::PreconditionFailed(shown()));
                }
                if let Some(expected) = &options.if_match {
                    if FileState::of(&meta).etag() != *expected {
                        return Err(BackendError::PreconditionFailed(shown()));
                    }
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if options.if_match.is_some() {
                    return Err(BackendError::PreconditionFailed(shown()));
                }
                Ok(false)
            }
            Err(e) => Err(io_error(path, e)),
        }
    }
}

/// Whether `name` is one of [`temporary_beside`]'s names.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name.ends_with(".tmp")
        && name
            .rsplit_once(".harp-")
            .is_some_and(|(_, rest)| rest.len() == 16 + 4)
}

/// Removes the temporary files of writes that a crash or a kill cut short, anywhere in
/// `folder` (they are never listed, so nothing else would); returns how many.
pub fn remove_temporaries(folder: &Path) -> usize {
    let mut removed = 0;
    let mut dirs = vec![folder.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !(dir == folder && name == HARP_DIR) {
                    dirs.push(entry.path());
                }
            } else if kind.is_file()
                && is_temporary(name)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

/// A temporary name beside `path`, hidden and unlikely to be taken.
fn temporary_beside(path: &Path) -> PathBuf {
    let mut random = [0u8; 8];
    let suffix = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random),
        Err(_) => u64::from(std::process::id()),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.harp-{suffix:016x}.tmp"))
}

#[async_trait::async_trait]
impl Backend for LocalDir {
    async fn list(
        &self,
        root: Root<'_>,
        rel: &str,
        depth: Depth,
    ) -> Result<Vec<Item>, BackendError> {
        let path = resolve(root, rel)?;
        let folder = folder_path(root)?;
        let (this, rel) = (self.clone(), rel.to_owned());
        blocking(move || this.list_blocking(&folder, &path, &rel, depth)).await
    }

    async fn read(&self, root: Root<'_>, rel: &str) -> Result<ByteStream, BackendError> {
        let path = resolve(root, rel)?;
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
        let opened = file.metadata().map_err(|e| io_error(&path, e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        tokio::task::spawn_blocking(move || loop {
            let mut buf = vec![0u8; CHUNK];
            let item = match file.read(&mut buf) {
                // A file written to while it was read is not one version: the reader is
                // told, and reads it again once it has settled.
                Ok(0) => match file.metadata() {
                    Ok(now) if FileState::of(&now) == FileState::of(&opened) => return,
                    Ok(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "the file changed while it was read",
                    )),
                    Err(e) => Err(e),
                },
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let last = item.is_err();
            if tx.blocking_send(item).is_err() || last {
                return;
            }
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
    }

    async fn write(
        &self,
        root: Root<'_>,
        rel: &str,
        mut body: ByteStream,
        size: u64,
        options: &WriteOptions,
    ) -> Result<Written, BackendError> {
        let path = resolve(root, rel)?;
        let folder = folder_path(root)?;
        self.check_wanted(&folder, rel, false)?;
        let parent = path.parent().unwrap_or(&folder).to_owned();
        if !parent.is_dir() {
            return Err(BackendError::Conflict(path.display().to_string()));
        }
        LocalDir::check_guard(&path, options)?;
        let temp = temporary_beside(&path);
        let file = std::fs::File::create(&temp).map_err(|e| io_error(&temp, e))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let writing = {
            let temp = temp.clone();
            tokio::task::spawn_blocking(move || -> Result<(u64, std::fs::File), BackendError> {
                let mut file = file;
                let mut written = 0u64;
                while let Some(chunk) = rx.blocking_recv() {
                    file.write_all(&chunk).map_err(|e| io_error(&temp, e))?;
                    written += chunk.len() as u64;
                }
                Ok((written, file))
            })
        };
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    if tx.send(bytes).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let outcome = match writing.await {
            Ok(r) => r,
            Err(e) => Err(BackendError::Io {
                path: temp.display().to_string(),
                source: std::io::Error::other(e),
            }),
        };
        let (this, options) = (self.clone(), options.clone());
        let (path2, temp2) = (path.clone(), temp.clone());
        let finish = move || -> Result<Written, BackendError> {
            let (path, temp) = (path2, temp2);
            if let Some(e) = failure {
                return Err(BackendError::ReadCut(e));
            }
            let (written, file) = outcome?;
            if written != size {
                return Err(BackendError::ReadCut(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{written} bytes of {size}"),
                )));
            }
            if let Some(mtime) = options.mtime.and_then(|s| u64::try_from(s).ok()) {
                let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
            }
            file.sync_all().map_err(|e| io_error(&temp, e))?;
            drop(file);
            // Looked at again just before the rename: the window in which a user's edit
            // could still be replaced is this one system call.
            let existed = LocalDir::check_guard(&path, &options)?;
            if existed {
                trash::keep(&folder, &path)?;
            }
            std::fs::rename(&temp, &path).map_err(|e| io_error(&path, e))?;
            if let Ok(dir) = std::fs::File::open(&parent) {
                let _ = dir.sync_all();
            }
            let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
            let state = FileState::of(&meta);
            if let Some(sum) = &options.checksum {
                crate::locks::lock(&this.written).insert(path.clone(), (state, sum.clone()));
            }
            Ok(Written {
                created: !existed,
                etag: Some(state.etag()),
                fileid: Some(meta.ino()),
            })
        };
        let result = blocking(finish).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    async fn mkdir(&self, root: Root<'_>, rel: &str) -> Result<Written, BackendError> {
        let path = resolve(root, rel)?;
        self.check_wanted(&folder_path(root)?, rel, true)?;
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackendError::Conflict(path.display().to_string()))
            }
            Err(e) => return Err(io_error(&path, e)),
        }
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
        Ok(Written {
            created: true,
            etag: None,
            fileid: Some(meta.ino()),
        })
    }

    async fn rename(
        &self,
        root: Root<'_>,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Written, BackendError> {
        let source = resolve(root, from)?;
        let target = resolve(root, to)?;
        let folder = folder_path(root)?;
        self.check_wanted(&folder, to, source.is_dir())?;
        let this = self.clone();
        blocking(move || {
            std::fs::symlink_metadata(&source).map_err(|e| io_error(&source, e))?;
            if !target.parent().is_some_and(Path::is_dir) {
                return Err(BackendError::Conflict(target.display().to_string()));
            }
            let existed = std::fs::symlink_metadata(&target).is_ok();
            if existed {
                if !overwrite {
                    return Err(BackendError::AlreadyExists(target.display().to_string()));
                }
                trash::keep(&folder, &target)?;
            }
            std::fs::rename(&source, &target).map_err(|e| io_error(&target, e))?;
            let mut written = crate::locks::lock(&this.written);
            if let Some(known) = written.remove(&source) {
                written.insert(target.clone(), known);
            }
            let meta = std::fs::metadata(&target).map_err(|e| io_error(&target, e))?;
            Ok(Written {
                created: !existed,
                etag: meta.is_file().then(|| FileState::of(&meta).etag()),
                fileid: Some(meta.ino()),
            })
        })
        .await
    }

    async fn delete(&self, root: Root<'_>, rel: &str) -> Result<(), BackendError> {
        let path = resolve(root, rel)?;
        let folder = folder_path(root)?;
        let this = self.clone();
        blocking(move || {
            std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
            trash::keep(&folder, &path)?;
            crate::locks::lock(&this.written).remove(&path);
            Ok(())
        })
        .await
    }
}

/// Runs file-system calls on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(BackendError::Io {
            path: String::new(),
            source: std::io::Error::other(e),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(data: &'static [u8]) -> ByteStream {
        futures_util::stream::iter([Ok(Bytes::from_static(data))]).boxed()
    }

    async fn read_all(dir: &LocalDir, root: Root<'_>, rel: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = dir.read(root, rel).await.unwrap();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn sum(s: &str) -> WriteOptions {
        WriteOptions {
            checksum: Some(format!("SHA256:{s}")),
            mtime: Some(1_700_000_000),
            ..WriteOptions::default()
        }
    }

    #[tokio::test]
    async fn writes_are_listed_read_back_and_known_as_ours_until_edited() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().to_str().unwrap().to_owned();
        let root = Root {
            owner: "",
            folder: &folder,
        };
        let dir = LocalDir::new();
        dir.mkdir(root, "docs").await.unwrap();
        let w = dir
            .write(root, "docs/a.txt", bytes(b"hello"), 5, &sum("aa"))
            .await
            .unwrap();
        assert!(w.created);
        assert_eq!(read_all(&dir, root, "docs/a.txt").await, b"hello");
        let listed = dir.list(root, "docs", Depth::One).await.unwrap();
        assert_eq!(listed[0].path, "docs");
        assert!(listed[0].is_dir);
        let file = listed.iter().find(|i| i.path == "docs/a.txt").unwrap();
        assert_eq!(file.size, Some(5));
        assert_eq!(file.mtime, Some(1_700_000_000));
        assert_eq!(file.etag, w.etag);
        assert_eq!(file.checksums, vec!["SHA256:aa".to_owned()]);
        // No temporary file is left beside it.
        assert_eq!(listed.len(), 2);

        // A user's edit: no longer ours, and a new ETag.
        std::fs::write(tmp.path().join("docs/a.txt"), b"hello, edited").unwrap();
        let edited = &dir.list(root, "docs/a.txt", Depth::Zero).await.unwrap()[0];
        assert!(edited.checksums.is_empty());
        assert_ne!(edited.etag, w.etag);
    }

    #[tokio::test]
    async fn the_lost_update_guard_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().to_str().unwrap().to_owned();
        let root = Root {
            owner: "",
            folder: &folder,
        };
        let dir = LocalDir::new();
        let first = dir
            .write(root, "a", bytes(b"one"), 3, &sum("1"))
            .await
            .unwrap();
        // Create-only over an existing file: refused.
        let absent = WriteOptions {
            if_absent: true,
            ..sum("2")
        };
        let refused = dir.write(root, "a", bytes(b"two"), 3, &absent).await;
        assert!(matches!(refused, Err(BackendError::PreconditionFailed(_))));
        // Over a version that is no longer there: refused, the user's bytes kept.
        std::fs::write(tmp.path().join("a"), b"user's").unwrap();
        let stale = WriteOptions {
            if_match: first.etag.clone(),
            ..sum("3")
        };
        let refused = dir.write(root, "a", bytes(b"three"), 5, &stale).await;
        assert!(matches!(refused, Err(BackendError::PreconditionFailed(_))));
        assert_eq!(read_all(&dir, root, "a").await, b"user's");
        // Over the current version: written, and the replaced one is in the trash.
        let current = dir.list(root, "a", Depth::Zero).await.unwrap()[0]
            .etag
            .clone();
        let fresh = WriteOptions {
            if_match: current,
            ..sum("4")
        };
        dir.write(root, "a", bytes(b"four"), 4, &fresh)
            .await
            .unwrap();
        assert_eq!(read_all(&dir, root, "a").await, b"four");
        let trashed = trash_files(tmp.path());
        assert_eq!(trashed, vec![b"user's".to_vec()]);
    }

    fn trash_files(folder: &Path) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut dirs = vec![folder.join(HARP_DIR).join("trash")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    dirs.push(e.path());
                } else {
                    out.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn temporaries_left_by_a_crash_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let temp = temporary_beside(&tmp.path().join("docs/a.txt"));
        std::fs::create_dir_all(temp.parent().unwrap()).unwrap();
        std::fs::write(&temp, b"part").unwrap();
        std::fs::write(tmp.path().join("docs/.notes.harp-x.tmp"), b"user's").unwrap();
        std::fs::write(tmp.path().join("docs/a.txt"), b"whole").unwrap();
        assert_eq!(remove_temporaries(tmp.path()), 1);
        assert!(!temp.exists());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("docs")).unwrap().count(),
            2
        );
    }

    #[tokio::test]
    async fn a_short_body_leaves_nothing_under_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().to_str().unwrap().to_owned();
        let root = Root {
            owner: "",
            folder: &folder,
        };
        let dir = LocalDir::new();
        let cut = dir.write(root, "big", bytes(b"part"), 100, &sum("x")).await;
        assert!(matches!(cut, Err(BackendError::ReadCut(_))));
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn renames_deletes_and_paths_that_leave_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().to_str().unwrap().to_owned();
        let root = Root {
            owner: "",
            folder: &folder,
        };
        let dir = LocalDir::new();
        dir.write(root, "a", bytes(b"a"), 1, &sum("a"))
            .await
            .unwrap();
        dir.write(root, "b", bytes(b"b"), 1, &sum("b"))
            .await
            .unwrap();
        assert!(matches!(
            dir.rename(root, "a", "b", false).await,
            Err(BackendError::AlreadyExists(_))
        ));
        assert!(matches!(
            dir.rename(root, "a", "missing/c", false).await,
            Err(BackendError::Conflict(_))
        ));
        dir.rename(root, "a", "c", false).await.unwrap();
        // Still known as ours under its new name.
        let c = &dir.list(root, "c", Depth::Zero).await.unwrap()[0];
        assert_eq!(c.checksums, vec!["SHA256:a".to_owned()]);
        dir.delete(root, "b").await.unwrap();
        assert!(matches!(
            dir.list(root, "b", Depth::Zero).await,
            Err(BackendError::NotFound(_))
        ));
        assert_eq!(trash_files(tmp.path()), vec![b"b".to_vec()]);
        // The trash is not part of the folder's listing.
        let names: Vec<String> = dir
            .list(root, "", Depth::One)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(names, vec!["".to_owned(), "c".to_owned()]);
        for bad in ["../x", "/etc/passwd", "a/../../x", ".harp/trash"] {
            assert!(
                matches!(
                    dir.list(root, bad, Depth::Zero).await,
                    Err(BackendError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }
}
