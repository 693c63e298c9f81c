//! Libraries: a Nextcloud user's folder, synced as one chain.
//!
//! The registry lives in the database (table `libraries`) and in memory for the
//! receiver's fast "is this path in any library?" check. Two libraries of one user may
//! not overlap: a file belongs to at most one chain.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::db::Db;
use serde::{Deserialize, Serialize};

use crate::appapi::event::{Area, Node};
use crate::backend::Root;
use crate::chain::{ChainPath, LibraryId};

const LIBRARIES: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("libraries");

/// One library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Library {
    #[serde(with = "hex_id")]
    pub id: LibraryId,
    /// A human name.
    pub name: String,
    /// The Nextcloud user whose folder it is.
    pub uid: String,
    /// The folder below the user's root, without leading or trailing `/`; empty = all files.
    pub folder: String,
    pub created_ms: u64,
}

impl Library {
    /// Where `path` (below the user's root) lies in this library: `Some("")` for the
    /// folder itself, `Some("a/b.txt")` below it, `None` outside.
    pub fn relative<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.folder.is_empty() {
            return Some(path);
        }
        if path == self.folder {
            return Some("");
        }
        path.strip_prefix(self.folder.as_str())?.strip_prefix('/')
    }

    /// The library path of an event node, if the node is one of this library's files.
    pub fn node_path<'n>(&self, node: &'n Node) -> Option<&'n str> {
        (node.area == Area::Files && node.uid == self.uid)
            .then(|| self.relative(&node.path))
            .flatten()
    }

    /// The library's folder, as a backend addresses it.
    pub fn root(&self) -> Root<'_> {
        Root {
            owner: &self.uid,
            folder: &self.folder,
        }
    }

    /// The path below the user's root of a library path.
    pub fn user_path(&self, rel: &str) -> String {
        match (self.folder.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_owned(),
            (false, true) => self.folder.clone(),
            (false, false) => format!("{}/{}", self.folder, rel),
        }
    }

    fn overlaps(&self, uid: &str, folder: &str) -> bool {
        self.uid == uid
            && (self.relative(folder).is_some()
                || folder.is_empty()
                || self
                    .folder
                    .strip_prefix(folder)
                    .is_some_and(|r| r.starts_with('/')))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("invalid user id {0:?}")]
    BadUser(String),
    #[error("invalid folder {0:?}: {1}")]
    BadFolder(String, String),
    #[error("{uid}'s folder {folder:?} overlaps the library {other}")]
    Overlap {
        uid: String,
        folder: String,
        other: String,
    },
    #[error("no library {0}")]
    Unknown(String),
    #[error("library storage: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> LibraryError {
    LibraryError::Storage(e.to_string())
}

/// Normalises a folder: no leading/trailing `/`, valid chain path rules; "" or "/" = root.
pub fn normalize_folder(folder: &str) -> Result<String, LibraryError> {
    let trimmed = folder.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    ChainPath::new(trimmed)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| LibraryError::BadFolder(folder.to_owned(), e.to_string()))
}

/// Checks a Nextcloud user id (letters, digits, and `_.@-'` and space, as Nextcloud allows).
pub fn validate_uid(uid: &str) -> Result<(), LibraryError> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid
            .chars()
            .all(|c| c.is_alphanumeric() || "_.@-' ".contains(c));
    if ok {
        Ok(())
    } else {
        Err(LibraryError::BadUser(uid.to_owned()))
    }
}

/// The registry of libraries.
#[derive(Clone)]
pub struct Libraries {
    db: Db,
    map: Arc<RwLock<BTreeMap<LibraryId, Library>>>,
}

/// Every library the table holds.
fn load(db: &Database) -> Result<BTreeMap<LibraryId, Library>, LibraryError> {
    let mut map = BTreeMap::new();
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(LIBRARIES).map_err(storage)?;
    for row in table.iter().map_err(storage)? {
        let (_, bytes) = row.map_err(storage)?;
        let lib: Library = serde_json::from_slice(bytes.value()).map_err(storage)?;
        map.insert(lib.id, lib);
    }
    Ok(map)
}

impl Libraries {
    pub fn open(db: Db) -> Result<Self, LibraryError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(LIBRARIES).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let map = Arc::new(RwLock::new(db.with(load).map_err(storage)??));
        db.on_reopen(&map, |map, database| {
            *crate::locks::write(map) = load(database).map_err(|e| e.to_string())?;
            Ok(())
        });
        Ok(Libraries { db, map })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<LibraryId, Library>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<Library> {
        self.read().values().cloned().collect()
    }

    pub fn get(&self, id: &LibraryId) -> Option<Library> {
        self.read().get(id).cloned()
    }

    /// Fails if `uid`'s `folder` overlaps an existing library.
    pub fn check_free(&self, uid: &str, folder: &str) -> Result<(), LibraryError> {
        match self.read().values().find(|l| l.overlaps(uid, folder)) {
            Some(other) => Err(LibraryError::Overlap {
                uid: uid.to_owned(),
                folder: folder.to_owned(),
                other: other.id.to_hex(),
            }),
            None => Ok(()),
        }
    }

    /// Records a library durably.
    pub fn insert(&self, library: Library) -> Result<(), LibraryError> {
        let bytes = serde_json::to_vec(&library).map_err(storage)?;
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        txn.open_table(LIBRARIES)
            .map_err(storage)?
            .insert(library.id.0, bytes.as_slice())
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(library.id, library);
        Ok(())
    }

    /// Forgets a library (its chain stays in the store).
    pub fn remove(&self, id: &LibraryId) -> Result<Library, LibraryError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        txn.open_table(LIBRARIES)
            .map_err(storage)?
            .remove(id.0)
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .ok_or_else(|| LibraryError::Unknown(id.to_hex()))
    }

    /// The libraries an event touches, with the library path of each node.
    pub fn matching<'n>(&self, nodes: impl Iterator<Item = &'n Node>) -> Vec<LibraryId> {
        let map = self.read();
        let mut out = Vec::new();
        for node in nodes {
            for lib in map.values() {
                if lib.node_path(node).is_some() && !out.contains(&lib.id) {
                    out.push(lib.id);
                }
            }
        }
        out
    }
}

/// Library ids as hex strings in the stored JSON.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::chain::LibraryId;

    pub fn serialize<S: Serializer>(id: &LibraryId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LibraryId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(folder: &str) -> Library {
        Library {
            id: LibraryId([1; 16]),
            name: "x".into(),
            uid: "alice".into(),
            folder: folder.into(),
            created_ms: 0,
        }
    }

    #[test]
    fn relative_paths() {
        let l = lib("Docs/Team");
        assert_eq!(l.relative("Docs/Team"), Some(""));
        assert_eq!(l.relative("Docs/Team/a.txt"), Some("a.txt"));
        assert_eq!(l.relative("Docs/Teammates/a.txt"), None);
        assert_eq!(l.relative("Docs"), None);
        assert_eq!(lib("").relative("x/y"), Some("x/y"));
        assert_eq!(l.user_path("a.txt"), "Docs/Team/a.txt");
        assert_eq!(lib("").user_path("a.txt"), "a.txt");
    }

    #[test]
    fn overlaps() {
        let l = lib("Docs/Team");
        assert!(l.overlaps("alice", "Docs"));
        assert!(l.overlaps("alice", "Docs/Team/sub"));
        assert!(l.overlaps("alice", ""));
        assert!(!l.overlaps("alice", "Docs/Teams"));
        assert!(!l.overlaps("bob", "Docs/Team"));
    }

    #[test]
    fn folder_rules() {
        assert_eq!(normalize_folder("/Docs/Team/").unwrap(), "Docs/Team");
        assert_eq!(normalize_folder("/").unwrap(), "");
        assert!(normalize_folder("Docs/../x").is_err());
        assert!(validate_uid("alice").is_ok());
        assert!(validate_uid("a/b").is_err());
        assert!(validate_uid("").is_err());
    }
}
