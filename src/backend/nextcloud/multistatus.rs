//! Parsing WebDAV `207 Multi-Status` answers (PROPFIND, SEARCH) into [`DavEntry`]s.
//!
//! Only `propstat` blocks whose status is `200` count: Nextcloud lists the properties it
//! does not have (a folder's `getcontentlength`, a file's missing `oc:checksums`) in a
//! second `propstat` with `404` (see `webdav/propfind-depth1.http` in the fixtures).
//! Namespaces are resolved, so any prefix Nextcloud picks works.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

const DAV: &[u8] = b"DAV:";
const OC: &[u8] = b"http://owncloud.org/ns";

/// One resource of a multistatus answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DavEntry {
    /// The `href`, percent-decoded, e.g. `/remote.php/dav/files/alice/Docs/a.txt`.
    pub href: String,
    pub is_dir: bool,
    /// The ETag without its quotes.
    pub etag: Option<String>,
    pub fileid: Option<u64>,
    /// `oc:size` (folders) or `getcontentlength` (files).
    pub size: Option<u64>,
    /// `getlastmodified`, seconds since the Unix epoch.
    pub mtime: Option<i64>,
    pub content_type: Option<String>,
    pub permissions: Option<String>,
    /// `oc:checksums`, e.g. `SHA256:ab12…`.
    pub checksums: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed multistatus XML: {0}")]
pub struct MultistatusError(pub String);

#[derive(Default)]
struct Props {
    is_dir: bool,
    etag: Option<String>,
    fileid: Option<u64>,
    size: Option<u64>,
    content_length: Option<u64>,
    mtime: Option<i64>,
    content_type: Option<String>,
    permissions: Option<String>,
    checksums: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> MultistatusError {
    MultistatusError(e.to_string())
}

/// Parses a multistatus document.
pub fn parse(xml: &str) -> Result<Vec<DavEntry>, MultistatusError> {
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut entries = Vec::new();
    // The path of local names from the root, with a flag for "in DAV: or oc: namespace".
    let mut stack: Vec<(Vec<u8>, u8)> = Vec::new();
    let mut text = String::new();
    let mut href = String::new();
    let mut accepted = Props::default();
    let mut pending = Props::default();
    let mut status_ok = false;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(err)?;
        let ns_tag = match ns {
            ResolveResult::Bound(n) if n.as_ref() == DAV => 1,
            ResolveResult::Bound(n) if n.as_ref() == OC => 2,
            _ => 0,
        };
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                match (ns_tag, name.as_slice()) {
                    (1, b"response") => {
                        href.clear();
                        accepted = Props::default();
                    }
                    (1, b"propstat") => {
                        pending = Props::default();
                        status_ok = false;
                    }
                    (1, b"collection") => pending.is_dir = true,
                    _ => {}
                }
                stack.push((name, ns_tag));
                text.clear();
            }
            Event::Empty(e) if ns_tag == 1 && e.local_name().as_ref() == b"collection" => {
                pending.is_dir = true;
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(err)?),
            Event::CData(t) => text.push_str(&t.decode().map_err(err)?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(err)? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(err)?;
                    let value = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| err(format!("unknown entity &{name};")))?;
                    text.push_str(value);
                }
            }
            Event::End(_) => {
                let Some((name, tag)) = stack.pop() else {
                    return Err(err("unbalanced end tag"));
                };
                let value = std::mem::take(&mut text);
                let value = value.trim();
                match (tag, name.as_slice()) {
                    (1, b"href") => href = percent_decode(value),
                    (1, b"status") => status_ok = value.split_whitespace().nth(1) == Some("200"),
                    (1, b"getetag") => pending.etag = Some(value.trim_matches('"').to_owned()),
                    (1, b"getcontentlength") => pending.content_length = value.parse().ok(),
                    (1, b"getcontenttype") => pending.content_type = Some(value.to_owned()),
                    (1, b"getlastmodified") => {
                        pending.mtime = httpdate::parse_http_date(value).ok().and_then(|t| {
                            t.duration_since(std::time::UNIX_EPOCH)
                                .ok()
                                .and_then(|d| i64::try_from(d.as_secs()).ok())
                        })
                    }
                    (2, b"size") => pending.size = value.parse().ok(),
                    (2, b"fileid") => pending.fileid = value.parse().ok(),
                    (2, b"permissions") => pending.permissions = Some(value.to_owned()),
                    (2, b"checksum") if !value.is_empty() => pending
                        .checksums
                        .extend(value.split_whitespace().map(str::to_owned)),
                    (1, b"propstat") if status_ok => {
                        merge(&mut accepted, std::mem::take(&mut pending))
                    }
                    (1, b"response") => {
                        let props = std::mem::take(&mut accepted);
                        entries.push(DavEntry {
                            href: std::mem::take(&mut href),
                            is_dir: props.is_dir,
                            etag: props.etag,
                            fileid: props.fileid,
                            size: props.size.or(props.content_length),
                            mtime: props.mtime,
                            content_type: props.content_type,
                            permissions: props.permissions,
                            checksums: props.checksums,
                        });
                    }
                    _ => {}
                }
            }
            Event::Eof if stack.is_empty() => break,
            Event::Eof => return Err(err("truncated document")),
            _ => {}
        }
    }
    Ok(entries)
}

fn merge(into: &mut Props, from: Props) {
    into.is_dir |= from.is_dir;
    into.etag = into.etag.take().or(from.etag);
    into.fileid = into.fileid.or(from.fileid);
    into.size = into.size.or(from.size);
    into.content_length = into.content_length.or(from.content_length);
    into.mtime = into.mtime.or(from.mtime);
    into.content_type = into.content_type.take().or(from.content_type);
    into.permissions = into.permissions.take().or(from.permissions);
    into.checksums.extend(from.checksums);
}

/// Decodes `%XX` escapes (hrefs are percent-encoded per segment).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPTH1: &str = r#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns"><d:response><d:href>/remote.php/dav/files/admin/fxdav/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype><d:getlastmodified>Wed, 25 Nov 2026 17:23:29 GMT</d:getlastmodified><d:getetag>&quot;6b07199158a7d&quot;</d:getetag><oc:size>35</oc:size><oc:id>00000100ocvaix7wc5dx</oc:id><oc:fileid>100</oc:fileid><oc:permissions>RGDNVCK</oc:permissions></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><d:getcontentlength/><d:getcontenttype/><oc:checksums/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:response><d:href>/remote.php/dav/files/admin/fxdav/one.txt</d:href><d:propstat><d:prop><d:resourcetype/><d:getlastmodified>Wed, 25 Nov 2026 17:23:29 GMT</d:getlastmodified><d:getcontentlength>14</d:getcontentlength><d:getcontenttype>text/plain</d:getcontenttype><d:getetag>&quot;0b3b6a48a53e344dabf9a5aba4903832&quot;</d:getetag><oc:size>14</oc:size><oc:id>00000101ocvaix7wc5dx</oc:id><oc:fileid>101</oc:fileid><oc:permissions>RGDNVW</oc:permissions></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><oc:checksums/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:response><d:href>/remote.php/dav/files/admin/fxdav/two%20words.md</d:href><d:propstat><d:prop><d:resourcetype/><d:getlastmodified>Tue, 14 Nov 2023 22:13:20 GMT</d:getlastmodified><d:getcontentlength>21</d:getcontentlength><d:getetag>&quot;a265&quot;</d:getetag><oc:fileid>102</oc:fileid><oc:checksums><oc:checksum>SHA1:bb331e30e4c58a800d078879bae0e56325648320</oc:checksum></oc:checksums></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;

    #[test]
    fn parses_the_fixture_listing() {
        let e = parse(DEPTH1).unwrap();
        assert_eq!(e.len(), 3);
        assert!(e[0].is_dir);
        assert_eq!(e[0].size, Some(35));
        assert_eq!(e[0].etag.as_deref(), Some("6b07199158a7d"));
        assert_eq!(e[1].href, "/remote.php/dav/files/admin/fxdav/one.txt");
        assert!(!e[1].is_dir);
        assert_eq!(e[1].fileid, Some(101));
        assert_eq!(e[1].size, Some(14));
        assert_eq!(e[1].mtime, Some(1795627409));
        assert!(e[1].checksums.is_empty(), "404 propstat ignored");
        assert_eq!(e[2].href, "/remote.php/dav/files/admin/fxdav/two words.md");
        assert_eq!(
            e[2].checksums,
            ["SHA1:bb331e30e4c58a800d078879bae0e56325648320"]
        );
    }

    #[test]
    fn empty_and_broken_documents() {
        assert!(
            parse(r#"<?xml version="1.0"?><d:multistatus xmlns:d="DAV:"/>"#)
                .unwrap()
                .is_empty()
        );
        assert!(parse("<d:multistatus xmlns:d=\"DAV:\"><d:response>").is_err());
        assert!(parse("<a></b>").is_err());
    }
}
