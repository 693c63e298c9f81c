//! `harpbridge node`: run the swarm over a data directory's chain, with no Nextcloud.
//!
//! The node finds peers on the LAN (mDNS), dials the `--peer` addresses (the WAN), and keeps
//! every library it shares with them in sync, both ways, until SIGINT/SIGTERM. It prints
//! one line per event on stdout (`listening <addr>` first, so scripts and tests can learn
//! the ports), and logs details through tracing. Every 5 s it writes its peer list to
//! `<data dir>/peers.json` (removed when it stops), which `harpbridge peers list` prints
//! while the node holds the database (see [`crate::roles::peer_snapshot`]).
//!
//! With `--dir PATH` it also keeps that folder in two-way sync with a library
//! ([`super::folder`]): the engine runs over the folder as `serve` runs it over Nextcloud,
//! and only the libraries named by `--library` are joined when a peer offers them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use libp2p::{Multiaddr, PeerId};

use super::folder::FolderOptions;
use super::progress::Progress;
use super::DataDirArgs;
use crate::chain::{ChainStore, LibraryId};
use crate::content::{ContentStore, StoreOptions};
use crate::db;
use crate::identity::DeviceIdentity;
use crate::p2p::{Node, NodeEvent, P2pConfig};
use crate::roles::peer_snapshot::SnapshotWriter;

/// Arguments of `harpbridge node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    #[command(flatten)]
    pub swarm: SwarmArgs,
    #[command(flatten)]
    pub folders: FolderArgs,
}

/// The flags of `node --dir`.
#[derive(Debug, Args)]
pub struct FolderArgs {
    /// Keep this folder in sync (repeatable; made if missing): with the library this data
    /// directory keeps there, else the matching `--library`, else a new library.
    #[arg(long = "dir", value_name = "PATH")]
    pub dirs: Vec<PathBuf>,
    /// The library the `--dir` at the same position joins (32 hex characters, as the first
    /// device printed it); repeatable.
    #[arg(long = "library", value_name = "ID", requires = "dirs")]
    pub libraries: Vec<LibraryId>,
    /// Make this device (its PeerId, as `harpbridge id` prints it) a member of every
    /// `--dir`'s library, so it may join; repeatable.
    #[arg(long, value_name = "PEER_ID", requires = "dirs")]
    pub pair: Vec<PeerId>,
    /// Milliseconds a changing file must be quiet before it is read.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub settle_ms: u64,
    /// Seconds between rescans of every folder (they find what a watcher missed).
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub scan_interval: u64,
    /// Days the trash (`.harp/trash` in each folder) keeps what syncs replaced or deleted.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub trash_days: u64,
    /// This device's name in the libraries it creates. Default: the host name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// MiB of blocks kept besides the folders' own files (versions waiting to be written,
    /// and a cache of replaced ones for peers).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub cache_mib: u64,
}

impl FolderArgs {
    fn options(&self) -> anyhow::Result<FolderOptions> {
        if self.libraries.len() > self.dirs.len() {
            anyhow::bail!("more --library than --dir: each --library goes with one --dir");
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        Ok(FolderOptions {
            folders: self
                .dirs
                .iter()
                .enumerate()
                .map(|(i, d)| (d.clone(), self.libraries.get(i).copied()))
                .collect(),
            pair: self.pair.clone(),
            settle: Duration::from_millis(self.settle_ms),
            scan_interval: Duration::from_secs(self.scan_interval.max(1)),
            trash_days: self.trash_days,
            cache_limit: self.cache_mib.saturating_mul(1 << 20),
            device_name: self.name.clone().unwrap_or(if host.is_empty() {
                "node".to_owned()
            } else {
                host
            }),
        })
    }
}

/// The swarm's flags, shared by `node` and `cache`.
#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// Listen here (repeatable). Default: TCP and QUIC on every IPv4 interface, kernel-chosen
    /// ports.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Dial this peer and keep re-dialling it (repeatable): the cloud node or an office over
    /// the WAN, e.g. `/ip4/203.0.113.7/tcp/4001/p2p/12D3Koo…`.
    #[arg(long, value_name = "MULTIADDR", value_parser = super::peer_addr)]
    pub peer: Vec<Multiaddr>,
    /// Do not look for peers on the LAN by mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Limit block transfers with WAN peers to this rate, each way (`2mbit`, `500kbit`,
    /// `1MiB`). LAN peers are never limited.
    #[arg(long, value_name = "RATE", value_parser = crate::p2p::pace::parse_rate)]
    pub wan_limit: Option<u64>,
    /// The same, for what is sent to WAN peers only (overrides --wan-limit).
    #[arg(long, value_name = "RATE", value_parser = crate::p2p::pace::parse_rate)]
    pub wan_limit_up: Option<u64>,
    /// The same, for what is received from WAN peers only (overrides --wan-limit).
    #[arg(long, value_name = "RATE", value_parser = crate::p2p::pace::parse_rate)]
    pub wan_limit_down: Option<u64>,
}

impl SwarmArgs {
    /// The swarm's settings these flags describe.
    pub fn config(&self) -> P2pConfig {
        let mut config = P2pConfig {
            peers: self.peer.clone(),
            mdns: !self.no_mdns,
            // Offers wait for `harpbridge offers accept` (see crate::p2p::offers).
            join_offered: false,
            wan_limit_up: self.wan_limit_up.or(self.wan_limit),
            wan_limit_down: self.wan_limit_down.or(self.wan_limit),
            ..P2pConfig::default()
        };
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        }
        config
    }
}

/// Opens the data directory's identity, chain and content store (creating them if new).
pub fn open(
    data_dir: &std::path::Path,
) -> anyhow::Result<(DeviceIdentity, ChainStore, ContentStore)> {
    let (id, _) = DeviceIdentity::load_or_create(data_dir)?;
    let database = db::open(data_dir)?;
    let chain = ChainStore::open(database.clone()).context("the chain does not verify")?;
    let content = ContentStore::open(database, data_dir, StoreOptions::default())
        .context("opening the content store")?;
    Ok((id, chain, content))
}

/// Runs the node until a signal. Exit 1 if it cannot start.
pub fn run(args: NodeArgs) -> ExitCode {
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir.to_path_buf(),
        Err(code) => return code,
    };
    if args.folders.dirs.is_empty() {
        super::run_async(serve(data_dir, args.swarm))
    } else {
        let options = match args.folders.options() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("harpbridge: {e}");
                return ExitCode::from(2);
            }
        };
        super::run_async(serve_folders(data_dir, args.swarm, options))
    }
}

async fn serve(data_dir: PathBuf, swarm: SwarmArgs) -> anyhow::Result<()> {
    let (id, chain, content) = open(&data_dir)?;
    let node = Node::start(swarm.config(), &id, chain.clone(), content).await?;
    let result = run_until_signal(node, data_dir, Vec::new(), Arc::new(Progress::new())).await;
    super::save_checkpoint(chain).await;
    result
}

/// `node --dir`: the engine over the folders, and the swarm wired to it.
async fn serve_folders(
    data_dir: PathBuf,
    swarm: SwarmArgs,
    options: FolderOptions,
) -> anyhow::Result<()> {
    let out = Arc::new(Progress::new());
    let folders = super::folder::start(&data_dir, options, out.clone()).await?;
    let engine = folders.engine.clone();
    // Only the folders' libraries are joined, and what `harpbridge offers accept` accepts.
    let config = swarm.config();
    let node = Node::start(
        config,
        engine.identity(),
        engine.chain().clone(),
        engine.content().clone(),
    )
    .await?;
    crate::link::connect(&engine, &node);
    node.serve_placed_files(folders.placed_files());
    super::status::start_writer(engine.clone(), node.clone(), data_dir.clone());
    for library in &folders.joining {
        node.join(*library).await?;
    }
    let result = run_until_signal(node, data_dir.clone(), folders.joining.clone(), out).await;
    super::save_checkpoint(engine.chain().clone()).await;
    // Only true while the node runs.
    let _ = std::fs::remove_file(data_dir.join(super::status::STATUS_FILE));
    result
}

/// Prints the node's events until a signal, joining `joining` when a member offers it and
/// other offers once accepted (`harpbridge offers`).
async fn run_until_signal(
    node: crate::p2p::NodeHandle,
    data_dir: PathBuf,
    joining: Vec<LibraryId>,
    out: Arc<Progress>,
) -> anyhow::Result<()> {
    let mut events = node.subscribe();
    println!("peer-id {}", node.peer_id());
    for addr in node.listen_addrs() {
        println!("listening {addr}");
    }
    let said = out.clone();
    let offers =
        crate::p2p::offers::watch(node.clone(), &data_dir, joining, move |l| said.line(&l));
    // WAN limits kept in the data directory (`harpbridge limits set`) win over the flags.
    let said = out.clone();
    let limits = crate::p2p::limits::watch(node.clone(), &data_dir, move |l| said.line(&l));
    let printer = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let NodeEvent::Transfer(t) = &e {
                        out.transfer(t, || format!("fetching {}", &t.content.to_hex()[..12]));
                    }
                    if let Some(line) = describe(&e) {
                        out.line(&line);
                    }
                }
                Err(RecvError::Lagged(n)) => out.line(&format!("(missed {n} events)")),
                Err(RecvError::Closed) => break,
            }
        }
    });
    // The peer list `peers list` shows while this process holds the database.
    let snapshots = SnapshotWriter::start(node.clone(), data_dir, "node");
    crate::listener::shutdown_signal().await;
    snapshots.stop().await;
    node.shutdown().await;
    printer.abort();
    offers.abort();
    limits.abort();
    Ok(())
}

/// One stdout line per event worth a line.
pub fn describe(e: &NodeEvent) -> Option<String> {
    Some(match e {
        NodeEvent::Listening(a) => format!("listening {a}"),
        NodeEvent::Discovered { peer, .. } => format!("discovered {peer}"),
        NodeEvent::Connected { peer, address } => format!("connected {peer} {address}"),
        NodeEvent::Disconnected { peer } => format!("disconnected {peer}"),
        NodeEvent::Pulled {
            peer,
            library,
            inserted,
            remaining,
        } => format!("pulled {library} from {peer}: {inserted} new, {remaining} to go"),
        NodeEvent::PullDone { peer, library } => format!("synced {library} with {peer}"),
        // Reported once per offer by [`crate::p2p::offers::watch`].
        NodeEvent::Offered { .. } => return None,
        NodeEvent::RefusedBy {
            peer,
            library,
            reason,
        } => match library {
            Some(l) => format!("refused {l} by {peer}: {reason}"),
            None => format!("refused by {peer}: {reason}"),
        },
        NodeEvent::SyncFailed { peer, error, .. } => format!("failed with {peer}: {error}"),
        NodeEvent::Transfer(t) if t.finished => match &t.error {
            Some(e) => format!("fetch of {} failed: {e}", t.content),
            None => format!("fetched {} ({} bytes)", t.content, t.bytes_total),
        },
        NodeEvent::Transfer(_) => return None,
    })
}
