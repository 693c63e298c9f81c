//! `harpbridge pair PEER_ID [--library ID]… [--name NAME]`: make a device a member of
//! libraries, offline, on a data directory (the panel's "pair" does the same inside `serve`).
//!
//! For each library (default: every library held here of which this device is a member) it
//! appends one `AddDevice` entry signed by this device, unless the peer is a member already.
//! A node or `serve` started on the directory afterwards announces the new heads to the
//! library's members when they connect, and the paired device may then sync.
//! `harpbridge peers add --library L` does the same for one library.
//!
//! It opens the data directory's database, so it cannot run beside a `node` or `serve` on
//! the same directory (pair from the panel instead).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use libp2p::PeerId;

use super::{DataDirArgs, DATA_DIR};
use crate::chain::LibraryId;
use crate::engine::peers::add_member;
use crate::p2p::device_key;

/// Arguments of `harpbridge pair`.
#[derive(Debug, Args)]
#[command(mut_arg(DATA_DIR, DataDirArgs::optional))]
pub struct PairArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// The device's PeerId (as `harpbridge id` prints it).
    pub peer: PeerId,
    /// A library to add it to (32 hex characters; repeatable). Default: every library held
    /// here of which this device is a member.
    #[arg(long = "library", value_name = "ID")]
    pub libraries: Vec<LibraryId>,
    /// The name it is added under.
    #[arg(long, default_value = "device")]
    pub name: String,
}

/// Runs `pair`. Exit 1 on failure, 2 without a data directory.
pub fn run(args: PairArgs) -> ExitCode {
    let data_dir = match args.data_dir.resolve() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    super::exit_code(pair(data_dir, args.peer, &args.libraries, &args.name))
}

/// Adds `peer` to `libraries` (all of this device's when empty), printing one line each.
pub fn pair(
    data_dir: &Path,
    peer: PeerId,
    libraries: &[LibraryId],
    name: &str,
) -> anyhow::Result<()> {
    let Some(device) = device_key(&peer) else {
        bail!("{peer} is not an ed25519 device id");
    };
    let (id, chain, _) = super::node::open(data_dir)?;
    let me = id.device_key();
    let libraries: Vec<LibraryId> = if libraries.is_empty() {
        let mut mine: Vec<LibraryId> = chain
            .libraries()
            .into_iter()
            .filter(|l| chain.is_member(l, &me))
            .collect();
        mine.sort();
        if mine.is_empty() {
            bail!("this device is a member of no library: nothing to pair with");
        }
        mine
    } else {
        libraries.to_vec()
    };
    for library in libraries {
        match add_member(&chain, id.signing_key(), &library, device, name)
            .with_context(|| format!("adding {peer} to {library}"))?
        {
            Some(entry) => println!("added {peer} to {library} (entry {})", entry.hash()),
            None => println!("{peer} is already a member of {library}"),
        }
    }
    Ok(())
}
