//! What a synced folder leaves out: harpbridge's own files, editors' temporary and lock
//! files, and the patterns of the folder's `.harpignore` (gitignore syntax, read with the
//! `ignore` crate that ripgrep uses).
//!
//! An ignored path is neither recorded nor written: the folder's listing leaves it out (so
//! scans and the watcher never see it), and a peer's file at an ignored path stays in the
//! chain without being written here, as Syncthing does with its `.stignore`. `.harpignore`
//! itself is not synced: each device decides what it leaves out. It is read again whenever
//! it changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The file of patterns in a synced folder's top directory.
pub const IGNORE_FILE: &str = ".harpignore";

/// Left out of every folder, whatever `.harpignore` says.
const BUILT_IN: &[&str] = &[
    // harpbridge's own: trash, temporary files of writes in progress, the patterns.
    "/.harp/",
    "/.harpignore",
    ".*.harp-*.tmp",
    // Editors' swap, backup and lock files (vim, emacs, LibreOffice, Microsoft Office).
    ".*.sw[a-p]",
    "*~",
    ".#*",
    "#*#",
    ".~lock.*#",
    "~$*",
    // Downloads in progress, and desktop metadata.
    "*.part",
    "*.crdownload",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
];

/// The ignore rules of folders, each reloaded when its `.harpignore` changes; cheap to
/// clone.
#[derive(Debug, Default, Clone)]
pub struct Ignores {
    folders: Arc<Mutex<HashMap<PathBuf, Loaded>>>,
}

#[derive(Debug)]
struct Loaded {
    /// `.harpignore`'s modification time and size when read; `None`: there was none.
    stamp: Option<(SystemTime, u64)>,
    rules: Arc<Gitignore>,
}

fn stamp(file: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn load(folder: &Path) -> Gitignore {
    let mut builder = GitignoreBuilder::new(folder);
    for pattern in BUILT_IN {
        // Built-in patterns are valid: tested below.
        let _ = builder.add_line(None, pattern);
    }
    let file = folder.join(IGNORE_FILE);
    if file.exists() {
        // Invalid lines are reported; the valid ones still count.
        if let Some(e) = builder.add(&file) {
            tracing::warn!(file = %file.display(), error = %e, "some .harpignore lines are not valid patterns and are not used");
        }
    }
    builder.build().unwrap_or_else(|e| {
        tracing::warn!(folder = %folder.display(), error = %e, "the ignore rules cannot be built; only the built-in ones apply");
        let mut builder = GitignoreBuilder::new(folder);
        for pattern in BUILT_IN {
            let _ = builder.add_line(None, pattern);
        }
        builder.build().unwrap_or_else(|_| Gitignore::empty())
    })
}

impl Ignores {
    /// The rules of `folder` as its `.harpignore` says now.
    pub fn rules(&self, folder: &Path) -> Arc<Gitignore> {
        let now = stamp(&folder.join(IGNORE_FILE));
        let mut folders = crate::locks::lock(&self.folders);
        match folders.get(folder) {
            Some(loaded) if loaded.stamp == now => loaded.rules.clone(),
            _ => {
                let rules = Arc::new(load(folder));
                if now.is_some() {
                    tracing::info!(folder = %folder.display(), patterns = rules.num_ignores(), "read .harpignore");
                }
                folders.insert(
                    folder.to_owned(),
                    Loaded {
                        stamp: now,
                        rules: rules.clone(),
                    },
                );
                rules
            }
        }
    }

    /// Whether `rel` (relative to `folder`) is left out, itself or by a folder above it.
    pub fn ignored(&self, folder: &Path, rel: &str, is_dir: bool) -> bool {
        is_ignored(&self.rules(folder), rel, is_dir)
    }
}

/// Whether `rules` leave out `rel`, itself or by a folder above it.
pub fn is_ignored(rules: &Gitignore, rel: &str, is_dir: bool) -> bool {
    !rel.is_empty()
        && rules
            .matched_path_or_any_parents(Path::new(rel), is_dir)
            .is_ignore()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_rules_leave_out_our_files_and_editors_litter() {
        let tmp = tempfile::tempdir().unwrap();
        let ignores = Ignores::default();
        let ignored = |rel: &str| ignores.ignored(tmp.path(), rel, false);
        for rel in [
            ".harp/trash/1/a.txt",
            ".harpignore",
            "docs/.report.odt.harp-0123456789abcdef.tmp",
            "docs/.notes.txt.swp",
            "notes.txt~",
            "docs/.~lock.report.odt#",
            "docs/~$report.docx",
            "film.mkv.part",
            "Photos/.DS_Store",
        ] {
            assert!(ignored(rel), "{rel}");
        }
        for rel in [
            "docs/report.odt",
            "a.txt",
            "harp/x",
            "docs/.harpignore",
            "x.swpx",
        ] {
            assert!(!ignored(rel), "{rel}");
        }
    }

    #[test]
    fn harpignore_is_read_and_read_again_when_it_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let ignores = Ignores::default();
        assert!(!ignores.ignored(tmp.path(), "build/out.o", false));
        std::fs::write(
            tmp.path().join(IGNORE_FILE),
            "build/\n*.log\n!keep.log\n[\n",
        )
        .unwrap();
        assert!(ignores.ignored(tmp.path(), "build/out.o", false));
        assert!(ignores.ignored(tmp.path(), "build", true));
        assert!(ignores.ignored(tmp.path(), "logs/today.log", false));
        assert!(!ignores.ignored(tmp.path(), "keep.log", false));
        assert!(!ignores.ignored(tmp.path(), "src/main.rs", false));
        std::fs::write(tmp.path().join(IGNORE_FILE), "*.o\n").unwrap();
        assert!(!ignores.ignored(tmp.path(), "build/x.txt", false));
        assert!(ignores.ignored(tmp.path(), "build/out.o", false));
    }
}
