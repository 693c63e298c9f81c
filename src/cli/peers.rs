//! `harpbridge peers`: who is around, and pairing.
//!
//! - `peers list [--wait 3] [--peer MULTIADDR]…`: starts the swarm for a few seconds (mDNS,
//!   and the given addresses), then prints every peer it met: trusted (a member of one of
//!   our libraries) or only discovered, LAN or WAN, round trip, block bytes received from
//!   and sent to it (in this run), addresses. It opens the data
//!   directory's database, so it cannot run beside a `node` or `serve` on the same one.
//! - `peers add --library L PEER_ID [--name N]`: pairs a device with one library; the same
//!   as `harpbridge pair` (see [`super::pair`]), kept under its first name.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use libp2p::{Multiaddr, PeerId};

use crate::chain::LibraryId;
use crate::p2p::{Node, P2pConfig};

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
        #[arg(long, value_name = "MULTIADDR")]
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
    let (id, chain, content) = super::node::open(data_dir)?;
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
    for p in peers {
        let rtt = p
            .rtt
            .map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into());
        println!(
            "{}  {}  {}  {}  rtt {}  in {} B  out {} B  libraries {}  {}",
            p.peer,
            if p.trusted() { "trusted" } else { "discovered" },
            if p.lan { "lan" } else { "wan" },
            if p.connected {
                "connected"
            } else {
                "not connected"
            },
            rtt,
            p.bytes_in,
            p.bytes_out,
            p.libraries.len(),
            p.addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    Ok(())
}
