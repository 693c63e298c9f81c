//! The mirror: what the engine believes Nextcloud holds in each library, path by path.
//!
//! The chain's folded tree says what a library *should* hold; Nextcloud holds what users
//! and harpbridge last wrote there. The mirror is the engine's record of the latter: every
//! change ingest reads from Nextcloud, and every write-back harpbridge makes, updates it.
//! Two questions are answered by comparing three things:
//!
//! ```text
//!              tree (chain)          mirror (last known)          Nextcloud (live)
//!   write-back: what must change?  ── tree ≠ mirror ──▶  apply, if Nextcloud = mirror
//!   ingest:     what did a user do? ── Nextcloud ≠ mirror ──▶ record (unless = tree)
//! ```
//!
//! - **Write-back** applies the difference between the tree and the mirror, and checks
//!   before each overwrite that Nextcloud still holds the mirror's version (the lost-update
//!   guard, see [`super::writeback`]).
//! - **Ingest** records only what differs from the mirror. A path the tree has from a peer
//!   but Nextcloud does not have yet is *pending*, not deleted: the mirror lacks it, so a
//!   scan or a webhook that finds it missing records nothing (see [`super::ingest`]).
//!
//! It lives in memory and in the `nextcloud_mirror` table. Its commits are not fsync'd on
//! their own (`Durability::None`, so async code never waits for a disk flush): they become
//! durable with the next fsync'd commit of the same database, which comes right after (the
//! event leaving the queue, the next chain entry). A mirror that lost its last rows in a
//! crash costs extra work, never a lost or overwritten version: write-back looks at
//! Nextcloud before every write and takes a file that already holds the tree's version as
//! done, and ingest records nothing for a file equal to the tree's version. (The one visible
//! trace: if a user then edits a file whose row was lost, the version before the edit is
//! kept once more as a conflict copy.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::db::Db;
use serde::{Deserialize, Serialize};

use crate::chain::{ContentId, LibraryId, NextcloudRef, Op, Tree, TreeItem};

/// (library, path) → [`Row`] as JSON. The library's root ("") is always there once the
/// library has a mirror.
const MIRROR: TableDefinition<([u8; 16], &str), &[u8]> = TableDefinition::new("nextcloud_mirror");

#[derive(Debug, thiserror::Error)]
#[error("mirror storage: {0}")]
pub struct MirrorError(String);

fn storage(e: impl std::fmt::Display) -> MirrorError {
    MirrorError(e.to_string())
}

/// What Nextcloud holds at a path, as last known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Dir,
    File(HeldFile),
}

/// A file version in Nextcloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFile {
    pub content: ContentId,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes, when known (harpbridge's own writes send it as
    /// `OC-Checksum`, so Nextcloud lists it until someone else writes the file).
    pub sha256: Option<String>,
    /// Nextcloud's file id and ETag for it, when known.
    pub nextcloud: Option<NextcloudRef>,
}

impl Held {
    /// What a tree item means for Nextcloud (no checksum known).
    pub fn of(item: &TreeItem) -> Held {
        match item {
            TreeItem::Dir { .. } => Held::Dir,
            TreeItem::File {
                size,
                content,
                nextcloud,
                ..
            } => Held::File(HeldFile {
                content: *content,
                size: *size,
                sha256: None,
                nextcloud: nextcloud.clone(),
            }),
        }
    }

    /// Whether the tree's item is this (same kind; same content for files).
    pub fn same_as(&self, item: &TreeItem) -> bool {
        match (self, item) {
            (Held::Dir, TreeItem::Dir { .. }) => true,
            (Held::File(f), TreeItem::File { content, .. }) => f.content == *content,
            _ => false,
        }
    }

    pub fn content(&self) -> Option<ContentId> {
        match self {
            Held::File(f) => Some(f.content),
            Held::Dir => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Row {
    /// Hex content id; absent for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fileid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
}

impl Row {
    fn of(held: &Held) -> Row {
        match held {
            Held::Dir => Row {
                content: None,
                size: 0,
                sha256: None,
                fileid: None,
                etag: None,
            },
            Held::File(f) => Row {
                content: Some(f.content.to_hex()),
                size: f.size,
                sha256: f.sha256.clone(),
                fileid: f.nextcloud.as_ref().map(|n| n.fileid),
                etag: f.nextcloud.as_ref().map(|n| n.etag.clone()),
            },
        }
    }

    fn held(self) -> Result<Held, MirrorError> {
        let Some(content) = self.content else {
            return Ok(Held::Dir);
        };
        Ok(Held::File(HeldFile {
            content: content.parse().map_err(storage)?,
            size: self.size,
            sha256: self.sha256,
            nextcloud: self.fileid.map(|fileid| NextcloudRef {
                fileid,
                etag: self.etag.unwrap_or_default(),
            }),
        }))
    }
}

type Items = BTreeMap<String, Held>;

/// Every library's mirror; cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    db: Db,
    map: Arc<Mutex<HashMap<LibraryId, Items>>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").finish_non_exhaustive()
    }
}

/// Whether `path` is `root` or lies below it.
fn within(path: &str, root: &str) -> bool {
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Every row of the table.
fn load(db: &Database) -> Result<HashMap<LibraryId, Items>, MirrorError> {
    let mut map: HashMap<LibraryId, Items> = HashMap::new();
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(MIRROR).map_err(storage)?;
    for row in table.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (lib, path) = key.value();
        let row: Row = serde_json::from_slice(value.value()).map_err(storage)?;
        map.entry(LibraryId(lib))
            .or_default()
            .insert(path.to_owned(), row.held()?);
    }
    Ok(map)
}

impl Mirror {
    /// Opens the table and reads every row.
    pub fn open(db: Db) -> Result<Mirror, MirrorError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(MIRROR).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let map = Arc::new(Mutex::new(db.with(load).map_err(storage)??));
        // Non-durable commits (see the module docs) do not survive a re-open.
        db.on_reopen(&map, |map, database| {
            *crate::locks::lock(map) = load(database).map_err(|e| e.to_string())?;
            Ok(())
        });
        Ok(Mirror { db, map })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LibraryId, Items>> {
        crate::locks::lock(&self.map)
    }

    /// Whether the library has a mirror yet.
    pub fn knows(&self, lib: &LibraryId) -> bool {
        self.lock().get(lib).is_some_and(|m| m.contains_key(""))
    }

    /// Starts a library's mirror from a tree Nextcloud is taken to hold already (a library
    /// older than write-back, or a new, empty one).
    pub fn adopt(&self, lib: &LibraryId, tree: &Tree) -> Result<(), MirrorError> {
        let mut changes: Vec<(String, Option<Held>)> = vec![(String::new(), Some(Held::Dir))];
        changes.extend(
            tree.items
                .iter()
                .map(|(p, item)| (p.clone(), Some(Held::of(item)))),
        );
        self.commit(lib, changes)
    }

    /// What Nextcloud holds at `path`, as last known.
    pub fn get(&self, lib: &LibraryId, path: &str) -> Option<Held> {
        self.lock().get(lib)?.get(path).cloned()
    }

    /// Every path of the library (the root excluded).
    pub fn items(&self, lib: &LibraryId) -> Items {
        let mut items = self.lock().get(lib).cloned().unwrap_or_default();
        items.remove("");
        items
    }

    /// The paths at and below `root` (the library's root excluded).
    pub fn subtree(&self, lib: &LibraryId, root: &str) -> Vec<(String, Held)> {
        let map = self.lock();
        let Some(items) = map.get(lib) else {
            return Vec::new();
        };
        items
            .range(root.to_owned()..)
            .take_while(|(p, _)| p.starts_with(root))
            .filter(|(p, _)| !p.is_empty() && within(p, root))
            .map(|(p, h)| (p.clone(), h.clone()))
            .collect()
    }

    /// How many paths directly inside the folder `folder` Nextcloud holds, as last known.
    pub fn children(&self, lib: &LibraryId, folder: &str) -> usize {
        let map = self.lock();
        let Some(items) = map.get(lib) else {
            return 0;
        };
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        items
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty() && !p[prefix.len()..].contains('/'))
            .count()
    }

    /// Nextcloud holds `held` at `path` now.
    pub fn set(&self, lib: &LibraryId, path: &str, held: Held) -> Result<(), MirrorError> {
        if self.get(lib, path).as_ref() == Some(&held) {
            return Ok(());
        }
        self.commit(lib, vec![(path.to_owned(), Some(held))])
    }

    /// Nothing is at or below `path` in Nextcloud now.
    pub fn remove(&self, lib: &LibraryId, path: &str) -> Result<(), MirrorError> {
        let changes = self
            .subtree(lib, path)
            .into_iter()
            .map(|(p, _)| (p, None))
            .collect::<Vec<_>>();
        self.commit(lib, changes)
    }

    /// `from` (and everything below it) moved to `to`.
    pub fn rename(&self, lib: &LibraryId, from: &str, to: &str) -> Result<(), MirrorError> {
        let mut changes: Vec<(String, Option<Held>)> = self
            .subtree(lib, to)
            .into_iter()
            .map(|(p, _)| (p, None))
            .collect();
        for (path, held) in self.subtree(lib, from) {
            let moved = format!("{to}{}", &path[from.len()..]);
            changes.push((path, None));
            changes.push((moved, Some(held)));
        }
        self.commit(lib, changes)
    }

    /// Ingest recorded these operations: Nextcloud holds what they say. One transaction
    /// for all of them (a scan records hundreds at once).
    pub fn record(&self, lib: &LibraryId, ops: &[Op]) -> Result<(), MirrorError> {
        let mut map = self.lock();
        let items = map.entry(*lib).or_default();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let below = |items: &Items, root: &str| -> Vec<String> {
            items
                .range(root.to_owned()..)
                .take_while(|(p, _)| p.starts_with(root))
                .filter(|(p, _)| !p.is_empty() && within(p, root))
                .map(|(p, _)| p.clone())
                .collect()
        };
        for op in ops {
            match op {
                Op::Put {
                    path,
                    size,
                    content,
                    nextcloud,
                    ..
                } => {
                    let held = Held::File(HeldFile {
                        content: *content,
                        size: *size,
                        sha256: None,
                        nextcloud: nextcloud.clone(),
                    });
                    items.insert(path.as_str().to_owned(), held);
                    touched.insert(path.as_str().to_owned());
                }
                Op::Mkdir { path } => {
                    items.insert(path.as_str().to_owned(), Held::Dir);
                    touched.insert(path.as_str().to_owned());
                }
                Op::Delete { path } => {
                    for p in below(items, path.as_str()) {
                        items.remove(&p);
                        touched.insert(p);
                    }
                }
                Op::Rename { from, to } => {
                    let (from, to) = (from.as_str(), to.as_str());
                    for p in below(items, to) {
                        items.remove(&p);
                        touched.insert(p);
                    }
                    for p in below(items, from) {
                        if let Some(held) = items.remove(&p) {
                            let moved = format!("{to}{}", &p[from.len()..]);
                            items.insert(moved.clone(), held);
                            touched.insert(moved);
                        }
                        touched.insert(p);
                    }
                }
                _ => {}
            }
        }
        let changes: Vec<(String, Option<Held>)> = touched
            .into_iter()
            .map(|p| {
                let held = items.get(&p).cloned();
                (p, held)
            })
            .collect();
        self.persist(lib, &changes)
    }

    /// Forgets a library.
    pub fn forget(&self, lib: &LibraryId) -> Result<(), MirrorError> {
        let changes = self
            .lock()
            .get(lib)
            .map(|m| m.keys().map(|p| (p.clone(), None)).collect())
            .unwrap_or_default();
        self.commit(lib, changes)?;
        self.lock().remove(lib);
        Ok(())
    }

    /// Applies changes in memory and in one transaction.
    fn commit(
        &self,
        lib: &LibraryId,
        changes: Vec<(String, Option<Held>)>,
    ) -> Result<(), MirrorError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut map = self.lock();
        // Memory follows the table only once the table has it: a failed commit leaves both.
        self.persist(lib, &changes)?;
        let items = map.entry(*lib).or_default();
        for (path, held) in changes {
            match held {
                Some(held) => {
                    items.insert(path, held);
                }
                None => {
                    items.remove(&path);
                }
            }
        }
        Ok(())
    }

    /// Writes changes in one transaction, durable with the database's next fsync'd commit
    /// (the caller holds the map's lock, so commits reach the table in the order they
    /// changed the map).
    fn persist(
        &self,
        lib: &LibraryId,
        changes: &[(String, Option<Held>)],
    ) -> Result<(), MirrorError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        {
            let mut table = txn.open_table(MIRROR).map_err(storage)?;
            for (path, held) in changes {
                match held {
                    Some(held) => {
                        let bytes = serde_json::to_vec(&Row::of(held)).map_err(storage)?;
                        table
                            .insert((lib.0, path.as_str()), bytes.as_slice())
                            .map_err(storage)?;
                    }
                    None => {
                        table.remove((lib.0, path.as_str())).map_err(storage)?;
                    }
                }
            }
        }
        txn.commit().map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainPath;

    fn file(n: u8) -> Held {
        Held::File(HeldFile {
            content: ContentId([n; 32]),
            size: u64::from(n),
            sha256: Some("ab".repeat(32)),
            nextcloud: Some(NextcloudRef {
                fileid: 7,
                etag: "e".into(),
            }),
        })
    }

    #[test]
    fn records_ops_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let lib = LibraryId([3; 16]);
        let m = Mirror::open(db.clone()).unwrap();
        assert!(!m.knows(&lib));
        m.adopt(&lib, &Tree::default()).unwrap();
        assert!(m.knows(&lib));
        let p = |s: &str| ChainPath::new(s).unwrap();
        m.record(
            &lib,
            &[
                Op::Mkdir { path: p("a") },
                Op::Mkdir { path: p("a b") },
                Op::Put {
                    path: p("a/x.txt"),
                    size: 1,
                    mtime_ms: 0,
                    content: ContentId([1; 32]),
                    nextcloud: None,
                },
                Op::Rename {
                    from: p("a"),
                    to: p("c"),
                },
            ],
        )
        .unwrap();
        m.set(&lib, "c/y.txt", file(2)).unwrap();
        assert_eq!(
            m.items(&lib).keys().collect::<Vec<_>>(),
            ["a b", "c", "c/x.txt", "c/y.txt"]
        );
        m.remove(&lib, "c").unwrap();
        m.set(&lib, "z", file(4)).unwrap();
        // A later fsync'd commit makes the mirror's commits durable.
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        txn.commit().unwrap();
        drop(m);
        let again = Mirror::open(db).unwrap();
        assert!(again.knows(&lib));
        assert_eq!(again.items(&lib).keys().collect::<Vec<_>>(), ["a b", "z"]);
        assert_eq!(again.get(&lib, "z"), Some(file(4)));
        again.forget(&lib).unwrap();
        assert!(!again.knows(&lib));
    }
}
