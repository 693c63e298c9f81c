//! `harpbridge peers`: who is around, and pairing.
//!
//! - `peers list [--wait 3] [--peer MULTIADDR]…`: starts the swarm for a few seconds (mDNS,
//!   and the given addresses), then prints every peer it met: trusted (a member of one of
//!   our libraries) or only discovered, LAN or WAN, round trip, block bytes received from
//!   and sent to it, addresses. It opens the data directory's database, so it cannot run
//!   beside a `node`, `cache` or `serve` on the same one; a running `node` or `cache` keeps
//!   its own peer list (with the bytes moved since it started) in `<data dir>/peers.json`
//!   ([`SNAPSHOT_FILE`], rewritten every few seconds by [`SnapshotWriter`]), and `peers list`
//!   prints that one when the database is in use. (`serve` writes none yet.)
//! - `peers add --library L PEER_ID [--name N]`: pairs a device with one library, as
//!   `harpbridge pair --library L` does (see [`super::pair`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::chain::LibraryId;
use crate::db::DbError;
use crate::p2p::{Node, NodeHandle, P2pConfig, PeerInfo};

/// Arguments of `harpbridge peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// The data directory (holds identity.key and harpbridge.redb).
    #[arg(
        long,
        global = true,
        env = "APP_PERSISTENT_STORAGE",
        value_name = "DIR"
    )]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: PeersCommand,
}

/// The `peers` subcommands.
#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Listen for a few seconds and list the peers met.
    List {
        /// Seconds to wait for peers.
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
        /// Also dial this address (repeatable).
        #[arg(long, value_name = "MULTIADDR", value_parser = super::peer_addr)]
        peer: Vec<Multiaddr>,
        /// Do not look for peers on the LAN by mDNS.
        #[arg(long)]
        no_mdns: bool,
    },
    /// Pair a device: make it a member of a library (an AddDevice entry).
    Add {
        /// The library (32 hex characters).
        #[arg(long)]
        library: LibraryId,
        /// The device's PeerId (as `harpbridge id` prints it).
        peer: PeerId,
        /// A name for it.
        #[arg(long, default_value = "device")]
        name: String,
    },
}

/// Runs a `peers` subcommand. Exit 1 on failure, 2 for bad usage.
pub fn run(args: PeersArgs) -> ExitCode {
    let Some(data_dir) = args.data_dir else {
        eprintln!("harpbridge: --data-dir (or APP_PERSISTENT_STORAGE) is required");
        return ExitCode::from(2);
    };
    let result = match args.command {
        PeersCommand::List {
            wait,
            peer,
            no_mdns,
        } => tokio::runtime::Runtime::new()
            .context("starting the tokio runtime")
            .and_then(|rt| rt.block_on(list(&data_dir, wait, peer, no_mdns))),
        PeersCommand::Add {
            library,
            peer,
            name,
        } => super::pair::pair(&data_dir, peer, &[library], &name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harpbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn list(
    data_dir: &std::path::Path,
    wait: f64,
    peers: Vec<Multiaddr>,
    no_mdns: bool,
) -> anyhow::Result<()> {
    let (id, chain, content) = match super::node::open(data_dir) {
        Ok(opened) => opened,
        Err(e) if in_use(&e) => return list_snapshot(data_dir, e),
        Err(e) => return Err(e),
    };
    let config = P2pConfig {
        peers,
        mdns: !no_mdns,
        ..P2pConfig::default()
    };
    let node = Node::start(config, &id, chain, content).await?;
    tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.0, 600.0))).await;
    let peers = node.peers().await?;
    node.shutdown().await;
    if peers.is_empty() {
        println!("no peers found");
    }
    for p in &peers {
        println!("{}", PeerRow::from(p));
    }
    Ok(())
}

/// The database is held by another process (a running `cache`, `node` or `serve`).
fn in_use(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<DbError>(), Some(DbError::InUse { .. }))
}

/// Prints the peers a running `node` or `cache` last wrote to [`SNAPSHOT_FILE`], or fails with
/// `opening` (why the database could not be opened) when there is none.
fn list_snapshot(data_dir: &Path, opening: anyhow::Error) -> anyhow::Result<()> {
    let path = data_dir.join(SNAPSHOT_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Err(opening.context(
            "the data directory is in use by a running harpbridge, which keeps no peer list",
        ));
    };
    if bytes.len() > MAX_SNAPSHOT_LEN {
        bail!("{} is larger than {MAX_SNAPSHOT_LEN} bytes", path.display());
    }
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let age = crate::chain::now_ms().saturating_sub(snapshot.written_ms);
    println!(
        "the data directory is in use by a running harpbridge {} ({}); its peers as of {:.0} s ago:",
        snapshot.role,
        snapshot.peer_id,
        age as f64 / 1e3
    );
    if snapshot.peers.is_empty() {
        println!("no peers found");
    }
    for p in &snapshot.peers {
        println!("{p}");
    }
    Ok(())
}

/// Where a running `node` or `cache` keeps its peer list for `peers list` (the database is
/// locked while it runs). Rewritten every [`SNAPSHOT_EVERY`], atomically.
pub const SNAPSHOT_FILE: &str = "peers.json";
/// How often [`SnapshotWriter`] rewrites [`SNAPSHOT_FILE`].
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);
/// A snapshot larger than this is refused (it holds one short row per peer).
const MAX_SNAPSHOT_LEN: usize = 16 * 1024 * 1024;

/// The role of a snapshot that names none.
fn cache_role() -> String {
    "cache".to_string()
}

/// The peer list a running `node` or `cache` writes to [`SNAPSHOT_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What runs: `node` or `cache` (a file without the field is read as `cache`).
    #[serde(default = "cache_role")]
    pub role: String,
    /// The running node's PeerId.
    pub peer_id: String,
    /// When it was written, ms since the epoch.
    pub written_ms: u64,
    /// Its peers.
    pub peers: Vec<PeerRow>,
}

/// One line of `peers list`: who, trusted or only discovered, LAN or WAN, connected, the
/// latest ping round trip, block bytes received from it and sent to it since the node
/// started, the libraries shared with it, its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// Its PeerId.
    pub peer: String,
    /// A member of one of our libraries.
    pub trusted: bool,
    /// Counted as LAN (found by mDNS, or on a subnet of this host).
    pub lan: bool,
    /// At least one connection is open.
    pub connected: bool,
    /// The latest ping round trip in ms.
    pub rtt_ms: Option<f64>,
    /// Block bytes received from it.
    pub bytes_in: u64,
    /// Block bytes sent to it.
    pub bytes_out: u64,
    /// Libraries held here of which it is a member.
    pub libraries: usize,
    /// Its addresses.
    pub addresses: Vec<String>,
}

impl From<&PeerInfo> for PeerRow {
    fn from(p: &PeerInfo) -> Self {
        PeerRow {
            peer: p.peer.to_string(),
            trusted: p.trusted(),
            lan: p.lan,
            connected: p.connected,
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
            bytes_in: p.bytes_in,
            bytes_out: p.bytes_out,
            libraries: p.libraries.len(),
            addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl std::fmt::Display for PeerRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rtt = self
            .rtt_ms
            .map(|ms| format!("{ms:.2} ms"))
            .unwrap_or_else(|| "-".into());
        write!(
            f,
            "{}  {}  {}  {}  rtt {}  in {} B  out {} B  libraries {}  {}",
            self.peer,
            if self.trusted {
                "trusted"
            } else {
                "discovered"
            },
            if self.lan { "lan" } else { "wan" },
            if self.connected {
                "connected"
            } else {
                "not connected"
            },
            rtt,
            self.bytes_in,
            self.bytes_out,
            self.libraries,
            self.addresses.join(" "),
        )
    }
}

/// Writes `peers` as `data_dir`'s [`SNAPSHOT_FILE`] (a temporary file renamed over it, so
/// a reader never sees half of one).
fn write_snapshot(
    data_dir: &Path,
    role: &str,
    peer_id: &str,
    peers: &[PeerInfo],
) -> std::io::Result<()> {
    let snapshot = Snapshot {
        role: role.to_string(),
        peer_id: peer_id.to_string(),
        written_ms: crate::chain::now_ms(),
        peers: peers.iter().map(PeerRow::from).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&snapshot).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, data_dir.join(SNAPSHOT_FILE))
}

/// Keeps `<data dir>/`[`SNAPSHOT_FILE`] current while a `node` or `cache` holds the
/// database: rewritten every [`SNAPSHOT_EVERY`], removed by [`SnapshotWriter::stop`] (the
/// list is only true while the process runs).
pub struct SnapshotWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SnapshotWriter {
    /// Starts writing `node`'s peer list into `data_dir`; `role` (`node`, `cache`) is what
    /// `peers list` names the running process.
    pub fn start(node: NodeHandle, data_dir: PathBuf, role: &'static str) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(SNAPSHOT_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = every.tick() => {}
                }
                let Ok(peers) = node.peers().await else { break };
                let dir = data_dir.clone();
                let me = node.peer_id().to_string();
                // Awaited even when stopping, so no write lands after the removal below.
                let written =
                    tokio::task::spawn_blocking(move || write_snapshot(&dir, role, &me, &peers))
                        .await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(error = %e, "cannot write the peer list snapshot");
                }
            }
            let _ = std::fs::remove_file(data_dir.join(SNAPSHOT_FILE));
        });
        SnapshotWriter { stop, task }
    }

    /// Stops writing and removes the file.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
