//! `harpbridge peers`: who is around, and pairing.
//!
//! - `peers list [--wait 3] [--peer MULTIADDR]…`: starts the swarm for a few seconds (mDNS,
//!   and the given addresses), then prints every peer it met: trusted (a member of one of
//!   our libraries) or only discovered, LAN or WAN, round trip, block bytes received from
//!   and sent to it, addresses. It opens the data directory's database, so it cannot run
//!   beside a `node`, `cache` or `serve` on the same one; a running `node` or `cache` keeps
//!   its own peer list (with the bytes moved since it started) in `<data dir>/peers.json`
//!   (see [`crate::roles::peer_snapshot`]), and `peers list` prints that one when the
//!   database is in use. (`serve` writes none yet.)
//! - `peers add --library L PEER_ID [--name N]`: pairs a device with one library, as
//!   `harpbridge pair --library L` does (see [`super::pair`]).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use libp2p::{Multiaddr, PeerId};

use super::{DataDirArgs, DATA_DIR};
use crate::chain::LibraryId;
use crate::db::DbError;
use crate::p2p::{Node, P2pConfig};
use crate::roles::peer_snapshot::{self, PeerRow};

/// Arguments of `harpbridge peers`.
#[derive(Debug, Args)]
#[command(mut_arg(DATA_DIR, DataDirArgs::global))]
pub struct PeersArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,

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
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let result = match args.command {
        PeersCommand::List {
            wait,
            peer,
            no_mdns,
        } => tokio::runtime::Runtime::new()
            .context("starting the tokio runtime")
            .and_then(|rt| rt.block_on(list(data_dir, wait, peer, no_mdns))),
        PeersCommand::Add {
            library,
            peer,
            name,
        } => super::pair::pair(data_dir, peer, &[library], &name),
    };
    super::exit_code(result)
}

async fn list(
    data_dir: &Path,
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
        // Looking around joins nothing.
        join_offered: false,
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
        println!("{}", row(&PeerRow::from(p)));
    }
    Ok(())
}

/// The database is held by another process (a running `cache`, `node` or `serve`).
fn in_use(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<DbError>(), Some(DbError::InUse { .. }))
}

/// Prints the peers a running `node` or `cache` last wrote to its snapshot, or fails with
/// `opening` (why the database could not be opened) when there is none.
fn list_snapshot(data_dir: &Path, opening: anyhow::Error) -> anyhow::Result<()> {
    let Some(snapshot) = peer_snapshot::read(data_dir)? else {
        return Err(opening.context(
            "the data directory is in use by a running harpbridge, which keeps no peer list",
        ));
    };
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
        println!("{}", row(p));
    }
    Ok(())
}

/// One line of `peers list`: who, trusted or only discovered, LAN or WAN, connected, the
/// latest ping round trip, block bytes in and out, libraries shared, addresses.
fn row(p: &PeerRow) -> String {
    let rtt = p
        .rtt_ms
        .map(|ms| format!("{ms:.2} ms"))
        .unwrap_or_else(|| "-".into());
    format!(
        "{}  {}  {}  {}  rtt {}  in {} B  out {} B  libraries {}  {}",
        p.peer,
        if p.trusted { "trusted" } else { "discovered" },
        if p.lan { "lan" } else { "wan" },
        if p.connected {
            "connected"
        } else {
            "not connected"
        },
        rtt,
        p.bytes_in,
        p.bytes_out,
        p.libraries,
        p.addresses.join(" "),
    )
}
