//! WebDAV in the test double: `/remote.php/dav/files/<uid>/…` (PROPFIND, GET, PUT, MKCOL,
//! MOVE, COPY, DELETE), `SEARCH /remote.php/dav/` by file id, and chunked upload v2 under
//! `/remote.php/dav/uploads/<uid>/…`, with answers shaped like the fixtures' `webdav/`.
//!
//! Requests must carry AppAPI headers naming the user of the URL, as in real Nextcloud,
//! where WebDAV needs a real user. Every change fires the webhook events real Nextcloud
//! fires for it (fixtures `webhooks/op-event-matrix.json`), as the acting user.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures_util::stream;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::files::{Content, FileNode, FsError, UserFiles};
use super::nextcloud::{Inner, NcState};
use super::webhooks::{fire, Fired};

/// The instance id Nextcloud appends to file ids in `OC-FileId`.
const INSTANCE: &str = "ocnca1b2c3d4";

const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn sabre(status: StatusCode, exception: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\">\n  <s:exception>Sabre\\DAV\\Exception\\{exception}</s:exception>\n  <s:message>{message}</s:message>\n</d:error>\n"
    );
    (
        status,
        [("Content-Type", "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn fs_error(e: FsError, path: &str) -> Response {
    match e {
        FsError::NotFound => sabre(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("File with name {path} could not be located"),
        ),
        FsError::Conflict => sabre(
            StatusCode::CONFLICT,
            "Conflict",
            "Files can only be created as children of collections",
        ),
        FsError::Exists => sabre(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "The destination node already exists, and the overwrite header is set to false",
        ),
        FsError::Precondition => sabre(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "An If-Match header was specified, but none of the specified ETags matched.",
        ),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// AppAPI's DavPlugin: valid headers naming an existing user who owns the URL.
fn dav_login(inner: &Inner, headers: &HeaderMap, uid: &str) -> Result<String, Response> {
    let denied = || {
        sabre(
            StatusCode::UNAUTHORIZED,
            "NotAuthenticated",
            "No public access to this resource., AppAPIAuth has not passed, No 'Authorization: Basic' header found. Either the client didn't send one, or the server is misconfigured, No 'Authorization: Bearer' header found. Either the client didn't send one, or the server is mis-configured, No 'Authorization: Basic' header found. Either the client didn't send one, or the server is misconfigured",
        )
    };
    let auth = header(headers, "authorization-app-api").ok_or_else(denied)?;
    let mut state = inner.lock();
    if state.bruteforce_attempts > 10 {
        return Err(sabre(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceUnavailable",
            "MaxDelayReached",
        ));
    }
    let app_id = header(headers, "ex-app-id").unwrap_or("");
    let Some(app) = state.apps.get(app_id).cloned() else {
        state.bruteforce_attempts += 2;
        return Err(denied());
    };
    let decoded = String::from_utf8_lossy(&STANDARD.decode(auth).unwrap_or_default()).into_owned();
    let (user, secret) = decoded.split_once(':').unwrap_or(("", ""));
    if secret != app.secret {
        state.bruteforce_attempts += 2;
        return Err(denied());
    }
    if header(headers, "ex-app-version")
        .unwrap_or("")
        .trim()
        .is_empty()
        || user.is_empty()
        || !state.users.contains_key(user)
        || (!uid.is_empty() && user != uid)
    {
        return Err(denied());
    }
    Ok(user.to_owned())
}

pub(crate) fn new_fileid(state: &mut NcState) -> u64 {
    state.next_fileid += 1;
    state.next_fileid
}

pub(crate) fn files_of<'a>(state: &'a mut NcState, uid: &str) -> &'a mut UserFiles {
    if !state.user_files.contains_key(uid) {
        state.next_fileid += 1;
        let id = state.next_fileid;
        state
            .user_files
            .insert(uid.to_owned(), UserFiles::new(id, now()));
    }
    state.user_files.get_mut(uid).expect("just inserted")
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("txt") => "text/plain",
        Some("md") => "text/markdown",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn propstat_xml(uid: &str, path: &str, node: &FileNode, files: &UserFiles) -> String {
    let mut href = format!(
        "/remote.php/dav/files/{}/{}",
        encode_path(uid),
        encode_path(path)
    );
    if href.ends_with("//") {
        href.pop();
    }
    if node.is_dir() && !href.ends_with('/') {
        href.push('/');
    }
    let modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(node.mtime.max(0) as u64),
    );
    let size = node.size(files.size_below(path));
    let mut ok = String::new();
    let mut missing = String::new();
    if node.is_dir() {
        ok.push_str("<d:resourcetype><d:collection/></d:resourcetype>");
        missing.push_str("<d:getcontentlength/><d:getcontenttype/>");
    } else {
        ok.push_str("<d:resourcetype/>");
        ok.push_str(&format!("<d:getcontentlength>{size}</d:getcontentlength><d:getcontenttype>{}</d:getcontenttype>", content_type(path)));
    }
    ok.push_str(&format!(
        "<d:getlastmodified>{modified}</d:getlastmodified><d:getetag>&quot;{}&quot;</d:getetag><oc:size>{size}</oc:size><oc:id>{:08}{INSTANCE}</oc:id><oc:fileid>{}</oc:fileid><oc:permissions>{}</oc:permissions>",
        node.etag(), node.fileid, node.fileid, if node.is_dir() { "RGDNVCK" } else { "RGDNVW" }
    ));
    match (&node.checksum, node.is_dir()) {
        (Some(sum), false) => ok.push_str(&format!(
            "<oc:checksums><oc:checksum>{sum}</oc:checksum></oc:checksums>"
        )),
        _ => missing.push_str("<oc:checksums/>"),
    }
    format!(
        "<d:response><d:href>{href}</d:href><d:propstat><d:prop>{ok}</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop>{missing}</d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>"
    )
}

fn multistatus(responses: &str) -> Response {
    let body = format!("<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\" xmlns:oc=\"http://owncloud.org/ns\" xmlns:nc=\"http://nextcloud.org/ns\">{responses}</d:multistatus>\n");
    (
        StatusCode::MULTI_STATUS,
        [("Content-Type", "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn write_headers(status: StatusCode, node: &FileNode, uid: &str) -> Response {
    let mut response = status.into_response();
    let h = response.headers_mut();
    let etag = format!("\"{}\"", node.etag());
    for (name, value) in [
        ("OC-FileId", format!("{:08}{INSTANCE}", node.fileid)),
        ("ETag", etag.clone()),
        ("OC-ETag", etag),
        ("X-User-Id", uid.to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    response
}

/// The path below `/remote.php/dav/files/<uid>/` of a `Destination` header.
fn destination(headers: &HeaderMap, uid: &str) -> Option<String> {
    let dest = header(headers, "destination")?;
    let after = dest.split_once("/remote.php/dav/files/")?.1;
    let (u, path) = after.split_once('/').unwrap_or((after, ""));
    let u = percent_decode_str(u).decode_utf8_lossy();
    (u == uid).then(|| {
        percent_decode_str(path.trim_end_matches('/'))
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// Entry point for everything under `/remote.php/dav/`.
pub(crate) async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Some(rest) = path.strip_prefix("/remote.php/dav/") else {
        return (StatusCode::NOT_FOUND, "Page not found").into_response();
    };
    let body = axum::body::to_bytes(body, 256 << 20)
        .await
        .unwrap_or_default();
    if rest.is_empty() && parts.method.as_str() == "SEARCH" {
        return search(&inner, &parts.headers, &body);
    }
    let (area, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (uid_enc, file_enc) = rest.split_once('/').unwrap_or((rest, ""));
    let uid = percent_decode_str(uid_enc).decode_utf8_lossy().into_owned();
    let file = percent_decode_str(file_enc.trim_end_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    if parts.method == Method::GET && tar_request(&parts.headers, parts.uri.query()).is_some() {
        let mut state = inner.lock();
        if let Some(secret) = state.secret_at_tar.take() {
            let app_id = header(&parts.headers, "ex-app-id").unwrap_or("").to_owned();
            if let Some(app) = state.apps.get_mut(&app_id) {
                app.secret = secret;
            }
        }
    }
    let user = match dav_login(&inner, &parts.headers, &uid) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if area == "files" && parts.method == Method::GET && !inner.lock().no_tar {
        if let Some(files) = tar_request(&parts.headers, parts.uri.query()) {
            return folder_tar(&inner, &user, &file, &files);
        }
    }
    match area {
        "files" => files(&inner, &parts.method, &parts.headers, &user, &file, body).await,
        "uploads" => uploads(&inner, &parts.method, &parts.headers, &user, &file, body),
        _ => sabre(StatusCode::NOT_FOUND, "NotFound", "Principal not found"),
    }
}

/// The `files` of a folder GET asking for a tar stream (`Accept: application/x-tar`,
/// `?files=<JSON array>`), as Nextcloud's `ZipFolderPlugin` takes them.
fn tar_request(headers: &HeaderMap, query: Option<&str>) -> Option<Vec<String>> {
    let accept = header(headers, "accept")?;
    if !accept.split(',').any(|a| a.trim() == "application/x-tar") {
        return None;
    }
    let (_, files) = url::form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == "files")?;
    serde_json::from_str(&files).ok()
}

/// `files` of the folder `path` as Nextcloud 33 streams them (`TarStreamer`): ustar, each
/// entry's prefix `/` and its name below the folder, a GNU `././@LongLink` entry before a
/// name over 99 bytes, two zero blocks at the end. A missing file is a 404 before any byte.
fn folder_tar(inner: &Inner, uid: &str, path: &str, files: &[String]) -> Response {
    let mut contents = Vec::new();
    {
        let mut state = inner.lock();
        for name in files {
            let file = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            if let Some((status, _)) = state.fail_get.get(&(uid.to_owned(), file.clone())) {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return sabre(
                    status,
                    "NotFound",
                    &format!("File with name /{file} could not be located"),
                );
            }
            match files_of(&mut state, uid).get(&file) {
                Some(FileNode {
                    content: Some(c), ..
                }) => contents.push((name.clone(), c.clone())),
                _ => return fs_error(FsError::NotFound, &file),
            }
        }
    }
    let mut tar = Vec::new();
    for (name, content) in contents {
        let bytes: Vec<u8> = content.pieces(256 << 10).flat_map(|b| b.to_vec()).collect();
        if name.len() > 99 {
            tar_entry(&mut tar, b"././@LongLink", b"", b'L', name.as_bytes());
        }
        tar_entry(&mut tar, name.as_bytes(), b"/", b'0', &bytes);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut response = Response::new(Body::from(tar));
    response.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("application/x-tar"),
    );
    response
}

/// One ustar header (name cut at 100 bytes) and its data, padded to 512 bytes.
fn tar_entry(tar: &mut Vec<u8>, name: &[u8], prefix: &[u8], kind: u8, data: &[u8]) {
    let mut header = [0u8; 512];
    let name = &name[..name.len().min(100)];
    header[..name.len()].copy_from_slice(name);
    header[100..107].copy_from_slice(b"0000777");
    header[108..109].copy_from_slice(b"0");
    header[116..117].copy_from_slice(b"0");
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[136..147].copy_from_slice(format!("{:011o}", now()).as_bytes());
    header[156] = kind;
    header[257..262].copy_from_slice(b"ustar");
    header[263..265].copy_from_slice(b"00");
    header[345..345 + prefix.len()].copy_from_slice(prefix);
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    header[154] = 0;
    header[155] = b' ';
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
}

async fn files(
    inner: &Inner,
    method: &Method,
    headers: &HeaderMap,
    uid: &str,
    path: &str,
    body: Bytes,
) -> Response {
    match method.as_str() {
        "PROPFIND" => {
            let depth = header(headers, "depth").unwrap_or("1");
            let mut state = inner.lock();
            let files = files_of(&mut state, uid);
            let Some(node) = files.get(path) else {
                return fs_error(FsError::NotFound, path);
            };
            let mut xml = propstat_xml(uid, path, node, files);
            if depth != "0" && node.is_dir() {
                for (child, n) in files.children(path) {
                    xml.push_str(&propstat_xml(uid, child, n, files));
                }
            }
            multistatus(&xml)
        }
        "GET" => {
            let content = {
                let mut state = inner.lock();
                let key = (uid.to_owned(), path.to_owned());
                if let Some((status, times)) = state.fail_get.get_mut(&key) {
                    let status =
                        StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    *times -= 1;
                    if *times == 0 {
                        state.fail_get.remove(&key);
                    }
                    return sabre(status, "ServiceUnavailable", "failing as the test asked");
                }
                match files_of(&mut state, uid).get(path) {
                    Some(FileNode {
                        content: Some(c), ..
                    }) => c.clone(),
                    Some(_) => {
                        return sabre(
                            StatusCode::NOT_IMPLEMENTED,
                            "NotImplemented",
                            "GET is only implemented on File objects",
                        )
                    }
                    None => return fs_error(FsError::NotFound, path),
                }
            };
            let len = content.len();
            let pieces = content.pieces(256 << 10).map(Ok::<_, std::io::Error>);
            let mut response = Response::new(Body::from_stream(stream::iter(pieces)));
            response
                .headers_mut()
                .insert("Content-Length", HeaderValue::from(len));
            response
                .headers_mut()
                .insert("Content-Type", HeaderValue::from_static(content_type(path)));
            response
        }
        "PUT" => {
            let mtime = header(headers, "x-oc-mtime").and_then(|m| m.parse().ok());
            let checksum = header(headers, "oc-checksum").map(str::to_owned);
            let if_match = header(headers, "if-match").map(str::to_owned);
            let if_none_match = header(headers, "if-none-match").map(str::to_owned);
            let result = {
                let mut state = inner.lock();
                let racing = state
                    .user_write_before_put
                    .as_ref()
                    .is_some_and(|(u, p, _)| u == uid && p == path);
                if let Some((_, _, bytes)) = state.user_write_before_put.take_if(|_| racing) {
                    let written = user_put(
                        &mut state,
                        uid,
                        path,
                        Content::Bytes(bytes),
                        None,
                        None,
                        None,
                        Some(uid),
                    );
                    if let Err(e) = written {
                        return fs_error(e, path);
                    }
                }
                // SabreDAV checks `If-None-Match` before the write: `*` (or the current
                // ETag) fails when anything, file or folder, is at the path.
                if let (Some(want), Some(node)) =
                    (&if_none_match, files_of(&mut state, uid).get(path))
                {
                    let etag = node.etag();
                    let hit = want.trim() == "*"
                        || want.split(',').any(|t| t.trim().trim_matches('"') == etag);
                    if hit {
                        return sabre(
                            StatusCode::PRECONDITION_FAILED,
                            "PreconditionFailed",
                            "An If-None-Match header was specified, but the ETag matched (or * was specified).",
                        );
                    }
                }
                user_put(
                    &mut state,
                    uid,
                    path,
                    Content::Bytes(body),
                    mtime,
                    checksum,
                    if_match.as_deref(),
                    Some(uid),
                )
            };
            match result {
                Ok((created, node)) => {
                    let mut r = write_headers(
                        if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::NO_CONTENT
                        },
                        &node,
                        uid,
                    );
                    if mtime.is_some() {
                        r.headers_mut()
                            .insert("X-OC-MTime", HeaderValue::from_static("accepted"));
                    }
                    r
                }
                Err(e) => fs_error(e, path),
            }
        }
        "MKCOL" => {
            let mut state = inner.lock();
            match user_mkdir(&mut state, uid, path, Some(uid)) {
                Ok(node) => write_headers(StatusCode::CREATED, &node, uid),
                Err(FsError::Exists) => sabre(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "The resource you tried to create already exists",
                ),
                Err(e) => fs_error(e, path),
            }
        }
        "DELETE" => {
            let mut state = inner.lock();
            match user_delete(&mut state, uid, path, Some(uid)) {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => fs_error(e, path),
            }
        }
        "MOVE" | "COPY" => {
            let Some(to) = destination(headers, uid) else {
                return sabre(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The destination header was not supplied",
                );
            };
            let overwrite =
                header(headers, "overwrite").is_none_or(|o| o.eq_ignore_ascii_case("T"));
            let copy = method.as_str() == "COPY";
            let mut state = inner.lock();
            match user_move_or_copy(&mut state, uid, path, &to, copy, overwrite, Some(uid)) {
                Ok((created, node)) => write_headers(
                    if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::NO_CONTENT
                    },
                    &node,
                    uid,
                ),
                Err(e) => fs_error(e, path),
            }
        }
        _ => sabre(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "method not supported here",
        ),
    }
}

/// Chunked upload v2: MKCOL the folder, PUT numbered chunks, MOVE `.file` to the target.
fn uploads(
    inner: &Inner,
    method: &Method,
    headers: &HeaderMap,
    uid: &str,
    path: &str,
    body: Bytes,
) -> Response {
    let mut state = inner.lock();
    let (folder, name) = path.split_once('/').unwrap_or((path, ""));
    let key = (uid.to_owned(), folder.to_owned());
    match (method.as_str(), name) {
        ("MKCOL", "") => {
            state.uploads.insert(key, BTreeMap::new());
            StatusCode::CREATED.into_response()
        }
        ("PUT", chunk) if !chunk.is_empty() => match state.uploads.get_mut(&key) {
            Some(chunks) => {
                chunks.insert(chunk.to_owned(), body);
                StatusCode::CREATED.into_response()
            }
            None => fs_error(FsError::Conflict, path),
        },
        ("MOVE", ".file") => {
            let Some(chunks) = state.uploads.remove(&key) else {
                return fs_error(FsError::NotFound, path);
            };
            let Some(to) = destination(headers, uid) else {
                return sabre(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The destination header was not supplied",
                );
            };
            let mut all = Vec::new();
            for part in chunks.values() {
                all.extend_from_slice(part);
            }
            if let Some(total) =
                header(headers, "oc-total-length").and_then(|t| t.parse::<usize>().ok())
            {
                if total != all.len() {
                    return sabre(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "Chunks on server do not sum up to the expected total length",
                    );
                }
            }
            // SabreDAV judges If-Match and If-None-Match on this MOVE against its source,
            // the upload's `.file` (whose ETag no client has, and which exists): a real
            // Nextcloud 33 answers 412 to every conditional assembly.
            if header(headers, "if-match").is_some() || header(headers, "if-none-match").is_some() {
                state.uploads.insert(key, chunks);
                return fs_error(FsError::Precondition, path);
            }
            let mtime = header(headers, "x-oc-mtime").and_then(|m| m.parse().ok());
            let checksum = header(headers, "oc-checksum").map(str::to_owned);
            match user_put(
                &mut state,
                uid,
                &to,
                Content::Bytes(Bytes::from(all)),
                mtime,
                checksum,
                None,
                Some(uid),
            ) {
                Ok((created, node)) => write_headers(
                    if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::NO_CONTENT
                    },
                    &node,
                    uid,
                ),
                Err(e) => fs_error(e, &to),
            }
        }
        ("DELETE", "") => {
            state.uploads.remove(&key);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => sabre(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "upload operation not supported",
        ),
    }
}

fn search(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    let text = String::from_utf8_lossy(body);
    let scope_user = text
        .split("<d:href>/files/")
        .nth(1)
        .and_then(|r| r.split(['/', '<']).next())
        .map(|u| percent_decode_str(u).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let user = match dav_login(inner, headers, &scope_user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let fileid: Option<u64> = text
        .split("<d:literal>")
        .nth(1)
        .and_then(|r| r.split("</d:literal>").next())
        .and_then(|l| l.trim().parse().ok());
    let mut state = inner.lock();
    let files = files_of(&mut state, &user);
    let found = files
        .nodes
        .iter()
        .find(|(_, n)| Some(n.fileid) == fileid)
        .map(|(p, n)| propstat_xml(&user, p, n, files));
    multistatus(&found.unwrap_or_default())
}

/// A user writes a file (through WebDAV, or a test's direct action); fires the events.
#[allow(clippy::too_many_arguments)]
pub fn user_put(
    state: &mut NcState,
    uid: &str,
    path: &str,
    content: Content,
    mtime: Option<i64>,
    checksum: Option<String>,
    if_match: Option<&str>,
    actor: Option<&str>,
) -> Result<(bool, FileNode), FsError> {
    let mut id = state.next_fileid;
    let created = files_of(state, uid).put(
        path,
        content,
        mtime.unwrap_or_else(now),
        checksum,
        if_match,
        || {
            id += 1;
            id
        },
    )?;
    state.next_fileid = state.next_fileid.max(id);
    let node = files_of(state, uid)
        .get(path)
        .cloned()
        .expect("just written");
    let fired = if created {
        vec![Fired::Created, Fired::Written]
    } else {
        vec![Fired::Written]
    };
    for f in fired {
        fire(state, actor, f, uid, path, Some(node.fileid), None);
    }
    Ok((created, node))
}

pub fn user_mkdir(
    state: &mut NcState,
    uid: &str,
    path: &str,
    actor: Option<&str>,
) -> Result<FileNode, FsError> {
    let id = new_fileid(state);
    files_of(state, uid).mkdir(path, now(), || id)?;
    let node = files_of(state, uid).get(path).cloned().expect("just made");
    fire(
        state,
        actor,
        Fired::Created,
        uid,
        path,
        Some(node.fileid),
        None,
    );
    fire(
        state,
        actor,
        Fired::Written,
        uid,
        path,
        Some(node.fileid),
        None,
    );
    Ok(node)
}

pub fn user_delete(
    state: &mut NcState,
    uid: &str,
    path: &str,
    actor: Option<&str>,
) -> Result<(), FsError> {
    files_of(state, uid).delete(path, now())?;
    fire(state, actor, Fired::Deleted, uid, path, None, None);
    Ok(())
}

/// Restores `trash_name` from the trash bin; returns where it went.
pub fn user_restore(
    state: &mut NcState,
    uid: &str,
    trash_name: &str,
    actor: Option<&str>,
) -> Result<String, FsError> {
    let path = files_of(state, uid).restore(trash_name)?;
    let id = files_of(state, uid).get(&path).map(|n| n.fileid);
    let source = format!("/{uid}/files_trashbin/files/{trash_name}");
    fire(
        state,
        actor,
        Fired::Restored,
        uid,
        &path,
        id,
        Some((source, None)),
    );
    Ok(path)
}

#[allow(clippy::too_many_arguments)]
pub fn user_move_or_copy(
    state: &mut NcState,
    uid: &str,
    from: &str,
    to: &str,
    copy: bool,
    overwrite: bool,
    actor: Option<&str>,
) -> Result<(bool, FileNode), FsError> {
    let source_id = files_of(state, uid).get(from).map(|n| n.fileid);
    let mut id = state.next_fileid;
    let (created, replaced) =
        files_of(state, uid).move_or_copy(from, to, copy, overwrite, || {
            id += 1;
            id
        })?;
    state.next_fileid = state.next_fileid.max(id);
    let node = files_of(state, uid).get(to).cloned().expect("just placed");
    let source = (
        format!("/{uid}/files/{from}"),
        if copy { source_id } else { None },
    );
    if copy {
        if replaced {
            fire(state, actor, Fired::Deleted, uid, to, None, None);
        }
        fire(
            state,
            actor,
            Fired::Created,
            uid,
            to,
            Some(node.fileid),
            None,
        );
        fire(
            state,
            actor,
            Fired::Written,
            uid,
            to,
            Some(node.fileid),
            None,
        );
        fire(
            state,
            actor,
            Fired::Copied,
            uid,
            to,
            Some(node.fileid),
            Some(source),
        );
    } else {
        fire(
            state,
            actor,
            Fired::Renamed,
            uid,
            to,
            Some(node.fileid),
            Some(source),
        );
    }
    Ok((created, node))
}
