//! `harpbridge peers`: who is around, and pairing.
//!
//! - `peers list [--wait 3] [--peer MULTIADDR]…`: starts the swarm for a few seconds (mDNS,
//!   and the given addresses), then prints every peer it met: trusted (a member of one of
//!   our libraries) or only discovered, LAN or WAN, round trip, block bytes received from
//!   and sent to it (in this run), addresses. It opens the data
//!   directory's database, so it cannot run beside a `node` or `serve` on the same one.
//! - `peers add --library L PEER_ID [--name N]`: pairs a device: appends an `AddDevice`
//!   entry (signed by this device, which must be a member) so that the peer may sync the
//!   library. A running node announces it to the library's members when it next syncs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use libp2p::{Multiaddr, PeerId};

use crate::chain::{LibraryId, Op};
use crate::p2p::{device_key, Node, P2pConfig};

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
        } => add(&data_dir, library, peer, &name),
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

fn add(
    data_dir: &std::path::Path,
    library: LibraryId,
    peer: PeerId,
    name: &str,
) -> anyhow::Result<()> {
    let Some(device) = device_key(&peer) else {
        bail!("{peer} is not an ed25519 device id");
    };
    let (id, chain, _) = super::node::open(data_dir)?;
    if chain.is_member(&library, &device) {
        println!("{peer} is already a member of {library}");
        return Ok(());
    }
    let entry = chain
        .append(
            &library,
            id.signing_key(),
            Op::AddDevice {
                device,
                name: name.to_string(),
            },
        )
        .with_context(|| format!("adding {peer} to {library}"))?;
    println!("added {peer} to {library} (entry {})", entry.hash());
    Ok(())
}
