//! The users' files inside the test double: an in-memory tree per user, with Nextcloud's
//! file ids, ETags (which, as on real local storage, change only when the whole-second
//! mtime changes), checksums and a trash bin.
//!
//! Content is either bytes or *generated* (a seeded pseudo-random stream of a given
//! length), so that a 1 GiB file costs the double no memory.

use std::collections::BTreeMap;

use bytes::Bytes;

/// File content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Bytes),
    Generated { seed: u64, len: u64 },
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Generated { len, .. } => *len,
        }
    }

    /// The content in pieces of at most `piece` bytes.
    pub fn pieces(&self, piece: usize) -> Box<dyn Iterator<Item = Bytes> + Send> {
        match self {
            Content::Bytes(b) => {
                let b = b.clone();
                let n = b.len();
                Box::new(
                    (0..n)
                        .step_by(piece.max(1))
                        .map(move |i| b.slice(i..(i + piece).min(n))),
                )
            }
            Content::Generated { seed, len } => Box::new(Generator::new(*seed, *len, piece)),
        }
    }

    /// All bytes (tests of small files only).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces(1 << 20).flat_map(|b| b.to_vec()).collect()
    }
}

/// A deterministic pseudo-random byte stream (xorshift64*), `len` bytes long.
pub struct Generator {
    state: u64,
    left: u64,
    piece: usize,
}

impl Generator {
    pub fn new(seed: u64, len: u64, piece: usize) -> Self {
        Generator {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
            piece: piece.max(8),
        }
    }
}

impl Iterator for Generator {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.left == 0 {
            return None;
        }
        let n = (self.piece as u64).min(self.left) as usize;
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            out.extend_from_slice(&self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(n);
        self.left -= n as u64;
        Some(Bytes::from(out))
    }
}

#[derive(Debug, Clone)]
pub struct FileNode {
    pub fileid: u64,
    /// `None` for a folder.
    pub content: Option<Content>,
    pub mtime: i64,
    pub checksum: Option<String>,
    /// Folders: how many changes below it Nextcloud propagated (each gives a new ETag).
    pub changes: u64,
}

impl FileNode {
    pub fn is_dir(&self) -> bool {
        self.content.is_none()
    }

    pub fn size(&self, children_size: u64) -> u64 {
        self.content
            .as_ref()
            .map(Content::len)
            .unwrap_or(children_size)
    }

    /// Like Nextcloud on local storage (`md5(mtime . inode . dev . size)`): derived from
    /// the id, the whole-second mtime and the size, so a rewrite of the same size within
    /// one second keeps its ETag; a folder's also changes with every change below it
    /// (Nextcloud's propagation).
    pub fn etag(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let size = self.content.as_ref().map(Content::len).unwrap_or(0);
        for b in self
            .fileid
            .to_le_bytes()
            .into_iter()
            .chain(self.mtime.to_le_bytes())
            .chain(size.to_le_bytes())
            .chain(self.changes.to_le_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Why a file operation failed (mapped to WebDAV statuses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    /// A parent folder is missing (409).
    Conflict,
    /// The target exists (MKCOL 405; COPY/MOVE with Overwrite: F 412).
    Exists,
    /// If-Match did not match (412).
    Precondition,
}

/// One user's files: path ("" = root, "a/b.txt") → node.
#[derive(Debug, Clone, Default)]
pub struct UserFiles {
    pub nodes: BTreeMap<String, FileNode>,
    /// Deleted items: trash name (`x.txt.d<time>`) → (original path, nodes below it, relative).
    pub trash: BTreeMap<String, (String, Vec<(String, FileNode)>)>,
}

pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn below<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root.is_empty() {
        return Some(path);
    }
    if path == root {
        return Some("");
    }
    path.strip_prefix(root)?.strip_prefix('/')
}

impl UserFiles {
    pub fn new(root_id: u64, now: i64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            String::new(),
            FileNode {
                fileid: root_id,
                content: None,
                mtime: now,
                checksum: None,
                changes: 0,
            },
        );
        UserFiles {
            nodes,
            trash: BTreeMap::new(),
        }
    }

    pub fn get(&self, path: &str) -> Option<&FileNode> {
        self.nodes.get(path)
    }

    /// Total size of everything below a folder.
    pub fn size_below(&self, path: &str) -> u64 {
        self.subtree(path)
            .filter_map(|(_, n)| n.content.as_ref().map(Content::len))
            .sum()
    }

    /// The node at `path` and everything below it.
    pub fn subtree<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a FileNode)> + 'a {
        self.nodes
            .iter()
            .filter(move |(p, _)| below(p, path).is_some())
    }

    /// The direct children of a folder.
    pub fn children<'a>(
        &'a self,
        path: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a FileNode)> + 'a {
        self.nodes
            .iter()
            .filter(move |(p, _)| !p.is_empty() && p.as_str() != path && parent(p) == path)
    }

    /// A change at `path`: every folder above it gets a new ETag, up to the user's root.
    fn propagate(&mut self, path: &str) {
        let mut p = path;
        while !p.is_empty() {
            p = parent(p);
            if let Some(node) = self.nodes.get_mut(p) {
                node.changes += 1;
            }
        }
    }

    fn need_parent(&self, path: &str) -> Result<(), FsError> {
        match self.nodes.get(parent(path)) {
            Some(n) if n.is_dir() => Ok(()),
            _ => Err(FsError::Conflict),
        }
    }

    /// Writes a file; returns whether it was created. Keeps the id of an existing file.
    pub fn put(
        &mut self,
        path: &str,
        content: Content,
        mtime: i64,
        checksum: Option<String>,
        if_match: Option<&str>,
        new_id: impl FnOnce() -> u64,
    ) -> Result<bool, FsError> {
        // Nextcloud 33 answers a PUT into a missing folder with 404, not WebDAV's 409.
        self.need_parent(path).map_err(|_| FsError::NotFound)?;
        let existing = self.nodes.get(path);
        if let Some(want) = if_match {
            match existing {
                Some(n) if n.etag() == want.trim_matches('"') => {}
                _ => return Err(FsError::Precondition),
            }
        }
        if existing.is_some_and(FileNode::is_dir) {
            return Err(FsError::Exists);
        }
        let created = existing.is_none();
        let fileid = existing.map(|n| n.fileid).unwrap_or_else(new_id);
        self.nodes.insert(
            path.to_owned(),
            FileNode {
                fileid,
                content: Some(content),
                mtime,
                checksum,
                changes: 0,
            },
        );
        self.propagate(path);
        Ok(created)
    }

    pub fn mkdir(
        &mut self,
        path: &str,
        mtime: i64,
        new_id: impl FnOnce() -> u64,
    ) -> Result<u64, FsError> {
        if self.nodes.contains_key(path) {
            return Err(FsError::Exists);
        }
        self.need_parent(path)?;
        let fileid = new_id();
        self.nodes.insert(
            path.to_owned(),
            FileNode {
                fileid,
                content: None,
                mtime,
                checksum: None,
                changes: 0,
            },
        );
        self.propagate(path);
        Ok(fileid)
    }

    /// Moves the subtree at `from` to the trash; returns the trash name.
    pub fn delete(&mut self, path: &str, now: i64) -> Result<String, FsError> {
        if path.is_empty() || !self.nodes.contains_key(path) {
            return Err(FsError::NotFound);
        }
        let moved: Vec<(String, FileNode)> = self
            .subtree(path)
            .map(|(p, n)| (below(p, path).unwrap_or("").to_owned(), n.clone()))
            .collect();
        self.nodes.retain(|p, _| below(p, path).is_none());
        let base = path.rsplit('/').next().unwrap_or(path);
        let name = format!("{base}.d{now}");
        self.trash.insert(name.clone(), (path.to_owned(), moved));
        self.propagate(path);
        Ok(name)
    }

    /// Puts a trashed subtree back where it was; returns its original path.
    pub fn restore(&mut self, trash_name: &str) -> Result<String, FsError> {
        let (path, nodes) = self.trash.remove(trash_name).ok_or(FsError::NotFound)?;
        self.need_parent(&path)?;
        for (rel, node) in nodes {
            let p = if rel.is_empty() {
                path.clone()
            } else {
                format!("{path}/{rel}")
            };
            self.nodes.insert(p, node);
        }
        self.propagate(&path);
        Ok(path)
    }

    /// MOVE (keeping ids) or COPY (new ids); returns whether the target was created and,
    /// when an existing target was replaced, that it was.
    pub fn move_or_copy(
        &mut self,
        from: &str,
        to: &str,
        copy: bool,
        overwrite: bool,
        mut new_id: impl FnMut() -> u64,
    ) -> Result<(bool, bool), FsError> {
        if !self.nodes.contains_key(from) || from.is_empty() {
            return Err(FsError::NotFound);
        }
        self.need_parent(to)?;
        let replaced = self.nodes.contains_key(to);
        if replaced && !overwrite {
            return Err(FsError::Exists);
        }
        let moved: Vec<(String, FileNode)> = self
            .subtree(from)
            .map(|(p, n)| (below(p, from).unwrap_or("").to_owned(), n.clone()))
            .collect();
        self.nodes.retain(|p, _| below(p, to).is_none());
        if !copy {
            self.nodes.retain(|p, _| below(p, from).is_none());
        }
        for (rel, mut node) in moved {
            if copy {
                node.fileid = new_id();
            }
            let p = if rel.is_empty() {
                to.to_owned()
            } else {
                format!("{to}/{rel}")
            };
            self.nodes.insert(p, node);
        }
        if !copy {
            self.propagate(from);
        }
        self.propagate(to);
        Ok((!replaced, replaced))
    }
}
