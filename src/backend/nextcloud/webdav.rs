//! A user's files over WebDAV, as that user (docs/appapi.md §9).
//!
//! Every request is signed with the AppAPI headers naming the user, who must be the same
//! user as in the URL (`/remote.php/dav/files/<uid>/…`). Paths given to this module are
//! relative to the user's root (`Docs/a.txt`); each segment is percent-encoded here.
//!
//! Bodies are streamed both ways: [`WebDav::get`] hands back the response so the caller
//! can read it chunk by chunk, and [`WebDav::put`] sends a stream, switching to
//! Nextcloud's chunked upload v2 above [`CHUNKED_THRESHOLD`] so that no file is ever
//! held whole in memory and no single request has to carry gigabytes.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::multistatus::{self, DavEntry};
use crate::appapi::client::{urlencode_segment, Caller, NextcloudClient};

/// Files larger than this are uploaded in chunks (chunked upload v2).
pub const CHUNKED_THRESHOLD: u64 = 64 << 20;
/// The size of one upload chunk (Nextcloud wants 5 MiB to 5 GiB, except the last).
pub const CHUNK_SIZE: usize = 16 << 20;

/// The properties harpbridge asks for in every PROPFIND and SEARCH.
const PROPS: &str = "<d:resourcetype/><d:getlastmodified/><d:getcontentlength/><d:getcontenttype/><d:getetag/><oc:size/><oc:fileid/><oc:permissions/><oc:checksums/>";

#[derive(Debug, thiserror::Error)]
pub enum DavError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict (a parent folder is missing?): {0}")]
    Conflict(String),
    #[error("precondition failed (changed since read): {0}")]
    PreconditionFailed(String),
    #[error("locked: {0}")]
    Locked(String),
    #[error("Nextcloud storage is full: {0}")]
    InsufficientStorage(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("Nextcloud refused our credentials for this user (HTTP 401); not retrying")]
    Unauthorized,
    #[error("Nextcloud answered HTTP {status} for {path}: {message}")]
    Status {
        status: StatusCode,
        path: String,
        message: String,
    },
    #[error("cannot reach Nextcloud: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("unexpected WebDAV answer: {0}")]
    Xml(#[from] multistatus::MultistatusError),
}

impl DavError {
    /// Worth retrying later: Nextcloud was unreachable, overloaded or failing.
    pub fn is_transient(&self) -> bool {
        match self {
            DavError::Transport(_) | DavError::Locked(_) | DavError::InsufficientStorage(_) => true,
            DavError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            _ => false,
        }
    }
}

/// `Depth` of a PROPFIND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Zero,
    One,
}

/// Options of a PUT.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Only write if the file still has this ETag (lost-update guard); `None` = any.
    pub if_match: Option<String>,
    /// Only write if nothing is at the path yet (`If-None-Match: *`): the path was seen
    /// empty, and a file a user creates there meanwhile must not be overwritten. Nextcloud
    /// answers 412 ([`DavError::PreconditionFailed`]) when something is there.
    ///
    /// A chunked upload carries neither condition: SabreDAV judges `If-Match` and
    /// `If-None-Match` on the final MOVE against the request's own path, the upload's
    /// `.file` (a real Nextcloud 33 answers 412 to every such MOVE). There the destination
    /// is looked at (PROPFIND) just before the MOVE instead, and a mismatch is the same 412.
    pub if_absent: bool,
    /// Modification time to set, seconds since the epoch.
    pub mtime: Option<i64>,
    /// `OC-Checksum`, e.g. `SHA256:<hex>`: stored by Nextcloud and listed in `oc:checksums`.
    pub checksum: Option<String>,
}

/// What Nextcloud answered to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    pub created: bool,
    pub etag: Option<String>,
    pub fileid: Option<u64>,
}

/// WebDAV access to users' files through a [`NextcloudClient`].
#[derive(Debug, Clone)]
pub struct WebDav {
    client: NextcloudClient,
}

/// `/remote.php/dav/files/<uid>/<path>` with every segment encoded.
pub fn files_path(uid: &str, path: &str) -> String {
    let mut out = format!("/remote.php/dav/files/{}", urlencode_segment(uid));
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(&urlencode_segment(segment));
    }
    out
}

/// The numeric file id from an `OC-FileId` header (`00000259oczn5x60nrdu` → 259).
pub fn parse_oc_fileid(value: &str) -> Option<u64> {
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn sabre_message(body: &str) -> String {
    body.split("<s:message>")
        .nth(1)
        .and_then(|rest| rest.split("</s:message>").next())
        .map(|m| m.trim().to_owned())
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn write_result(status: StatusCode, headers: &HeaderMap) -> WriteResult {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    WriteResult {
        created: status == StatusCode::CREATED,
        etag: header("oc-etag")
            .or_else(|| header("etag"))
            .map(|e| e.trim_matches('"').to_owned()),
        fileid: header("oc-fileid").and_then(parse_oc_fileid),
    }
}

impl WebDav {
    pub fn new(client: NextcloudClient) -> Self {
        WebDav { client }
    }

    fn request(&self, method: &str, uid: &str, dav_path: &str) -> RequestBuilder {
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        self.client.request(method, dav_path, Caller::User(uid))
    }

    fn absolute(&self, dav_path: &str) -> String {
        format!("{}{}", self.client.base_url(), dav_path)
    }

    /// Sends and maps error statuses to [`DavError`]s.
    async fn send(&self, request: RequestBuilder, path: &str) -> Result<Response, DavError> {
        let response = request.send().await.map_err(DavError::Transport)?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_of(response, path).await)
    }

    /// PROPFIND: the item itself (`Depth::Zero`) or a folder and its children.
    pub async fn propfind(
        &self,
        uid: &str,
        path: &str,
        depth: Depth,
    ) -> Result<Vec<DavEntry>, DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns"><d:prop>{PROPS}</d:prop></d:propfind>"#
        );
        let dav_path = files_path(uid, path);
        let request = self
            .request("PROPFIND", uid, &dav_path)
            .header("Depth", if depth == Depth::Zero { "0" } else { "1" })
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body);
        let response = self.send(request, path).await?;
        let text = response.text().await.map_err(DavError::Transport)?;
        Ok(multistatus::parse(&text)?)
    }

    /// SEARCH the user's files for a file id; `None` when nothing matches.
    pub async fn search_by_fileid(
        &self,
        uid: &str,
        fileid: u64,
    ) -> Result<Option<DavEntry>, DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><d:searchrequest xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns"><d:basicsearch><d:select><d:prop>{PROPS}</d:prop></d:select><d:from><d:scope><d:href>/files/{}</d:href><d:depth>infinity</d:depth></d:scope></d:from><d:where><d:eq><d:prop><oc:fileid/></d:prop><d:literal>{fileid}</d:literal></d:eq></d:where></d:basicsearch></d:searchrequest>"#,
            quick_xml::escape::escape(uid)
        );
        let request = self
            .request("SEARCH", uid, "/remote.php/dav/")
            .header("Content-Type", "text/xml")
            .body(body);
        let response = self.send(request, "/remote.php/dav/").await?;
        let text = response.text().await.map_err(DavError::Transport)?;
        Ok(multistatus::parse(&text)?.into_iter().next())
    }

    /// GET: the response, whose body the caller streams (`bytes_stream()`).
    pub async fn get(&self, uid: &str, path: &str) -> Result<Response, DavError> {
        let request = self
            .request("GET", uid, &files_path(uid, path))
            .timeout(Duration::from_secs(3600));
        self.send(request, path).await
    }

    /// GET of a folder as a tar stream of some of its files (`names`, relative to the
    /// folder): Nextcloud's `ZipFolderPlugin` (apps/dav, Nextcloud 30 and later) answers
    /// `Accept: application/x-tar` with `?files=<JSON array>` with one archive, each entry
    /// named by its path below the folder (POSIX ustar, long names as GNU `L` entries).
    ///
    /// One request instead of one per file: on a real server most of a small file's GET is
    /// PHP starting up and authenticating. A name that is not there makes the whole request
    /// [`DavError::NotFound`] (before any byte is sent). `Ok(None)`: this server does not
    /// make such archives (an older Nextcloud, or one where an app forbids them).
    pub async fn get_tar(
        &self,
        uid: &str,
        folder: &str,
        names: &[&str],
    ) -> Result<Option<Response>, DavError> {
        let files = serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned());
        let request = self
            .request("GET", uid, &files_path(uid, folder))
            .query(&[("files", files.as_str())])
            .header("Accept", "application/x-tar")
            .timeout(Duration::from_secs(3600));
        let response = request.send().await.map_err(DavError::Transport)?;
        match response.status() {
            // No plugin takes a folder's GET (Sabre's "GET is only implemented on File
            // objects"), an app forbids archives (`BeforeZipCreatedEvent`, 403), or a front
            // end refuses it.
            StatusCode::NOT_IMPLEMENTED
            | StatusCode::FORBIDDEN
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::BAD_REQUEST => return Ok(None),
            status if !status.is_success() => return Err(error_of(response, folder).await),
            _ => {}
        }
        let tar = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-tar"));
        Ok(tar.then_some(response))
    }

    /// PUT a stream of `size` bytes; above [`CHUNKED_THRESHOLD`] as a chunked upload.
    pub async fn put<S>(
        &self,
        uid: &str,
        path: &str,
        body: S,
        size: u64,
        options: &PutOptions,
    ) -> Result<WriteResult, DavError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        if size > CHUNKED_THRESHOLD {
            return self.put_chunked(uid, path, body, size, options).await;
        }
        let mut request = self
            .request("PUT", uid, &files_path(uid, path))
            .header("Content-Length", size)
            .timeout(Duration::from_secs(3600))
            .body(reqwest::Body::wrap_stream(body));
        request = with_put_options(request, options);
        if options.if_absent {
            request = request.header("If-None-Match", "*");
        }
        let response = self.send(request, path).await?;
        Ok(write_result(response.status(), response.headers()))
    }

    /// Chunked upload v2: MKCOL an upload folder, PUT the chunks, MOVE `.file` into place.
    async fn put_chunked<S>(
        &self,
        uid: &str,
        path: &str,
        mut body: S,
        size: u64,
        options: &PutOptions,
    ) -> Result<WriteResult, DavError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        let destination = self.absolute(&files_path(uid, path));
        let upload_id = format!("harpbridge-{:016x}", rand_u64());
        let upload_dir = format!(
            "/remote.php/dav/uploads/{}/{}",
            urlencode_segment(uid),
            upload_id
        );
        let mkcol = self
            .request("MKCOL", uid, &upload_dir)
            .header("Destination", &destination);
        self.send(mkcol, path).await?;
        let result = async {
            let mut chunk = Vec::with_capacity(CHUNK_SIZE);
            let mut index = 1u32;
            let mut sent = 0u64;
            loop {
                let next = body.next().await;
                if let Some(piece) = &next {
                    let piece = piece.as_ref().map_err(|e| DavError::Status {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        path: path.to_owned(),
                        message: format!("reading the upload: {e}"),
                    })?;
                    chunk.extend_from_slice(piece);
                }
                let last = next.is_none();
                while chunk.len() >= CHUNK_SIZE || (last && !chunk.is_empty()) {
                    let take = chunk.len().min(CHUNK_SIZE);
                    let rest = chunk.split_off(take);
                    let part = std::mem::replace(&mut chunk, rest);
                    sent += part.len() as u64;
                    let put = self
                        .request("PUT", uid, &format!("{upload_dir}/{index:05}"))
                        .header("Destination", &destination)
                        .header("OC-Total-Length", size)
                        .timeout(Duration::from_secs(600))
                        .body(part);
                    self.send(put, path).await?;
                    index += 1;
                }
                if last {
                    break;
                }
            }
            if sent != size {
                return Err(DavError::Status {
                    status: StatusCode::BAD_REQUEST,
                    path: path.to_owned(),
                    message: format!("upload stream gave {sent} bytes, expected {size}"),
                });
            }
            self.check_destination(uid, path, options).await?;
            let mut mv = self
                .request("MOVE", uid, &format!("{upload_dir}/.file"))
                .header("Destination", &destination)
                .header("OC-Total-Length", size)
                .timeout(Duration::from_secs(3600));
            let unconditional = PutOptions {
                if_match: None,
                if_absent: false,
                ..options.clone()
            };
            mv = with_put_options(mv, &unconditional);
            let response = self.send(mv, path).await?;
            Ok(write_result(response.status(), response.headers()))
        }
        .await;
        if result.is_err() {
            let cleanup = self.request("DELETE", uid, &upload_dir);
            let _ = self.send(cleanup, path).await;
        }
        result
    }

    /// The lost-update guard of a chunked upload (see [`PutOptions::if_absent`]): the
    /// destination still has the expected ETag, or is still absent; else 412.
    async fn check_destination(
        &self,
        uid: &str,
        path: &str,
        options: &PutOptions,
    ) -> Result<(), DavError> {
        if options.if_match.is_none() && !options.if_absent {
            return Ok(());
        }
        let now = match self.propfind(uid, path, Depth::Zero).await {
            Ok(entries) => entries.into_iter().next(),
            Err(DavError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let holds = match (&options.if_match, now) {
            (Some(expected), Some(entry)) => entry.etag.as_deref() == Some(expected.as_str()),
            (Some(_), None) => false,
            (None, now) => now.is_none(),
        };
        if holds {
            Ok(())
        } else {
            Err(DavError::PreconditionFailed(path.to_owned()))
        }
    }

    /// MKCOL: create a folder.
    pub async fn mkcol(&self, uid: &str, path: &str) -> Result<WriteResult, DavError> {
        let response = self
            .send(self.request("MKCOL", uid, &files_path(uid, path)), path)
            .await?;
        Ok(write_result(response.status(), response.headers()))
    }

    /// MOVE `from` to `to` (both relative to the user's root).
    pub async fn rename(
        &self,
        uid: &str,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<WriteResult, DavError> {
        self.move_or_copy("MOVE", uid, from, to, overwrite).await
    }

    /// COPY `from` to `to`.
    pub async fn copy(
        &self,
        uid: &str,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<WriteResult, DavError> {
        self.move_or_copy("COPY", uid, from, to, overwrite).await
    }

    async fn move_or_copy(
        &self,
        method: &str,
        uid: &str,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<WriteResult, DavError> {
        let request = self
            .request(method, uid, &files_path(uid, from))
            .header("Destination", self.absolute(&files_path(uid, to)))
            .header("Overwrite", if overwrite { "T" } else { "F" });
        let response = self.send(request, from).await?;
        Ok(write_result(response.status(), response.headers()))
    }

    /// DELETE (into the trash bin when `files_trashbin` is enabled).
    pub async fn delete(&self, uid: &str, path: &str) -> Result<(), DavError> {
        self.send(self.request("DELETE", uid, &files_path(uid, path)), path)
            .await?;
        Ok(())
    }
}

/// The [`DavError`] of an answer that is not a success.
async fn error_of(response: Response, path: &str) -> DavError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = sabre_message(&body);
    let path = path.to_owned();
    match status {
        StatusCode::NOT_FOUND => DavError::NotFound(path),
        StatusCode::CONFLICT => DavError::Conflict(path),
        StatusCode::PRECONDITION_FAILED => DavError::PreconditionFailed(path),
        StatusCode::LOCKED => DavError::Locked(path),
        StatusCode::INSUFFICIENT_STORAGE => DavError::InsufficientStorage(path),
        StatusCode::METHOD_NOT_ALLOWED => DavError::AlreadyExists(path),
        StatusCode::UNAUTHORIZED => DavError::Unauthorized,
        status => DavError::Status {
            status,
            path,
            message,
        },
    }
}

fn with_put_options(mut request: RequestBuilder, options: &PutOptions) -> RequestBuilder {
    if let Some(etag) = &options.if_match {
        request = request.header("If-Match", format!("\"{etag}\""));
    }
    if let Some(mtime) = options.mtime {
        request = request.header("X-OC-MTime", mtime);
    }
    if let Some(checksum) = &options.checksum {
        request = request.header("OC-Checksum", checksum);
    }
    request
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return nanos ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(
            files_path("alice smith", "/Docs/a b#?.txt"),
            "/remote.php/dav/files/alice%20smith/Docs/a%20b%23%3F.txt"
        );
        assert_eq!(files_path("bob", ""), "/remote.php/dav/files/bob");
    }

    #[test]
    fn oc_fileid_header() {
        assert_eq!(parse_oc_fileid("00000259oczn5x60nrdu"), Some(259));
        assert_eq!(parse_oc_fileid("oc"), None);
    }

    #[test]
    fn sabre_errors_give_their_message() {
        let body = r#"<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns"><s:exception>Sabre\DAV\Exception\NotFound</s:exception><s:message>File with name x could not be located</s:message></d:error>"#;
        assert_eq!(sabre_message(body), "File with name x could not be located");
    }
}
