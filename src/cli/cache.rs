//! `harpbridge cache`: the office cache (docs/architecture.md §3): a node that holds chains and
//! blocks only, and fetches the current content of its libraries before anyone asks, so
//! that the office's other devices get it over the LAN.
//!
//! It runs the swarm exactly as `harpbridge node` does (mDNS on the LAN, `--peer` addresses
//! for the WAN, every shared library's chain kept in sync, blocks served to members, a
//! library a peer offers joined only once `harpbridge offers accept` approves it), and adds
//! the prefetcher of [`crate::roles::cache`].
//!
//! # Output
//!
//! The `harpbridge node` lines (`peer-id`, `listening`, `connected`, `synced`…), plus one per
//! finished fetch, which scripts and tests parse:
//!
//! ```text
//! fetched <library> <content> <path> bytes <fetched> present <already here> seconds <s> from <peer>=<bytes>,…
//! fetch-failed <library> <content> <path>: <error>; trying again in <n>s
//! skipped <library> <content> <path>: the cache is full (--cache-limit-mib)
//! ```
//!
//! `from` lists who sent how many block bytes (`-` when nothing had to travel).
//!
//! Like `harpbridge node`, every 5 s it also writes its peer list (LAN/WAN, RTT, block bytes
//! in and out per peer) to `<data dir>/peers.json`, which `harpbridge peers list` prints
//! while the cache holds the database (see [`crate::roles::peer_snapshot`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::sync::broadcast::error::RecvError;

use super::{DataDirArgs, DATA_DIR};
use crate::p2p::{FetchReport, Node, NodeEvent, P2pConfig};
use crate::roles::cache::{PrefetchReport, Prefetcher, Wanted};
use crate::roles::peer_snapshot::SnapshotWriter;

/// Arguments of `harpbridge cache`.
#[derive(Debug, Args)]
#[command(mut_arg(DATA_DIR, |arg| arg.help(
    "The data directory (holds identity.key, harpbridge.redb and the blocks)"
)))]
pub struct CacheArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    #[command(flatten)]
    pub swarm: super::node::SwarmArgs,
    /// Size limit of the block store in MiB: what does not fit beside the current versions
    /// already here is not fetched.
    #[arg(long, value_name = "N")]
    pub cache_limit_mib: Option<u64>,
    /// Seconds between re-dials of a `--peer` that is not connected.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub redial_secs: f64,
}

/// Runs the cache until a signal. Exit 1 if it cannot start.
pub fn run(args: CacheArgs) -> ExitCode {
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir.to_path_buf(),
        Err(code) => return code,
    };
    super::run_async(serve(data_dir, args))
}

async fn serve(data_dir: PathBuf, args: CacheArgs) -> anyhow::Result<()> {
    let (id, chain, content) = super::node::open(&data_dir)?;
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

    // Libraries peers offer wait for `harpbridge offers accept`.
    let offers =
        crate::p2p::offers::watch(node.clone(), &data_dir, Vec::new(), |l| println!("{l}"));
    // WAN limits kept in the data directory (`harpbridge limits set`) win over the flags.
    let limits = crate::p2p::limits::watch(node.clone(), &data_dir, |l| println!("{l}"));
    let prefetcher = Prefetcher::start(chain.clone(), content, node.clone(), |r| {
        println!("{}", line(&r))
    });
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                // The prefetcher reports its own line per fetch.
                Ok(NodeEvent::Transfer(_)) => {}
                Ok(e) => {
                    if let Some(line) = super::node::describe(&e) {
                        println!("{line}");
                    }
                }
                Err(RecvError::Lagged(n)) => println!("(missed {n} events)"),
                Err(RecvError::Closed) => break,
            }
        }
    });
    // The peer list `peers list` shows while this process holds the database.
    let snapshots = SnapshotWriter::start(node.clone(), data_dir, "cache");
    crate::listener::shutdown_signal().await;
    snapshots.stop().await;
    prefetcher.stop();
    node.shutdown().await;
    super::save_checkpoint(chain).await;
    printer.abort();
    offers.abort();
    limits.abort();
    Ok(())
}

/// The line of one prefetch report (see the module docs).
fn line(r: &PrefetchReport) -> String {
    match r {
        PrefetchReport::Fetched { wanted, report } => fetched_line(wanted, report),
        PrefetchReport::FetchFailed {
            wanted,
            error,
            retry_in,
        } => format!(
            "fetch-failed {} {} {}: {error}; trying again in {}s",
            wanted.library,
            wanted.content,
            super::shown::field(wanted.path.as_str()),
            retry_in.as_secs()
        ),
        PrefetchReport::Skipped { wanted } => format!(
            "skipped {} {} {}: the cache is full (--cache-limit-mib)",
            wanted.library,
            wanted.content,
            super::shown::field(wanted.path.as_str())
        ),
        PrefetchReport::LibraryFailed { library, error } => {
            format!("prefetch of {library} failed: {error:#}")
        }
    }
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
        super::shown::field(w.path.as_str()),
        r.bytes_fetched,
        r.bytes_present,
        r.elapsed.as_secs_f64()
    )
}
