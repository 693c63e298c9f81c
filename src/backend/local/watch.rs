//! Watching a local folder: the file system's change notifications (the `notify` crate:
//! inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows), turned into
//! the paths the engine should look at.
//!
//! A path is handed on once it has been quiet for the settle time (a file being written
//! fires event after event; it is read once the writer stops), or after [`MAX_HOLD`] at the
//! latest. Renames the platform reports as one event (both names known) are handed on as
//! such, so the engine can record a move instead of a delete and a new file. Ignored paths
//! ([`super::ignore`]), harpbridge's own among them, are dropped here, and so are files
//! still as the backend's own write left them (a peer's version just written: an echo).
//!
//! Notifications are a hint, not the truth: the engine looks at each path (and a
//! periodic rescan finds whatever a watcher missed). When the platform says events were
//! lost (a queue overflow), [`Change::Everything`] asks for a rescan.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::LocalDir;
use crate::backend::{BackendError, Change};

/// A path still changing is handed on after this long anyway.
pub const MAX_HOLD: Duration = Duration::from_secs(10);
/// How often held paths are looked at.
const TICK: Duration = Duration::from_millis(20);
/// Batches waiting for the engine; the watcher waits when it is this far behind.
const BACKLOG: usize = 64;

/// A running watch; dropping it stops watching.
pub struct FolderWatch {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FolderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatch").finish_non_exhaustive()
    }
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `folder` and everything below it; batches of settled changes come out of the
/// receiver. Needs a tokio runtime.
pub fn watch(
    folder: &Path,
    local: LocalDir,
    settle: Duration,
) -> Result<(FolderWatch, mpsc::Receiver<Vec<Change>>), BackendError> {
    let folder = folder.to_owned();
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = raw_tx.send(event);
    })
    .map_err(|e| watch_error(&folder, e))?;
    watcher
        .watch(&folder, RecursiveMode::Recursive)
        .map_err(|e| watch_error(&folder, e))?;
    let (tx, rx) = mpsc::channel(BACKLOG);
    let settler = Settler {
        folder,
        local,
        settle,
        held: HashMap::new(),
        ready: Vec::new(),
    };
    let task = tokio::spawn(settler.run(raw_rx, tx));
    Ok((
        FolderWatch {
            _watcher: watcher,
            task,
        },
        rx,
    ))
}

fn watch_error(folder: &Path, e: notify::Error) -> BackendError {
    BackendError::Io {
        path: folder.display().to_string(),
        source: std::io::Error::other(format!("cannot watch it: {e}")),
    }
}

/// Holds paths until they settle.
struct Settler {
    folder: PathBuf,
    /// Its ignore rules, and its own writes.
    local: LocalDir,
    settle: Duration,
    /// Path → (first event, last event) while it changes.
    held: HashMap<String, (Instant, Instant)>,
    /// Changes to hand on in order: renames at once, paths once settled.
    ready: Vec<Change>,
}

impl Settler {
    async fn run(
        mut self,
        mut raw: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
        out: mpsc::Sender<Vec<Change>>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = raw.recv() => match event {
                    Some(Ok(event)) => self.note(event, Instant::now()),
                    Some(Err(e)) => {
                        tracing::warn!(folder = %self.folder.display(), error = %e, "the folder's watcher failed; rescanning");
                        self.ready.push(Change::Everything);
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    self.release(Instant::now());
                    if !self.ready.is_empty() {
                        let batch = std::mem::take(&mut self.ready);
                        if out.send(batch).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The path relative to the folder, unless it is outside, not UTF-8, or ignored.
    fn relative(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.folder).ok()?.to_str()?;
        if rel.is_empty() {
            return None;
        }
        let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
        (!self.local.ignores().ignored(&self.folder, rel, is_dir)).then(|| rel.to_owned())
    }

    fn hold(&mut self, rel: String, now: Instant) {
        self.held
            .entry(rel)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    fn note(&mut self, event: notify::Event, now: Instant) {
        if event.need_rescan() {
            self.ready.push(Change::Everything);
            return;
        }
        match event.kind {
            // Reads, and opening for writing: nothing changed (yet).
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if event.paths.len() == 2 => {
                let from = self.relative(&event.paths[0]);
                let to = self.relative(&event.paths[1]);
                match (from, to) {
                    (Some(from), Some(to)) => {
                        // What was held under either name is looked at with the move.
                        self.held.remove(&from);
                        self.held.remove(&to);
                        self.ready.push(Change::Renamed { from, to });
                    }
                    // An editor's save (a temporary file renamed over the real name), or a
                    // move into or out of what is ignored: one path changed.
                    (Some(rel), None) | (None, Some(rel)) => self.hold(rel, now),
                    (None, None) => {}
                }
                return;
            }
            _ => {}
        }
        for path in &event.paths {
            if let Some(rel) = self.relative(path) {
                self.hold(rel, now);
            }
        }
    }

    /// Moves settled paths (and those held too long) to `ready`.
    fn release(&mut self, now: Instant) {
        let settle = self.settle;
        let mut settled: Vec<String> = Vec::new();
        self.held.retain(|rel, (first, last)| {
            let done =
                now.duration_since(*last) >= settle || now.duration_since(*first) >= MAX_HOLD;
            if done {
                settled.push(rel.clone());
            }
            !done
        });
        settled.retain(|rel| !self.local.is_own_write(&self.folder.join(rel)));
        settled.sort();
        self.ready.extend(settled.into_iter().map(Change::Path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_changes(rx: &mut mpsc::Receiver<Vec<Change>>, want: usize) -> Vec<Change> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while all.len() < want {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(batch)) => all.extend(batch),
                _ => break,
            }
        }
        all
    }

    #[tokio::test]
    async fn settled_paths_and_renames_come_out_and_ignored_ones_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(folder.join("docs")).unwrap();
        let local = LocalDir::new();
        let (_watch, mut rx) = watch(&folder, local.clone(), Duration::from_millis(100)).unwrap();
        std::fs::write(folder.join("docs/.a.txt.swp"), b"swap").unwrap();
        std::fs::create_dir_all(folder.join(".harp/trash")).unwrap();
        for i in 0..20 {
            std::fs::write(folder.join("docs/a.txt"), format!("version {i}")).unwrap();
        }
        let changes = next_changes(&mut rx, 1).await;
        assert_eq!(changes, vec![Change::Path("docs/a.txt".into())]);
        std::fs::rename(folder.join("docs/a.txt"), folder.join("b.txt")).unwrap();
        let changes = next_changes(&mut rx, 1).await;
        assert_eq!(
            changes,
            vec![Change::Renamed {
                from: "docs/a.txt".into(),
                to: "b.txt".into()
            }]
        );
        // An editor's save: written aside, renamed over the name.
        std::fs::write(folder.join(".b.txt.harp-00000000000000aa.tmp"), b"new").unwrap();
        std::fs::rename(
            folder.join(".b.txt.harp-00000000000000aa.tmp"),
            folder.join("b.txt"),
        )
        .unwrap();
        let changes = next_changes(&mut rx, 1).await;
        assert_eq!(changes, vec![Change::Path("b.txt".into())]);
        // The backend's own write (a peer's version) is an echo: not handed on; a user's
        // file written after it is.
        use crate::backend::{Backend, Root, WriteOptions};
        use futures_util::StreamExt;
        let root_path = folder.to_str().unwrap().to_owned();
        let root = Root {
            owner: "",
            folder: &root_path,
        };
        let body = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"peer"))]).boxed();
        let options = WriteOptions {
            checksum: Some("SHA256:00".into()),
            ..WriteOptions::default()
        };
        local
            .write(root, "peer.txt", body, 4, &options)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(folder.join("user.txt"), b"user").unwrap();
        let changes = next_changes(&mut rx, 1).await;
        assert_eq!(changes, vec![Change::Path("user.txt".into())]);
    }
}
