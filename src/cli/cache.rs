//! `harpbridge cache`: the office cache (docs/architecture.md §3): a node that holds chains and
//! blocks only, and fetches the current content of its libraries before anyone asks, so
//! that the office's other devices get it over the LAN.
//!
//! # What it does
//!
//! It runs the swarm exactly as `harpbridge node` does (mDNS on the LAN, `--peer` addresses
//! for the WAN, every shared library's chain kept in sync, blocks served to members), and
//! adds a *prefetcher*:
//!
//! ```text
//!  start, Pulled/PullDone(lib) ──▶ dirty libraries ──▶ fold lib's tree ──▶ set_current(lib, versions)
//!  Connected(peer) ──▶ retry failed fetches         │
//!                                                   └─▶ each Put not complete here
//!                                                        └─▶ NodeHandle::fetch_content
//!                                                             └─▶ one `fetched …` line
//! ```
//!
//! - The current set of each library is exactly the versions its tree names, so the content
//!   store's LRU eviction (`--cache-limit-mib`) drops old versions first and never a current
//!   one.
//! - A version is complete when its manifest is stored and no block is missing; only
//!   incomplete ones are fetched, four at a time, each version once even if several paths
//!   share it.
//! - A fetch that fails (no provider has it yet, the provider went away) is retried when a
//!   peer connects and otherwise after a back-off (5 s doubling to 60 s).
//!
//! # Output
//!
//! The `harpbridge node` lines (`peer-id`, `listening`, `connected`, `synced`…), plus one per
//! finished fetch, which scripts and tests parse:
//!
//! ```text
//! fetched <library> <content> <path> bytes <fetched> present <already here> seconds <s> from <peer>=<bytes>,…
//! fetch-failed <library> <content> <path>: <error>
//! ```
//!
//! `from` lists who sent how many block bytes (`-` when nothing had to travel).
//!
//! Like `harpbridge node`, every 5 s it also writes its peer list (LAN/WAN, RTT, block bytes
//! in and out per peer) to `<data dir>/peers.json`, which `harpbridge peers list` prints
//! while the cache holds the database (see [`super::peers::SnapshotWriter`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::chain::{ChainStore, ContentId, LibraryId, TreeItem};
use crate::content::{ContentError, ContentStore, ManifestId};
use crate::p2p::{FetchReport, Node, NodeEvent, NodeHandle, P2pConfig};

/// First wait before a failed fetch is tried again; doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Versions fetched at once.
const PARALLEL_FETCHES: usize = 4;

/// Arguments of `harpbridge cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The data directory (holds identity.key, harpbridge.redb and the blocks).
    #[arg(long, env = "APP_PERSISTENT_STORAGE", value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub swarm: super::node::SwarmArgs,
    /// Size limit of the block store in MiB (current versions are kept even above it).
    #[arg(long, value_name = "N")]
    pub cache_limit_mib: Option<u64>,
    /// Seconds between re-dials of a `--peer` that is not connected.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub redial_secs: f64,
}

/// Runs the cache until a signal. Exit 1 if it cannot start.
pub fn run(args: CacheArgs) -> ExitCode {
    super::run_async(serve(args))
}

async fn serve(args: CacheArgs) -> anyhow::Result<()> {
    let (id, chain, content) = super::node::open(&args.data_dir)?;
    if let Some(mib) = args.cache_limit_mib {
        content.set_cache_limit(mib.saturating_mul(1024 * 1024));
    }
    let config = P2pConfig {
        redial_every: Duration::from_secs_f64(args.redial_secs.clamp(0.1, 3600.0)),
        ..args.swarm.config()
    };
    let node = Node::start(config, &id, chain.clone(), content.clone()).await?;
    let mut events = node.subscribe();
    println!("peer-id {}", node.peer_id());
    for addr in node.listen_addrs() {
        println!("listening {addr}");
    }

    let (dirty_tx, dirty_rx) = mpsc::unbounded_channel();
    for lib in chain.libraries() {
        let _ = dirty_tx.send(Signal::Library(lib));
    }
    let prefetcher = Prefetcher {
        chain,
        content,
        node: node.clone(),
        failed: HashMap::new(),
    };
    let worker = tokio::spawn(prefetcher.run(dirty_rx));
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    match &e {
                        // Every batch that stored entries (a pull cut off half way ends
                        // with no PullDone), and the end of every pull.
                        NodeEvent::Pulled {
                            library, inserted, ..
                        } if *inserted > 0 => {
                            let _ = dirty_tx.send(Signal::Library(*library));
                        }
                        NodeEvent::PullDone { library, .. } => {
                            let _ = dirty_tx.send(Signal::Library(*library));
                        }
                        NodeEvent::Connected { .. } => {
                            let _ = dirty_tx.send(Signal::Retry);
                        }
                        _ => {}
                    }
                    // The prefetcher prints its own line per fetch.
                    if matches!(e, NodeEvent::Transfer(_)) {
                        continue;
                    }
                    if let Some(line) = super::node::describe(&e) {
                        println!("{line}");
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    println!("(missed {n} events)");
                    // A missed PullDone must not leave content unfetched.
                    let _ = dirty_tx.send(Signal::All);
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    // The peer list `peers list` shows while this process holds the database.
    let snapshots =
        super::peers::SnapshotWriter::start(node.clone(), args.data_dir.clone(), "cache");
    crate::listener::shutdown_signal().await;
    snapshots.stop().await;
    worker.abort();
    node.shutdown().await;
    printer.abort();
    Ok(())
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

/// A version to fetch: its library, one of its paths (for the output line), its content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Wanted {
    library: LibraryId,
    content: ContentId,
    path: String,
}

/// A fetch that failed, and when to try it again.
struct Failed {
    at: tokio::time::Instant,
    wait: Duration,
}

struct Prefetcher {
    chain: ChainStore,
    content: ContentStore,
    node: NodeHandle,
    failed: HashMap<Wanted, Failed>,
}

impl Prefetcher {
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
            Ok(Err(e)) => {
                println!("prefetch of {library} failed: {e:#}");
                return;
            }
            Err(e) => {
                println!("prefetch of {library} failed: {e}");
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
        let mut results = futures_util::stream::iter(due)
            .map(|wanted| {
                let node = node.clone();
                async move {
                    let result = node.fetch_content(wanted.library, wanted.content).await;
                    (wanted, result)
                }
            })
            .buffer_unordered(PARALLEL_FETCHES);
        while let Some((wanted, result)) = results.next().await {
            match result {
                Ok(report) => {
                    self.failed.remove(&wanted);
                    println!("{}", fetched_line(&wanted, &report));
                }
                Err(e) => {
                    println!(
                        "fetch-failed {} {} {}: {e}",
                        wanted.library, wanted.content, wanted.path
                    );
                    let wait = self
                        .failed
                        .get(&wanted)
                        .map_or(RETRY_FIRST, |f| (f.wait * 2).min(RETRY_MAX));
                    self.failed.insert(
                        wanted,
                        Failed {
                            at: tokio::time::Instant::now() + wait,
                            wait,
                        },
                    );
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
    let versions = super::import::current_versions(&tree);
    content.set_current(library, &versions)?;
    let mut by_content: BTreeMap<ContentId, String> = BTreeMap::new();
    for (path, item) in &tree.items {
        if let TreeItem::File { content, .. } = item {
            by_content.entry(*content).or_insert_with(|| path.clone());
        }
    }
    let mut out = Vec::new();
    for (id, path) in by_content {
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
            });
        }
    }
    Ok(out)
}

/// The `fetched …` line (see the module docs).
fn fetched_line(w: &Wanted, r: &FetchReport) -> String {
    let from = if r.from.is_empty() {
        "-".to_string()
    } else {
        r.from
            .iter()
            .map(|(p, b)| format!("{p}={b}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "fetched {} {} {} bytes {} present {} seconds {:.3} from {from}",
        w.library,
        w.content,
        w.path,
        r.bytes_fetched,
        r.bytes_present,
        r.elapsed.as_secs_f64()
    )
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
