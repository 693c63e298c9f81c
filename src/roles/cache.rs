//! The office cache's prefetcher: what makes a `harpbridge cache` more than a node. A cache
//! holds chains and blocks only, and fetches the current content of its libraries before
//! anyone asks, so that the office's other devices get it over the LAN.
//!
//! ```text
//!  start, Pulled/PullDone(lib) ──▶ dirty libraries ──▶ fold lib's tree ──▶ set_current(lib, versions)
//!  Connected(peer) ──▶ retry failed fetches         │
//!                                                   └─▶ each Put not complete here
//!                                                        └─▶ NodeHandle::fetch_content
//!                                                             └─▶ one PrefetchReport
//! ```
//!
//! - The current set of each library is exactly the versions its tree names, so the content
//!   store's LRU eviction (`--cache-limit-mib`) drops old versions first and never a current
//!   one. Before each fetch the prefetcher makes room for it under the limit
//!   ([`ContentStore::make_room`]); a version that does not fit beside the current ones is
//!   skipped (reported once), so the limit holds even when a library is larger than it.
//! - A version is complete when its manifest is stored and no block is missing; only
//!   incomplete ones are fetched, four at a time, each version once even if several paths
//!   share it.
//! - A fetch that fails (no provider has it yet, the provider went away) is retried when a
//!   peer connects and otherwise after a back-off (5 s doubling to 60 s).
//!
//! The prefetcher listens to the node's events on its own subscription and hands each
//! outcome to the caller as a [`PrefetchReport`]; `harpbridge cache` prints them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::chain::{ChainStore, ContentId, LibraryId, TreeItem};
use crate::content::{ContentError, ContentStore, ManifestId};
use crate::p2p::{FetchReport, NodeEvent, NodeHandle, P2pError};

/// First wait before a failed fetch is tried again; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Versions fetched at once.
const PARALLEL_FETCHES: usize = 4;

/// A version to fetch: its library, one of its paths (for reports), its content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// The library whose tree names it.
    pub library: LibraryId,
    /// The version.
    pub content: ContentId,
    /// The first path (in path order) that holds it.
    pub path: String,
    /// Its size in bytes (what it takes in the store, at most).
    pub size: u64,
}

/// What the prefetcher did, one report per outcome.
#[derive(Debug)]
pub enum PrefetchReport {
    /// A version is complete here now.
    Fetched {
        /// Which.
        wanted: Wanted,
        /// Bytes fetched and already present, and from whom.
        report: FetchReport,
    },
    /// A version was not fetched: it does not fit under the store's limit beside the
    /// current versions already here (reported once; tried again when the library changes).
    Skipped {
        /// Which.
        wanted: Wanted,
    },
    /// Fetching a version failed; it is tried again after `retry_in` (or when the library
    /// changes).
    FetchFailed {
        /// Which.
        wanted: Wanted,
        /// Why.
        error: P2pError,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// A library's tree or content state could not be read; it is looked at again on its
    /// next change.
    LibraryFailed {
        /// Which.
        library: LibraryId,
        /// Why.
        error: anyhow::Error,
    },
}

/// The running prefetcher: stopped by [`Prefetcher::stop`] (or when the node stops).
pub struct Prefetcher {
    listener: JoinHandle<()>,
    worker: JoinHandle<()>,
}

impl Prefetcher {
    /// Starts prefetching every library of `chain` through `node`, and again whenever the
    /// node's events say a library changed or a peer connected. Each outcome goes to
    /// `report`.
    pub fn start(
        chain: ChainStore,
        content: ContentStore,
        node: NodeHandle,
        report: impl Fn(PrefetchReport) + Send + 'static,
    ) -> Self {
        let mut events = node.subscribe();
        let (signals, signals_rx) = mpsc::unbounded_channel();
        for lib in chain.libraries() {
            let _ = signals.send(Signal::Library(lib));
        }
        let worker = Worker {
            chain,
            content,
            node,
            failed: HashMap::new(),
            skipped: HashSet::new(),
            report: Box::new(report),
        };
        let worker = tokio::spawn(worker.run(signals_rx));
        // Events go through a channel of their own: a long fetch must not make the node's
        // broadcast overflow.
        let listener = tokio::spawn(async move {
            loop {
                let signal = match events.recv().await {
                    Ok(e) => match e {
                        // Every batch that stored entries (a pull cut off half way ends
                        // with no PullDone), and the end of every pull.
                        NodeEvent::Pulled {
                            library, inserted, ..
                        } if inserted > 0 => Signal::Library(library),
                        NodeEvent::PullDone { library, .. } => Signal::Library(library),
                        NodeEvent::Connected { .. } => Signal::Retry,
                        _ => continue,
                    },
                    // A missed PullDone must not leave content unfetched.
                    Err(RecvError::Lagged(_)) => Signal::All,
                    Err(RecvError::Closed) => break,
                };
                if signals.send(signal).is_err() {
                    break;
                }
            }
        });
        Prefetcher { listener, worker }
    }

    /// Stops prefetching (a fetch under way is dropped).
    pub fn stop(self) {
        self.listener.abort();
        self.worker.abort();
    }
}

/// Why the prefetcher should look again.
#[derive(Debug, Clone, Copy)]
enum Signal {
    /// This library's chain changed.
    Library(LibraryId),
    /// Every library (events were missed).
    All,
    /// A peer connected: failed fetches may succeed now.
    Retry,
}

/// A fetch that failed, and when to try it again.
struct Failed {
    at: tokio::time::Instant,
    wait: Duration,
}

/// The task that folds the trees of changed libraries and fetches what they lack.
struct Worker {
    chain: ChainStore,
    content: ContentStore,
    node: NodeHandle,
    failed: HashMap<Wanted, Failed>,
    /// Versions not fetched for want of room, already reported.
    skipped: HashSet<Wanted>,
    report: Box<dyn Fn(PrefetchReport) + Send>,
}

impl Worker {
    async fn run(mut self, mut signals: mpsc::UnboundedReceiver<Signal>) {
        let mut dirty: HashSet<LibraryId> = HashSet::new();
        loop {
            // Wait for a signal, or for the earliest retry to be due.
            let next_retry = self.failed.values().map(|f| f.at).min();
            let signal = match next_retry {
                Some(at) => tokio::select! {
                    s = signals.recv() => s,
                    _ = tokio::time::sleep_until(at) => Some(Signal::Retry),
                },
                None => signals.recv().await,
            };
            let Some(first) = signal else { return };
            let mut retry_all = false;
            // Take every signal waiting, so a burst of pulls folds each tree once.
            let mut batch = vec![first];
            while let Ok(s) = signals.try_recv() {
                batch.push(s);
            }
            for s in batch {
                match s {
                    Signal::Library(l) => {
                        dirty.insert(l);
                    }
                    Signal::All => dirty.extend(self.chain.libraries()),
                    Signal::Retry => retry_all = true,
                }
            }
            let now = tokio::time::Instant::now();
            for (w, f) in &self.failed {
                if retry_all || f.at <= now {
                    dirty.insert(w.library);
                }
            }
            let libraries: Vec<LibraryId> = dirty.drain().collect();
            for library in libraries {
                self.prefetch(library, retry_all).await;
            }
        }
    }

    /// Sets `library`'s current versions to its tree's and fetches the incomplete ones.
    async fn prefetch(&mut self, library: LibraryId, retry_all: bool) {
        let chain = self.chain.clone();
        let content = self.content.clone();
        let todo = tokio::task::spawn_blocking(move || incomplete(&chain, &content, library)).await;
        let todo = match todo {
            Ok(Ok(t)) => t,
            Ok(Err(error)) => {
                (self.report)(PrefetchReport::LibraryFailed { library, error });
                return;
            }
            Err(e) => {
                (self.report)(PrefetchReport::LibraryFailed {
                    library,
                    error: e.into(),
                });
                return;
            }
        };
        // Forget failures of versions the tree no longer names, or that are complete now.
        let todo_set: HashSet<&Wanted> = todo.iter().collect();
        self.failed
            .retain(|w, _| w.library != library || todo_set.contains(w));
        let now = tokio::time::Instant::now();
        let due: Vec<Wanted> = todo
            .into_iter()
            .filter(|w| self.failed.get(w).is_none_or(|f| retry_all || f.at <= now))
            .collect();
        // A few versions at once: many small files would otherwise wait on one round trip
        // after another; each fetch already pipelines its own blocks.
        let node = self.node.clone();
        // Bytes the fetches under way may still add: each fetch first makes room for
        // itself and for these, so the store's limit holds with four at once.
        let reserved = Arc::new(AtomicU64::new(0));
        let mut results = futures_util::stream::iter(due)
            .map(|wanted| {
                let (node, content) = (node.clone(), self.content.clone());
                let reserved = reserved.clone();
                let others = reserved.fetch_add(wanted.size, Ordering::SeqCst);
                async move {
                    let need = others.saturating_add(wanted.size);
                    let room = tokio::task::spawn_blocking(move || content.make_room(need)).await;
                    let result = match room {
                        Ok(Ok(true)) => {
                            Some(node.fetch_content(wanted.library, wanted.content).await)
                        }
                        Ok(Ok(false)) => None,
                        Ok(Err(e)) => Some(Err(P2pError::Content(e))),
                        Err(e) => Some(Err(P2pError::Fetch(e.to_string()))),
                    };
                    reserved.fetch_sub(wanted.size, Ordering::SeqCst);
                    (wanted, result)
                }
            })
            .buffer_unordered(PARALLEL_FETCHES);
        while let Some((wanted, result)) = results.next().await {
            let Some(result) = result else {
                if self.skipped.insert(wanted.clone()) {
                    (self.report)(PrefetchReport::Skipped { wanted });
                }
                continue;
            };
            self.skipped.remove(&wanted);
            match result {
                Ok(report) => {
                    self.failed.remove(&wanted);
                    (self.report)(PrefetchReport::Fetched { wanted, report });
                }
                Err(error) => {
                    let wait = self
                        .failed
                        .get(&wanted)
                        .map_or(RETRY_FIRST, |f| (f.wait * 2).min(RETRY_MAX));
                    self.failed.insert(
                        wanted.clone(),
                        Failed {
                            at: tokio::time::Instant::now() + wait,
                            wait,
                        },
                    );
                    (self.report)(PrefetchReport::FetchFailed {
                        wanted,
                        error,
                        retry_in: wait,
                    });
                }
            }
        }
    }
}

/// Folds `library`'s tree, makes its versions the library's current set, and lists the
/// versions not complete here (one entry per version, under its first path).
fn incomplete(
    chain: &ChainStore,
    content: &ContentStore,
    library: LibraryId,
) -> anyhow::Result<Vec<Wanted>> {
    let tree = chain.tree(&library)?;
    let versions: Vec<ManifestId> = tree.versions().map(ManifestId::from).collect();
    content.set_current(library, &versions)?;
    let mut by_content: BTreeMap<ContentId, (String, u64)> = BTreeMap::new();
    for (path, item) in &tree.items {
        if let TreeItem::File { content, size, .. } = item {
            by_content
                .entry(*content)
                .or_insert_with(|| (path.clone(), *size));
        }
    }
    let mut out = Vec::new();
    for (id, (path, size)) in by_content {
        let complete = match content.missing_blocks(&ManifestId::from(id)) {
            Ok(missing) => missing.is_empty(),
            Err(ContentError::ManifestNotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !complete {
            out.push(Wanted {
                library,
                content: id,
                path,
                size,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{ChainPath, Op};
    use crate::content::StoreOptions;
    use crate::identity::DeviceIdentity;

    fn put(path: &str, size: u64, content: ContentId) -> Op {
        Op::Put {
            path: ChainPath::new(path).unwrap(),
            size,
            mtime_ms: 0,
            content,
            nextcloud: None,
        }
    }

    #[test]
    fn incomplete_lists_each_missing_version_once_and_holds_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let chain = ChainStore::open(db.clone()).unwrap();
        let content = ContentStore::open(db, dir.path(), StoreOptions::default()).unwrap();
        let id = DeviceIdentity::generate();
        let (lib, _) = chain.create_library(id.signing_key(), "t").unwrap();

        // One version held here, one named twice whose manifest never arrived, and one
        // whose manifest is here but a block is not.
        let here = content.ingest_reader(lib, &b"held here"[..]).unwrap();
        let absent = ContentId([9; 32]);
        let partial = content.ingest_reader(lib, &vec![3u8; 100_000][..]).unwrap();
        let block = content.manifest(&partial.id).unwrap().blocks[0].hash;
        std::fs::remove_file(content.block_path(&block)).unwrap();
        // The store learns that a block file vanished when it next reads it.
        assert!(content.read_block(&block).is_err());
        chain
            .append_batch(
                &lib,
                id.signing_key(),
                vec![
                    put("a/here.txt", here.size, here.id.into()),
                    put("b/absent-1", 1, absent),
                    put("c/absent-2", 1, absent),
                    put("d/partial", partial.size, partial.id.into()),
                ],
            )
            .unwrap();

        let todo = incomplete(&chain, &content, lib).unwrap();
        let mut got: Vec<(ContentId, &str)> =
            todo.iter().map(|w| (w.content, w.path.as_str())).collect();
        got.sort();
        let mut want = vec![(absent, "b/absent-1"), (partial.id.into(), "d/partial")];
        want.sort();
        assert_eq!(got, want);
        let mut current = content.current(lib).unwrap();
        current.sort();
        let mut expected = vec![here.id, absent.into(), partial.id];
        expected.sort();
        assert_eq!(current, expected);
    }
}
