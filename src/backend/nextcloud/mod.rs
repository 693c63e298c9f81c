//! A user's Nextcloud folder as a [`Backend`]: WebDAV as that user, through AppAPI.
//!
//! - [`webdav`]: the WebDAV client (PROPFIND, GET, PUT with chunked upload v2, MKCOL,
//!   MOVE, DELETE), signed with the AppAPI headers naming the user.
//! - [`multistatus`]: parsing its 207 answers.
//!
//! Changes are seen by webhooks ([`crate::appapi::webhooks`]) and the engine's folder-ETag
//! catch-ups, not here.

pub mod multistatus;
pub mod webdav;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use super::{Backend, BackendError, ByteStream, Depth, Item, Root, WriteOptions, Written};
use crate::appapi::client::NextcloudClient;
use multistatus::DavEntry;
use webdav::{DavError, PutOptions, WebDav, WriteResult};

/// How this backend names itself in errors.
const NAME: &str = "Nextcloud";

/// Users' Nextcloud files, each library a folder of its owner.
#[derive(Debug, Clone)]
pub struct NextcloudBackend {
    dav: WebDav,
    /// This Nextcloud answered a folder's tar GET with something else
    /// ([`WebDav::get_tar`]): files are read one by one from then on.
    no_tar: Arc<AtomicBool>,
}

impl NextcloudBackend {
    pub fn new(client: NextcloudClient) -> Self {
        NextcloudBackend {
            dav: WebDav::new(client),
            no_tar: Arc::default(),
        }
    }
}

impl From<DavError> for BackendError {
    fn from(e: DavError) -> Self {
        match e {
            DavError::NotFound(p) => BackendError::NotFound(p),
            DavError::Conflict(p) => BackendError::Conflict(p),
            DavError::PreconditionFailed(p) => BackendError::PreconditionFailed(p),
            DavError::Locked(p) => BackendError::Locked(p),
            DavError::InsufficientStorage(path) => BackendError::Full {
                backend: NAME,
                path,
            },
            DavError::AlreadyExists(p) => BackendError::AlreadyExists(p),
            DavError::Unauthorized => BackendError::Unauthorized(NAME),
            DavError::Status {
                status,
                path,
                message,
            } => BackendError::Status {
                backend: NAME,
                status: status.as_u16(),
                path,
                message,
            },
            DavError::Transport(e) => BackendError::Unreachable {
                backend: NAME,
                source: Box::new(e),
            },
            DavError::Xml(e) => BackendError::Malformed {
                backend: NAME,
                message: e.to_string(),
            },
        }
    }
}

/// The item of a PROPFIND answer, if it lies in `root`.
fn item(root: Root<'_>, entry: DavEntry) -> Option<Item> {
    let below = entry.href.split_once("/remote.php/dav/files/")?.1;
    let (_uid, owner_path) = below.split_once('/').unwrap_or((below, ""));
    let path = root.relative(owner_path.trim_end_matches('/'))?.to_owned();
    Some(Item {
        path,
        is_dir: entry.is_dir,
        etag: entry.etag,
        fileid: entry.fileid,
        size: entry.size,
        mtime: entry.mtime,
        content_type: entry.content_type,
        permissions: entry.permissions,
        checksums: entry.checksums,
    })
}

fn written(w: WriteResult) -> Written {
    Written {
        created: w.created,
        etag: w.etag,
        fileid: w.fileid,
    }
}

#[async_trait::async_trait]
impl Backend for NextcloudBackend {
    async fn list(
        &self,
        root: Root<'_>,
        rel: &str,
        depth: Depth,
    ) -> Result<Vec<Item>, BackendError> {
        let depth = match depth {
            Depth::Zero => webdav::Depth::Zero,
            Depth::One => webdav::Depth::One,
        };
        let entries = self
            .dav
            .propfind(root.owner, &root.owner_path(rel), depth)
            .await?;
        Ok(entries.into_iter().filter_map(|e| item(root, e)).collect())
    }

    async fn read(&self, root: Root<'_>, rel: &str) -> Result<ByteStream, BackendError> {
        let response = self.dav.get(root.owner, &root.owner_path(rel)).await?;
        Ok(response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .boxed())
    }

    async fn read_tar(
        &self,
        root: Root<'_>,
        folder: &str,
        names: &[&str],
    ) -> Result<Option<ByteStream>, BackendError> {
        if self.no_tar.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let tar = self
            .dav
            .get_tar(root.owner, &root.owner_path(folder), names)
            .await?;
        let Some(response) = tar else {
            if !self.no_tar.swap(true, Ordering::Relaxed) {
                tracing::info!("Nextcloud does not send folders as tar streams (before Nextcloud 30, or an app forbids archives): small files are read one request each");
            }
            return Ok(None);
        };
        Ok(Some(
            response
                .bytes_stream()
                .map_err(std::io::Error::other)
                .boxed(),
        ))
    }

    async fn write(
        &self,
        root: Root<'_>,
        rel: &str,
        body: ByteStream,
        size: u64,
        options: &WriteOptions,
    ) -> Result<Written, BackendError> {
        let options = PutOptions {
            if_match: options.if_match.clone(),
            if_absent: options.if_absent,
            mtime: options.mtime,
            checksum: options.checksum.clone(),
        };
        let w = self
            .dav
            .put(root.owner, &root.owner_path(rel), body, size, &options)
            .await?;
        Ok(written(w))
    }

    async fn mkdir(&self, root: Root<'_>, rel: &str) -> Result<Written, BackendError> {
        Ok(written(
            self.dav.mkcol(root.owner, &root.owner_path(rel)).await?,
        ))
    }

    async fn rename(
        &self,
        root: Root<'_>,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<Written, BackendError> {
        let w = self
            .dav
            .rename(
                root.owner,
                &root.owner_path(from),
                &root.owner_path(to),
                overwrite,
            )
            .await?;
        Ok(written(w))
    }

    async fn delete(&self, root: Root<'_>, rel: &str) -> Result<(), BackendError> {
        Ok(self.dav.delete(root.owner, &root.owner_path(rel)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(href: &str) -> DavEntry {
        DavEntry {
            href: href.into(),
            ..DavEntry::default()
        }
    }

    #[test]
    fn hrefs_become_paths_in_the_library() {
        let root = Root {
            owner: "alice",
            folder: "Docs/Team",
        };
        let path = |href: &str| item(root, entry(href)).map(|i| i.path);
        assert_eq!(
            path("/remote.php/dav/files/alice/Docs/Team/"),
            Some("".into())
        );
        assert_eq!(
            path("/remote.php/dav/files/alice/Docs/Team/a b.txt"),
            Some("a b.txt".into())
        );
        assert_eq!(
            path("/nc/remote.php/dav/files/alice/Docs/Team/b"),
            Some("b".into())
        );
        assert_eq!(path("/remote.php/dav/files/alice/Docs/Teamwork/x"), None);
        assert_eq!(path("/remote.php/dav/files/alice/Other/x"), None);
        assert_eq!(path("/elsewhere"), None);
    }
}
