//! Where a library's files live: the engine reads changes from, and applies peers' changes
//! to, "a backend", never to a protocol by name.
//!
//! A library is a folder of some owner ([`Root`]); every path given to a backend is
//! relative to that folder (`Docs/a.txt`, `""` for the folder itself), and every [`Item`]
//! it lists comes back in the same terms. Writes carry the lost-update guard
//! ([`WriteOptions::if_match`], [`WriteOptions::if_absent`]): a backend refuses a write
//! whose precondition no longer holds with [`BackendError::PreconditionFailed`], so a user's
//! change made meanwhile is never overwritten. The checksum a write carries
//! ([`WriteOptions::checksum`]) comes back in listings ([`Item::checksums`]), which is how
//! the engine knows its own writes when they are reported back (no echo).
//!
//! | backend | files | how changes are seen |
//! |---|---|---|
//! | [`nextcloud`] | a user's Nextcloud folder, over WebDAV | webhooks, and folder-ETag catch-ups |
//! | [`local`] | a folder on this machine | a file-system watcher, and rescans |
//!
//! How a backend's changes reach the engine differs by kind (Nextcloud pushes webhooks to
//! our HTTP server; a local folder is watched, [`local::watch`]), so watching is not a
//! method here: each backend's watcher feeds the engine's queue, Nextcloud's as file
//! events, a folder's as [`Change`]s.

pub mod error;
pub mod local;
pub mod nextcloud;

use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use error::BackendError;

/// The folder a library is. For Nextcloud, `folder` (relative to the owner's root, no
/// slashes at either end, `""` for the whole root) of `owner` (the user id); for a local
/// folder, its absolute path (`owner` unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root<'a> {
    pub owner: &'a str,
    pub folder: &'a str,
}

impl Root<'_> {
    /// The path below the owner's root of a path relative to this folder.
    pub fn owner_path(&self, rel: &str) -> String {
        match (self.folder.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_owned(),
            (false, true) => self.folder.to_owned(),
            (false, false) => format!("{}/{}", self.folder, rel),
        }
    }

    /// The path relative to this folder of a path below the owner's root, if it lies in it.
    pub fn relative<'p>(&self, owner_path: &'p str) -> Option<&'p str> {
        if self.folder.is_empty() {
            return Some(owner_path);
        }
        if owner_path == self.folder {
            return Some("");
        }
        owner_path.strip_prefix(self.folder)?.strip_prefix('/')
    }
}

/// How much a listing covers: the item itself, or a folder and its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Zero,
    One,
}

/// One file or folder as the backend holds it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// Relative to the library's folder; `""` is the folder itself.
    pub path: String,
    pub is_dir: bool,
    /// Changes whenever the item (for a folder: anything below it) changes.
    pub etag: Option<String>,
    /// A stable id that survives renames, where the backend has one.
    pub fileid: Option<u64>,
    pub size: Option<u64>,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: Option<i64>,
    pub content_type: Option<String>,
    pub permissions: Option<String>,
    /// Checksums stored with the file, e.g. `SHA256:ab12…`.
    pub checksums: Vec<String>,
}

/// Conditions and metadata of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Only write if the file still has this ETag (lost-update guard); `None` = any.
    pub if_match: Option<String>,
    /// Only write if nothing is at the path yet: the path was seen empty, and a file a
    /// user creates there meanwhile must not be overwritten.
    pub if_absent: bool,
    /// Modification time to set, seconds since the epoch.
    pub mtime: Option<i64>,
    /// A checksum to store with the file, e.g. `SHA256:<hex>`, listed back in
    /// [`Item::checksums`].
    pub checksum: Option<String>,
}

/// What a write left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub created: bool,
    pub etag: Option<String>,
    pub fileid: Option<u64>,
}

/// One change a backend's watcher saw, relative to the library's folder: where the
/// engine should look (what is there now is read, never taken from the notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something changed at this path (created, written, removed, or its metadata).
    Path(String),
    /// Moved within the folder.
    Renamed { from: String, to: String },
    /// Changes were lost: look at everything.
    Everything,
}

/// A file's bytes, streamed, a chunk at a time.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A library's files: list, read, write, rename, delete.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The item at `rel` (`Depth::Zero`), or a folder and its children (`Depth::One`, the
    /// folder first).
    async fn list(
        &self,
        root: Root<'_>,
        rel: &str,
        depth: Depth,
    ) -> Result<Vec<Item>, BackendError>;

    /// The file's bytes.
    async fn read(&self, root: Root<'_>, rel: &str) -> Result<ByteStream, BackendError>;

    /// Several files of the folder `folder` in one request: a tar stream of `names` (each
    /// relative to `folder`), its entries named by their path below it (a leading `/`
    /// allowed). A name not there fails the whole request with [`BackendError::NotFound`].
    /// `Ok(None)` where the backend has no such request: each file is then read on its own.
    async fn read_tar(
        &self,
        _root: Root<'_>,
        _folder: &str,
        _names: &[&str],
    ) -> Result<Option<ByteStream>, BackendError> {
        Ok(None)
    }

    /// Writes `size` bytes from `body` to `rel`, under `options`' conditions.
    async fn write(
        &self,
        root: Root<'_>,
        rel: &str,
        body: ByteStream,
        size: u64,
        options: &WriteOptions,
    ) -> Result<Written, BackendError>;

    /// Makes the folder `rel` (its parent must exist).
    async fn mkdir(&self, root: Root<'_>, rel: &str) -> Result<Written, BackendError>;

    /// Moves `from` to `to`; replaces what is at `to` only if `overwrite`.
    async fn rename(
        &self,
        root: Root<'_>,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Written, BackendError>;

    /// Removes `rel` (a folder with everything below it).
    async fn delete(&self, root: Root<'_>, rel: &str) -> Result<(), BackendError>;
}
