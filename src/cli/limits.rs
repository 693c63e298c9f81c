//! `harpbridge limits`: the WAN limits of a device, kept in its data directory (see
//! [`crate::p2p::limits`]). What is set here wins over `--wan-limit`, and a running `node`,
//! `cache` or `serve` on the same data directory applies it within a second; `serve`'s
//! panel edits the same setting.
//!
//! - `limits show [--json]`: `up RATE, down RATE`, then one line per library with its own.
//! - `limits set [--library LIB] [--up RATE] [--down RATE]`: a RATE as `--wan-limit`
//!   takes it (`2mbit`, `500kbit`, `1MiB`), or `unlimited`; a direction not given is kept.
//!   A library whose two rates are unlimited has no limit of its own any more.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{DataDirArgs, DATA_DIR};
use crate::chain::LibraryId;
use crate::p2p::limits::{Rates, WanLimits};

/// Arguments of `harpbridge limits`.
#[derive(Debug, Args)]
#[command(mut_arg(DATA_DIR, DataDirArgs::global))]
pub struct LimitsArgs {
    #[command(flatten)]
    pub data_dir: DataDirArgs,

    #[command(subcommand)]
    pub command: LimitsCommand,
}

/// A rate, or none.
#[derive(Debug, Clone, Copy)]
pub struct Rate(Option<u64>);

fn rate(s: &str) -> Result<Rate, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "unlimited" | "none" => Ok(Rate(None)),
        _ => crate::p2p::pace::parse_rate(s).map(|r| Rate(Some(r))),
    }
}

/// The `limits` subcommands.
#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Print the kept WAN limits.
    Show {
        /// Print JSON (rates in bytes per second, null for unlimited).
        #[arg(long)]
        json: bool,
    },
    /// Change the WAN limits, globally or for one library.
    Set {
        /// Only this library's limits (32 hex characters).
        #[arg(long)]
        library: Option<LibraryId>,
        /// What may be sent to WAN peers per second (`2mbit`, `1MiB`, `unlimited`).
        #[arg(long, value_parser = rate)]
        up: Option<Rate>,
        /// What may be received from WAN peers per second.
        #[arg(long, value_parser = rate)]
        down: Option<Rate>,
    },
}

/// Runs a `limits` subcommand. Exit 1 on failure, 2 for bad usage.
pub fn run(args: LimitsArgs) -> ExitCode {
    let dir = match args.data_dir.resolve() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let result = match args.command {
        LimitsCommand::Show { json } => show(dir, json),
        LimitsCommand::Set { library, up, down } => set(dir, library, up, down),
    };
    super::exit_code(result)
}

fn kept(dir: &Path) -> anyhow::Result<WanLimits> {
    Ok(WanLimits::load(dir)
        .context("reading the kept limits")?
        .unwrap_or_default())
}

fn show(dir: &Path, json: bool) -> anyhow::Result<()> {
    let limits = kept(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&limits)?);
    } else {
        for part in limits.to_string().split("; ") {
            println!("{part}");
        }
    }
    Ok(())
}

fn set(
    dir: &Path,
    library: Option<LibraryId>,
    up: Option<Rate>,
    down: Option<Rate>,
) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a data directory", dir.display());
    }
    if up.is_none() && down.is_none() {
        anyhow::bail!("nothing to set: give --up and/or --down");
    }
    let mut limits = kept(dir)?;
    let rates: &mut Rates = match library {
        Some(l) => limits.libraries.entry(l.to_hex()).or_default(),
        None => &mut limits.global,
    };
    if let Some(Rate(r)) = up {
        rates.up = r;
    }
    if let Some(Rate(r)) = down {
        rates.down = r;
    }
    let limits = limits.checked()?;
    limits.save(dir).context("keeping the limits")?;
    println!("WAN limits: {limits}");
    Ok(())
}
