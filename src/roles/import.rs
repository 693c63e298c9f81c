//! Seeding a library from a local folder: the way content enters a library on a machine with
//! no Nextcloud (the cloud node of the LAN/WAN lab, or an office that starts from a copy on
//! disk). `harpbridge import` is its command.
//!
//! ```text
//!  PATH ──walk──▶ dirs  ──▶ Mkdir (if the tree lacks the folder)      ┐
//!             └─▶ files ──▶ ContentStore (FastCDC + BLAKE3 blocks) ──▶ Put (if the content
//!                                                                      │   differs)
//!                          append_batch, 256 entries per durable commit ┘
//! ```
//!
//! # Which library
//!
//! - [`LibraryChoice::New`] creates a library with this device as its first and only member
//!   (the same [`ChainStore::create_library`] that `chain init` and the engine use).
//! - [`LibraryChoice::Id`] imports into that library; if this data directory does not hold
//!   it, it is created under that id with this device as its first member (so a script can
//!   choose the id up front). Importing into a library held here but of which this device is
//!   not a member fails: the chain refuses its entries.
//!
//! # What is recorded
//!
//! PATH's contents land at the library root (a file given as PATH lands at the root under
//! its own name). Symlinks are never followed (a link could point out of PATH): they are
//! listed as skipped, like sockets and other special files. Names that are not UTF-8 or
//! break the chain's path rules are skipped and listed too. Import adds and updates; it never
//! records a `Delete` for what is in the library but not in PATH (it seeds, it does not
//! mirror).
//!
//! Re-running an import is idempotent: a file whose size and modification time equal the
//! tree's version is taken as unchanged without reading it (the check `rsync` makes); any
//! other file is read into the store and recorded only if its content id differs from the
//! tree's. Unreadable files and folders are reported as they are met and in the
//! [`ImportSummary`]; the rest is imported.
//!
//! The data directory's database is locked by a running `node` or `cache`, so import runs
//! while they are stopped; they announce the new entries to peers when they start.

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use anyhow::{bail, Context};

use crate::chain::{ChainPath, ChainStore, LibraryId, Op, Tree, TreeItem};
use crate::content::{ContentStore, ManifestId};
use crate::identity::DeviceIdentity;

/// Entries per durable commit (as the engine's scans do).
const BATCH: usize = 256;

/// Which library to import into: a new one, or one named by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryChoice {
    /// Create a new library (random id).
    New,
    /// This library (created under this id if not held here).
    Id(LibraryId),
}

impl FromStr for LibraryChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "new" {
            return Ok(LibraryChoice::New);
        }
        LibraryId::from_str(s)
            .map(LibraryChoice::Id)
            .map_err(|e| format!("`new` or a library id (32 hex characters): {e}"))
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// Files recorded with new content.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes read from disk (new and unchanged content alike).
    pub bytes_read: u64,
    /// Files whose content equals the tree's version.
    pub unchanged: u64,
    /// Folders recorded.
    pub folders: u64,
    /// Paths not imported on purpose (symlinks, special files, names the chain cannot
    /// hold), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Paths that could not be read, with the error.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// The folder (or single file) to import, looked at before anything touches the data
/// directory: a symlink is refused, since links are never followed.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    meta: fs::Metadata,
}

impl Source {
    /// Looks at `path`: it must exist and not be a symlink.
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        let meta = fs::symlink_metadata(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if meta.file_type().is_symlink() {
            bail!(
                "{} is a symlink; give the folder it points to",
                path.display()
            );
        }
        Ok(Source {
            path: path.to_path_buf(),
            meta,
        })
    }
}

/// Resolves `choice`, creating the library when asked to or when it is not held here (with
/// this device as its member named `name`). Returns the library and whether it was created.
pub fn choose_library(
    chain: &ChainStore,
    id: &DeviceIdentity,
    choice: LibraryChoice,
    name: &str,
) -> anyhow::Result<(LibraryId, bool)> {
    let library = match choice {
        LibraryChoice::New => {
            let (lib, _) = chain.create_library(id.signing_key(), name)?;
            lib
        }
        LibraryChoice::Id(lib) if chain.libraries().contains(&lib) => {
            if !chain.is_member(&lib, &id.device_key()) {
                bail!("this device is not a member of library {lib}: it cannot add to it");
            }
            return Ok((lib, false));
        }
        LibraryChoice::Id(lib) => {
            chain.create_library_with(lib, id.signing_key(), name, crate::chain::now_ms())?;
            lib
        }
    };
    Ok((library, true))
}

/// Imports `source` into `library`, signing as `identity`, and makes the library's tree
/// after the import its current set of versions in the content store. `unreadable` hears of
/// each path that cannot be read as it is met (the import goes on); the summary lists them
/// too.
pub fn import(
    chain: &ChainStore,
    content: &ContentStore,
    identity: &DeviceIdentity,
    library: LibraryId,
    source: &Source,
    mut unreadable: impl FnMut(&Path, &str),
) -> anyhow::Result<ImportSummary> {
    let mut import = Importer {
        chain,
        content,
        identity,
        library,
        tree: chain.tree(&library)?,
        pending: Vec::new(),
        summary: ImportSummary::default(),
        unreadable: &mut unreadable,
    };
    if source.meta.is_dir() {
        import.walk(&source.path)?;
    } else {
        let Some(name) = source.path.file_name().and_then(|n| n.to_str()) else {
            bail!("{}: the name is not UTF-8", source.path.display());
        };
        import.entry(&source.path, vec![name.to_owned()], &source.meta)?;
    }
    import.flush()?;

    // Keep exactly the tree's versions as this library's current set: the new ones were
    // added by each ingest; versions the import replaced may now be evicted.
    let versions: Vec<ManifestId> = chain
        .tree(&library)?
        .versions()
        .map(ManifestId::from)
        .collect();
    content
        .set_current(library, &versions)
        .context("updating the library's current versions")?;
    Ok(import.summary)
}

/// One import run: the tree as it was when it started, plus what is not committed yet.
struct Importer<'a> {
    chain: &'a ChainStore,
    content: &'a ContentStore,
    identity: &'a DeviceIdentity,
    library: LibraryId,
    /// The library's tree when the import began. Nothing else writes meanwhile (the
    /// database is ours), and each path is visited once, so it stays the right reference.
    tree: Tree,
    pending: Vec<Op>,
    summary: ImportSummary,
    /// Told of each unreadable path as it is met.
    unreadable: &'a mut dyn FnMut(&Path, &str),
}

impl Importer<'_> {
    /// Walks `root` depth first without following symlinks.
    fn walk(&mut self, root: &Path) -> anyhow::Result<()> {
        // (folder on disk, its library path as components)
        let mut folders: Vec<(PathBuf, Vec<String>)> = vec![(root.to_path_buf(), Vec::new())];
        while let Some((dir, rel)) = folders.pop() {
            let listing = match fs::read_dir(&dir) {
                Ok(l) => l,
                Err(e) => {
                    self.unreadable(&dir, e.to_string());
                    continue;
                }
            };
            let mut children = Vec::new();
            for child in listing {
                match child {
                    Ok(c) => children.push(c),
                    Err(e) => self.unreadable(&dir, e.to_string()),
                }
            }
            // A stable order: the chain's entries come out the same on every run.
            children.sort_by_key(|c| c.file_name());
            for child in children {
                let path = child.path();
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) => {
                        self.unreadable(&path, e.to_string());
                        continue;
                    }
                };
                let Some(name) = child.file_name().to_str().map(str::to_owned) else {
                    self.skip(&path, "the name is not UTF-8");
                    continue;
                };
                let mut child_rel = rel.clone();
                child_rel.push(name);
                if self.entry(&path, child_rel.clone(), &meta)? {
                    folders.push((path, child_rel));
                }
            }
        }
        Ok(())
    }

    /// Records one path (`rel`: its library path as components). Returns whether it is a
    /// folder to walk into.
    fn entry(
        &mut self,
        path: &Path,
        rel: Vec<String>,
        meta: &fs::Metadata,
    ) -> anyhow::Result<bool> {
        let chain_path = match ChainPath::new(&rel.join("/")) {
            Ok(p) => p,
            Err(e) => {
                self.skip(path, &format!("the chain cannot hold this name: {e}"));
                return Ok(false);
            }
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            self.skip(path, "a symlink (links are not followed)");
            return Ok(false);
        }
        if kind.is_dir() {
            if !matches!(
                self.tree.items.get(chain_path.as_str()),
                Some(TreeItem::Dir { .. })
            ) {
                self.summary.folders += 1;
                self.push(Op::Mkdir { path: chain_path })?;
            }
            return Ok(true);
        }
        if !kind.is_file() {
            self.skip(path, "not a regular file");
            return Ok(false);
        }
        self.file(path, chain_path, meta)?;
        Ok(false)
    }

    fn file(
        &mut self,
        path: &Path,
        chain_path: ChainPath,
        meta: &fs::Metadata,
    ) -> anyhow::Result<()> {
        let mtime_ms = mtime_ms(meta);
        let size = meta.len();
        let current = match self.tree.items.get(chain_path.as_str()) {
            Some(TreeItem::File {
                content,
                size: s,
                mtime_ms: m,
                ..
            }) => Some((*content, *s, *m)),
            _ => None,
        };
        if current.is_some_and(|(_, s, m)| s == size && m == mtime_ms) {
            self.summary.unchanged += 1;
            return Ok(());
        }
        let ingested = match fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                self.content
                    .ingest_reader(self.library, f)
                    .map_err(|e| e.to_string())
            }) {
            Ok(i) => i,
            Err(e) => {
                self.unreadable(path, e);
                return Ok(());
            }
        };
        self.summary.bytes_read += ingested.size;
        if ingested.size != size {
            self.unreadable(
                path,
                format!(
                    "changed while being read ({size} bytes before, {} read)",
                    ingested.size
                ),
            );
            return Ok(());
        }
        let content = ingested.id.into();
        if current.is_some_and(|(c, _, _)| c == content) {
            self.summary.unchanged += 1;
            return Ok(());
        }
        self.summary.files += 1;
        self.summary.bytes += size;
        self.push(Op::Put {
            path: chain_path,
            size,
            mtime_ms,
            content,
            nextcloud: None,
        })
    }

    fn push(&mut self, op: Op) -> anyhow::Result<()> {
        self.pending.push(op);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends what is pending in one durable commit.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        self.chain
            .append_batch(&self.library, self.identity.signing_key(), ops)
            .with_context(|| format!("appending to library {}", self.library))?;
        Ok(())
    }

    fn skip(&mut self, path: &Path, why: &str) {
        self.summary
            .skipped
            .push((path.to_path_buf(), why.to_owned()));
    }

    fn unreadable(&mut self, path: &Path, error: String) {
        (self.unreadable)(path, &error);
        self.summary.unreadable.push((path.to_path_buf(), error));
    }
}

/// A file's modification time in ms since the epoch (0 if the platform has none).
fn mtime_ms(meta: &fs::Metadata) -> i64 {
    match meta.modified().map(|t| t.duration_since(UNIX_EPOCH)) {
        Ok(Ok(d)) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Ok(Err(before)) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
