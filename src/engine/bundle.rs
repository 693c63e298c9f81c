//! Many small files of one folder read in one request, each staged into the content store
//! as its bytes arrive.
//!
//! On a real Nextcloud most of a small file's GET is the server starting a PHP request and
//! authenticating it, not sending the bytes. So wherever many small files of one folder
//! are read (a batch's looks at a listed folder and its read-ahead, [`super::batch`]; a
//! scan's walk, [`Engine::ingest_bundle`]), they are asked for [`BUNDLE_FILES`] at a time as
//! one tar stream ([`crate::backend::Backend::read_tar`]), which a blocking thread unpacks
//! entry by entry into the store, none of it held whole in memory.
//!
//! What a bundle delivers is what a GET of each file would have: an entry is taken only if
//! its size is the one its listing gave, and only once the archive went on cleanly after it
//! (the next header, or the end). A file that changed while Nextcloud was sending it makes
//! its entry longer or shorter than its header says, so the archive breaks right after it,
//! and the file is not taken. A file gone since the listing fails the whole request (404):
//! the bundle is split in halves until the missing file is asked for alone, as a plain GET,
//! and found gone. A backend without such requests reads each file on its own.
//!
//! A file a bundle did not deliver (Nextcloud failed, the stream broke off) is handed back:
//! an event's file is then read on its own, and a file read ahead is left to its events.

use std::collections::HashMap;
use std::io::Read;

use futures_util::StreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::fetched::Fetched;
use super::libraries::Library;
use super::stats::Counters;
use super::{Engine, EngineError};
use crate::backend::{BackendError, Item};
use crate::chain::{LibraryId, Op};
use crate::content::{ContentStore, Staged};

/// Files asked for in one request. Each costs Nextcloud a file-cache lookup and an open;
/// the request itself (PHP starting up, authentication) costs as much as dozens of those.
/// Several bundles run at once (a batch's `in_flight`), so a few hundred files keep a few
/// PHP workers busy rather than one.
pub(super) const BUNDLE_FILES: usize = 32;
/// At most this many bytes of file names go in one request's URL (front ends commonly
/// refuse request lines over 8 KiB).
const BUNDLE_NAME_BYTES: usize = 4096;

/// Splits a folder's files (`path` of each) into bundles of at most [`BUNDLE_FILES`]
/// files and [`BUNDLE_NAME_BYTES`] of names, in their order.
pub(super) fn bundles<T>(files: Vec<T>, path: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for file in files {
        // A JSON string's quotes and comma, and percent-encoding's worst case.
        let cost = 3 * path(&file).len() + 3;
        match out.last_mut() {
            Some(last) if last.len() < BUNDLE_FILES && bytes + cost <= BUNDLE_NAME_BYTES => {
                bytes += cost;
                last.push(file);
            }
            _ => {
                bytes = cost;
                out.push(vec![file]);
            }
        }
    }
    out
}

/// The name of a file of `folder` below it (`""` is the library's own folder).
fn name_in<'p>(folder: &str, path: &'p str) -> &'p str {
    if folder.is_empty() {
        return path;
    }
    path.strip_prefix(folder)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(path)
}

/// What [`Engine::fetch_bundle`] gave: each file fetched, and the files it could not read
/// this way (a bundle failed: Nextcloud unreachable, or the stream broke off).
pub(super) type Bundled = (Vec<(Item, Result<Fetched, EngineError>)>, Vec<Item>);

impl Engine {
    /// Fetches `files` (directly in `folder`, as its listing gave them, each at most
    /// [`super::ingest::STAGE_MAX`]; with whether an unchanged one may be trusted, as
    /// [`Engine::fetch_file`]) in as few requests as the backend allows. In no particular
    /// order; see [`Bundled`].
    pub(super) async fn fetch_bundle(
        &self,
        library: &Library,
        folder: &str,
        files: Vec<(Item, bool)>,
    ) -> Bundled {
        let mut out = Vec::with_capacity(files.len());
        let mut left = Vec::new();
        let mut parts = vec![Vec::with_capacity(files.len())];
        for (item, trust) in files {
            match self.known_without_reading(library, &item.path, &item, trust) {
                Some(known) => out.push((item, Ok(known))),
                None => parts[0].push(item),
            }
        }
        // Once Nextcloud refused our credentials, nothing more is asked (about five refused
        // logins lock the ExApp out for 30 minutes): every file not read gets the refusal.
        let mut refused: Option<&'static str> = None;
        while let Some(mut part) = parts.pop() {
            if let Some(backend) = refused {
                out.extend(part.into_iter().map(|item| (item, refusal(backend))));
                continue;
            }
            // One file is asked for alone, as a backend without archives asks for each.
            let tar = if part.len() <= 1 {
                Ok(None)
            } else {
                self.read_tar_staged(library, folder, &part).await
            };
            match tar {
                Ok(Some(mut staged)) => {
                    Counters::add(&self.inner.counters.read_in_tar, staged.len() as u64);
                    for item in part {
                        match staged.remove(&item.path) {
                            Some(s) => out.push((item, Ok(Fetched::Staged(Box::new(s))))),
                            None => left.push(item),
                        }
                    }
                }
                Ok(None) => {
                    for item in part {
                        let fetched = match refused {
                            Some(backend) => refusal(backend),
                            None => {
                                self.fetch_file(library, &item.path, &item, false, true)
                                    .await
                            }
                        };
                        if let Err(EngineError::Backend(BackendError::Unauthorized(backend))) =
                            &fetched
                        {
                            refused = Some(backend);
                        }
                        out.push((item, fetched));
                    }
                }
                // One of them is gone: halves, until it is asked for alone.
                Err(EngineError::Backend(BackendError::NotFound(_))) => {
                    let second = part.split_off(part.len() / 2);
                    parts.push(second);
                    parts.push(part);
                }
                Err(EngineError::Backend(BackendError::Unauthorized(backend))) => {
                    refused = Some(backend);
                    parts.push(part);
                }
                Err(e) => {
                    tracing::debug!(library = %library.id, folder, files = part.len(), error = %e, "cannot read a folder's files in one request");
                    left.extend(part);
                }
            }
        }
        (out, left)
    }

    /// [`Engine::fetch_bundle`] and then what each file means for the chain, as
    /// [`Engine::ingest_file`] of each (unchanged ones trusted) would, with one commit
    /// for all the versions read: what a walk records, in path order.
    pub(super) async fn ingest_bundle(
        &self,
        library: &Library,
        folder: &str,
        files: Vec<Item>,
    ) -> Vec<Result<Option<Op>, EngineError>> {
        let files = files.into_iter().map(|item| (item, true)).collect();
        let (mut got, left) = self.fetch_bundle(library, folder, files).await;
        for item in left {
            let fetched = self
                .fetch_file(library, &item.path, &item, true, true)
                .await;
            got.push((item, fetched));
        }
        let mut settled = Vec::new();
        let (mut staged_items, mut staged) = (Vec::new(), Vec::new());
        for (item, fetched) in got {
            match fetched {
                Ok(Fetched::Staged(s)) => {
                    staged_items.push(item);
                    staged.push(*s);
                }
                other => settled.push((item, other)),
            }
        }
        let mut out: Vec<(String, Result<Option<Op>, EngineError>)> = Vec::new();
        if !staged.is_empty() {
            let store = self.inner.content.clone();
            let committed = tokio::task::spawn_blocking(move || store.commit_staged(staged))
                .await
                .map_err(EngineError::from)
                .and_then(|c| c.map_err(EngineError::from));
            match committed {
                Ok(ingested) => {
                    for (entry, i) in staged_items.into_iter().zip(ingested) {
                        let op = self.version_op(library, &entry.path, &entry, i.id, i.size);
                        out.push((entry.path.clone(), op.await));
                    }
                }
                // The walk stops at it; nothing read here is recorded.
                Err(e) => out.push((staged_items.swap_remove(0).path, Err(e))),
            }
        }
        for (entry, fetched) in settled {
            let op = match fetched {
                Ok(fetched) => self.file_op(library, &entry.path, &entry, fetched).await,
                Err(e) => Err(e),
            };
            out.push((entry.path, op));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.into_iter().map(|(_, op)| op).collect()
    }

    /// One tar request for `items` of `folder`, each entry staged: by path, the files
    /// delivered whole. `Ok(None)`: the backend sends no archives.
    async fn read_tar_staged(
        &self,
        library: &Library,
        folder: &str,
        items: &[Item],
    ) -> Result<Option<HashMap<String, Staged>>, EngineError> {
        let names: Vec<&str> = items.iter().map(|i| name_in(folder, &i.path)).collect();
        let Some(body) = self
            .inner
            .backend
            .read_tar(library.root(), folder, &names)
            .await?
        else {
            return Ok(None);
        };
        let wanted: HashMap<String, (String, Option<u64>)> = items
            .iter()
            .map(|i| {
                (
                    name_in(folder, &i.path).to_owned(),
                    (i.path.clone(), i.size),
                )
            })
            .collect();
        let reader = SyncIoBridge::new(StreamReader::new(body.boxed()));
        let store = self.inner.content.clone();
        let id = library.id;
        let (staged, failure) =
            tokio::task::spawn_blocking(move || unpack(reader, &store, id, wanted)).await?;
        if let Some(e) = failure {
            tracing::debug!(library = %library.id, folder, delivered = staged.len(), error = %e, "a folder's tar stream broke off; the rest is left to the events");
        }
        Ok(Some(staged))
    }
}

/// What a file not read gets once the backend refused our credentials.
fn refusal(backend: &'static str) -> Result<Fetched, EngineError> {
    Err(BackendError::Unauthorized(backend).into())
}

/// Stages each entry of a tar stream that `wanted` names (name in the archive → library
/// path and the size listed), until the stream ends or breaks: what was staged by path,
/// and what broke it.
fn unpack(
    reader: impl Read,
    store: &ContentStore,
    library: LibraryId,
    mut wanted: HashMap<String, (String, Option<u64>)>,
) -> (HashMap<String, Staged>, Option<std::io::Error>) {
    let mut staged = HashMap::new();
    // The last entry read: taken once what follows it reads cleanly.
    let mut last: Option<(String, Staged)> = None;
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return (staged, Some(e)),
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => return (staged, Some(e)),
        };
        staged.extend(last.take());
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Ok(name) =
            std::str::from_utf8(&entry.path_bytes()).map(|n| n.trim_start_matches('/').to_owned())
        else {
            continue;
        };
        // Unasked for, or not the size listed (changed since: its events will tell).
        let Some((path, size)) = wanted.remove(&name) else {
            continue;
        };
        if size != Some(entry.size()) {
            continue;
        }
        let mut writer = store.writer(library);
        if let Err(e) = std::io::copy(&mut entry, &mut writer) {
            return (staged, Some(e));
        }
        match writer.stage() {
            Ok(s) => last = Some((path, s)),
            Err(e) => return (staged, Some(std::io::Error::other(e))),
        }
    }
    staged.extend(last);
    (staged, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::StoreOptions;

    const LIB: LibraryId = LibraryId([7; 16]);

    /// A tar entry: `name`'s header saying `size`, then `data` as it is, padded.
    fn entry(tar: &mut Vec<u8>, name: &str, size: u64, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(size);
        header.set_mode(0o777);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }

    /// Unpacks `tar` asking for `wanted` (name, size listed): the bytes staged by path.
    fn unpacked(tar: &[u8], wanted: &[(&str, u64)]) -> (Vec<(String, Vec<u8>)>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let store = ContentStore::open(db, dir.path(), StoreOptions::default()).unwrap();
        let wanted = wanted
            .iter()
            .map(|(n, size)| (n.to_string(), (format!("Docs/{n}"), Some(*size))))
            .collect();
        let (staged, failure) = unpack(tar, &store, LIB, wanted);
        let (paths, staged): (Vec<String>, Vec<Staged>) = staged.into_iter().unzip();
        let ingested = store.commit_staged(staged).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = paths
            .into_iter()
            .zip(ingested)
            .map(|(path, i)| {
                let mut bytes = Vec::new();
                store
                    .open_reader(&i.id)
                    .unwrap()
                    .read_to_end(&mut bytes)
                    .unwrap();
                (path, bytes)
            })
            .collect();
        files.sort();
        (files, failure.is_some())
    }

    #[test]
    fn each_entry_asked_for_is_staged_with_its_bytes() {
        let mut tar = Vec::new();
        entry(&mut tar, "a.txt", 5, b"alpha");
        entry(&mut tar, "unasked.txt", 3, b"xyz");
        entry(&mut tar, "b.txt", 700, &[b'b'; 700]);
        // Listed with another size: changed since, left to its events.
        entry(&mut tar, "c.txt", 4, b"cccc");
        tar.extend_from_slice(&[0; 1024]);
        let (files, broke) = unpacked(&tar, &[("a.txt", 5), ("b.txt", 700), ("c.txt", 9)]);
        assert!(!broke);
        assert_eq!(
            files,
            [
                ("Docs/a.txt".to_owned(), b"alpha".to_vec()),
                ("Docs/b.txt".to_owned(), vec![b'b'; 700]),
            ]
        );
    }

    #[test]
    fn an_entry_longer_than_its_header_is_not_taken_nor_anything_after_it() {
        // Nextcloud sends what it reads of a file that grew after it wrote the header: the
        // archive breaks right after that entry.
        let mut tar = Vec::new();
        entry(&mut tar, "a.txt", 5, b"alpha");
        entry(&mut tar, "grew.txt", 4, &[b'g'; 1500]);
        entry(&mut tar, "b.txt", 4, b"beta");
        tar.extend_from_slice(&[0; 1024]);
        let (files, broke) = unpacked(&tar, &[("a.txt", 5), ("grew.txt", 4), ("b.txt", 4)]);
        assert!(broke);
        assert_eq!(files, [("Docs/a.txt".to_owned(), b"alpha".to_vec())]);
    }

    #[test]
    fn a_stream_cut_inside_an_entry_keeps_the_entries_before_it() {
        let mut tar = Vec::new();
        entry(&mut tar, "a.txt", 5, b"alpha");
        entry(&mut tar, "b.txt", 2000, &[b'b'; 2000]);
        tar.truncate(512 + 512 + 512 + 1000);
        let (files, broke) = unpacked(&tar, &[("a.txt", 5), ("b.txt", 2000)]);
        assert!(broke);
        assert_eq!(files, [("Docs/a.txt".to_owned(), b"alpha".to_vec())]);
    }

    fn item(path: &str) -> Item {
        Item {
            path: path.into(),
            ..Item::default()
        }
    }

    #[test]
    fn bundles_hold_a_bounded_count_and_bounded_names() {
        let many: Vec<Item> = (0..70).map(|i| item(&format!("f{i}"))).collect();
        let sizes: Vec<usize> = bundles(many, |i| &i.path).iter().map(Vec::len).collect();
        assert_eq!(sizes, [BUNDLE_FILES, BUNDLE_FILES, 70 - 2 * BUNDLE_FILES]);

        let long = "x".repeat(600);
        let long: Vec<Item> = (0..5).map(|i| item(&format!("{long}{i}"))).collect();
        let sizes: Vec<usize> = bundles(long, |i| &i.path).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn names_are_below_the_folder() {
        assert_eq!(name_in("", "a.txt"), "a.txt");
        assert_eq!(name_in("Docs", "Docs/a b.txt"), "a b.txt");
    }
}
