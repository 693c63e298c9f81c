//! `harpbridge offers`: libraries peers offer to this device, and approving them.
//!
//! `node` and `cache` join no library on their own (see [`crate::p2p::offers`]): an offer
//! is printed once (`offered <library> by <peer>: waiting for approval`) and kept in
//! `<data dir>/offers.json`.
//!
//! - `offers list [--json]`: one line per offer, `<library> <pending|accepted|rejected>
//!   <first offered> by <peer>,…`.
//! - `offers accept LIBRARY`: the running `node` or `cache` joins it within a second (or at
//!   its next start, when it is offered again); accepting before the offer comes is fine.
//! - `offers reject LIBRARY`: it is never joined, and its offers are no longer reported.
//!
//! These only read and write the two offer files, so they work while the node runs.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{DataDirArgs, DATA_DIR};
use crate::chain::LibraryId;
use crate::p2p::offers::{self, Offer};

/// Arguments of `harpbridge offers`.
#[derive(Debug, Args)]
#[command(mut_arg(DATA_DIR, DataDirArgs::global))]
pub struct OffersArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,

    #[command(subcommand)]
    pub command: OffersCommand,
}

/// The `offers` subcommands.
#[derive(Debug, Subcommand)]
pub enum OffersCommand {
    /// List the libraries peers offered, and what was decided.
    List {
        /// Print JSON (offers and decisions) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Join an offered library (the running node does within a second).
    Accept {
        /// The library (32 hex characters).
        library: LibraryId,
    },
    /// Never join this library, and stop reporting its offers.
    Reject {
        /// The library (32 hex characters).
        library: LibraryId,
    },
}

/// Runs an `offers` subcommand. Exit 1 on failure, 2 for bad usage.
pub fn run(args: OffersArgs) -> ExitCode {
    let dir = match args.data_dir.resolve() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let result = match args.command {
        OffersCommand::List { json } => list(dir, json),
        OffersCommand::Accept { library } => decide(dir, library, true),
        OffersCommand::Reject { library } => decide(dir, library, false),
    };
    super::exit_code(result)
}

fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let offers = offers::read_offers(dir).context("reading the offers")?;
    let decisions = offers::read_decisions(dir).context("reading the decisions")?;
    if json {
        let out = serde_json::json!({ "offers": offers, "decisions": decisions });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if offers.is_empty() {
        println!("no offers");
    }
    for o in &offers {
        let state = match o.library.parse().ok().and_then(|l| decisions.of(&l)) {
            Some(true) => "accepted",
            Some(false) => "rejected",
            None => "pending",
        };
        println!("{}", row(o, state));
    }
    Ok(())
}

/// One line of `offers list`.
fn row(o: &Offer, state: &str) -> String {
    let when = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(o.first_ms),
    );
    format!("{} {state} {when} by {}", o.library, o.peers.join(","))
}

fn decide(dir: &Path, library: LibraryId, accept: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    if !dir.is_dir() {
        anyhow::bail!("{} is not a data directory", dir.display());
    }
    offers::decide(dir, library, accept).context("writing the decision")?;
    let offered = offers::read_offers(dir)
        .unwrap_or_default()
        .iter()
        .any(|o| o.library == library.to_hex());
    match (accept, offered) {
        (true, true) => println!("accepted {library}: the running node joins it now"),
        (true, false) => println!("accepted {library}: not offered yet; joined when it is"),
        (false, _) => println!("rejected {library}: it will not be joined"),
    }
    Ok(())
}
