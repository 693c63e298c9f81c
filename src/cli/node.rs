//! `harpbridge node`: run the swarm over a data directory's chain, with no Nextcloud.
//!
//! The node finds peers on the LAN (mDNS), dials the `--peer` addresses (the WAN), and keeps
//! every library it shares with them in sync, both ways, until SIGINT/SIGTERM. It prints
//! one line per event on stdout (`listening <addr>` first, so scripts and tests can learn
//! the ports), and logs details through tracing. Every 5 s it writes its peer list to
//! `<data dir>/peers.json` (removed when it stops), which `harpbridge peers list` prints
//! while the node holds the database (see [`crate::roles::peer_snapshot`]).
//!
//! It is the swarm half of an office node; keeping a local folder in sync with a library
//! needs a local-folder backend for the engine (docs/architecture.md §5).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use libp2p::Multiaddr;

use super::DataDirArgs;
use crate::chain::ChainStore;
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
}

impl SwarmArgs {
    /// The swarm's settings these flags describe.
    pub fn config(&self) -> P2pConfig {
        let mut config = P2pConfig {
            peers: self.peer.clone(),
            mdns: !self.no_mdns,
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
    super::run_async(serve(data_dir, args.swarm))
}

async fn serve(data_dir: PathBuf, swarm: SwarmArgs) -> anyhow::Result<()> {
    let (id, chain, content) = open(&data_dir)?;
    let node = Node::start(swarm.config(), &id, chain, content).await?;
    let mut events = node.subscribe();
    println!("peer-id {}", node.peer_id());
    for addr in node.listen_addrs() {
        println!("listening {addr}");
    }
    let printer = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(line) = describe(&e) {
                        println!("{line}");
                    }
                }
                Err(RecvError::Lagged(n)) => println!("(missed {n} events)"),
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
        NodeEvent::Offered { peer, library } => format!("offered {library} by {peer}"),
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
