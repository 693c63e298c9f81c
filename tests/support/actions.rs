//! A Nextcloud user acting in the web UI: file changes that fire webhook events exactly
//! as the same WebDAV request would, without going through HTTP.

use bytes::Bytes;

use super::files::{Content, FileNode, FsError};
use super::nextcloud::FakeNextcloud;
use super::webdav;

impl FakeNextcloud {
    pub fn user_put(&self, uid: &str, path: &str, bytes: impl Into<Bytes>) -> FileNode {
        self.user_put_content(uid, path, Content::Bytes(bytes.into()), None)
    }

    /// A pseudo-random file of `len` bytes that costs the double no memory.
    pub fn user_put_generated(&self, uid: &str, path: &str, seed: u64, len: u64) -> FileNode {
        self.user_put_content(uid, path, Content::Generated { seed, len }, None)
    }

    pub fn user_put_content(
        &self,
        uid: &str,
        path: &str,
        content: Content,
        mtime: Option<i64>,
    ) -> FileNode {
        let mut state = self.state();
        webdav::user_put(&mut state, uid, path, content, mtime, None, None, Some(uid))
            .unwrap_or_else(|e| panic!("put {path}: {e:?}"))
            .1
    }

    pub fn user_mkdir(&self, uid: &str, path: &str) -> FileNode {
        webdav::user_mkdir(&mut self.state(), uid, path, Some(uid))
            .unwrap_or_else(|e| panic!("mkdir {path}: {e:?}"))
    }

    pub fn user_delete(&self, uid: &str, path: &str) {
        webdav::user_delete(&mut self.state(), uid, path, Some(uid))
            .unwrap_or_else(|e| panic!("delete {path}: {e:?}"))
    }

    pub fn user_move(&self, uid: &str, from: &str, to: &str) -> Result<FileNode, FsError> {
        webdav::user_move_or_copy(&mut self.state(), uid, from, to, false, false, Some(uid))
            .map(|r| r.1)
    }

    pub fn user_copy(
        &self,
        uid: &str,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<FileNode, FsError> {
        webdav::user_move_or_copy(&mut self.state(), uid, from, to, true, overwrite, Some(uid))
            .map(|r| r.1)
    }

    /// Restores the newest trash item that was at `original` (below the user's root).
    pub fn user_restore(&self, uid: &str, original: &str) -> String {
        let mut state = self.state();
        let name = webdav::files_of(&mut state, uid)
            .trash
            .iter()
            .rev()
            .find(|(_, (p, _))| p == original)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| panic!("{original} is not in the trash"));
        webdav::user_restore(&mut state, uid, &name, Some(uid))
            .unwrap_or_else(|e| panic!("restore: {e:?}"))
    }

    /// The file or folder at `path`, if any.
    pub fn file(&self, uid: &str, path: &str) -> Option<FileNode> {
        webdav::files_of(&mut self.state(), uid).get(path).cloned()
    }

    /// Drops queued webhook jobs (for setting up state without events).
    pub fn discard_webhook_jobs(&self) -> usize {
        std::mem::take(&mut self.state().webhook_jobs).len()
    }

    pub fn pending_webhook_jobs(&self) -> usize {
        self.state().webhook_jobs.len()
    }
}
